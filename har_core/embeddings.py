"""Embeddings: what a model "sees" in each picture, computed once and stored beside the run.

A registry entry names its embedding (`ModelSpec.embedding`): the input of its classifier head. A run
folder's `embeddings.safetensors` holds, for every usable image of its data set, that embedding (float16)
and the model's probabilities, with file names, content digests, labels, splits (from the run's split
manifest) and the data fingerprint in its metadata. Similar-image search, the embedding map and the data
audit all read this one file.

Vectors are keyed by content: recomputing after the data changed embeds only the pictures whose bytes are
new, so relabelling, re-splitting or renaming a data set costs no forward at all.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import safetensors.numpy
import torch
from torch.utils.data import DataLoader

from har_core.artifacts import Run
from har_core.data import DataIndex, dataset_for
from har_core.fileio import atomic_write_bytes
from har_core.inference import LoadedModel, predict_loader

EMBEDDINGS = "embeddings.safetensors"
UNSPLIT = "unsplit"  # an image the run's split manifest does not list (audit of another data folder)


class EmbeddingError(RuntimeError):
    """Embeddings that cannot be used; the message names the run and says what to do."""


@dataclass
class Embeddings:
    run: str
    model: str
    classes: list[str]
    fingerprint: str  # the data's fingerprint when these were computed (har_core.data.DataIndex.fingerprint)
    files: list[str]
    digests: list[str]
    labels: list[str]
    splits: list[str]
    vectors: np.ndarray  # (N, dim) float32
    probs: np.ndarray  # (N, classes) float32: the model's probabilities (no flip TTA)
    ident: str = ""  # stamped on every computation: a stored search index names the embeddings it indexes
    weights: str = ""  # sha256 of the weights file that computed them (Run.weights_sha256)

    def __len__(self) -> int:
        return len(self.files)

    @cached_property
    def row_of(self) -> dict[str, int]:
        """File name -> row."""
        return {f: i for i, f in enumerate(self.files)}

    @cached_property
    def label_ids(self) -> np.ndarray:
        """Each image's given label as its index in `classes`."""
        class_of = {c: i for i, c in enumerate(self.classes)}
        return np.array([class_of[label] for label in self.labels], dtype=int)

    @property
    def collapsed(self) -> bool:
        """Every image has the same embedding (an untrained or collapsed model): nothing to search or map."""
        return len(self) > 1 and not np.ptp(self.vectors, axis=0).any()

    def rows(self, *splits: str) -> np.ndarray:
        """Row numbers of the images in the given splits, in file order."""
        return np.flatnonzero(np.isin(self.splits, splits))

    def table(self) -> pd.DataFrame:
        """One row per image: file, given label, split, the model's predicted class, confidence, correct."""
        predicted = np.asarray(self.classes)[self.probs.argmax(1)]
        return pd.DataFrame({"filename": self.files, "label": self.labels, "split": self.splits,
                             "predicted": predicted, "confidence": self.probs.max(1).round(4),
                             "correct": predicted == np.asarray(self.labels)})

    def save(self, path: Path) -> None:
        tensors = {"vectors": self.vectors.astype(np.float16), "probs": self.probs.astype(np.float16)}
        meta = {"run": self.run, "model": self.model, "classes": self.classes, "fingerprint": self.fingerprint,
                "files": self.files, "digests": self.digests, "labels": self.labels, "splits": self.splits,
                "weights": self.weights}
        atomic_write_bytes(path, safetensors.numpy.save(tensors, {"har": json.dumps(meta), "ident": self.ident}))


def load_embeddings(path: Path, run_name: str) -> Embeddings:
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            meta, ident = json.loads(handle.metadata()["har"]), handle.metadata().get("ident", "")
            vectors, probs = handle.get_tensor("vectors"), handle.get_tensor("probs")
    except FileNotFoundError:
        raise EmbeddingError(f"{run_name}: no embeddings yet; compute them with `python -m train.embed "
                             f"{path.parent}` (or the button in the app)") from None
    except Exception as error:  # noqa: BLE001 - safetensors, JSON and key errors all mean: unreadable
        raise EmbeddingError(f"{run_name}: {path.name} is corrupt or not HAR Studio embeddings ({error}); "
                             "compute them again") from None
    n = len(meta["files"])
    if not (vectors.shape[0] == probs.shape[0] == len(meta["labels"]) == len(meta["splits"]) == n) or \
            probs.shape[1] != len(meta["classes"]):
        raise EmbeddingError(f"{run_name}: {path.name} is inconsistent (rows or classes do not match); "
                             "compute them again")
    return Embeddings(run=meta["run"], model=meta["model"], classes=meta["classes"], fingerprint=meta["fingerprint"],
                      files=meta["files"], digests=meta["digests"], labels=meta["labels"], splits=meta["splits"],
                      vectors=vectors.astype(np.float32), probs=probs.astype(np.float32), ident=ident,
                      weights=meta.get("weights", ""))


