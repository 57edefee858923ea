"""What if the picture were darker, blurred, turned, zoomed or partly covered?

One definition of the edits serves both the Predict page's What-if panel (a visitor's sliders) and the
robustness benchmark (`train.robustness`: every corruption at three strengths, ImageNet-C style). Edits are
torchvision's functional transforms, but for brightness, mirroring and a covered box alone, which NumPy does in the
very float32 steps torchvision takes (the same pixels, without torch's start or its threads on every slider move);
`as_model_sees` applies one the single way both use: after the model's own resize (the first step of its eval
transform), before its centre crop. So each model is edited at its own size
whichever other models are compared with it (per-pixel noise keeps its strength: a later downscale would
average it away), and an edit that changes no pixel gives the very picture the model meets unedited. Sizes
(blur, the covered box) are fractions of the picture, so a strength means the same on a phone photo and on a
thumbnail; noise is seeded, so the same edit of the same picture is the same picture (and a cached answer stays
right).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from har_core.data.datasets import EvalResize, EvalTransform

# torch and torchvision are imported by the edits themselves: the panel's untouched picture (every visitor's first
# look, right under Predict's first answer) needs neither (#41)
if TYPE_CHECKING:
    import torch

GREY = 0.5  # what covers a box: mid-grey, as occlusion studies use


@dataclass(frozen=True)
class Edit:
    brightness: float = 1.0  # factor: 0.5 half as bright, 1.5 half again as bright
    contrast: float = 1.0  # factor: 0 flat grey, 1 unchanged
    blur: float = 0.0  # Gaussian blur, its sigma as a fraction of the picture's shorter side
    noise: float = 0.0  # Gaussian noise, its standard deviation on pixel values in [0, 1]
    rotation: float = 0.0  # degrees, counter-clockwise; the corners left empty are black
    zoom: float = 1.0  # ≥ 1: the centre 1/zoom of the picture, enlarged back to its size
    flip: bool = False  # mirrored left to right
    cover: tuple[float, float, float, float] | None = None  # (left, top, right, bottom) fractions, painted grey

    @property
    def unchanged(self) -> bool:
        return self == Edit()


def own_resize(transform) -> EvalResize:
    """The first step of a model's eval transform (har_core.data.datasets.EvalTransform): the resize of the shorter
    side to floor(input / crop_pct) with the model's own interpolation."""
    if not isinstance(transform, EvalTransform):
        raise ValueError(f"a What-if edit needs an image model's eval transform (a resize first), not {transform!r}")
    return transform.resize


def as_model_sees(image: Image.Image, edit: Edit, transform, seed: int = 0) -> Image.Image:
    """The picture a model with eval transform `transform` meets after the edit: its own resize, then the edit
    at that size. The transform then finds the picture at its size already (a resize to the size a picture has
    leaves it untouched) and crops its centre, so `transform(as_model_sees(image, Edit(), transform))` is
    `transform(image)`: the What-if panel's "before" and "after" and the robustness benchmark's clean and
    corrupted passes take one path."""
    return apply(own_resize(transform)(image), edit, seed)


def apply(image: Image.Image, edit: Edit, seed: int = 0) -> Image.Image:
    """The picture with the edit applied at its size (the picture itself when the edit changes nothing; pixel
    values rounded, so an edit too small to change a pixel changes none)."""
    if edit.unchanged:
        return image
    if replace(edit, brightness=1.0, flip=False, cover=None).unchanged:
        return apply_in_numpy(image, edit)
    import torch
    import torchvision.transforms.v2.functional as F
    image = image.convert("RGB")
    picture = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)  # (3, H, W) in [0, 1]
    height, width = picture.shape[-2:]
    if edit.zoom > 1:
        side_h, side_w = max(1, round(height / edit.zoom)), max(1, round(width / edit.zoom))
        picture = F.resized_crop(picture, (height - side_h) // 2, (width - side_w) // 2, side_h, side_w,
                                 [height, width], antialias=True)
    if edit.rotation:
        picture = F.rotate(picture, edit.rotation, interpolation=F.InterpolationMode.BILINEAR)
    if edit.flip:
        picture = F.hflip(picture)
    if edit.brightness != 1:
        picture = F.adjust_brightness(picture, edit.brightness)
    if edit.contrast != 1:
        picture = F.adjust_contrast(picture, edit.contrast)
    if edit.blur > 0:
        picture = gaussian_blur(picture, edit.blur * min(height, width))
    if edit.noise > 0:
        noise = torch.randn(picture.shape, generator=torch.Generator().manual_seed(seed))
        picture = (picture + edit.noise * noise).clamp(0, 1)
    if edit.cover is not None:
        picture[(slice(None), *covered(edit.cover, height, width))] = GREY
    return F.to_pil_image((picture * 255).round().to(torch.uint8))  # to_dtype truncates: 1.0001 × 250 gave 251


