"""Similar-image search: index build and query time, and recall@10 against exact search.

    python -m bench.retrieval [--sizes 1154,12600,1000000] [--nprobe 8,16,32,64]

1,154: the bundled EfficientNet-Lite2 run's real sports15 embeddings. Larger sizes are synthetic 1280-d
vectors scattered around those real ones (each a real embedding plus Gaussian noise of 0.3 × its feature's
spread), so they keep the real ones' cluster structure. The index kind is the one har_core picks by size
(exact up to 100,000 vectors, IVF beyond). Query time: one query at a time (as the app asks), median of 200.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

from har_core.models.artifacts import open_run
from har_core.retrieval.embeddings import run_embeddings
from har_core.retrieval.embeddings import normalised
from har_core.retrieval.search import VectorIndex

ROOT = Path(__file__).resolve().parents[1]


def synthetic(real: np.ndarray, n: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spread = real.std(0, keepdims=True) * 0.3
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        out[start:start + size] = real[rng.integers(0, len(real), size)] + \
            rng.standard_normal((size, real.shape[1]), dtype=np.float32) * spread
    return out


def measure(vectors: np.ndarray, queries: np.ndarray, nprobes: list[int], k: int = 10) -> list[dict]:
    started = time.perf_counter()
    index = VectorIndex.build(vectors)
    build = time.perf_counter() - started
    _, truth = faiss.knn(normalised(queries), normalised(vectors), k, metric=faiss.METRIC_INNER_PRODUCT)
    rows = []
    for nprobe in (nprobes if index.kind == "ivf" else [0]):
        if nprobe:
            index.index.nprobe = nprobe
        times, recall = [], []
        for i, query in enumerate(queries):
            started = time.perf_counter()
            _, found = index.search(query[None], k)
            times.append(time.perf_counter() - started)
            recall.append(len(set(found[0]) & set(truth[i])) / k)
        rows.append({"vectors": len(vectors), "kind": index.kind, "nprobe": nprobe, "build_s": build,
                     "query_ms": 1000 * float(np.median(times)), "recall@10": float(np.mean(recall))})
        print(f"{len(vectors):>9,} vectors  {index.kind:5s} {f'nprobe {nprobe:3d}' if nprobe else '          '}  "
              f"build {build:7.2f} s  query {rows[-1]['query_ms']:7.2f} ms  recall@10 {rows[-1]['recall@10']:.3f}",
              flush=True)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "assets" / "runs" / "efficientnet_lite2"))
    parser.add_argument("--sizes", default="1154,12600,1000000")
    parser.add_argument("--nprobe", default="8,16,32,64")
    args = parser.parse_args(argv)
    found = run_embeddings(open_run(args.run))
    real = found.vectors
    nprobes = [int(n) for n in args.nprobe.split(",")]
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; queries: 200 single queries; "
          f"{found.dimensions} vectors of {found.run}")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        vectors = real if size == len(real) else synthetic(real, size)
        queries = synthetic(real, 200, seed=1)  # new points, not in the index
        rows += measure(vectors, queries, nprobes)
        del vectors
    return rows


if __name__ == "__main__":
    main()
