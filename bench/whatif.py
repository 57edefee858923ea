"""What if: from a slider move to every bundled model's new answer (goal ≤ 0.5 s for seven models).

    python -m bench.whatif [--runs assets/runs] [--repeats 5]

Per repeat a new edit (a brightness the cache has not seen, with a 5 % blur, noise and a covered box: the
costliest edits) is applied to a 1600×1200 photo-sized picture at each model's own size (har_core.explain.whatif.as_model_sees:
its own resize, then the edit) and every model predicts its edited picture with its embedding, each model on its own,
as the Predict page's What-if panel does on a slider move (PyTorch on this CPU).
Prints the edit's time, the models' time and the total (min / median seconds).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from har_core.models.artifacts import find_runs
from har_core.models.inference import load_run, predict_all
from har_core.explain.whatif import Edit, as_model_sees

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    models = [load_run(run) for run in find_runs(args.runs)[0] if not run.takes_clips]
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8))
    for model in models:  # warm-up: first forwards allocate
        predict_all([model], [picture], embed=True)
    edits, predictions = [], []
    for i in range(args.repeats):
        edit = Edit(brightness=0.5 + 0.05 * i, blur=0.05, noise=0.1, cover=(0.3, 0.3, 0.7, 0.7))
        start = time.perf_counter()
        edited = [as_model_sees(picture, edit, model.transform) for model in models]
        middle = time.perf_counter()
        for model, seen in zip(models, edited):  # the page asks each model on its own (each answer cached by itself)
            predict_all([model], [seen], embed=True)
        edits.append(middle - start)
        predictions.append(time.perf_counter() - middle)
    total = [a + b for a, b in zip(edits, predictions)]
    figures = {name: {"min": round(min(v), 3), "median": round(float(np.median(v)), 3)}
               for name, v in (("edit", edits), ("models", predictions), ("total", total))}
    print(f"{len(models)} models ({', '.join(m.name for m in models)}), {args.repeats} slider moves:")
    for name, figure in figures.items():
        print(f"  {name:<7} min {figure['min']:.3f} s   median {figure['median']:.3f} s")
    return figures


if __name__ == "__main__":
    main()
