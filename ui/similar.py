"""Embeddings, similar images, the map and the data audit: computed once per run, cached by content."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from har_core.models import artifacts
from har_core.models.artifacts import Run
from har_core.retrieval.audit import audit
from har_core.models.calibration_maths import temper
from har_core.data.datasets import scan_cached
from har_core.retrieval.embeddings import EMBEDDINGS, EmbeddingError, Embeddings, answered, run_embeddings, staleness
from har_core.data.fileio import file_sha256
from har_core.data.labels import spoken
from har_core.retrieval.projection import embedding_map
from har_core.retrieval.search import VectorIndex, neighbours_of, training_index
from har_core.data.spans import timed
from har_core.retrieval.similarity import RETRIEVAL, SHOW_K, VOTE_K, embed_run, neighbour_answer, retrieval_report, vote
from ui.common import (Selection, file_stamp, config, dataset, folder_stamp, friendly, image_grid,
                       inside_or_none, model, predictions, temperature, thumb_of)


@st.cache_resource(show_spinner="Reading embeddings…", max_entries=16)
def _embeddings(path: str, stamp: float, weights: str) -> Embeddings:
    return run_embeddings(artifacts.open_run(path))  # checks that `weights` made them


def embeddings(run: Run) -> Embeddings:
    """A run's stored embeddings (raises EmbeddingError when it has none or they are unusable); embeddings
    computed in this process for a read-only runs folder are kept in `_computed`."""
    weights = run.weights_sha256()
    computed = _computed().get(str(run.path))
    if computed is not None and computed.weights == weights:
        return computed
    return _embeddings(str(run.path), file_stamp(run, EMBEDDINGS), weights)


@st.cache_resource
def _computed() -> dict:
    return {}


@st.cache_resource(show_spinner="Building the similarity index…", max_entries=16)
def _training_index(path: str, ident: str, _embeddings: Embeddings) -> VectorIndex:
    return training_index(_embeddings, Path(path))


def search_index(run: Run, found: Embeddings) -> VectorIndex:
    return _training_index(str(run.path), found.ident, found)


@st.cache_data(show_spinner=False, max_entries=64)
def _retrieval(path: str, ident: str, _embeddings: Embeddings) -> dict:
    stored = artifacts.read_json(Path(path) / RETRIEVAL) if (Path(path) / RETRIEVAL).is_file() else {}
    return stored if stored.get("embeddings") == ident else retrieval_report(artifacts.open_run(path), _embeddings)


def retrieval(run: Run, found: Embeddings) -> dict:
    """The run's retrieval report (kNN accuracy, the mixing weight chosen on val)."""
    return _retrieval(str(run.path), found.ident, found)


@st.cache_resource(show_spinner="Scanning the image folder…", max_entries=8)
def _data_index(root: str, classes: tuple[str, ...], max_images: int, stamp: str):
    return scan_cached(root, classes=list(classes), confine=True, max_images=max_images, stamp=stamp)


def offer_to_compute(selection: Selection, run: Run, why: str, button: str, key: str, compute) -> None:
    """Say why a run's stored analysis (embeddings, channel tops) is missing and offer to compute it on the chosen
    image folder, with a progress bar: `compute(index, on_batch)` computes and keeps it, then the page is drawn
    again from the top (so everything above knows it)."""
    st.info(why)
    if selection.data_root is None:
        st.caption("Choose the run's image folder in the sidebar to compute them here.")
        return
    if not st.button(button, key=key):
        return
    bar = st.progress(0.0, text=f"{button}…")
    with friendly(button):
        index = _data_index(str(selection.data_root), tuple(run.classes), config().max_scan_images,
                            folder_stamp(str(selection.data_root)))
        compute(index, lambda done, total: bar.progress(done / total, text=f"{button}: {done}/{total}"))
        bar.empty()
        st.rerun()
    bar.empty()


