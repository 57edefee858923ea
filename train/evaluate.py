"""Recompute a run's metrics and per-sample predictions from its best checkpoint.

    python -m train.evaluate RUN --split test [--tta] [--data DIR]

Uses the run's own split manifest, so the evaluated images are exactly the ones it never trained on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from har_core.models.artifacts import RunError, open_run
from har_core.evaluation.calibration import calibrate_run
from har_core.models.calibration_maths import CalibrationError
from har_core.data.datasets import SPLITS, DataError, fingerprint_change, scan
from har_core.evaluation.evaluate import evaluate_split, write_evaluation
from har_core.models.inference import load_run


def warn_if_data_changed(card: dict, root: Path, quiet: bool = False) -> bool:
    """Compare the data's content fingerprint with the one the run was trained on; say so when it differs."""
    try:
        change = fingerprint_change(card.get("data", {}).get("fingerprint"),
                                    scan(root, classes=card["classes"], progress=not quiet))
    except DataError as error:
        raise RunError(f"{card['name']}: {error}") from None
    if change:
        print(f"warning: the data in {root} changed since {card['name']} was trained ({change}): images or labels "
              "were added, removed or edited, so these metrics are not the run's own", file=sys.stderr)
    return change is not None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--data", help="data folder (default: the one on the run's card)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: none on CPU, up to 4 beside a GPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        run = open_run(args.run)
        manifest = run.manifest()
        if manifest is None:
            raise RunError(f"{run.name}: no split manifest ({run.path / 'split.csv'})")
        root = run.data_root(args.data)
        warn_if_data_changed(run.card, root, quiet=args.quiet)
        loaded = load_run(run)
        loaded.model.to(args.device)
        metrics, predictions = evaluate_split(loaded.model, run.card, root, manifest, args.split, tta=args.tta,
                                              device=args.device, batch_size=args.batch_size,
                                              workers=args.workers, progress=not args.quiet)
    except RunError as error:
        raise SystemExit(f"error: {error}")
    write_evaluation(run.path, run.card, metrics, predictions)
    print(f"{run.name} {args.split}: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}"
          f"  ({metrics['n']} images{', flip TTA' if args.tta else ''})")
    run = open_run(run.path)
    if run.predictions("val") is not None:  # new predictions: the temperature and its report follow them
        try:
            calibration = calibrate_run(run)
            print(f"{run.name}: calibration temperature {calibration['temperature']:.3f} (fitted on val)")
        except CalibrationError as error:
            print(f"{run.name}: not calibrated: {error}")
    return metrics


if __name__ == "__main__":
    main()
