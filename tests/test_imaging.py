"""A corpus of hostile and odd images: each ends in a prediction or a one-line explanation."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_image
from har_core.data.imaging import ImageError, ImageLimits, load_image, safe_name


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size=(64, 48)) -> Image.Image:
    return synthetic_image(0, seed=5, size=64).resize(size)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def broken_crc_png() -> bytes:
    data = bytearray(encoded(photo(), "PNG"))
    data[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    wide = Image.new("RGB", (80, 40), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 40, 40))  # left half blue
    exif = wide.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    return encoded(wide, "JPEG", exif=exif.tobytes(), quality=95)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency() -> bytes:
    image = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encoded(image, "PNG", transparency=0)


def sixteen_bit_png() -> bytes:
    array = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    return encoded(Image.fromarray(array), "PNG")


def float_tiff() -> bytes:
    return encoded(Image.fromarray(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)), "TIFF")


OK = {  # name -> bytes that must decode to an RGB image
    "jpeg": lambda: encoded(photo(), "JPEG"),
    "png": lambda: encoded(photo(), "PNG"),
    "webp": lambda: encoded(photo(), "WEBP"),
    "bmp": lambda: encoded(photo(), "BMP"),
    "tiff": lambda: encoded(photo(), "TIFF"),
    "grayscale L": lambda: encoded(photo().convert("L"), "PNG"),
    "LA": lambda: encoded(photo().convert("LA"), "PNG"),
    "palette P with transparency": palette_with_transparency,
    "CMYK jpeg": lambda: encoded(photo().convert("CMYK"), "JPEG"),
    "RGBA png": lambda: encoded(photo().convert("RGBA"), "PNG"),
    "16-bit png": sixteen_bit_png,
    "I;16 tiff": lambda: encoded(Image.fromarray(np.full((48, 64), 4000, np.uint16)), "TIFF"),
    "32-bit I tiff": lambda: encoded(Image.fromarray(np.arange(64 * 48, dtype=np.int32).reshape(48, 64)), "TIFF"),
    "float tiff": float_tiff,
    "exif rotated jpeg": exif_rotated_jpeg,
    "animated gif": lambda: animated("GIF"),
    "animated webp": lambda: animated("WEBP"),
    "1-bit": lambda: encoded(photo().convert("1"), "PNG"),
    "large photo": lambda: encoded(photo((3000, 2000)), "JPEG"),
    "progressive jpeg": lambda: encoded(photo(), "JPEG", progressive=True),
    "tall photo": lambda: encoded(photo((40, 900)), "PNG"),
}

REJECTED = {  # name -> (bytes, words the one-line message must contain)
    "zero-byte file": (lambda: b"", "empty"),
    "text renamed .jpg": (lambda: b"hello, I am not a picture\n" * 20, "not a readable image"),
    "html renamed .jpg": (lambda: b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
                          "not a readable image"),
    "truncated jpeg": (lambda: encoded(photo((400, 300)), "JPEG")[:1500], "damaged or truncated"),
    "png with broken crc": (broken_crc_png, "damaged"),
    "decompression bomb": (lambda: png_declaring(40000, 40000), "over 64 megapixels"),  # the limit, then what to do
    "over the pixel limit": (lambda: png_declaring(9000, 8000),  # how large it is too (#41 walk)
                             "9000×8000 pixels, 72 megapixels; the limit is 64 megapixels): make it smaller"),
    "1x1 image": (lambda: encoded(Image.new("RGB", (1, 1)), "PNG"), "too small"),
    "10000x10 strip": (lambda: encoded(Image.new("RGB", (10000, 10)), "PNG"), "strip"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
            "not a readable image"),
    "heic-like unsupported": (lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
                              "not a readable image"),
    "over the size limit": (lambda: b"\xff\xd8" + b"\x00" * (2 * 1024 * 1024), "larger than 1 MB"),
}


@pytest.mark.parametrize("name", sorted(OK))
def test_odd_but_valid_images_decode_to_rgb(name):
    image = load_image(OK[name]())
    assert image.mode == "RGB" and min(image.size) >= 8


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_hostile_inputs_get_a_one_line_reason(name):
    make, words = REJECTED[name]
    limits = ImageLimits(max_bytes=1024 * 1024) if name == "over the size limit" else ImageLimits()
    with pytest.raises(ImageError) as caught:
        load_image(make(), limits)
    message = str(caught.value)
    assert words in message and "\n" not in message and len(message) < 200


def test_the_corpus_is_at_least_thirty_cases():
    assert len(OK) + len(REJECTED) >= 30


def test_exif_orientation_is_applied():
    image = load_image(exif_rotated_jpeg())
    assert image.size == (40, 80)  # upright: portrait
    top = np.asarray(image)[5, 20]
    assert top[2] > 200 and top[0] < 60  # the blue half ends on top after the 90° turn


def test_animated_files_use_their_first_frame():
    assert np.asarray(load_image(animated("GIF")))[0, 0].tolist()[0] > 200  # red first frame


def test_transparency_is_flattened_on_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert np.asarray(load_image(encoded(rgba, "PNG")))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("raw, shown", [("../../etc/passwd", "passwd"), ("C:\\Users\\x\\photo.jpg", "photo.jpg"),
                                        ("a/b/../c.png", "c.png"), ("", "image"), ("bad\x00name.jpg", "bad_name.jpg")])
def test_upload_names_lose_their_directories(raw, shown):
    assert safe_name(raw) == shown


def test_every_case_ends_in_a_prediction_or_a_reason(tiny_runs):
    """The same corpus through a real model: no exception escapes except ImageError."""
    from har_core.models.inference import load_run
    model = load_run(tiny_runs / "custom_cnn")
    predicted, explained = 0, 0
    for make in list(OK.values()) + [make for make, _ in REJECTED.values()]:
        try:
            probs = model.predict([load_image(make(), ImageLimits(max_bytes=1024 * 1024))])
            assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-5
            predicted += 1
        except ImageError:
            explained += 1
    assert predicted == len(OK) and explained == len(REJECTED)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_large_jpegs_decode_in_draft_mode_upright_and_close_to_the_full_decode(mode):
    big = photo().resize((2400, 1600), Image.BICUBIC).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    data = encoded(big, "JPEG", quality=90, exif=exif)
    drafted, full = load_image(data), load_image(data, draft_size=0)
    assert full.size == (1600, 2400) and drafted.size == (800, 1200)  # halved, still ≥ 512 on both sides
    assert drafted.mode == full.mode == "RGB"
    shrunk = np.asarray(full.resize(drafted.size, Image.BOX), dtype=float)
    assert np.abs(np.asarray(drafted, dtype=float) - shrunk).mean() < 3  # the same picture, 0–255 scale
    small = encoded(photo((400, 300)), "JPEG")
    assert np.array_equal(np.asarray(load_image(small)), np.asarray(load_image(small, draft_size=0)))
