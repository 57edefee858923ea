"""The embedding map: every image of a run placed in 2-D by UMAP, computed once and stored beside the run.

PCA to 50 dimensions first (UMAP's nearest-neighbour search is then several times faster at 12,600
images, and the map barely changes), then UMAP with cosine distances and a fixed seed, so the same
embeddings always give the same map. The stored map names the embeddings it was made from; new
embeddings make a new map.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import safetensors.numpy

from har_core.retrieval.embeddings import Embeddings
from har_core.data.fileio import atomic_write_bytes

MAP_FILE = "embedding_map.safetensors"


def project(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates; fewer than 4 images, or images whose embeddings are all the same (a collapsed
    model), are laid out on a line: UMAP needs neighbours to tell apart."""
    n = len(vectors)
    if n < 4 or not np.ptp(vectors, axis=0).any():
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])
    from sklearn.decomposition import PCA
    import umap  # imported here: numba compiles on first use, which pages without a map never pay

    reduced = PCA(n_components=min(50, n - 1, vectors.shape[1]), random_state=seed).fit_transform(vectors)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")  # a fixed seed runs single-threaded, as intended
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed)
        return reducer.fit_transform(reduced).astype(np.float32)


def embedding_map(embeddings: Embeddings, folder: Path | None = None) -> pd.DataFrame:
    """The embeddings' table (file, label, split, predicted, confidence, correct) with x, y map coordinates:
    read from `folder` when stored for exactly these embeddings, else computed (and stored there)."""
    table = embeddings.table()
    path = Path(folder) / MAP_FILE if folder is not None else None
    coordinates = None
    if path is not None and path.is_file():
        try:
            with safetensors.safe_open(str(path), framework="numpy") as handle:
                if handle.metadata().get("embeddings") == embeddings.ident:
                    coordinates = handle.get_tensor("xy")
        except Exception:  # noqa: BLE001 - an unreadable map is recomputed
            coordinates = None
    if coordinates is None or len(coordinates) != len(table):
        coordinates = project(embeddings.vectors)
        if path is not None:
            try:
                atomic_write_bytes(path, safetensors.numpy.save({"xy": coordinates}, {"embeddings": embeddings.ident}))
            except OSError:
                pass  # a read-only runs folder: the map stays in memory
    return table.assign(x=coordinates[:, 0], y=coordinates[:, 1])
