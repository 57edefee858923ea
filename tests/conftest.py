"""Shared fixtures: tiny data sets the tests generate, and a tiny trained run folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
SPORTS15 = ROOT.parent / "shared" / "data" / "sports15"
CLASSES = ["cycling", "dancing", "sleeping"]


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


@pytest.fixture(scope="session")
def kaggle_data(tmp_path_factory) -> Path:
    return write_kaggle_dataset(tmp_path_factory.mktemp("kaggle"))


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("folders"))


TINY_FLAGS = ["--image-size", "32", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--quiet",
              "--lr", "3e-3", "--augment", "flip", "--pretrained", "none", "--weighted-sampler", "false",
              "--warmup-epochs", "0", "--patience", "0"]


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


@pytest.fixture
def copy_of(tmp_path):
    def _copy(folder: Path) -> Path:
        target = tmp_path / folder.name
        shutil.copytree(folder, target)
        return target
    return _copy
