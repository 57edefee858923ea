"""Shared fixtures: tiny data sets the tests generate, and a tiny trained run folder."""
from __future__ import annotations

import os

# pytest-xdist runs the suite on several processes (pytest.ini): each gets its share of the cores for torch, ONNX
# Runtime (which follows torch) and BLAS, set before any of them is imported; more threads than cores made the
# training tests several times slower (their threads spin waiting for each other)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import html
import io
import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TQDM_DISABLE", "1")
if "HAR_CACHE" not in os.environ:  # stored scans of the suite's own folders: a folder of this run, not ~/.cache
    import tempfile
    os.environ["HAR_CACHE"] = tempfile.mkdtemp(prefix="har-test-cache-")
if "HAR_TRAIN_DIR" not in os.environ:  # cached training views of the suite's runs: never the user's ~/har-train
    import tempfile
    os.environ["HAR_TRAIN_DIR"] = tempfile.mkdtemp(prefix="har-test-train-")

ROOT = Path(__file__).resolve().parents[1]
SPORTS15 = ROOT.parent / "shared" / "data" / "sports15"
CLASSES = ["cycling", "dancing", "sleeping"]


# a Predict card as drawn (har_core.evaluation.plots.answer_card): the model's name, its answer, "67% sure"
PREDICT_CARD = re.compile(r'<div class="har-card"><p><strong>(.*?)</strong></p><h3>(.*?)</h3><p><strong>(\d+% sure)')


def predict_cards(at) -> list[tuple[str, str, str]]:
    """Predict's cards in the page's order, read from what AppTest holds: (model, answer, "67% sure")."""
    return [tuple(map(html.unescape, card.groups())) for element in at.get("html")
            if (card := PREDICT_CARD.search(element.value))]


def synthetic_image(label: int, seed: int, size: int = 40) -> Image.Image:
    """Class 0: red horizontal stripes, 1: green vertical stripes, 2: blue checks — with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    pattern = [(y // 4) % 2, (x // 4) % 2, ((x // 5) + (y // 5)) % 2][label]
    image = rng.integers(0, 60, (size, size, 3)).astype(np.float64)
    image[..., label] += 150 * pattern + 40
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def write_kaggle_dataset(root: Path, per_class: int = 12, extras: bool = True) -> Path:
    """The Kaggle layout: Training_set.csv + train/, Testing_set.csv + test/; optionally with faults."""
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows, n = [], 0
    for label, name in enumerate(CLASSES):
        for _ in range(per_class):
            n += 1
            synthetic_image(label, seed=n).save(root / "train" / f"Image_{n}.jpg", quality=95)
            rows.append(f"Image_{n}.jpg,{name}")
    if extras:
        (root / "train" / "Image_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
        rows.append("Image_broken.jpg,cycling")
        rows.append("Image_missing.jpg,dancing")
    (root / "Training_set.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    tests = []
    for i in range(6):
        synthetic_image(i % 3, seed=1000 + i).save(root / "test" / f"Image_{i + 1}.jpg", quality=95)
        tests.append(f"Image_{i + 1}.jpg")
    (root / "Testing_set.csv").write_text("filename\n" + "\n".join(tests) + "\n")
    return root


def write_folder_dataset(root: Path, per_class: int = 5) -> Path:
    n = 0
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for _ in range(per_class):
            n += 1
            synthetic_image(label, seed=n).save(root / name / f"img_{n}.png")
    return root


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's, for the browser tests


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for a module's browser tests (Playwright)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def kaggle_data(tmp_path_factory) -> Path:
    return write_kaggle_dataset(tmp_path_factory.mktemp("kaggle"))


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("folders"))


TINY_FLAGS = ["--image-size", "32", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--quiet",
              "--lr", "3e-3", "--augment", "flip", "--pretrained", "none", "--weighted-sampler", "false",
              "--warmup-epochs", "0", "--patience", "0"]


class _Unseekable(io.RawIOBase):
    """Where a browser's MediaRecorder writes: a stream the muxer cannot go back in to write the duration."""

    def __init__(self):
        self.chunks = []

    def writable(self):
        return True

    def write(self, data):
        self.chunks.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


