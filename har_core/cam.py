"""Class activation maps with pytorch-grad-cam; the target layer comes from the registry.

A loaded model is shared by every session of the app. pytorch-grad-cam records activations with
forward hooks on the target layer, and a hook sees every forward pass through it, also another
session's prediction running at the same moment; so each CAM records only the passes of its own
thread (`OwnThreadActivations`), and predictions never wait for a CAM.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from har_core.inference import LoadedModel, logits_of
from har_core.registry import REGISTRY

METHODS = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "XGrad-CAM": XGradCAM, "LayerCAM": LayerCAM,
           "EigenCAM": EigenCAM, "ScoreCAM": ScoreCAM}
SLOW_METHODS = {"ScoreCAM"}  # one forward per channel of the target layer
CLASS_AGNOSTIC = {"EigenCAM"}  # the first principal component of the activations: the same map for every class


class Busy(RuntimeError):
    """Every slot for a slow method is taken by other visitors; the message says what to do."""


class SlowSlots:
    """A server-wide bound on concurrent slow CAMs, so a few visitors cannot stall everyone else."""

    def __init__(self, slots: int = 1, wait_s: float = 60.0):
        self.wait_s = wait_s
        self.resize(slots)

    def resize(self, slots: int) -> None:
        """Set the number of slots (the server does this once, from the operator's settings, before use)."""
        self.slots = max(1, int(slots))
        self._semaphore = threading.BoundedSemaphore(self.slots)

    def __enter__(self):
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise Busy(f"the server is already computing {self.slots} slow explanation(s) for other visitors; "
                       "try again in a minute or choose a faster method (Grad-CAM)")
        return self

    def __exit__(self, *exc):
        self._semaphore.release()


SLOW_SLOTS = SlowSlots()


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


def model_view(loaded: LoadedModel, batch: torch.Tensor) -> Image.Image:
    mean = torch.tensor(loaded.run.card["mean"]).view(3, 1, 1)
    std = torch.tensor(loaded.run.card["std"]).view(3, 1, 1)
    rgb = (batch[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def cam_layer(loaded: LoadedModel) -> torch.nn.Module:
    return loaded.model.get_submodule(REGISTRY[loaded.run.card["model"]].cam_layer)


def explain(loaded: LoadedModel, image: Image.Image, method: str = "Grad-CAM",
            target: int | None = None) -> Explanation:
    """Heatmap of `method` for class `target` (default: the predicted class) at the registry's target layer."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method '{method}'; choose from {', '.join(METHODS)}")
    batch = loaded.preprocess([image])
    with torch.no_grad():
        probs = logits_of(loaded.model(batch)).softmax(1)[0].numpy()
    target = int(probs.argmax()) if target is None else int(target)
    # loaded models' weights need no gradient; the input's does, so backward builds the graph through the
    # target layer without computing (or storing on the shared model) any weight gradient
    differentiable = batch.clone().requires_grad_(True)
    with make_cam(method, loaded.model, cam_layer(loaded)) as cam, \
            (SLOW_SLOTS if method in SLOW_METHODS else contextlib.nullcontext()):
        heatmap = cam(input_tensor=differentiable, targets=[ClassifierOutputTarget(target)])[0]
    return Explanation(heatmap=np.nan_to_num(heatmap), view=model_view(loaded, batch), target=target, probs=probs)


def overlay(explanation: Explanation, opacity: float = 0.5) -> Image.Image:
    """The heatmap blended over the model's view; opacity 0 shows only the photo, 1 only the map."""
    rgb = np.asarray(explanation.view, dtype=np.float32) / 255
    return Image.fromarray(show_cam_on_image(rgb, explanation.heatmap, use_rgb=True, image_weight=1 - opacity))
