"""Audit a data set with a run's embeddings: near-duplicates, likely label errors, outliers.

    python -m train.audit DATA --run RUN --out DIR [--threshold 0.95]

Writes duplicates.csv (pairs close in the embedding that also look the same on their pixels, with both
similarities and the splits; pairs across train and test first),
label_issues.csv (file, given label, suggested label, label quality; most likely first) and outliers.csv
into DIR, and prints a summary. DATA may differ from the data the run was trained on (relabelled,
extended, another copy): splits come from the run's manifest, labels from DATA, and only pictures the
run has not embedded before go through the model; DIR keeps those embeddings for the next audit.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from har_core.models.artifacts import RunError, open_run
from har_core.retrieval.audit import DUPLICATE_THRESHOLD, PIXEL_MATCH, THUMBNAIL, audit
from har_core.data.datasets import DataError, scan
from har_core.retrieval.embeddings import EMBEDDINGS, EmbeddingError, embed_data, load_embeddings, mismatch
from har_core.data.fileio import atomic_write_text
from har_core.models.inference import load_run


def previous_embeddings(loaded, out: Path):
    """Vectors already computed by this run's network (same weights): the audit folder's own, else the run's.
    Ones made by another run or other weights are named and not reused."""
    for path in (out / EMBEDDINGS, loaded.run.path / EMBEDDINGS):
        try:
            found = load_embeddings(path, loaded.name)
        except EmbeddingError:
            continue
        problem = mismatch(found, loaded.run, loaded.weights) or (
            found.reduction is not None and "is stored reduced (for search); the audit's thresholds are set on full vectors")
        if not problem:
            return found
        print(f"note: {path} {problem}: not reused, the pictures are embedded anew")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="data folder (Kaggle layout or class folders)")
    parser.add_argument("--run", required=True, help="run folder whose model embeds the images")
    parser.add_argument("--out", required=True, help="folder for the CSV files (and the embeddings)")
    parser.add_argument("--threshold", type=float, default=DUPLICATE_THRESHOLD,
                        help="cosine similarity from which two images count as near-duplicates")
    parser.add_argument("--embedding-only", action="store_true",
                        help="near-duplicates by the embedding's similarity alone (default: pairs that also look the "
                             f"same on their pixels, a {THUMBNAIL}×{THUMBNAIL} grey thumbnail correlation ≥ {PIXEL_MATCH})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        run = open_run(args.run)
        index = scan(args.data, classes=run.classes, progress=not args.quiet)
        for rel, reason in index.problems:
            print(f"skipped {rel}: {reason}")
        loaded = load_run(run)
        loaded.model.to(args.device)
        embeddings = embed_data(loaded, index, run.manifest(), previous_embeddings(loaded, out), args.batch_size,
                                args.device, progress=not args.quiet)
        out.mkdir(parents=True, exist_ok=True)
        embeddings.save(out / EMBEDDINGS)
        result = audit(embeddings, args.threshold, root=None if args.embedding_only else index.root)
    except (RunError, DataError, EmbeddingError, OSError) as error:
        raise SystemExit(f"error: {error}")
    for name, frame in (("duplicates.csv", result.duplicates), ("label_issues.csv", result.label_issues),
                        ("outliers.csv", result.outliers)):
        atomic_write_text(out / name, frame.to_csv(index=False))
    print(f"{Path(args.data).name} with {run.name}'s embeddings ({len(embeddings)} images): {result.summary()}")
    print(f"written: {out / 'duplicates.csv'}, {out / 'label_issues.csv'}, {out / 'outliers.csv'}")
    return result


if __name__ == "__main__":
    main()