def embeddings_or_offer(selection: Selection, run: Run, key: str) -> Embeddings | None:
    """The run's embeddings; when it has none (or unusable ones), says why and offers to compute them
    with a progress bar. A warning when they were computed on other data than the chosen image folder."""
    try:
        found = embeddings(run)
    except EmbeddingError as error:
        offer_to_compute(selection, run, str(error), f"Compute embeddings of {run.name}", f"{key}_embed_{run.name}",
                         lambda index, on_batch: compute_embeddings(run, index, on_batch))
        return None
    if selection.data_root is not None:
        with friendly("Checking the image folder"):
            note = staleness(found, dataset(selection.data_root)["fingerprint"])
            if note:
                st.warning(note)
    return found


def compute_embeddings(run: Run, index, on_batch) -> None:
    """Embed the image folder with the run's model; stored in the run folder when it is writable, else kept
    for this server process."""
    found, report = embed_run(model(run), index, progress=False, on_batch=on_batch)
    if "not_stored" in report:
        st.toast(f"The runs folder is read-only ({report['not_stored']}): the embeddings are kept for this server "
                 "process only.")
        _computed()[str(run.path)] = found


@st.cache_data(show_spinner="Placing every image on the map (UMAP; about a minute for 10,000 images)…",
               max_entries=16)
def _map(path: str, ident: str, _embeddings: Embeddings) -> pd.DataFrame:
    return embedding_map(_embeddings, Path(path))


def has_embeddings(run: Run) -> bool:
    return str(run.path) in _computed() or run.has(EMBEDDINGS)


def embedding_map_of(run: Run, found: Embeddings) -> pd.DataFrame:
    """Every embedded image placed on the map, with the run's answer on it (har_core.retrieval.embeddings.answered: the
    answer Predict, Mistakes and Evaluate give where the run stored one)."""
    return answers_of(run, found, _map(str(run.path), found.ident, found))


