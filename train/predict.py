"""Predict unlabelled images with a trained run and write a Kaggle-style submission.

    python -m train.predict RUN DATA/Testing_set.csv --out submission.csv
    python -m train.predict RUN photos/ --out predictions.csv [--tta] [--backend onnxruntime]

Images that cannot be read are listed on stderr and left out; the rest are predicted.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from tqdm.auto import tqdm

from har_core.artifacts import RunError
from har_core.backend import BACKENDS, LABELS
from har_core.fileio import atomic_write_text
from har_core.data import DataError, unlabelled_images
from har_core.imaging import ImageError, load_image
from har_core.inference import image_model, load_run


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("images", help="Testing_set.csv, a folder of images, or one image")
    parser.add_argument("--out", default="submission.csv")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", choices=list(BACKENDS), help="default: HAR_BACKEND, else pytorch")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        loaded = image_model(load_run(args.run, args.backend))
        root, files, problems = unlabelled_images(args.images)
    except (RunError, DataError) as error:
        raise SystemExit(f"error: {error}")
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
            probs = loaded.predict(images, tta=args.tta)
            rows += [(name.rsplit("/", 1)[-1], loaded.classes[int(p.argmax())]) for name, p in zip(names, probs)]
    for name, reason in problems:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    submission = pd.DataFrame(rows, columns=["filename", "label"])
    atomic_write_text(args.out, submission.to_csv(index=False))
    print(f"wrote {len(submission)} predictions to {args.out} ({LABELS[loaded.backend]})"
          + (f" ({len(problems)} skipped)" if problems else ""))
    return submission


if __name__ == "__main__":
    main()
