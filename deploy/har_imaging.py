"""The one guarded entry point for decoding images: app uploads, the CLI and data loading all use it; and the one
eval preprocessing of a decoded picture (`eval_pixels`), which PyTorch, ONNX Runtime and deploy/predict.py share."""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024  # a phone photo is a few MB
    max_pixels: int = 64_000_000  # 8000×8000; beyond this decoding costs too much memory
    min_side: int = 8
    max_aspect: float = 50.0
    # Large JPEGs decode at the smallest power-of-two reduction (libjpeg's draft mode) that keeps both
    # sides at least this long: a 12-megapixel photo decodes ~8× faster. Every model here resizes to
    # at most 342 px, so they still downscale from at least 1.5× their size; smaller images (the data
    # sets) decode exactly as before.
    draft_side: int = 512


DEFAULT_LIMITS = ImageLimits()


# The image formats HAR Studio reads (data sets, uploads, folders to predict): the one list.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageError(ValueError):
    """An image that cannot be used, with a one-line reason fit to show a person."""


def safe_name(name: str) -> str:
    """A display name with no directory parts (uploads may carry '../' or separators)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "image"
    return "".join(ch if ch.isprintable() else "_" for ch in base)[:120]


def read_file(path: str | Path, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of an image file, refusing what is missing or over the size limit before reading it."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"file not found: {path.name}")
    if path.stat().st_size > limits.max_bytes:
        raise ImageError(f"file is larger than {limits.max_bytes // 2**20} MB")
    return path.read_bytes()


def load_image(source: bytes | str | Path, limits: ImageLimits = DEFAULT_LIMITS,
               draft_size: int | None = None) -> Image.Image:
    """Decode to an upright RGB image or raise ImageError with a short reason.

    JPEGs larger than `draft_size` (default `limits.draft_side`; 0: never) on both sides are decoded
    at a power-of-two reduction that keeps them at least that large.
    """
    data = read_file(source, limits) if isinstance(source, (str, Path)) else bytes(source)
    if not data:
        raise ImageError("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(f"file is larger than {limits.max_bytes // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageError(f"image is too large ({width}×{height} pixels, {width * height / 1e6:.0f} "
                                 f"megapixels; the limit is "
                                 f"{limits.max_pixels // 1_000_000} megapixels): make it smaller and try again")
            if min(width, height) < limits.min_side:
                raise ImageError(f"image is too small ({width}×{height} pixels)")
            if max(width, height) / min(width, height) > limits.max_aspect:
                raise ImageError(f"image is an extreme strip ({width}×{height} pixels)")
            draft_size = limits.draft_side if draft_size is None else draft_size
            if draft_size and image.format == "JPEG":
                image.draft(None, (draft_size, draft_size))
            image.seek(0)  # animated files: the first frame
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an already upright image
            return to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        over = min(limits.max_pixels, Image.MAX_IMAGE_PIXELS or limits.max_pixels)  # Pillow's own bound refused it
        raise ImageError(f"image is too large (over {over // 1_000_000} megapixels, more than is safe to decode): "
                         "make it smaller and try again") from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image: an unsupported format or a damaged file "
                         f"(use {', '.join(s[1:].upper() for s in IMAGE_SUFFIXES)})") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # not the decoder's own words ("image file is truncated (106 bytes not processed)"): noise to a class
        raise ImageError("the image is damaged or truncated: it cannot be decoded") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is flattened on white, high bit depths are rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255 if high > low else array * 0
        image = Image.fromarray(scaled.astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def image_digest(image: Image.Image) -> str:
    """What an image's results are cached by: its decoded pixels (two uploads of one photo share them)."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


# PIL's filters by the names cards and timm's configs use (every registry entry's interpolation is one of these)
RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
              "lanczos": Image.LANCZOS}


def resize_side(input_size: int, crop_pct: float) -> int:
    """The shorter side a picture is resized to before its centre `input_size` crop (timm's rule): every
    transform, the CAM overlay's crop outline, the What-if edits and the robustness passes use this one."""
    return int(input_size / crop_pct)


def eval_resize(image: Image.Image, side: int, interpolation: str) -> Image.Image:
    """The first step of the eval preprocessing: the shorter side to `side` (`resize_side`), the longer
    in proportion (rounded down), with the run's interpolation: torchvision's Resize(side) on a PIL picture."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if short == side:  # already at its size (an edited picture): untouched, as torchvision leaves it
        return image
    new_long = int(side * long / short)
    return image.resize((side, new_long) if width <= height else (new_long, side), RESAMPLING[interpolation])


def eval_pixels(image: Image.Image, size: int, crop_pct: float, interpolation: str, mean, std):
    """A picture as a run's network eats it, a float32 (3, size, size) array: timm's eval transform (resize the
    shorter side to floor(size / crop_pct), centre crop, [0, 1], normalise) in PIL and NumPy, so the answer path
    needs no torch. tests/test_registry.py holds it to timm's and torchvision's own transforms."""
    import numpy as np
    image = eval_resize(image, resize_side(size, crop_pct), interpolation)
    left, top = int(round((image.width - size) / 2.0)), int(round((image.height - size) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    pixels = pixels.transpose(2, 0, 1).astype(np.float32) / 255
    return (pixels - np.asarray(mean, np.float32).reshape(3, 1, 1)) / np.asarray(std, np.float32).reshape(3, 1, 1)