def encode_clip(frames, fps=10, codec="mpeg4", container="mp4", times=None, rotation=0, streamed=False) -> bytes:
    """Frames (H×W×3 uint8) as a clip; `times` (seconds) gives each frame its own timestamp (variable rate);
    `rotation` (degrees counter-clockwise) is stored in the display matrix, as phones do; `streamed`: written to
    a stream, as a browser recording is (a webm then states no duration)."""
    buffer = _Unseekable() if streamed else io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = int(times[i] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def moving_square_clip(direction: str, rng, frames: int = 32, size: int = 48, square: int = 10) -> list:
    """A square of one colour moving a pixel per frame over a background of noise; where it starts is
    random, so a single frame shows a square somewhere and says nothing about where it goes."""
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    dy, dx = DIRECTIONS[direction]
    travel = frames - 1
    y0, x0 = (int(rng.integers(travel if d < 0 else 0, size - square - (travel if d > 0 else 0) + 1))
              for d in (dy, dx))
    clip = []
    for t in range(frames):
        frame = background.copy()
        frame[y0 + dy * t:y0 + dy * t + square, x0 + dx * t:x0 + dx * t + square] = colour
        clip.append(frame)
    return clip


def write_moving_squares(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """A class-folder clip data set: left/, right/, up/, down/, each of `per_class` mp4 clips."""
    rng = np.random.default_rng(seed)
    for direction in DIRECTIONS:
        (root / direction).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / direction / f"{direction}_{i:03d}.mp4").write_bytes(
                encode_clip(moving_square_clip(direction, rng)))
    return root


def train_tiny(data: Path, out: Path, name: str, model: str = "custom_cnn", extra=()) -> Path:
    from train import train
    return train.main(["--model", model, "--data", str(data), "--out", str(out), "--name", name,
                       *TINY_FLAGS, *extra])


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, kaggle_data) -> Path:
    """A folder of two tiny trained runs (two architectures) on the synthetic data."""
    out = tmp_path_factory.mktemp("runs")
    first = train_tiny(kaggle_data, out, "custom_cnn")
    train_tiny(kaggle_data, out, "mobilenet_v2", model="mobilenet_v2",
               extra=["--split", str(first / "split.csv"), "--epochs", "1"])
    return out


@pytest.fixture(scope="session")
def exported_tiny_runs(tmp_path_factory, tiny_runs, kaggle_data) -> Path:
    """The tiny runs, each exported to ONNX (`make exports` without int8): the app's default backend serves them
    through ONNX Runtime."""
    from har_core.models.export import export_run
    out = tmp_path_factory.mktemp("exported") / "runs"
    shutil.copytree(tiny_runs, out)
    for run in sorted(p for p in out.iterdir() if (p / "card.json").is_file()):
        export_run(run, data=kaggle_data)
    return out


def set_temperature(run_dir: Path, temperature: float) -> Path:
    """Put a calibration temperature on a run's card, as train.calibrate does (the tiny runs' 6 val pictures are
    too few to fit one)."""
    import json
    from har_core.data.fileio import file_sha256
    card = json.loads((run_dir / "card.json").read_text())
    card["calibration"] = {"temperature": temperature, "fitted_on": "val", "n": 6,
                           "manifest_sha256": file_sha256(run_dir / "split.csv")}
    (run_dir / "card.json").write_text(json.dumps(card))
    return run_dir


@pytest.fixture
def copy_of(tmp_path):
    def _copy(folder: Path) -> Path:
        target = tmp_path / folder.name
        shutil.copytree(folder, target)
        return target
    return _copy


SQUARE_FLAGS = ["--image-size", "32", "--epochs", "6", "--batch-size", "8", "--lr", "3e-3", "--augment", "rrc",
                "--warmup-epochs", "1", "--patience", "0", "--weighted-sampler", "false", "--seed", "0"]


@pytest.fixture(scope="session")
def moving_squares(tmp_path_factory) -> Path:
    return write_moving_squares(tmp_path_factory.mktemp("squares"))


@pytest.fixture(scope="session")
def square_runs(tmp_path_factory, moving_squares) -> Path:
    """c3d_small trained on the moving squares, and custom_cnn trained on each clip's middle frame alone
    (the same split, the same recipe): the clip model sees motion, the image model only a square somewhere."""
    from har_core.data.datasets import read_manifest, write_manifest
    from har_core.data.video import read_clip
    out = tmp_path_factory.mktemp("square_runs")
    clips = train_tiny(moving_squares, out, "c3d_small", model="c3d_small", extra=SQUARE_FLAGS)
    frames = tmp_path_factory.mktemp("middle_frames")
    for clip in moving_squares.glob("*/*.mp4"):
        (frames / clip.parent.name).mkdir(exist_ok=True)
        read_clip(clip, count=1).frames[0].save(frames / clip.parent.name / f"{clip.stem}.png")
    manifest = read_manifest(clips / "split.csv")
    manifest["filename"] = manifest["filename"].str.replace(".mp4", ".png")
    write_manifest(manifest, frames / "split.csv")
    train_tiny(frames, out, "custom_cnn_frames",
               extra=[*SQUARE_FLAGS, "--split", str(frames / "split.csv"), "--embed", "false"])
    return out


# the longest files first: the suite's processes take a file at a time, so a long file left for last would run alone
LONGEST_FIRST = ("test_e2e_browser.py", "test_app.py", "test_export.py", "test_train.py", "test_trunk.py",
                 "test_registry.py", "test_video_models.py", "test_cam.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


def pytest_sessionfinish(session, exitstatus):
    """Let the app's model warm-up threads finish: a daemon thread still inside torch when the interpreter exits
    aborts it ("terminate called without an active exception", exit 134) after the tests have passed."""
    import threading
    for thread in threading.enumerate():
        if thread.name == "har-warm-up":
            thread.join(timeout=300)
