"""How robust each model is: accuracy under darkening, lower contrast, blur, noise, rotation, zoom and a covered
centre, each at three strengths (har_core.explain.whatif), on pictures the runs never trained on.

    python -m train.robustness RUN [RUN ...] [--data DIR] [--split test|val|all] [--per-class N] [--out robustness.csv]

Writes each run's rows into its folder (robustness.csv: run, corruption, strength, accuracy; strength 0 is the
clean pictures, equal to `train.evaluate`'s accuracy on them; robustness.json: the split, the number of pictures,
the weights) and all runs' rows into --out. `--split all` takes every labelled picture of DIR: a folder the runs
never saw. `--per-class N` measures on the first N pictures of each class of the split (22 passes over the pictures
cost time on a CPU: 40 a class of HAR's 15 is 600 pictures). Evaluate shows the table as a heatmap (model × corruption), and the report has it.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from har_core.models.artifacts import RunError, open_run
from har_core.data.datasets import SPLITS, DataError, scan
from har_core.models.inference import load_run
from har_core.explain.robustness import clean_accuracy, labelled, mean_drop, robustness_table, write_robustness


def pictures(run, root, split: str, per_class: int = 0) -> tuple[list[str], list[int]]:
    """The (files, label ids) to measure on: one split of the run's manifest, or every labelled picture of root;
    `per_class`: only the first that many of each class (in the manifest's or the folder's order)."""
    index = scan(root, classes=run.classes, progress=False)
    usable = {rel for rel, _ in index.samples}
    if split == "all":
        chosen = index.samples
    else:
        manifest = run.manifest()
        if manifest is None:
            raise RunError(f"{run.name}: no split manifest ({run.path / 'split.csv'}); use --split all")
        rows = manifest[(manifest["split"] == split) & manifest["filename"].isin(usable)]
        chosen = list(zip(rows["filename"], rows["label"]))
    if per_class:
        frame = pd.DataFrame(chosen, columns=["filename", "label"]).groupby("label", sort=False).head(per_class)
        chosen = list(zip(frame["filename"], frame["label"]))
    if not chosen:
        raise DataError(f"{run.name}: no {split} pictures of it in {root}")
    return labelled(chosen, run.classes)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--data", help="data folder (default: the one on each run's card)")
    parser.add_argument("--split", default="test", choices=(*SPLITS, "all"))
    parser.add_argument("--per-class", type=int, default=0, help="at most this many pictures of each class (0: all)")
    parser.add_argument("--out", default="robustness.csv", help="every run's rows together")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    tables = []
    try:
        for path in args.runs:
            run = open_run(path)
            if run.takes_clips:
                print(f"warning: {run.name} is a clip model (3D CNN): picture edits are not measured on it, "
                      "skipped", file=sys.stderr)
                continue
            loaded = load_run(run, backend="pytorch")
            root = run.data_root(args.data)
            files, labels = pictures(run, root, args.split, args.per_class)
            loaded.model.to(args.device)
            table = robustness_table(run.name, loaded.model, run.card, root, files, labels, device=args.device,
                                     batch_size=args.batch_size, progress=not args.quiet)
            write_robustness(run, table, {"split": args.split, "pictures": len(files), "data": str(root),
                                          "per_class": args.per_class or None})
            tables.append(table)
            worst = table[table["strength"] == 3].sort_values("accuracy").iloc[0]
            print(f"{run.name}: clean {clean_accuracy(table):.4f} on {len(files)} {args.split} pictures; "
                  f"{mean_drop(table) * 100:.1f} points lost on average; hardest: {worst['corruption']} "
                  f"({worst['accuracy']:.4f} at strength 3)")
    except (RunError, DataError) as error:
        raise SystemExit(f"error: {error}")
    if not tables:
        raise SystemExit("error: no image model among the runs given")
    together = pd.concat(tables, ignore_index=True)
    together.to_csv(args.out, index=False)
    print(f"{len(together)} rows into {args.out}")
    return together


if __name__ == "__main__":
    main()
