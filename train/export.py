"""Export a run to ONNX, checked against PyTorch on its test images before it is kept (har_core.models.export).

    python -m train.export RUN [RUN ...] [--format onnx] [--quantize int8] [--data DIR] [--check-limit N] [--skip-exported]

Writes model.onnx (dynamic batch size; outputs logits and embedding) into each run folder beside its card;
--quantize int8 also writes model.int8.onnx when its val accuracy is at most one point below the float
model's (test accuracy is measured and reported, never used to decide). The card's "exports" block records
file, size, sha256, opset, the weights it came from and the checks.
Then predict with HAR_BACKEND=onnxruntime (or the app's sidebar), or copy the run folder anywhere and use
deploy/predict.py, which needs only onnxruntime, numpy and pillow.
"""
from __future__ import annotations

import argparse
import sys

from har_core.models.artifacts import RunError
from har_core.models.export import ExportError, export_run, is_exported


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folder(s)")
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--quantize", choices=("int8",), help="also write a checked int8 model")
    parser.add_argument("--data", help="image folder of the checks (default: the one on the run's card)")
    parser.add_argument("--check-limit", type=int, default=0, help="check on the first N test images (0: all)")
    parser.add_argument("--skip-exported", action="store_true",
                        help="leave out runs whose exports are there as their card records, from their current weights "
                        "(and, with --quantize, int8 decided): make exports")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401 - a clear line before any work
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"error: ONNX export needs onnx and onnxruntime ({error}); "
                         "pip install -r requirements.txt")
    done, failed = {}, []
    for run in args.runs:
        try:
            if args.skip_exported and is_exported(run, args.quantize):
                print(f"{run}: already exported from its current weights{' (int8 decided)' if args.quantize else ''}, "
                      "as its card records (left as it is)")
                continue
            done[run] = export_run(run, args.quantize, args.data, args.check_limit,
                                   on_step=(lambda line: None) if args.quiet else print)
        except (RunError, ExportError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed.append(run)
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(args.runs)} export(s) failed: {', '.join(failed)}")
    return done


if __name__ == "__main__":
    main()
