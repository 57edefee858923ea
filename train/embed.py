"""Compute a run's embeddings (its classifier head's input for every image) and its similar-image search.

    python -m train.embed RUN [--data DIR] [--index auto|always|never] [--map] [--channels] [--reduce 128]

Writes into the run folder: embeddings.safetensors (float16 vectors and probabilities, with file names,
digests, labels, splits and the data fingerprint), retrieval.json (kNN and retrieval-augmented accuracy,
the mixing weight chosen on val), and — beyond 100,000 training images or with --index always — the FAISS
index (similarity.faiss), which the app then loads instead of building it. --map also stores the 2-D
embedding map (UMAP) the app's Embeddings page shows. Pictures already embedded are not embedded again.
--reduce D stores the embeddings as D dimensions (a truncated SVD of the training pictures'; float16), to ship a
run's similar images small, and prints what that costs search (top-6 overlap with the full vectors, kNN).

--channels writes, instead of the embeddings, the training pictures that excite each channel of every stage
most (channels.safetensors: the Inside page's channel tops).
"""
from __future__ import annotations

import argparse
import sys

from har_core.models.artifacts import RunError, open_run
from har_core.explain.channels import CHANNELS, ChannelError, store_channel_tops
from har_core.data.datasets import DataError, scan
from har_core.retrieval.embeddings import EmbeddingError, missing_from
from har_core.models.inference import load_run
from har_core.retrieval.projection import embedding_map
from har_core.retrieval.similarity import embed_run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("--data", help="data folder (default: the one on the run's card)")
    parser.add_argument("--index", default="auto", choices=("auto", "always", "never"),
                        help="store the FAISS index (auto: beyond 100,000 training images)")
    parser.add_argument("--map", action="store_true", help="also compute and store the 2-D embedding map (UMAP)")
    parser.add_argument("--channels", action="store_true",
                        help="instead of the embeddings: rank the training pictures for every channel of every stage "
                             "(the Inside page's channel tops, channels.safetensors)")
    parser.add_argument("--reduce", type=int, metavar="D",
                        help="store the embeddings as D dimensions (e.g. 128; truncated SVD) and report what search loses")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.reduce is not None and args.reduce < 2:
        parser.error("--reduce needs at least 2 dimensions")
    try:
        run = open_run(args.run)
        if run.manifest() is None:
            raise RunError(f"{run.name}: no split manifest ({run.path / 'split.csv'})")
        root = run.data_root(args.data)
        index = scan(root, classes=run.classes, progress=not args.quiet)
        manifest = run.manifest()
        missing = missing_from(manifest, index)
        training = set(manifest.loc[manifest["split"] == "train", "filename"])
        if training and training <= set(missing):
            raise DataError(f"{root} holds none of {run.name}'s {len(training)} training pictures, so there is "
                            "nothing to search; pass --data the folder the run was trained on")
        if missing:
            print(f"warning: {len(missing)} image(s) of {run.name}'s split are missing or unreadable in {root} and "
                  f"are left out (e.g. {', '.join(missing[:3])})", file=sys.stderr)
        loaded = load_run(run, backend="pytorch")  # the stage hooks and the embedding tap live in PyTorch
        loaded.model.to(args.device)
        if args.channels:
            tops = store_channel_tops(loaded, index, batch_size=args.batch_size, device=args.device,
                                      progress=not args.quiet)
            print(f"{run.name}: the top {tops.scores[next(iter(tops.scores))].shape[1]} of {len(tops.files)} "
                  f"training pictures for every channel of {len(tops.rows)} stages, into {run.path / CHANNELS}")
            return {"channels": len(tops.rows)}
        embeddings, report = embed_run(loaded, index, args.batch_size, args.device, progress=not args.quiet,
                                       build_index=args.index, reduce_to=args.reduce)
        if args.map:
            embedding_map(embeddings, run.path)
    except (RunError, DataError, EmbeddingError, ChannelError) as error:
        raise SystemExit(f"error: {error}")
    if "recomputed" in report:
        print(f"note: {report['recomputed']}")
    print(f"{run.name}: {len(embeddings)} images embedded ({embeddings.dimensions}) into "
          f"{run.path / 'embeddings.safetensors'}")
    if report.get("reduction"):
        effect = report["reduction"]
        print(f"  reduced {effect['dims']} dimensions: the top {effect['k']} similar training pictures of "
              f"{effect['pictures']} val+test pictures overlap the full vectors' by {effect['top_k_overlap']:.1%}; "
              f"kNN accuracy {effect['knn_full']:.4f} full, {effect['knn_reduced']:.4f} reduced; the audit's "
              f"near-duplicate pairs {effect['near_duplicates_full']} full, {effect['near_duplicates_reduced']} "
              f"reduced, {effect['near_duplicates_both']} in both")
        full = effect["retrieval_full"]
        if "test" in full:
            print(f"  with the full vectors: test kNN {full['test']['knn']:.4f}, retrieval-augmented (weight "
                  f"{full['weight']:.2f}, chosen on val) {full['test']['augmented']:.4f}")
    for split in ("val", "test"):
        if split in report:
            part = report[split]
            print(f"  {split}: model {part['model']:.4f}  kNN (k={report['k']}) {part['knn']:.4f}  "
                  f"retrieval-augmented (weight {report['weight']:.2f}, chosen on val) {part['augmented']:.4f}")
    if "not_stored" in report:
        print(f"warning: could not write into {run.path}: {report['not_stored']}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
