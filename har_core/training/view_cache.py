"""Fixed augmented views of the training pictures, made once and kept on disk with what the teachers said.

On a CPU, distillation pays only when the teachers' work is done once ("a good teacher is patient and
consistent", Beyer et al. 2022): every training picture gets K augmented views fixed by a seed, the teachers
label exactly those views once (ONNX Runtime), and the student trains on view + teachers' logits for as many
epochs as it likes. A frozen trunk (har_core.training.trunk) is the same idea: what is kept of a view is then the trunk's
output instead of its pixels (uint8 at the student's size).

Everything lives in the training state folder (HAR_TRAIN_DIR, default ~/har-train), outside the project, so a
stopped run finds its views again. A cache's name is a digest of all that makes its views (the data, the
training files, the augmentations, the sizes, K, the seed, the trunk's weights); the teachers' logits sit beside
the views under a digest of the teachers' weight files. Another teacher, seed or augmentation is computed
anew; the same is read back. Each view is seeded per picture, so the views do not depend on batch size or on
the number of loader processes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from har_core.data.fileio import atomic_write_text

PIXELS = "pixels"  # a cache without a trunk keeps the views' pixels


def train_state_dir() -> Path:
    """Where long runs and their caches live between sessions (outside the project)."""
    return Path(os.environ.get("HAR_TRAIN_DIR") or Path.home() / "har-train")


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ViewSpec:
    """All that makes a set of views: two equal specs make the same pixels."""

    data: str  # the data's fingerprint
    files: str  # digest of the training files, in order
    augment: str
    view_size: int  # the side the views are made at (the largest of the student's and the teachers' inputs)
    student: dict  # the student's data config: input size, mean, std, interpolation
    count: int  # K views per picture
    seed: int
    kept: str = PIXELS  # PIXELS, or a digest of the frozen trunk's weights (its output is kept)
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return digest(asdict(self))


class SeededViews(Dataset):
    """A dataset whose sample i is augmented from its own seed: the same view whatever the batch or worker."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + i)
            return self.dataset[i]


def view_seed(seed: int, view: int) -> int:
    return seed * 1000 + 500 + view


class _Store:
    """One (K, N, ...) array on disk, filled view by view; meta.json says which views are complete."""

    def __init__(self, path: Path, shape: tuple, dtype, about: dict):
        self.path, self.meta_path = path, path.with_suffix(".json")
        meta = json.loads(self.meta_path.read_text()) if self.meta_path.is_file() and path.is_file() else None
        if meta is None or meta.get("shape") != list(shape) or meta.get("about") != about:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            meta = {"shape": list(shape), "about": about, "done": []}
            atomic_write_text(self.meta_path, json.dumps(meta))
        else:
            self.array = np.load(path, mmap_mode="r+")
        self.meta = meta

    def done(self, view: int) -> bool:
        return view in self.meta["done"]

    def finish(self, view: int) -> None:
        self.array.flush()
        self.meta["done"] = sorted({*self.meta["done"], view})
        atomic_write_text(self.meta_path, json.dumps(self.meta))


def build(spec: ViewSpec, loader_for: Callable[[int], DataLoader], keep: Callable[[torch.Tensor], torch.Tensor] | None,
          teachers=None, progress: bool = True, root: Path | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The views (K, N, ...) as `keep` turns them into what is stored, and the teachers' logits (K, N, M, C);
    each read from disk when a previous run made them, else computed now (only what is missing).

    `loader_for(view)` yields (images at spec.view_size, label, index) for that view's seed; `keep` None: no views
    are stored (only the teachers' logits are wanted)."""
    folder = (root or train_state_dir()) / "views" / spec.key
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "spec.json", json.dumps(asdict(spec), indent=1))
    views = teacher_store = None
    for view in range(spec.count):
        need_views = keep is not None and (views is None or not views.done(view))
        need_teachers = teachers is not None and (teacher_store is None or not teacher_store.done(view))
        if views is not None and not need_views and not need_teachers:
            continue
        loader = loader_for(view)
        n = len(loader.dataset)
        for images, _, indices in tqdm(loader, desc=f"views {view + 1}/{spec.count}", disable=not progress,
                                       leave=False):
            if keep is not None and views is None:  # the shape is known from the first batch
                first = keep(images[:1])
                views = _Store(folder / f"{spec.kept}.npy", (spec.count, n, *first.shape[1:]),
                               first.numpy().dtype, {"kept": spec.kept})
                need_views = not views.done(view)
            if teachers is not None and teacher_store is None:
                teacher_store = _Store(folder / f"teachers-{teachers.key}.npy",
                                       (spec.count, n, len(teachers.names), teachers.classes), np.float32,
                                       {"teachers": teachers.names, "key": teachers.key})
                need_teachers = not teacher_store.done(view)
            if not need_views and not need_teachers:
                break
            rows = indices.numpy()
            if need_views:
                views.array[view, rows] = keep(images).numpy()
            if need_teachers:
                teacher_store.array[view, rows] = teachers.logits(images).numpy()
        if need_views:
            views.finish(view)
        if need_teachers:
            teacher_store.finish(view)
    return (views.array if views is not None else None), (teacher_store.array if teacher_store is not None else None)


def pixels_of(images: torch.Tensor, config: dict) -> torch.Tensor:
    """Normalised views (N, 3, S, S) as uint8 pixels at the student's input size."""
    from har_core.training.distill import resized
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    side = config["input_size"][-1]
    pixels = resized(images.float() * std + mean, side)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


class CachedViews(Dataset):
    """(input, label, key) with each picture in the view chosen for it this epoch; key = view · N + picture
    finds the teachers' logits of that very view. Stored pixels (uint8) are normalised on the way out."""

    def __init__(self, views, labels: list[int], view_of: torch.Tensor, config: dict | None = None):
        self.views, self.labels, self.view_of = views, labels, view_of  # views: (K, N, ...)
        self.mean = self.std = None
        if config is not None:
            self.mean = torch.tensor(config["mean"]).view(3, 1, 1)
            self.std = torch.tensor(config["std"]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        view = int(self.view_of[i])
        x = torch.as_tensor(np.asarray(self.views[view, i]))
        if x.dtype == torch.uint8:
            x = (x.float() / 255 - self.mean) / self.std
        return x.float(), self.labels[i], view * len(self.labels) + i


class CachedTeachers:
    """The teachers' stored logits on the student's own views; their mean probability at T is the target."""

    def __init__(self, logits: np.ndarray, names: list[str]):
        self.logits = logits.reshape(-1, *logits.shape[2:])  # (K · N, M, C)
        self.names = names

    def targets(self, images: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
        logits = torch.from_numpy(np.asarray(self.logits[keys.numpy()])).to(images.device).float()
        return logits.div(temperature).softmax(-1).mean(1)

    def for_student(self, images: torch.Tensor) -> torch.Tensor:
        return images  # already at the student's size
