"""Does the audit find planted faults? A copy of sports15 with 20 labels flipped and 10 test images replaced by
re-encoded, slightly shrunk copies of training images (near-duplicates across splits), audited with a run.

    python -m bench.label_audit [--run assets/runs/efficientnet_lite2] [--data ../shared/data/sports15]

Prints the share of the flipped labels among the first 40 likely label errors (target ≥ 0.8) and how many
of the planted train–test duplicates were found (target: all). tests/test_audit.py runs the same experiment.
"""
from __future__ import annotations

import argparse
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from har_core.artifacts import open_run
from train import audit as audit_cli

ROOT = Path(__file__).resolve().parents[1]


def plant_faults(source: Path, target: Path, manifest: pd.DataFrame, flips: int = 20, duplicates: int = 10,
                 seed: int = 0) -> tuple[set[str], set[tuple[str, str]]]:
    """Copy a Kaggle-layout data set and plant faults. Returns the flipped files and the (train, test) pairs."""
    shutil.copytree(source, target)
    rng = np.random.default_rng(seed)
    listing = pd.read_csv(target / "Training_set.csv", dtype=str)
    label_of = dict(zip(listing["filename"], listing["label"]))
    train = manifest.loc[manifest["split"] == "train", "filename"].str.removeprefix("train/").to_numpy()
    test = manifest.loc[manifest["split"] == "test", "filename"].str.removeprefix("train/").to_numpy()
    originals, copies = rng.choice(train, duplicates, replace=False), rng.choice(test, duplicates, replace=False)
    pairs = set()
    for original, copy in zip(originals, copies):
        with Image.open(target / "train" / original) as image:
            image = image.convert("RGB")
            image = image.resize((int(image.width * 0.9), int(image.height * 0.9)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
        (target / "train" / copy).write_bytes(buffer.getvalue())
        label_of[copy] = label_of[original]  # a faithful copy: the right label, only the split is wrong
        pairs.add((f"train/{original}", f"train/{copy}"))
    untouched = sorted(set(label_of) - set(originals) - set(copies))
    classes = sorted(set(label_of.values()))
    flipped = set()
    for name in rng.choice(untouched, flips, replace=False):
        label_of[name] = rng.choice([c for c in classes if c != label_of[name]])
        flipped.add(f"train/{name}")
    listing["label"] = listing["filename"].map(label_of)
    listing.to_csv(target / "Training_set.csv", index=False)
    return flipped, pairs


def run_experiment(run_dir: Path, data: Path, work: Path, top: int = 40, seed: int = 0) -> dict:
    run = open_run(run_dir)
    flipped, pairs = plant_faults(data, work / "data", run.manifest(), seed=seed)
    result = audit_cli.main([str(work / "data"), "--run", str(run_dir), "--out", str(work / "audit"), "--quiet"])
    found_pairs = {tuple(sorted(p)) for p in zip(result.duplicates["file_a"], result.duplicates["file_b"])}
    first = set(result.label_issues["filename"].head(top))
    return {"flips_in_top": len(first & flipped) / len(flipped), "flagged": len(result.label_issues),
            "duplicates_found": sum(tuple(sorted(p)) in found_pairs for p in pairs), "duplicates_planted": len(pairs),
            "pairs_reported": len(result.duplicates), "outliers": len(result.outliers)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "assets" / "runs" / "efficientnet_lite2"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        figures = run_experiment(Path(args.run), Path(args.data), Path(work))
    print(f"label errors: {figures['flips_in_top']:.0%} of the 20 flipped labels among the first 40 "
          f"({figures['flagged']} flagged in all); duplicates: {figures['duplicates_found']} of "
          f"{figures['duplicates_planted']} planted train–test pairs found ({figures['pairs_reported']} pairs "
          f"reported); {figures['outliers']} outliers")
    return figures


if __name__ == "__main__":
    main()
