"""Embeddings: what a model "sees" in each picture, computed once and stored beside the run.

A registry entry names its embedding (`ModelSpec.embedding`): the input of its classifier head. A run
folder's `embeddings.safetensors` holds, for every usable image of its data set, that embedding (float16)
and the model's probabilities, with file names, content digests, labels, splits (from the run's split
manifest) and the data fingerprint in its metadata. Similar-image search, the embedding map and the data
audit all read this one file.

Vectors are keyed by content: recomputing after the data changed embeds only the pictures whose bytes are
new, so relabelling, re-splitting or renaming a data set costs no forward at all.

A bundled run may store its embeddings reduced (`reduce`: a truncated SVD of the training pictures', e.g. 128-d):
the file then also holds the projection, and every fresh vector (an upload's head input, a newly embedded
picture) goes through the same projection (`Embeddings.query`) before it meets the stored ones.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import safetensors.numpy

from har_core.models.artifacts import Run
from har_core.models.calibration_maths import temper
from har_core.data.datasets import DataIndex, dataset_for
from har_core.data.fileio import atomic_write_bytes
from har_core.models.inference import LoadedModel, predict_loader

EMBEDDINGS = "embeddings.safetensors"
UNSPLIT = "unsplit"  # an image the run's split manifest does not list (audit of another data folder)


class EmbeddingError(RuntimeError):
    """Embeddings that cannot be used; the message names the run and says what to do."""


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (cosine similarity is then a dot product)."""
    vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Reduction:
    """The top right-singular vectors of the unit-length training embeddings (a truncated SVD, not centred, so
    that keeping every one of them is a rotation and search finds exactly what it found before)."""
    components: np.ndarray  # (reduced dim, dim) float32, orthonormal rows

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        return normalised(vectors) @ self.components.T


@dataclass
class Embeddings:
    run: str
    model: str
    classes: list[str]
    fingerprint: str  # the data's fingerprint when these were computed (har_core.data.datasets.DataIndex.fingerprint)
    files: list[str]
    digests: list[str]
    labels: list[str]
    splits: list[str]
    vectors: np.ndarray  # (N, dim) float32
    probs: np.ndarray  # (N, classes) float32: the model's probabilities (no flip TTA)
    ident: str = ""  # stamped on every computation: a stored search index names the embeddings it indexes
    weights: str = ""  # sha256 of the weights file that computed them (Run.weights_sha256)
    reduction: Reduction | None = None  # set when `vectors` are stored reduced (see `reduce`)

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

    @property
    def dimensions(self) -> str:
        """'1280-d', or '128-d (reduced from 1280)' for embeddings stored reduced."""
        size = f"{self.vectors.shape[1]}-d"
        return size if self.reduction is None else f"{size} (reduced from {self.reduction.components.shape[1]})"

    def query(self, vectors: np.ndarray) -> np.ndarray:
        """Fresh head-input vectors (an upload's) in the space of `vectors`: reduced like them where they are."""
        return vectors if self.reduction is None else self.reduction.apply(vectors)

    def rows(self, *splits: str) -> np.ndarray:
        """Row numbers of the images in the given splits, in file order."""
        return np.flatnonzero(np.isin(self.splits, splits))

    def table(self) -> pd.DataFrame:
        """One row per image: file, given label, split (the run's answers on them: `answered`)."""
        return pd.DataFrame({"filename": self.files, "label": self.labels, "split": self.splits})

    def save(self, path: Path) -> None:
        tensors = {"vectors": self.vectors.astype(np.float16), "probs": self.probs.astype(np.float16)}
        if self.reduction is not None:
            tensors["reduction_components"] = self.reduction.components
        meta = {"run": self.run, "model": self.model, "classes": self.classes, "fingerprint": self.fingerprint,
                "files": self.files, "digests": self.digests, "labels": self.labels, "splits": self.splits,
                "weights": self.weights}
        atomic_write_bytes(path, safetensors.numpy.save(tensors, {"har": json.dumps(meta), "ident": self.ident}))


STORED_ANSWER, EMBEDDING_PASS = "stored predictions", "embedding pass"


def answered(embeddings: Embeddings, table: pd.DataFrame, stored: list[pd.DataFrame],
             temperature: float) -> pd.DataFrame:
    """`table` (one row per embedded image, in their order: `Embeddings.table`, the map) with the run's answer on
    each picture, from one source per picture: its stored predictions (`stored`: the run's val and test
    predictions, calibrated, in the TTA mode it was evaluated with) where they hold the picture, so the map says
    what Predict's samples, Mistakes and Evaluate say; else (the training pictures) the embedding pass's own
    probabilities at the run's temperature, without TTA. Columns predicted, confidence, correct, answer (which
    source)."""
    probs = temper(embeddings.probs.astype(np.float64), temperature)
    predicted = np.asarray(embeddings.classes, dtype=object)[probs.argmax(1)]
    confidence, source = probs.max(1), np.full(len(embeddings), EMBEDDING_PASS, dtype=object)
    for frame in stored:
        rows = pd.Index(embeddings.files).get_indexer(frame["filename"])
        found = rows >= 0
        predicted[rows[found]] = frame["predicted"].to_numpy()[found]
        confidence[rows[found]] = frame["confidence"].to_numpy(dtype=np.float64)[found]
        source[rows[found]] = STORED_ANSWER
    return table.assign(predicted=predicted, confidence=confidence.round(4),
                        correct=predicted == np.asarray(embeddings.labels, dtype=object), answer=source)


