"""Inside the network: what each stage of a model makes of one picture, and what its first layer looks for.

A registry entry names its stages (`ModelSpec.stages`: label and module, in forward order). One forward of a
picture records every stage's output through forward hooks that keep only the calling thread's pass (sessions
share loaded models, as har_core.explain.cam explains), so a page can show each stage's shape, receptive field and its
most active channels. The receptive field is measured, not looked up: the input pixels whose change moves the
centre unit of a stage, on a copy of the architecture with positive weights and average pools (where every
path counts), so it is the theoretical field of any weights.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import nn

from har_core.models.inference import LoadedModel, ThreadCapture, image_model
from har_core.models.registry import REGISTRY


@dataclass
class Stage:
    label: str  # as the architecture's paper names it (layer1, block 3, Mixed_6e, ...)
    module: str  # dotted path in the model
    activations: np.ndarray  # (channels, height, width) float32, this picture's output of the stage
    receptive_field: int  # pixels of the model's input that one unit of this stage sees (per side)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.activations.shape)

    def top_channels(self, count: int = 16) -> np.ndarray:
        """The channels most active on this picture (highest mean activation), most active first."""
        return np.argsort(-self.activations.mean(axis=(1, 2)), kind="stable")[:count]


class StageTap(ThreadCapture):
    """Forward hooks on a model's stage modules: inside `capture()`, this thread's forwards record each stage's
    output into the yielded dictionary (module -> tensor); installed once per loaded model."""

    def __init__(self, model: nn.Module, modules: list[str]):
        super().__init__(dict)
        self.handles = [model.get_submodule(name).register_forward_hook(self._hook(name)) for name in modules]

    def _hook(self, name: str):
        def record(_module, _inputs, output):
            if (captured := self.recording()) is not None:
                captured[name] = output.detach().float().cpu().clone()  # later layers may write in place
        return record


_TAPS_LOCK = threading.Lock()
_TAPS: "weakref.WeakKeyDictionary[nn.Module, StageTap]" = weakref.WeakKeyDictionary()


def stage_tap(loaded: LoadedModel) -> StageTap:
    """The network's one stage tap: the loaded model's backend copies share the network, so they share it."""
    spec = REGISTRY[loaded.run.card["model"]]
    with _TAPS_LOCK:
        if loaded.model not in _TAPS:
            _TAPS[loaded.model] = StageTap(loaded.model, [module for _, module in spec.stages])
        return _TAPS[loaded.model]


def stages_of(loaded: LoadedModel) -> tuple[tuple[str, str], ...]:
    """The (label, module) stages of a loaded image model; a clip model or an entry without stages is refused."""
    image_model(loaded)
    spec = REGISTRY[loaded.run.card["model"]]
    if not spec.stages:
        raise ValueError(f"{loaded.name}: the registry names no stages for {spec.name}")
    return spec.stages


def stage_activations(loaded: LoadedModel, image: Image.Image) -> list[Stage]:
    """Every stage's output for one picture, from one forward of the PyTorch model."""
    stages = stages_of(loaded)
    batch = loaded.preprocess([image])
    with torch.inference_mode(), stage_tap(loaded).capture() as captured:
        loaded.model(batch)
    fields = receptive_fields(loaded.run.card["model"], batch.shape[-1])
    return [Stage(label, module, captured[module][0].numpy(), fields[module]) for label, module in stages]


@lru_cache(maxsize=32)
@torch.enable_grad()
def receptive_fields(architecture: str, size: int) -> dict[str, int]:
    """Per stage module: how many input pixels (per side) one unit at the centre of its output sees, at this
    input size (at most the input itself). Measured by differentiation on a positive copy of the network."""
    spec = REGISTRY[architecture]
    model = _positive_weights(spec.build(2)).eval()
    # tiny and positive: residual sums double at each block, and no clipped activation (ReLU6) may saturate
    image = torch.full((1, 3, size, size), 1e-6, requires_grad=True)
    outputs = {}
    handles = [model.get_submodule(module).register_forward_hook(
        lambda _m, _i, output, module=module: outputs.__setitem__(module, output)) for _, module in spec.stages]
    try:
        model(image)
    finally:
        for handle in handles:
            handle.remove()
    fields = {}
    for _, module in spec.stages:
        output = outputs[module]
        centre = output[0, :, output.shape[2] // 2, output.shape[3] // 2].sum()
        (gradient,) = torch.autograd.grad(centre, image, retain_graph=True)
        rows, columns = np.nonzero(gradient[0].abs().sum(0).numpy())
        fields[module] = int(max(rows.max() - rows.min(), columns.max() - columns.min()) + 1)
    return fields


def _positive_weights(model: nn.Module) -> nn.Module:
    """A freshly built model, changed in place to the same layers with small positive weights, no bias, batch norms as identities and max pools as average
    pools of the same window: every input pixel inside a unit's field then moves it. Squeeze-excitation gates
    are left out: they pool the whole picture, so with them every unit would see all of it; the field given is
    the convolutions'."""
    for name, module in list(model.named_modules()):
        if "SqueezeExcite" in type(module).__name__:
            model.set_submodule(name, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            model.set_submodule(name, nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                                                   ceil_mode=module.ceil_mode))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            if module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:  # batch-norm scales and shifts, biases
                continue
            parameter.fill_(1.0 / max(1, parameter[0].numel()))
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
    return model


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first convolution the picture meets (the one with three input channels)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return module
    raise ValueError("no convolution takes the picture's three colour channels")


def filter_tiles(conv: nn.Conv2d) -> np.ndarray:
    """The first layer's filters as RGB tiles (out, k, k, 3) in [0, 1]: each filter scaled by its own largest
    weight around mid-grey, so a filter's colour and orientation show whatever its strength."""
    weights = conv.weight.detach().float().cpu().numpy().transpose(0, 2, 3, 1)  # out, k, k, rgb
    scale = np.abs(weights).reshape(len(weights), -1).max(1)[:, None, None, None]
    return np.clip(0.5 + 0.5 * weights / np.where(scale > 0, scale, 1), 0, 1)


def imagenet_filters(architecture: str) -> np.ndarray | None:
    """The first layer's filters as the offline ImageNet weights start them (tiles, as `filter_tiles`); None where
    the entry has no offline weights or they are not installed."""
    from har_core.models.pretrained import PretrainedError, load_pretrained
    spec = REGISTRY[architecture]
    if not spec.offline:
        return None
    model = spec.build(2)
    try:
        load_pretrained(model, spec, "offline")
    except (PretrainedError, OSError, RuntimeError):
        return None
    return filter_tiles(first_conv(model))


def tile_mosaic(tiles: np.ndarray, columns: int = 16, scale: int = 8, gap: int = 2) -> np.ndarray:
    """Tiles (n, k, k, 3) in [0, 1] as one uint8 picture, `columns` a row, each pixel `scale`×`scale`, on white."""
    count, size = len(tiles), tiles.shape[1] * scale
    rows = -(-count // columns)
    mosaic = np.ones((rows * (size + gap) + gap, min(count, columns) * (size + gap) + gap, 3))
    for i, tile in enumerate(tiles):
        top, left = gap + (i // columns) * (size + gap), gap + (i % columns) * (size + gap)
        mosaic[top:top + size, left:left + size] = tile.repeat(scale, axis=0).repeat(scale, axis=1)
    return (mosaic * 255).round().astype(np.uint8)
