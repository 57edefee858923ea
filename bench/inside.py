"""Inside the network: how long one picture's pass through every stage takes, per bundled model (goal ≤ 1 s).

    python -m bench.inside [--runs assets/runs assets/runs_har] [--repeats 5]

Per run: the first call (the receptive fields are measured once per architecture and input size, then kept) and
the warm median of `har_core.explain.inside.stage_activations` on a 640×480 photo-like picture, on this machine's CPU.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from bench.run import timed
from har_core.models.artifacts import find_runs
from har_core.models.inference import load_run
from har_core.explain.inside import receptive_fields, stage_activations

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=[str(ROOT / "assets" / "runs"), str(ROOT / "assets" / "runs_har")])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    figures = {}
    print(f"{'run':<34} {'stages':>6} {'first (s)':>10} {'warm median (s)':>16}")
    for folder in args.runs:
        for run in find_runs(folder)[0]:
            if run.takes_clips:
                continue
            loaded = load_run(run)
            receptive_fields.cache_clear()
            first = timed(lambda: stage_activations(loaded, picture), repeats=1, warmup=0)["min"]
            warm = timed(lambda: stage_activations(loaded, picture), repeats=args.repeats)["median"]
            name = f"{Path(folder).name}/{run.name}"
            figures[name] = {"first_s": round(first, 3), "warm_median_s": round(warm, 3)}
            print(f"{name:<34} {len(stage_activations(loaded, picture)):>6} {first:>10.2f} {warm:>16.3f}")
    return figures


if __name__ == "__main__":
    main()