def load_embeddings(path: Path, run_name: str) -> Embeddings:
    """A run's embeddings file, read whole and checked; EmbeddingError, one line with what to do, otherwise."""
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            meta, ident = json.loads(handle.metadata()["har"]), handle.metadata().get("ident", "")
            vectors, probs = handle.get_tensor("vectors"), handle.get_tensor("probs")
            reduction = (Reduction(handle.get_tensor("reduction_components"))
                         if "reduction_components" in handle.keys() else None)
        return checked_embeddings(meta, ident, vectors, probs, reduction)
    except FileNotFoundError:
        raise EmbeddingError(f"{run_name}: no embeddings yet; compute them with `python -m train.embed "
                             f"{path.parent}` (or the button in the app)") from None
    except Exception as error:  # noqa: BLE001 - safetensors, JSON, key and shape errors all mean: unreadable
        raise EmbeddingError(f"{run_name}: {path.name} is corrupt or not HAR Studio embeddings ({error}); "
                             "compute them again") from None


def checked_embeddings(meta, ident: str, vectors: np.ndarray, probs: np.ndarray,
                       reduction: Reduction | None) -> Embeddings:
    """Embeddings from a file's metadata and arrays, every part checked: one file, digest, label and split per
    row, labels among the classes, a probability per class (ValueError naming the first that is not)."""
    if not isinstance(meta, dict):
        raise ValueError(f"its metadata is a {type(meta).__name__}, not an object")
    for key in ("run", "model", "fingerprint"):
        if not isinstance(meta.get(key), str):
            raise ValueError(f"its metadata lacks \"{key}\"")
    for key in ("classes", "files", "digests", "labels", "splits"):
        if not isinstance(meta.get(key), list) or not all(isinstance(v, str) for v in meta[key]):
            raise ValueError(f"its metadata lacks the list \"{key}\"")
    n, classes = len(meta["files"]), meta["classes"]
    if not (vectors.ndim == probs.ndim == 2 and vectors.shape[0] == probs.shape[0] == n):
        raise ValueError(f"{vectors.shape[0]} vectors and {probs.shape[0]} probabilities for {n} files")
    for key in ("digests", "labels", "splits"):
        if len(meta[key]) != n:
            raise ValueError(f"{len(meta[key])} {key} for {n} files")
    if probs.shape[1] != len(classes) or not set(meta["labels"]) <= set(classes):
        raise ValueError("its probabilities or labels do not match its classes")
    if reduction is not None and reduction.components.shape[0] != vectors.shape[1]:
        raise ValueError("its reduction does not match its vectors")
    return Embeddings(run=meta["run"], model=meta["model"], classes=classes, fingerprint=meta["fingerprint"],
                      files=meta["files"], digests=meta["digests"], labels=meta["labels"], splits=meta["splits"],
                      vectors=vectors.astype(np.float32), probs=probs.astype(np.float32), ident=ident,
                      weights=meta.get("weights", ""), reduction=reduction)


def reduce(embeddings: Embeddings, dims: int = 128) -> Embeddings:
    """The same embeddings stored as `dims` coordinates: their unit vectors projected onto the top singular
    directions of the training pictures', to ship a run small (`dims` equal to the size: a rotation)."""
    size, fitted_on = embeddings.vectors.shape[1], embeddings.rows("train")
    if not 2 <= dims <= size:
        raise EmbeddingError(f"{embeddings.run}: cannot reduce {size}-d embeddings to {dims}: choose 2 to {size - 1}")
    if len(fitted_on) < dims:
        raise EmbeddingError(f"{embeddings.run}: {len(fitted_on)} training pictures cannot fit {dims} directions: "
                             f"reduce to at most {len(fitted_on)}")
    unit = normalised(embeddings.vectors)
    _, _, directions = np.linalg.svd(unit[fitted_on].astype(np.float64), full_matrices=False)
    reduction = Reduction(directions[:dims].astype(np.float32))
    return replace(embeddings, vectors=unit @ reduction.components.T, reduction=reduction, ident=uuid.uuid4().hex[:16])


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
    import torch  # here: similar images only read stored embeddings, and a served export needs no torch (#41)
    from torch.utils.data import DataLoader
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
    reduction = previous.reduction if known else None
    if reduction is not None and len(todo):
        new_vectors = reduction.apply(new_vectors)  # into the stored (reduced) space of the pictures reused
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
                      ident=uuid.uuid4().hex[:16], weights=loaded.weights, reduction=reduction)


def missing_from(manifest: pd.DataFrame, index: DataIndex) -> list[str]:
    """Manifest images the data folder no longer holds (or cannot decode)."""
    usable = {rel for rel, _ in index.samples}
    return [f for f in manifest["filename"] if f not in usable]
