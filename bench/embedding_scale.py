"""The embedding map and the audit at the real HAR data set's size (12,600 images), on this CPU.

    python -m bench.embedding_scale [--n 12600]

Synthetic 1280-d embeddings around the bundled EfficientNet-Lite2 run's real ones (as bench/retrieval.py),
15 classes, a 70/15/15 split. Times: the UMAP map (computed once per run, then stored), building the map
figure and its JSON (every rerun of the Embeddings page), and the full data audit (once per threshold).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.retrieval import synthetic
from har_core.models.artifacts import open_run
from har_core.retrieval.audit import audit
from har_core.retrieval.embeddings import Embeddings, run_embeddings
from har_core.evaluation.plots import embedding_scatter
from har_core.retrieval.projection import embedding_map

ROOT = Path(__file__).resolve().parents[1]


def timed(what: str, action):
    started = time.perf_counter()
    result = action()
    print(f"{what:55s} {time.perf_counter() - started:7.2f} s", flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "assets" / "runs" / "efficientnet_lite2"))
    parser.add_argument("--n", type=int, default=12_600)
    args = parser.parse_args(argv)
    real = run_embeddings(open_run(args.run))
    print(f"{args.n:,} synthetic images drawn from the {real.dimensions} embeddings of {real.run}")
    rng = np.random.default_rng(0)
    source = rng.integers(0, len(real), args.n)  # each synthetic image copies a real one's label and probabilities
    vectors = synthetic(real.vectors, args.n)
    fake = Embeddings(run="synthetic", model=real.model, classes=real.classes, fingerprint="-",
                      files=[f"train/Image_{i}.jpg" for i in range(args.n)], digests=[str(i) for i in range(args.n)],
                      labels=[real.labels[i] for i in source], splits=list(rng.choice(["train", "val", "test"], args.n,
                                                                                       p=[0.7, 0.15, 0.15])),
                      vectors=vectors, probs=real.probs[source], ident="bench")
    timed("import + numba compilation (first map of a process)", lambda: embedding_map(_small(fake)))
    table = timed(f"UMAP map of {args.n:,} images (once per run, then stored)", lambda: embedding_map(fake))
    figure = timed("map figure + its JSON (each rerun of the page)", lambda: embedding_scatter(table).to_json())
    print(f"{'':55s} {len(figure) / 1e6:7.2f} MB sent to the browser")
    result = timed("data audit: duplicates + label errors + outliers", lambda: audit(fake))
    print(result.summary())


def _small(found: Embeddings) -> Embeddings:
    n = 200
    return Embeddings(run="warm-up", model=found.model, classes=found.classes, fingerprint="-", files=found.files[:n],
                      digests=found.digests[:n], labels=found.labels[:n], splits=found.splits[:n],
                      vectors=found.vectors[:n], probs=found.probs[:n], ident="warm-up")


if __name__ == "__main__":
    main()
