"""Similar images and retrieval-augmented prediction, over the cosine-similarity search of har_core.retrieval.search; the
run's embeddings, their retrieval report and, for embeddings stored reduced, what the reduction cost search.

A model's neighbours vote: the share of each class among the k most similar training images. The
retrieval-augmented prediction mixes the model's probabilities with that vote; the mixing weight is chosen on
the pictures that calibrate the run (the calibration half of val, which never chose its checkpoint; all of val
when its manifest keeps no half apart: highest accuracy, ties to the smaller weight) and only then applied.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from har_core.models.artifacts import Run
from har_core.retrieval.audit import near_duplicates
from har_core.evaluation.calibration import calibration_files_of, part_of_val
from har_core.data.datasets import DataIndex
from har_core.retrieval.embeddings import (EMBEDDINGS, EmbeddingError, Embeddings, embed_data, load_embeddings,
                                           mismatch, reduce)
from har_core.models.inference import LoadedModel
from har_core.data.fileio import write_json
from har_core.retrieval.search import EXACT_LIMIT, VectorIndex, neighbours_of, training_index

RETRIEVAL = "retrieval.json"
VOTE_K = 10  # neighbours in the vote of a retrieval-augmented prediction (and the kNN accuracy)
SHOW_K = 6  # neighbours shown under a prediction
WEIGHTS = tuple(round(w, 2) for w in np.arange(0, 1.0001, 0.05))  # mixing weights tried on val


def vote(neighbour_rows: np.ndarray, embeddings: Embeddings) -> np.ndarray:
    """Each class's share among the neighbours (rows of -1 do not vote)."""
    labels = embeddings.label_ids
    shares = np.zeros((len(neighbour_rows), len(embeddings.classes)))
    for i, rows in enumerate(neighbour_rows):
        rows = rows[rows >= 0]
        np.add.at(shares[i], labels[rows], 1.0 / max(1, len(rows)))
    return shares


def augmented(probs: np.ndarray, votes: np.ndarray, weight: float) -> np.ndarray:
    """The retrieval-augmented prediction: (1 - weight) · the model + weight · its neighbours' vote."""
    return (1 - weight) * probs + weight * votes


def choose_weight(probs: np.ndarray, votes: np.ndarray, labels: np.ndarray) -> float:
    """The mixing weight with the highest accuracy on these (validation) images; ties go to the smaller weight."""
    accuracies = [float((augmented(probs, votes, w).argmax(1) == labels).mean()) for w in WEIGHTS]
    return WEIGHTS[int(np.argmax(accuracies))]


def retrieval_report(run: Run, embeddings: Embeddings, k: int = VOTE_K) -> dict:
    """kNN-only, model-only and retrieval-augmented accuracy on all of val and on test; the weight is chosen on
    the val pictures that calibrate the run. The model's probabilities are the run's own stored predictions
    (flip TTA where the run uses it)."""
    if not len(embeddings.rows("train")):
        return {"k": k, "weight": 0.0, "embeddings": embeddings.ident,
                "note": "no training pictures among the embeddings: nothing to search"}
    index = training_index(embeddings, run.path)
    row_of = embeddings.row_of
    class_of = {c: i for i, c in enumerate(embeddings.classes)}
    parts, names = {}, {}
    for split in ("val", "test"):
        frame = run.predictions(split)
        if frame is None:
            continue
        frame = frame[frame["filename"].isin(row_of) & frame["true"].isin(class_of)]
        if frame.empty:
            continue
        rows = frame["filename"].map(row_of).to_numpy()
        labels = frame["true"].map(class_of).to_numpy()
        probs = frame[[f"prob_{c}" for c in embeddings.classes]].to_numpy(float)
        _, neighbours = neighbours_of(index, embeddings.vectors[rows], k)
        parts[split], names[split] = (probs, vote(neighbours, embeddings), labels), frame["filename"]
    if "val" not in parts:
        return {"k": k, "weight": 0.0, "note": "no validation predictions: the mixing weight stays 0"}
    files = calibration_files_of(run)
    chosen = names["val"].isin(files).to_numpy() if files is not None else np.ones(len(names["val"]), bool)
    if not chosen.any():  # the predictions hold none of the half: all of val, and the report says so
        files, chosen = None, np.ones(len(chosen), bool)
    weight = choose_weight(*(part[chosen] for part in parts["val"]))
    report = {"k": k, "weight": weight, "embeddings": embeddings.ident,
              "weight_chosen_on": {"part": part_of_val(files), "pictures": int(chosen.sum())}}
    for split, (probs, votes, labels) in parts.items():
        report[split] = {"n": int(len(labels)), "model": float((probs.argmax(1) == labels).mean()),
                         "knn": float((votes.argmax(1) == labels).mean()),
                         "augmented": float((augmented(probs, votes, weight).argmax(1) == labels).mean())}
    return report


@dataclass
class NeighbourAnswer:
    """What one picture's neighbours say: the rows and similarities of the first `k` (those shown), the vote of
    the `VOTE_K` nearest, and the retrieval-augmented probabilities (the model mixed with that vote, weight from
    val): one vote, the one the mix uses, whatever number of neighbours is shown."""
    similarities: np.ndarray  # (k,)
    rows: np.ndarray  # (k,) rows of the embeddings, -1 where there are fewer
    votes: np.ndarray  # (classes,) shares among the VOTE_K nearest
    mixed: np.ndarray  # (classes,)
    weight: float