def answers_of(run: Run, found: Embeddings, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The run's answer on each embedded image (`table`: the images' own table, or the map's)."""
    stored = [frame for split in ("val", "test") if (frame := predictions(run, split)) is not None]
    return answered(found, found.table() if table is None else table, stored, temperature(run))


def neighbour_grid(selection: Selection, run: Run, found: Embeddings, similarities, rows, columns: int = 6,
                   size: int = 120) -> None:
    """Thumbnails of neighbours (rows of `found`) with label and similarity. A thumbnail is shown only when the
    chosen image folder holds the very picture that was embedded (same sha256): Kaggle-layout sets share names
    (train/Image_N.jpg), so a name alone would show another data set's picture beside this one's label."""
    rows_shown = [(r, s) for s, r in zip(similarities, rows) if r >= 0]
    items = [(found.files[r], f"{spoken(found.labels[r])} · {s:.2f}") for r, s in rows_shown]
    if selection.data_root is None:
        st.caption(" · ".join(caption for _, caption in items))
        st.caption("The pictures appear once the run's data folder is there (README: Data).")
        return
    pictures = [_embedded_thumb(str(selection.data_root), found.files[r], found.digests[r], size)
                for r, _ in rows_shown]
    same = [picture is not None for picture in pictures]
    image_grid([(picture, caption) for picture, (_, caption) in zip(pictures, items) if picture is not None], columns)
    others = [caption for (name, caption), ok in zip(items, same) if not ok]
    if others:
        origin = run.card.get("data", {}).get("root", "its training folder")
        st.caption(f"{' · '.join(others)} — pictures not shown: the chosen image folder ({selection.data_root.name}) "
                   f"does not hold them (another data set under the same names?); {run.name}'s embeddings come "
                   f"from {origin}.")


@st.cache_data(show_spinner=False, max_entries=4096, ttl=60)
def _embedded_thumb(root: str, filename: str, digest: str, size: int) -> str | None:
    """The thumbnail (a data: URI) of the image folder's file of that name when it is the embedded picture (the
    sha256 `digest`), else None; once a minute per picture and size: a room's visitors share their neighbours
    (#41), and a folder put right is seen within the minute."""
    path = inside_or_none(Path(root), filename)
    try:
        same = path is not None and path.is_file() and file_sha256(path) == digest
    except OSError:
        return None
    return thumb_of(path, size) if same else None


@timed("similar images")
def similar_images(selection: Selection, run: Run, vector, probs, k: int = SHOW_K, columns: int = 3) -> None:
    """Under a prediction: the k most similar training images of the run with label and similarity, their
    vote, and the retrieval-augmented prediction (mixing weight chosen on val)."""
    try:
        found = embeddings(run)
    except EmbeddingError:
        st.caption("No embeddings for this run yet: compute them on the Embeddings page to see similar images"
                   + ("." if selection.data_root is not None else " (it needs the run's data folder; README: Data)."))
        return
    # the mixing weight was chosen on the run's raw stored predictions: mix the raw probabilities (undo T)
    raw = temper(probs, 1 / temperature(run))
    answer = neighbour_answer(search_index(run, found), found, vector, raw, retrieval(run, found)["weight"], k)
    winner = int(answer.votes.argmax())
    st.markdown(f"**The {VOTE_K} most similar training pictures** vote {spoken(found.classes[winner])} "
                f"({answer.votes[winner]:.0%}); the first {k}:")
    neighbour_grid(selection, run, found, answer.similarities, answer.rows, columns=columns)
    st.caption(f"The model and that vote together: **{spoken(found.classes[int(answer.mixed.argmax())])}** "
               f"({answer.mixed.max():.0%}), {1 - answer.weight:.2f} × the model's raw (uncalibrated) probability + "
               f"{answer.weight:.2f} × the vote (the weight that did best on val)")
    if found.reduction is not None:
        st.caption(f"Similarities from {run.name}'s {found.dimensions} embeddings (shipped reduced): they run a "
                   "little higher than the full vectors' would.")


def picture_neighbours(run: Run, filename: str, k: int) -> tuple[Embeddings, np.ndarray, np.ndarray] | str:
    """The k training pictures nearest a data-set picture (itself left out) in the run's embedding: the
    embeddings, and the similarities and rows found (one row: this picture); one line saying why not instead."""
    try:
        found = embeddings(run)
    except EmbeddingError as error:
        return str(error)
    row = found.row_of.get(filename)
    if row is None:
        return f"{run.name}: {filename} is not among its embedded pictures."
    similarities, rows = neighbours_of(search_index(run, found), found.vectors[row], k, exclude=np.array([row]))
    return found, similarities, rows


def nearest_training_images(selection: Selection, run: Run, filename: str, k: int = SHOW_K) -> None:
    """A data-set image's nearest training images in the run's embedding, with the model's prediction."""
    near = picture_neighbours(run, filename, k)
    if isinstance(near, str):
        st.caption(near)
        return
    found, similarities, rows = near
    predicted = answers_of(run, found)["predicted"].iloc[found.row_of[filename]]  # as the map and Mistakes give
    st.markdown(f"**{run.name}** predicts {spoken(predicted)} · its neighbours vote "
                f"{', '.join(f'{spoken(c)} {v:.0%}' for c, v in top_votes(vote(rows, found)[0], found.classes))}")
    neighbour_grid(selection, run, found, similarities[0], rows[0], columns=k)


def top_votes(shares, classes: list[str], n: int = 3) -> list[tuple[str, float]]:
    return [(classes[i], float(shares[i])) for i in np.argsort(-shares)[:n] if shares[i] > 0]


@st.cache_data(show_spinner="Auditing the data (near-duplicates, label errors, outliers)…", max_entries=16)
def _audit(ident: str, threshold: float, root: str | None, _embeddings: Embeddings):
    return audit(_embeddings, threshold, root=root)


def data_audit(found: Embeddings, threshold: float, root: Path | None = None):
    """The audit of a run's embeddings, computed once per embeddings, threshold and folder; with the folder the
    embeddings describe (`root`), near-duplicates are checked on the pixels too."""
    return _audit(found.ident, threshold, None if root is None else str(root), found)

