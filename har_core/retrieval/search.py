"""Cosine-similarity search over embeddings (FAISS): the index of a run's training pictures and the neighbours
of a query. Search is exact (a flat inner-product index over L2-normalised vectors) up to `EXACT_LIMIT` vectors;
beyond, an inverted-file index (IVF) that scans only the `nprobe` lists nearest to the query, chosen by size. A
large index is built once from the command line (`python -m train.embed RUN`) and stored beside the embeddings.
Similar images and retrieval-augmented prediction (har_core.retrieval.similarity) and the data audit build on it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from har_core.retrieval.embeddings import Embeddings, normalised
from har_core.data.fileio import atomic_write_bytes, write_json

EXACT_LIMIT = 100_000  # up to this many vectors an exact search answers within milliseconds
INDEX_FILE = "similarity.faiss"
INDEX_INFO = "similarity.json"
DEFAULT_NPROBE = 32  # inverted lists an IVF query scans (bench/retrieval.py: recall@10 against exact search)


def ivf_lists(n: int) -> int:
    """Inverted lists for n vectors: about √n (1,000 for a million), with ≥ 39 training points per list."""
    return max(1, min(int(math.sqrt(n)), n // 39))


@dataclass
class VectorIndex:
    """Cosine-similarity search over some rows of an Embeddings (`rows`: the row number of each vector)."""

    index: faiss.Index
    rows: np.ndarray
    kind: str  # "exact" | "ivf"

    @classmethod
    def build(cls, vectors: np.ndarray, rows: np.ndarray | None = None, exact_limit: int = EXACT_LIMIT,
              nprobe: int = 0, seed: int = 0) -> "VectorIndex":
        vectors = normalised(vectors)
        n, dim = vectors.shape
        rows = np.arange(n) if rows is None else np.asarray(rows)
        if n <= exact_limit:
            index = faiss.IndexFlatIP(dim)
            index.add(vectors)
            return cls(index, rows, "exact")
        lists = ivf_lists(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        index.nprobe = nprobe or DEFAULT_NPROBE
        return cls(index, rows, "ivf")

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row numbers), each (n_queries, k), most similar first; -1 rows where fewer exist."""
        k = min(k, len(self))
        similarities, positions = self.index.search(normalised(queries), k)
        return similarities, np.where(positions >= 0, self.rows[np.clip(positions, 0, None)], -1)

    def save(self, folder: Path, embeddings_ident: str) -> None:
        atomic_write_bytes(Path(folder) / INDEX_FILE, faiss.serialize_index(self.index).tobytes())
        info = {"embeddings": embeddings_ident, "vectors": len(self), "kind": self.kind,
                "nprobe": getattr(self.index, "nprobe", 0)}
        write_json(Path(folder) / INDEX_INFO, info)


def training_index(embeddings: Embeddings, folder: Path | None = None) -> VectorIndex:
    """The index of an Embeddings' training images: the stored one when it was built from exactly these
    embeddings (a large index built once from the command line), else built now."""
    rows = embeddings.rows("train")
    if folder is not None and (Path(folder) / INDEX_FILE).is_file() and (Path(folder) / INDEX_INFO).is_file():
        try:
            info = json.loads((Path(folder) / INDEX_INFO).read_text())
            if info["embeddings"] == embeddings.ident and info["vectors"] == len(rows):
                index = faiss.deserialize_index(np.fromfile(Path(folder) / INDEX_FILE, dtype=np.uint8))
                if info.get("nprobe"):
                    index.nprobe = info["nprobe"]
                return VectorIndex(index, rows, info["kind"])
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # a stale or broken stored index is rebuilt below
    return VectorIndex.build(embeddings.vectors[rows], rows)


def neighbours_of(index: VectorIndex, queries: np.ndarray, k: int, exclude: np.ndarray | None = None):
    """The k nearest rows of each query (row -1, similarity nan where there are fewer), leaving out the
    query's own row (`exclude`) when the query is itself indexed."""
    similarities, rows = index.search(queries, k + (exclude is not None))
    if exclude is None:
        return similarities, rows
    kept_similarities, kept_rows = np.full((len(rows), k), np.nan, np.float32), np.full((len(rows), k), -1)
    for i, own in enumerate(np.asarray(exclude)):
        others = (rows[i] != own) & (rows[i] >= 0)
        found = rows[i][others][:k]
        kept_rows[i, :len(found)], kept_similarities[i, :len(found)] = found, similarities[i][others][:k]
    return kept_similarities, kept_rows