def neighbour_answer(index: VectorIndex, embeddings: Embeddings, vector: np.ndarray, probs: np.ndarray,
                     weight: float, k: int = SHOW_K) -> NeighbourAnswer:
    """One query's neighbours, their vote and the retrieval-augmented prediction (`retrieval_report`'s rule)."""
    similarities, rows = index.search(embeddings.query(vector), max(k, VOTE_K))
    votes = vote(rows[:, :VOTE_K], embeddings)[0]
    return NeighbourAnswer(similarities[0, :k], rows[0, :k], votes, augmented(probs, votes, weight), weight)


def reduction_effect(full: Embeddings, reduced: Embeddings, k: int = SHOW_K) -> dict:
    """What reducing the embeddings costs similar-image search: for each val and test picture, the share of its
    k nearest training pictures (full vectors) that the reduced vectors also find among their k nearest, the
    kNN vote's accuracy (VOTE_K neighbours) with each, and the data audit's near-duplicate pairs with each."""
    train, queries = full.rows("train"), full.rows("val", "test")
    if not len(train) or not len(queries):
        return {}
    pairs = {name: {frozenset(pair) for pair in zip(found["file_a"], found["file_b"])}
             for name, found in (("full", near_duplicates(full)), ("reduced", near_duplicates(reduced)))}
    found = {}
    for name, embeddings in (("full", full), ("reduced", reduced)):
        index = VectorIndex.build(embeddings.vectors[train], train)
        _, rows = index.search(embeddings.vectors[queries], VOTE_K)
        found[name] = rows
    shared = [len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found["full"], found["reduced"])]
    labels = full.label_ids[queries]
    return {"dims": f"{full.vectors.shape[1]} → {reduced.vectors.shape[1]}", "k": k, "pictures": int(len(queries)),
            "top_k_overlap": float(np.mean(shared)),
            "knn_full": float((vote(found["full"], full).argmax(1) == labels).mean()),
            "knn_reduced": float((vote(found["reduced"], reduced).argmax(1) == labels).mean()),
            "near_duplicates_full": len(pairs["full"]), "near_duplicates_reduced": len(pairs["reduced"]),
            "near_duplicates_both": len(pairs["full"] & pairs["reduced"])}


def write_retrieval_report(run: Run, embeddings: Embeddings, extra: dict | None = None) -> dict:
    report = retrieval_report(run, embeddings) | (extra or {})
    write_json(run.path / RETRIEVAL, report)
    return report


def embed_run(loaded: LoadedModel, index: DataIndex, batch_size: int = 32, device: str = "cpu",
              progress: bool = True, on_batch=None, build_index: str = "auto",
              reduce_to: int | None = None) -> tuple[Embeddings, dict]:
    """Embed a run's data (reusing its stored vectors where the pictures did not change), store the
    embeddings, its retrieval report and, beyond `EXACT_LIMIT` training images or with build_index="always",
    its search index in the run folder. Returns the embeddings and the report. `reduce_to`: store them as
    that many dimensions (`har_core.retrieval.embeddings.reduce`; the report then says what it cost search)."""
    run = loaded.run
    previous, stale = None, None
    if (run.path / EMBEDDINGS).is_file():
        try:
            previous = load_embeddings(run.path / EMBEDDINGS, run.name)
            stale = mismatch(previous, run, loaded.weights)
        except EmbeddingError:
            stale = "is unreadable"  # everything is embedded anew
    notes = {}
    if reduce_to and previous is not None and previous.reduction is not None and not stale:
        previous = None  # reduce from full vectors, never reduce twice
        notes["recomputed"] = f"the stored {EMBEDDINGS} are already reduced: every picture embedded anew to reduce"
    embeddings = embed_data(loaded, index, run.manifest(), previous, batch_size, device, progress, on_batch)
    effect = {}
    if reduce_to:
        full, embeddings = embeddings, reduce(embeddings, reduce_to)
        effect = {"reduction": reduction_effect(full, embeddings) | {"retrieval_full": retrieval_report(run, full)}}
    elif embeddings.reduction is not None and previous is not None and embeddings.reduction is previous.reduction:
        try:  # still the same reduced space: keep what the reduction was measured to cost
            effect = {"reduction": json.loads((run.path / RETRIEVAL).read_text())["reduction"]}
        except (OSError, ValueError, KeyError, TypeError):
            effect = {}
    try:
        embeddings.save(run.path / EMBEDDINGS)
        embeddings = load_embeddings(run.path / EMBEDDINGS, run.name)  # the report describes them as stored (float16)
        train_rows = embeddings.rows("train")
        if build_index == "always" or (build_index == "auto" and len(train_rows) > EXACT_LIMIT):
            VectorIndex.build(embeddings.vectors[train_rows], train_rows).save(run.path, embeddings.ident)
        report = write_retrieval_report(run, embeddings, effect)
    except OSError as error:  # a read-only runs folder: the caller keeps them in memory
        report = retrieval_report(run, embeddings) | effect | {"not_stored": f"{type(error).__name__}: {error}"}
    if stale:
        notes["recomputed"] = f"the stored {EMBEDDINGS} {stale}: every picture embedded anew"
    return embeddings, report | notes
