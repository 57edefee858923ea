"""Class activation maps with pytorch-grad-cam (the target layer comes from the registry), and Captum's Occlusion.

A page asks for one image's maps of every class at once (`class_maps`): one forward pass records the
target layer's output, and each class's gradient flows back only through the layers after it, so
switching the class never runs the model again. The method's own pytorch-grad-cam code turns those
activations and gradients into the map.

A loaded model is shared by every session of the app, and a hook sees every forward pass through its
layer, also another session's prediction running at the same moment; so a CAM records only the passes
of its own thread (`detached_output`; `make_cam` does the same for the library's own hooks), and
predictions never wait for a CAM.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from har_core.models.calibration_maths import temper
from har_core.data.imaging import resize_side
from har_core.models.inference import LoadedModel, logits_of
from har_core.models.registry import REGISTRY
from har_core.explain.slots import SLOW_SLOTS

METHODS = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "XGrad-CAM": XGradCAM, "LayerCAM": LayerCAM,
           "EigenCAM": EigenCAM, "ScoreCAM": ScoreCAM}
OCCLUSION = "Occlusion"  # Captum's: a grey patch slides over the picture; any model, no layer or gradient needed
EXPLANATIONS = (*METHODS, OCCLUSION)  # what a page offers
SLOW_METHODS = {"ScoreCAM", OCCLUSION}  # a forward per channel of the target layer / per patch position
PASS_PER_CLASS = {"ScoreCAM"}  # each class costs its own pass; Occlusion's one pass maps every class
CLASS_AGNOSTIC = {"EigenCAM"}  # the first principal component of the activations: the same map for every class




class OwnThreadActivations(ActivationsAndGradients):
    """Records activations (and registers gradient hooks) only for forward passes of the thread that
    created it: passes of other threads through the shared model are not this CAM's."""

    def __init__(self, *args, **kwargs):
        self.owner = threading.get_ident()
        super().__init__(*args, **kwargs)

    def save_activation(self, module, input, output):
        if threading.get_ident() == self.owner:
            super().save_activation(module, input, output)

    def save_gradient(self, module, input, output):
        if threading.get_ident() == self.owner:
            super().save_gradient(module, input, output)


class _LogitsOnly(torch.nn.Module):
    """pytorch-grad-cam expects a tensor of logits; some models return (logits, aux) in training."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return logits_of(self.model(x))


def make_cam(method: str, model: torch.nn.Module, layer: torch.nn.Module):
    """A pytorch-grad-cam object for `method` that records only this thread's passes through `layer`."""
    cam = METHODS[method](model=_LogitsOnly(model), target_layers=[layer])
    cam.activations_and_grads.release()
    cam.activations_and_grads = OwnThreadActivations(cam.model, [layer], None, cam.detach)
    return cam


@dataclass
class Explanation:
    heatmap: np.ndarray  # H × W in [0, 1], at the model's input resolution
    view: Image.Image  # the image exactly as the model saw it (resized and cropped)
    target: int  # class index explained
    probs: np.ndarray

    @property
    def empty(self) -> bool:
        """Zero everywhere: the method found nothing to show for this class here (a page says so, not a blank map)."""
        return not self.heatmap.any()


@dataclass
class ClassMaps:
    """One image's maps for several classes of one method, from a single forward pass: switching the class
    on a page picks a stored map instead of running the model again."""
    heatmaps: dict[int, np.ndarray]  # class index -> H × W map
    view: Image.Image
    probs: np.ndarray
    class_agnostic: bool = False  # one map (under the predicted class) that stands for every class

    @property
    def predicted(self) -> int:
        return int(self.probs.argmax())

    def explanation(self, target: int | None = None) -> Explanation:
        """The map of class `target` (default: the predicted class)."""
        target = self.predicted if target is None else int(target)
        heatmap = next(iter(self.heatmaps.values())) if self.class_agnostic else self.heatmaps.get(target)
        if heatmap is None:
            raise KeyError(f"no map of class {target} was computed")
        return Explanation(heatmap=heatmap, view=self.view, target=target, probs=self.probs)


