"""What batching visitors' forwards buys (har_core.models.batching), without a browser or a server.

    python -m bench.batching [--runs assets/runs_har] [--data ../shared/data/har] [--visitors 30]

`--visitors` threads each predict a different photo with every run at once, as the Predict page does (one
model after the other, with embeddings, in the runs' calibrated TTA mode): once with each visitor's forwards
alone, once through the shared queues. Prints each visitor's seconds (p50 / p95 / max), how many forwards
ran, and how many visitors' answers differ from the photo's answer alone; first, for each model in one thread,
the milliseconds a photo costs in forwards of 1, 2, 4, … photos (what the queues' batch limit is chosen from).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from har_core.models import batching
from bench.common import runs_and_data_parser
from har_core.models.artifacts import find_runs
from har_core.models.backend import app_backend
from har_core.evaluation.calibration import default_tta
from har_core.data.imaging import load_image
from har_core.models.inference import load_run, predict_all


def room(models, images, tta: bool, shared: bool) -> tuple[list[float], list[list[np.ndarray]]]:
    """Every visitor's seconds and answers, all starting together."""
    seconds, answers, start = [0.0] * len(images), [None] * len(images), threading.Barrier(len(images))

    def visit(i):
        start.wait()
        began = time.perf_counter()
        answers[i] = [predict_all([m], [images[i]], tta, embed=True, shared=shared)[0].probs for m in models]
        seconds[i] = time.perf_counter() - began
    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds, answers


def main(argv=None) -> None:
    parser = runs_and_data_parser(__doc__, runs="runs_har", data="har")
    parser.add_argument("--visitors", type=int, default=30)
    args = parser.parse_args(argv)
    runs = [run for run in find_runs(Path(args.runs))[0] if not run.takes_clips]
    models, tta = [load_run(run.path, app_backend()) for run in runs], default_tta(runs)  # as the app serves them
    files = sorted((Path(args.data) / "train").glob("*.jpg"))[:args.visitors]
    images = [load_image(path) for path in files]
    alone = [[m.predict([image], tta) for m in models] for image in images]
    print(f"{len(images)} visitors at once, {len(models)} models each ({', '.join(f'{m.name} ({m.backend})' for m in models)}), "
          f"TTA {'on' if tta else 'off'}")
    # the forward itself, in this one thread: every photo once, in forwards of B photos each; ms a photo
    sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= len(images)]
    print(f"{'ms a photo, forwards of B':26s}" + "".join(f"{f'B={b}':>8s}" for b in sizes))
    totals = np.zeros(len(sizes))
    for m in models:
        pixels = m.pixels(images)
        cells = []
        for b in sizes:
            m.forward(pixels[:b], tta, embed=True)  # the first forward of a shape sets it up: not counted
            count = len(images) // b * b
            start = time.perf_counter()
            for i in range(0, count, b):
                m.forward(pixels[i:i + b], tta, embed=True)
            cells.append((time.perf_counter() - start) / count * 1000)
        totals += cells
        print(f"{m.name:26s}" + "".join(f"{c:8.0f}" for c in cells), flush=True)
    print(f"{'all models':26s}" + "".join(f"{c:8.0f}" for c in totals) + f"   (the shared queues take up to "
          f"{batching.MAX_IMAGES} photos a forward)")
    for shared in (False, True):
        seconds, answers = room(models, images, tta, shared)
        queues = [batching.queue_of(m) for m in models]
        forwards = sum(q.forwards for q in queues) if shared else len(images) * len(models)
        wrong = sum(any(not np.allclose(a, b, atol=1e-5) for a, b in zip(got, own)) for got, own in zip(answers, alone))
        print(f"{'shared queues' if shared else 'each alone':14s} p50 {np.percentile(seconds, 50):6.2f} s  "
              f"p95 {np.percentile(seconds, 95):6.2f} s  max {max(seconds):6.2f} s  {forwards:3d} forwards  "
              f"{wrong} visitors' answers differ from alone", flush=True)
    batching.close_all()


if __name__ == "__main__":
    main()
