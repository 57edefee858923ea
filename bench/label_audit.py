"""Does the audit find planted faults? A copy of sports15 with 20 labels flipped and 10 test images replaced by
re-encoded, slightly shrunk copies of training images (near-duplicates across splits), audited with a run.

    python -m bench.label_audit [--run assets/runs/efficientnet_lite2] [--data ../shared/data/sports15]
    python -m bench.label_audit --trained-on-faults [--model mobilenet_v2]

Prints the share of the flipped labels among the first 40 likely label errors (target ≥ 0.8) and how many
of the planted train–test duplicates were found (target: all). tests/test_audit.py runs the same experiment.

The plain experiment flips labels *after* the run was trained: the easy case, the network never saw the wrong
labels. `--trained-on-faults` is the real case: a network is trained (offline ImageNet weights, cached trunk,
a short CPU recipe) on the faulty copy with the same split, then audits it; the flips it trained on are
counted apart from the flips among its val/test pictures.
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

from har_core.models.artifacts import open_run
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


# a short CPU recipe on cached trunk features (README "Cached trunk"): minutes on sports15, not hours
FAULTY_RECIPE = ["--pretrained", "offline", "--cached-views", "4", "--epochs", "6", "--freeze-epochs", "3",
                 "--lr", "1e-2", "--finetune-lr", "5e-4", "--scheduler", "cosine", "--augment", "rrc,flip,color",
                 "--mixup-alpha", "0", "--patience", "0", "--quiet"]
TAILS = {"mobilenet_v2": "features.14,features.15,features.16,features.17,features.18,classifier",
         "efficientnet_lite0": "blocks.4,blocks.5,blocks.6,conv_head,bn2,classifier"}


def trained_on_faults(model: str, data: Path, manifest: pd.DataFrame, work: Path, top: int = 40,
                      seed: int = 0) -> dict:
    """Train on a faulty copy (the flipped labels included, same split), then audit with that network."""
    from har_core.data.datasets import write_manifest
    from train import train
    flipped, pairs = plant_faults(data, work / "data", manifest, seed=seed)
    listing = pd.read_csv(work / "data" / "Training_set.csv", dtype=str)
    faulty = manifest.copy()
    faulty["label"] = faulty["filename"].map(dict(zip("train/" + listing["filename"], listing["label"])))
    write_manifest(faulty, work / "split.csv")
    run_dir = train.main(["--model", model, "--data", str(work / "data"), "--out", str(work / "runs"),
                          "--split", str(work / "split.csv"), "--trainable", TAILS[model], *FAULTY_RECIPE])
    result = audit_cli.main([str(work / "data"), "--run", str(run_dir), "--out", str(work / "audit"), "--quiet"])
    split_of = dict(zip(faulty["filename"], faulty["split"]))
    first = set(result.label_issues["filename"].head(top))
    by_split = {}
    for part, splits in (("train", {"train"}), ("val/test", {"val", "test"})):
        planted = {f for f in flipped if split_of.get(f) in splits}
        by_split[part] = (len(first & planted), len(planted))
    val_accuracy = open_run(run_dir).card["metrics"]["val"]["accuracy"]
    return {"flips_in_top": len(first & flipped) / len(flipped), "by_split": by_split, "val_accuracy": val_accuracy}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "assets" / "runs" / "efficientnet_lite2"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    parser.add_argument("--trained-on-faults", action="store_true", help="train on the faulty copy, then audit")
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(TAILS))
    args = parser.parse_args(argv)
    if args.trained_on_faults:
        with tempfile.TemporaryDirectory() as work:
            figures = trained_on_faults(args.model, Path(args.data), open_run(args.run).manifest(), Path(work))
        (a, n), (b, m) = figures["by_split"]["train"], figures["by_split"]["val/test"]
        print(f"trained on the faults ({args.model}, val accuracy {figures['val_accuracy']:.3f}): "
              f"{figures['flips_in_top']:.0%} of the 20 flipped labels among the first 40 likely label errors — "
              f"{a} of the {n} flips it trained on, {b} of the {m} flips among its val/test pictures")
        return figures
    with tempfile.TemporaryDirectory() as work:
        figures = run_experiment(Path(args.run), Path(args.data), Path(work))
    print(f"label errors: {figures['flips_in_top']:.0%} of the 20 flipped labels among the first 40 "
          f"({figures['flagged']} flagged in all); duplicates: {figures['duplicates_found']} of "
          f"{figures['duplicates_planted']} planted train–test pairs found ({figures['pairs_reported']} pairs "
          f"reported); {figures['outliers']} outliers")
    return figures


if __name__ == "__main__":
    main()