def apply_in_numpy(image: Image.Image, edit: Edit) -> Image.Image:
    """`apply` of an edit that only changes the brightness, mirrors or covers a box, in NumPy: the float32 steps of
    the torch path (to [0, 1] times 1/255, times the factor and clamped to [0, 1], the box painted grey, times 255
    rounded half to even), so every pixel comes out as torch gives it, and a slider move needs no torch (under
    load its two threads cost ~50 ms an operation, and its first import a second)."""
    picture = np.asarray(image.convert("RGB"), dtype=np.float32) * np.float32(1.0 / 255)  # (H, W, 3)
    if edit.flip:
        picture = picture[:, ::-1]
    if edit.brightness != 1:
        picture = np.clip(picture * np.float32(edit.brightness), 0, 1)
    if edit.cover is not None:
        picture = np.array(picture)  # writable (a mirrored picture is a view)
        picture[covered(edit.cover, *picture.shape[:2])] = GREY
    return Image.fromarray(np.round(picture * np.float32(255)).astype(np.uint8))


def covered(cover: tuple[float, float, float, float], height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns a covered box (left, top, right, bottom as fractions of the picture) paints: one rule
    for the torch and the NumPy edits, so both paint the very same pixels."""
    left, top, right, bottom = cover
    return slice(round(top * height), round(bottom * height)), slice(round(left * width), round(right * width))


def gaussian_blur(picture: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of a (3, H, W) picture as two 1-D passes (rows, then columns) with reflected edges, as
    torchvision's `gaussian_blur` but separable: its 2-D kernel costs seconds at a sigma of 25 px."""
    import torch
    radius = min(math.ceil(3 * sigma), min(picture.shape[-2:]) - 1)  # reflection needs the picture wider
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).expand(3, 1, 1, -1)
    picture = torch.nn.functional.pad(picture[None], (radius, radius, 0, 0), mode="reflect")
    picture = torch.nn.functional.conv2d(picture, kernel, groups=3)
    picture = torch.nn.functional.pad(picture, (0, 0, radius, radius), mode="reflect")
    return torch.nn.functional.conv2d(picture, kernel.transpose(2, 3), groups=3)[0]


def centre_box(area: float) -> tuple[float, float, float, float]:
    """A centred square-ish box covering `area` of the picture (sides sqrt(area) of each side)."""
    half = math.sqrt(area) / 2
    return (0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half)


# The robustness benchmark's corruptions, each at three strengths (strength 0 is the picture as given): mild,
# clearly visible, hard; chosen so that a person still names the action at the hardest.
CORRUPTIONS: dict[str, tuple[Edit, Edit, Edit]] = {
    "darker": tuple(Edit(brightness=b) for b in (0.6, 0.35, 0.2)),
    "less contrast": tuple(Edit(contrast=c) for c in (0.6, 0.35, 0.2)),
    "blur": tuple(Edit(blur=s) for s in (0.005, 0.012, 0.025)),
    "noise": tuple(Edit(noise=n) for n in (0.05, 0.1, 0.2)),
    "rotation": tuple(Edit(rotation=r) for r in (10.0, 20.0, 35.0)),
    "zoom": tuple(Edit(zoom=z) for z in (1.25, 1.6, 2.0)),
    "centre covered": tuple(Edit(cover=centre_box(a)) for a in (0.1, 0.2, 0.35)),
}
STRENGTHS = (1, 2, 3)


def corruption(name: str, strength: int) -> Edit:
    """The edit of a corruption at strength 1–3 (0: none)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    return Edit() if strength == 0 else CORRUPTIONS[name][strength - 1]

