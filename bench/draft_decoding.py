"""How many test predictions does JPEG draft decoding change? (ImageLimits.draft_side)

    python -m bench.draft_decoding [--runs assets/runs] [--data ../shared/data/sports15]

Every bundled run predicts its test split twice: images decoded as the app and evaluation decode them
(large JPEGs at a power-of-two reduction keeping ≥ 512 px) and fully decoded. Prints, per run, how many
images draft mode touched and how many predicted classes differ.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from har_core.artifacts import find_runs
from har_core.imaging import load_image
from har_core.inference import load_run

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    args = parser.parse_args(argv)
    runs, _ = find_runs(args.runs)
    files = runs[0].manifest().query("split == 'test'")["filename"].tolist()
    drafted = [load_image(Path(args.data) / f) for f in files]
    full = [load_image(Path(args.data) / f, draft_size=0) for f in files]
    touched = sum(a.size != b.size for a, b in zip(drafted, full))
    print(f"{len(files)} test images, {touched} decoded at a reduction (both sides ≥ 1024 px)")
    total = 0
    for run in runs:
        loaded = load_run(run)
        tta = run.card["recipe"].get("tta", False)
        a = np.concatenate([loaded.predict(drafted[i:i + 32], tta) for i in range(0, len(files), 32)])
        b = np.concatenate([loaded.predict(full[i:i + 32], tta) for i in range(0, len(files), 32)])
        changed = int((a.argmax(1) != b.argmax(1)).sum())
        total += changed
        print(f"{run.name:20s} predictions changed: {changed:3d} of {len(files)}   max |Δp| {np.abs(a - b).max():.4f}",
              flush=True)
    print(f"all runs: {total} of {len(files) * len(runs)} predictions changed")


if __name__ == "__main__":
    main()
