"""Class activation maps with pytorch-grad-cam; the target layer comes from the registry."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from har_core.inference import LoadedModel, logits_of
from har_core.registry import REGISTRY

METHODS = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "XGrad-CAM": XGradCAM, "LayerCAM": LayerCAM,
           "EigenCAM": EigenCAM, "ScoreCAM": ScoreCAM}
SLOW_METHODS = {"ScoreCAM"}  # one forward per channel of the target layer


class _LogitsOnly(torch.nn.Module):
    """pytorch-grad-cam expects a tensor of logits; some models return (logits, aux) in training."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return logits_of(self.model(x))


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


def explain(loaded: LoadedModel, image: Image.Image, method: str = "Grad-CAM",
            target: int | None = None) -> Explanation:
    """Heatmap of `method` for class `target` (default: the predicted class)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method '{method}'; choose from {', '.join(METHODS)}")
    batch = loaded.preprocess([image])
    layer = loaded.model.get_submodule(REGISTRY[loaded.run.card["model"]].cam_layer)
    with loaded.lock:  # CAM hooks live on the shared model: one explanation at a time per model
        with torch.no_grad():
            probs = logits_of(loaded.model(batch)).softmax(1)[0].numpy()
        target = int(probs.argmax()) if target is None else int(target)
        with METHODS[method](model=_LogitsOnly(loaded.model), target_layers=[layer]) as cam:
            heatmap = cam(input_tensor=batch, targets=[ClassifierOutputTarget(target)])[0]
    return Explanation(heatmap=np.nan_to_num(heatmap), view=model_view(loaded, batch), target=target, probs=probs)


def overlay(explanation: Explanation, opacity: float = 0.5) -> Image.Image:
    """The heatmap blended over the model's view; opacity 0 shows only the photo, 1 only the map."""
    rgb = np.asarray(explanation.view, dtype=np.float32) / 255
    return Image.fromarray(show_cam_on_image(rgb, explanation.heatmap, use_rgb=True, image_weight=1 - opacity))