def model_view(loaded: LoadedModel, batch: torch.Tensor) -> Image.Image:
    mean = torch.tensor(loaded.run.card["mean"]).view(3, 1, 1)
    std = torch.tensor(loaded.run.card["std"]).view(3, 1, 1)
    rgb = (batch[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def layer_for(loaded: LoadedModel, method: str = "Grad-CAM") -> str:
    """The dotted path of the layer `method` explains in this model (the registry's choice)."""
    return REGISTRY[loaded.run.card["model"]].layer_for(method)


def cam_layer(loaded: LoadedModel, method: str = "Grad-CAM") -> torch.nn.Module:
    return loaded.model.get_submodule(layer_for(loaded, method))


class RecordedPass:
    """Stands in for pytorch-grad-cam's hooks: the target layer's activations of one forward pass and the
    gradients of the class being mapped, handed to the method's own `compute_cam_per_layer`."""

    def __init__(self, activations: torch.Tensor):
        self.activations, self.gradients = [activations.detach()], []

    def release(self) -> None:
        pass


@contextlib.contextmanager
def detached_output(layer: torch.nn.Module):
    """During the block, this thread's passes through `layer` continue from a detached copy of its output that
    requires grad (yielded in a list): gradients of the logits then flow back only through the layers after
    the target layer, so each further class costs a small backward, never a forward. Other threads' passes
    (shared models) are left alone."""
    owner, recorded = threading.get_ident(), []

    def hook(module, args, output):
        if threading.get_ident() != owner:
            return None
        recorded.append(output.detach().requires_grad_(True))
        return recorded[-1]
    handle = layer.register_forward_hook(hook)
    try:
        yield recorded
    finally:
        handle.remove()


def class_maps(loaded: LoadedModel, image: Image.Image, method: str = "Grad-CAM",
               classes: list[int | None] | None = None) -> ClassMaps:
    """Maps of `method` for `classes` (None in the list: the predicted class; default: every class, or one map
    for a class-agnostic method) from one forward pass, each computed by the method's own pytorch-grad-cam
    code on that pass's activations and gradients."""
    if method not in EXPLANATIONS:
        raise ValueError(f"unknown explanation method '{method}'; choose from {', '.join(EXPLANATIONS)}")
    if method == OCCLUSION:
        return occlusion_maps(loaded, image, classes)
    layer = cam_layer(loaded, method)
    batch = loaded.preprocess([image])
    with detached_output(layer) as recorded, torch.enable_grad():
        logits = logits_of(loaded.model(batch))
    activations = recorded[0]
    probs = temper(logits.detach().float().softmax(1)[0].numpy(), loaded.temperature)  # calibrated, as Predict's
    if classes is None:
        classes = [None] if method in CLASS_AGNOSTIC else list(range(len(probs)))
    classes = [int(probs.argmax()) if c is None else int(c) for c in classes]
    cam = METHODS[method](model=_LogitsOnly(loaded.model), target_layers=[layer])
    cam.activations_and_grads.release()  # its hooks are not needed: the pass is recorded above
    heatmaps = {}
    with SLOW_SLOTS if method in SLOW_METHODS else contextlib.nullcontext():
        for target in classes:
            cam.activations_and_grads = RecordedPass(activations)
            if cam.uses_gradients:
                (gradients,) = torch.autograd.grad(logits[0, target], activations, retain_graph=True)
                cam.activations_and_grads.gradients = [gradients]
            per_layer = cam.compute_cam_per_layer(batch, [ClassifierOutputTarget(target)], eigen_smooth=False)
            heatmaps[target] = np.nan_to_num(cam.aggregate_multi_layers(per_layer)[0])
    return ClassMaps(heatmaps=heatmaps, view=model_view(loaded, batch), probs=probs,
                     class_agnostic=method in CLASS_AGNOSTIC)


def occlusion_window(size: int) -> tuple[int, int]:
    """(window, stride) in pixels for a square input of `size`: a patch a seventh of the side, moved half a patch,
    so about 13 × 13 positions whatever the input size (a person's hand or face at 224 px is ~30 px)."""
    window = max(4, round(size / 7))
    return window, max(2, window // 2)


def occlusion_maps(loaded: LoadedModel, image: Image.Image, classes: list[int | None] | None = None) -> ClassMaps:
    """Captum's Occlusion: how much each class's probability drops when a patch of the mean colour (0 after the
    model's normalisation) covers each part of the picture; only drops are shown (red: the part it needs). The
    covered pictures' forwards give every class's probability, so one pass maps every class (Captum with no
    target), at the cost of one: switching the class picks a computed map. `classes`: the maps kept (default
    every class)."""
    from captum.attr import Occlusion  # imported on first use: most visitors never ask for it
    batch = loaded.preprocess([image])
    with torch.inference_mode():
        probs = temper(logits_of(loaded.model(batch)).float().softmax(1)[0].numpy(), loaded.temperature)
    targets = range(len(probs)) if classes is None else [int(probs.argmax()) if c is None else int(c) for c in classes]
    window, stride = occlusion_window(batch.shape[-1])
    occlusion = Occlusion(lambda x: logits_of(loaded.model(x)).float().softmax(1))
    with SLOW_SLOTS, torch.inference_mode():
        drops = occlusion.attribute(batch, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                    baselines=0.0, target=None, perturbations_per_eval=16).sum(1).clamp(min=0)
    heatmaps = {}
    for target in targets:
        drop = drops[target]
        heatmaps[target] = (drop / drop.max() if drop.max() > 0 else drop).numpy()
    return ClassMaps(heatmaps=heatmaps, view=model_view(loaded, batch), probs=probs)


def explain(loaded: LoadedModel, image: Image.Image, method: str = "Grad-CAM",
            target: int | None = None) -> Explanation:
    """Heatmap of `method` for class `target` (default: the predicted class) at the registry's target layer."""
    return class_maps(loaded, image, method, classes=[target]).explanation(target)


def crop_box(size: tuple[int, int], input_size: int, crop_pct: float) -> tuple[float, float, float, float]:
    """Where the model's square view lies in a picture of `size` (width, height): timm's eval transform resizes
    the shorter side to floor(input_size / crop_pct) and cuts the centre input_size square."""
    width, height = size
    side = input_size * min(width, height) / resize_side(input_size, crop_pct)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def overlay_on_picture(explanation: Explanation, picture: Image.Image, input_size: int, crop_pct: float,
                       opacity: float = 0.5, longest: int = 640) -> Image.Image:
    """The heatmap over the whole picture, not only the model's square crop: what the model never saw is
    dimmed and the crop is outlined, so a non-square photo keeps its shape."""
    picture = picture.convert("RGB")
    picture.thumbnail((longest, longest))
    left, top, right, bottom = crop_box(picture.size, input_size, crop_pct)
    side = max(1, round(right - left))
    heat = np.asarray(Image.fromarray(np.uint8(255 * explanation.heatmap)).resize((side, side), Image.BILINEAR),
                      dtype=np.float32) / 255
    full = np.zeros((picture.height, picture.width), dtype=np.float32)
    x0, y0 = round(left), round(top)
    xs, ys = slice(max(0, x0), min(picture.width, x0 + side)), slice(max(0, y0), min(picture.height, y0 + side))
    full[ys, xs] = heat[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    rgb = np.asarray(picture, dtype=np.float32) / 255
    blended = show_cam_on_image(rgb, full, use_rgb=True, image_weight=1 - opacity)
    inside = np.zeros(full.shape, dtype=bool)
    inside[ys, xs] = True
    blended[~inside] = (0.45 * np.asarray(picture)[~inside]).astype(np.uint8)  # outside the model's view
    result = Image.fromarray(blended)
    ImageDraw.Draw(result).rectangle([xs.start, ys.start, xs.stop - 1, ys.stop - 1], outline="white",
                                     width=max(2, picture.width // 200))
    return result


def overlay(explanation: Explanation, opacity: float = 0.5) -> Image.Image:
    """The heatmap blended over the model's view; opacity 0 shows only the photo, 1 only the map."""
    rgb = np.asarray(explanation.view, dtype=np.float32) / 255
    return Image.fromarray(show_cam_on_image(rgb, explanation.heatmap, use_rgb=True, image_weight=1 - opacity))
