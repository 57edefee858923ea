"""Write the report to share: one self-contained HTML file that opens offline (har_core.report).

    python -m train.report RUNS [--data DIR] [--split test] [--mistakes 3] [--method Grad-CAM] --out report.html

RUNS is a folder of run folders (or one run). --data is the image folder the runs were evaluated on (default:
the first run's card); without one, the mistakes' pictures, their explanations (--method: Grad-CAM, or any
method of the Explain page, Occlusion included) and the data-set summary are left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from har_core.models.artifacts import RunError, find_runs
from har_core.explain.cam import EXPLANATIONS
from har_core.data.datasets import SPLITS, DataError
from har_core.data.fileio import atomic_write_text
from har_core.report import build_report


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="a folder of run folders, or one run folder")
    parser.add_argument("--data", help="image folder (default: the one on the first run's card, when present)")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--mistakes", type=int, default=3, help="most confident mistakes shown per model")
    parser.add_argument("--method", default="Grad-CAM", choices=EXPLANATIONS,
                        help="the explanation beside each mistake (ScoreCAM and Occlusion are slow)")
    parser.add_argument("--out", default="report.html")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    runs, failures = find_runs(args.runs)
    for name, reason in failures:
        print(f"warning: {name} left out: {reason}", file=sys.stderr)
    if not runs:
        raise SystemExit(f"error: no usable runs in {args.runs}")
    data = Path(args.data) if args.data else Path(runs[0].card.get("data", {}).get("root", ""))
    if args.data and not data.is_dir():
        raise SystemExit(f"error: image folder {data} not found")
    data = data if data.is_dir() and str(data) != "." else None
    with tqdm(desc="report", unit=" step", disable=args.quiet) as bar:
        def step(what: str) -> None:
            bar.set_postfix_str(what[-60:])
            bar.update()
        try:
            page = build_report(runs, data, args.split, args.mistakes, on_step=step, method=args.method)
        except (RunError, DataError) as error:
            raise SystemExit(f"error: {error}") from None
    out = Path(args.out)
    atomic_write_text(out, page)
    if not args.quiet:
        print(f"report of {len(runs)} runs written to {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


if __name__ == "__main__":
    main()
