"""Predict unlabelled images with a trained run and write a Kaggle-style submission.

    python -m train.predict RUN DATA/Testing_set.csv --out submission.csv
    python -m train.predict RUN photos/ --out predictions.csv [--no-tta] [--backend onnxruntime] [--probs] [--sets 0.9]

Probabilities are calibrated (the run's temperature, fitted on val; --raw for the network's own), with flip TTA
when the run was calibrated with it (the temperature scales those probabilities; --tta / --no-tta to choose, a
note saying when the choice differs). --probs adds
`confidence` and a `prob_<class>` column per class; --sets 0.9 adds `set`: the classes of the picture's 90 %
prediction set (split conformal, calibrated on the run's val predictions), most likely first, joined by `|`.
Images that cannot be read are listed on stderr and left out; the rest are predicted.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from tqdm.auto import tqdm

from har_core.models.artifacts import RunError
from har_core.evaluation.calibration import run_calibration_pictures, tta_mismatch
from har_core.models.calibration_maths import CalibrationError, set_names
from har_core.models.backend import BACKENDS, LABELS
from har_core.data.fileio import atomic_write_text
from har_core.data.datasets import DataError, unlabelled_images
from har_core.data.imaging import ImageError, load_image
from har_core.models.inference import image_model, load_run


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("images", help="Testing_set.csv, a folder of images, or one image")
    parser.add_argument("--out", default="submission.csv")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction,
                        help="average with the mirrored image (default: as the run was calibrated)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", choices=list(BACKENDS), help="default: HAR_BACKEND, else pytorch")
    parser.add_argument("--probs", action="store_true", help="add confidence and one prob_<class> column per class")
    parser.add_argument("--sets", type=float, metavar="COVERAGE", help="add each picture's prediction set (e.g. 0.9)")
    parser.add_argument("--raw", action="store_true", help="uncalibrated probabilities")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        loaded = image_model(load_run(args.run, args.backend, calibrated=not args.raw))
        sets = run_calibration_pictures(loaded.run, calibrated=not args.raw).sets(args.sets) if args.sets is not None else None
        root, files, problems = unlabelled_images(args.images)
    except (RunError, DataError, CalibrationError) as error:
        raise SystemExit(f"error: {error}")
    if loaded.calibration_note:
        print(f"note: {loaded.calibration_note}", file=sys.stderr)
    tta = loaded.tta if args.tta is None else args.tta
    if differs := tta_mismatch([(loaded.name, loaded.tta)], tta):
        print(f"note: {differs}", file=sys.stderr)
    rows = []
    for start in tqdm(range(0, len(files), args.batch_size), desc="predicting", disable=args.quiet):
        images, names = [], []
        for name in files[start:start + args.batch_size]:
            try:
                images.append(load_image(root / name))
                names.append(name)
            except ImageError as error:
                problems.append((name, str(error)))
        if images:
            probs = loaded.predict(images, tta=tta)
            members = set_names(sets.predict(probs), probs, loaded.classes) if sets else [None] * len(probs)
            for name, p, members_of in zip(names, probs, members):
                row = {"filename": name.rsplit("/", 1)[-1], "label": loaded.classes[int(p.argmax())]}
                if args.probs:
                    row |= {"confidence": round(float(p.max()), 6)} | {f"prob_{c}": round(float(v), 6)
                                                                        for c, v in zip(loaded.classes, p)}
                if sets:
                    row["set"] = "|".join(members_of)
                rows.append(row)
    for name, reason in problems:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    submission = pd.DataFrame(rows, columns=["filename", "label"] + (
        ["confidence"] + [f"prob_{c}" for c in loaded.classes] if args.probs else []) + (["set"] if sets else []))
    atomic_write_text(args.out, submission.to_csv(index=False))
    print(f"wrote {len(submission)} predictions to {args.out} ({LABELS[loaded.backend]})"
          + (f" ({len(problems)} skipped)" if problems else ""))
    return submission


if __name__ == "__main__":
    main()
