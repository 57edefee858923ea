"""Training on cached trunk features: a frozen trunk runs once per augmented view, not once per step.

A registry entry may list its model's `trunk`: the modules its forward runs first, in order, with
nothing in between. While they are frozen (and their batch norms keep ImageNet statistics) their
output depends only on the input image, so training can compute it once for a fixed number of
augmented views and train the rest of the network on those tensors. On a CPU most of an
EfficientNet's or InceptionV3's compute is in the early, high-resolution stages, so fine-tuning the
last stages gets several times faster; the price is a finite pool of augmentations.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@contextmanager
def trunk_skipped(model: nn.Module, trunk: tuple[str, ...]):
    """Inside, `model(features)` takes the trunk's output instead of an image."""
    originals = {name: model.get_submodule(name) for name in trunk}
    try:
        for name in trunk:
            model.set_submodule(name, nn.Identity())
        yield model
    finally:
        for name, module in originals.items():
            model.set_submodule(name, module)


def trunk_parameters(model: nn.Module, trunk: tuple[str, ...]) -> list[str]:
    return [f"{name}.{p}" for name in trunk for p, _ in model.get_submodule(name).named_parameters()]


class OnnxModule:
    """A frozen module exported once to ONNX and run by ONNX Runtime: on a CPU several times faster than eager
    PyTorch for the same numbers (max |Δ| ~1e-4 on EfficientNet-Lite2's trunk; tests/test_trunk.py)."""

    def __init__(self, module: nn.Module, example: torch.Tensor):
        from har_core.models.backend import open_session
        from har_core.models.export import traced_to_onnx
        self.folder = tempfile.TemporaryDirectory(prefix="har-onnx-")
        path = Path(self.folder.name) / "module.onnx"
        traced_to_onnx(module.eval(), example[:2].contiguous(), str(path), output_names=["output"])
        self.session = open_session(path)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["output"], {"input": images.contiguous().numpy()})[0])


class OnnxTrunk(OnnxModule):
    """The frozen trunk (its modules in order) in ONNX Runtime."""

    def __init__(self, model: nn.Module, trunk: tuple[str, ...], example: torch.Tensor):
        super().__init__(nn.Sequential(*[model.get_submodule(name) for name in trunk]), example)


def onnx_trunk(model: nn.Module, trunk: tuple[str, ...], example: torch.Tensor) -> OnnxTrunk | None:
    """The trunk in ONNX Runtime when the model lives on the CPU and the export works; else None (PyTorch)."""
    if next(model.parameters()).device.type != "cpu":
        return None
    try:
        return OnnxTrunk(model, trunk, example)
    except Exception as error:  # noqa: BLE001 - no onnxruntime, or a layer the exporter cannot take
        print(f"note: the trunk runs in PyTorch (ONNX export failed: {str(error).splitlines()[0][:200]})")
        return None


@torch.no_grad()  # not inference_mode: the tail trains on these tensors
def trunk_features(model: nn.Module, trunk: tuple[str, ...], loader: DataLoader, desc: str,
                   progress: bool = True, engine: str = "auto", out: torch.Tensor | None = None) -> torch.Tensor:
    """The trunk's output for every sample of a loader of (image, label, index), in index order, as float16.

    On the CPU (engine "auto") the trunk runs in ONNX Runtime; on a GPU (`--device cuda`) batches run on the
    model's device. The features are kept in CPU memory, from where the training loader hands them back to
    the device batch by batch. `out`, a float16 tensor of the right shape, receives them in place (a large
    cache is then held once, never twice while being assembled)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    runner = None
    for images, _, indices in tqdm(loader, desc=desc, disable=not progress, leave=False):
        if runner is None:
            runner = (onnx_trunk(model, trunk, images) if engine == "auto" else None) or (
                lambda batch: run_trunk(model, trunk, batch.to(device, non_blocking=True,
                                                            memory_format=torch.channels_last)))
        features = runner(images).half().cpu()
        if out is None:
            out = torch.empty((len(loader.dataset), *features.shape[1:]), dtype=torch.float16)
        out[indices] = features
    model.train(was_training)
    return out


def run_trunk(model: nn.Module, trunk: tuple[str, ...], images: torch.Tensor) -> torch.Tensor:
    for name in trunk:
        images = model.get_submodule(name)(images)
    return images