def run_embeddings(run: Run) -> Embeddings:
    """A run's stored embeddings, checked against its card and its weights."""
    embeddings = load_embeddings(run.path / EMBEDDINGS, run.name)
    problem = mismatch(embeddings, run)
    if problem:
        raise EmbeddingError(f"{run.name}: {EMBEDDINGS} {problem}; compute them again")
    return embeddings


def mismatch(embeddings: Embeddings, run: Run, weights: str | None = None) -> str | None:
    """Why these embeddings are not the run's network's (None: they are): another model, another class list,
    or other weights (`weights`, default the run's file now: retrained, resumed, fine-tuned, edited since)."""
    if embeddings.classes != run.classes or embeddings.model != run.card["model"]:
        return f"belongs to another model or class list ({embeddings.model}, {len(embeddings.classes)} classes)"
    if embeddings.weights != (weights if weights is not None else run.weights_sha256()):
        return "was computed by other weights than the run's (trained or changed since)"
    return None


def staleness(embeddings: Embeddings, fingerprint: str) -> str | None:
    """Why embeddings do not describe the data with this fingerprint (None: they do)."""
    if embeddings.fingerprint == fingerprint:
        return None
    return (f"the embeddings of {embeddings.run} were computed on other data (fingerprint {embeddings.fingerprint}, "
            f"the image folder now {fingerprint}): images or labels changed; compute them again to update")


def embed_files(loaded: LoadedModel, root: Path, files: list[str], batch_size: int = 32, device: str = "cpu",
                progress: bool = True, on_batch: Callable[[int, int], None] | None = None):
    """(vectors, probs) of image files under `root`, in order: the model's ordinary prediction loop, with its
    embedding tap recording each batch's head input; `on_batch(done, total)` after each batch."""
    if not files:
        return np.zeros((0, 0), np.float32), np.zeros((0, len(loaded.classes)), np.float32)
    loader = DataLoader(dataset_for(root, files, None, loaded.transform), batch_size=batch_size)  # in file order
    with loaded.tap.capture() as captured:
        probs, _ = predict_loader(loaded.model, loader, device=device, desc=f"embedding ({loaded.name})",
                                  progress=progress, on_batch=on_batch)
    return torch.cat(captured).numpy(), probs.astype(np.float32)


def embed_data(loaded: LoadedModel, index: DataIndex, manifest: pd.DataFrame | None,
               previous: Embeddings | None = None, batch_size: int = 32, device: str = "cpu",
               progress: bool = True, on_batch: Callable[[int, int], None] | None = None) -> Embeddings:
    """Embeddings of every usable image of a scanned data folder, each with its split in `manifest` (images it
    does not list are 'unsplit'). Pictures already embedded by the same model (`previous`, same bytes) are reused."""
    if index.classes != loaded.classes:
        raise EmbeddingError(f"{loaded.name}: the data's classes differ from the run's "
                             f"({len(index.classes)} vs {len(loaded.classes)}); scan it with the run's classes")
    split_of = dict(zip(manifest["filename"], manifest["split"])) if manifest is not None else {}
    files = [rel for rel, _ in index.samples]
    digests = [index.digests[rel] for rel in files]
    known = {}
    if previous is not None and mismatch(previous, loaded.run, loaded.weights) is None:
        known = {digest: i for i, digest in enumerate(previous.digests)}
    todo = [i for i, digest in enumerate(digests) if digest not in known]
    new_vectors, new_probs = embed_files(loaded, index.root, [files[i] for i in todo], batch_size, device,
                                         progress, on_batch)
    dim = new_vectors.shape[1] if len(todo) else previous.vectors.shape[1]
    vectors = np.zeros((len(files), dim), np.float32)
    probs = np.zeros((len(files), len(loaded.classes)), np.float32)
    for row, i in enumerate(todo):
        vectors[i], probs[i] = new_vectors[row], new_probs[row]
    for i, digest in enumerate(digests):
        if digest in known:
            vectors[i], probs[i] = previous.vectors[known[digest]], previous.probs[known[digest]]
    return Embeddings(run=loaded.name, model=loaded.run.card["model"], classes=loaded.classes,
                      fingerprint=index.fingerprint(), files=files, digests=digests,
                      labels=[label for _, label in index.samples],
                      splits=[split_of.get(rel, UNSPLIT) for rel in files], vectors=vectors, probs=probs,
                      ident=uuid.uuid4().hex[:16], weights=loaded.weights)


def missing_from(manifest: pd.DataFrame, index: DataIndex) -> list[str]:
    """Manifest images the data folder no longer holds (or cannot decode)."""
    usable = {rel for rel, _ in index.samples}
    return [f for f in manifest["filename"] if f not in usable]
