"""Benchmarks on the bundled demo models (`make bench`): prints a table and writes bench/results.json.

Each figure is min / median seconds over repeats after a warm-up. Run it on an idle machine.

    python -m bench.run [--runs assets/runs] [--data ../shared/data/sports15] [--repeats 5] [--skip-browser]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from bench import classroom
from har_core.models.artifacts import find_runs
from har_core.explain.cam import explain
from har_core.evaluation.evaluate import evaluate_split
from har_core.data.imaging import load_image
from har_core.models.inference import forward_probs, load_run, predict_all

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min": min(times), "median": statistics.median(times)}


def interleaved(contenders: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each callable per repeat, taken in turn within each repeat (after one warm-up each), so
    that a shared machine's slow spells hit every contender alike and their ratios stay comparable."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def step(what: str) -> None:
    print(f"bench: {what}…", file=sys.stderr, flush=True)


def a_photo(data: Path | None, size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A photo-sized JPEG, made from a data-set image when one is at hand."""
    source = next(iter(sorted((data / "train").glob("*.jpg"))), None) if data and data.is_dir() else None
    image = Image.open(source).convert("RGB") if source else Image.new("RGB", (224, 224), (120, 90, 60))
    buffer = io.BytesIO()
    image.resize(size, Image.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def in_fresh_process(code: str, *args: str) -> float:
    """The number a Python snippet prints last, run in a new interpreter (nothing loaded or measured before)."""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cold_start(runs_dir: Path) -> float:
    return in_fresh_process("import time; t=time.perf_counter(); from har_core.models.artifacts import find_runs; "
                            "from har_core.models.inference import load_run; "
                            f"[load_run(r) for r in find_runs({str(runs_dir)!r})[0]]; print(time.perf_counter()-t)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args(argv)
    runs_dir, data = Path(args.runs), Path(args.data)
    results: dict = {"threads": torch.get_num_threads()}

    step("cold start")
    results["cold_start_s"] = cold_start(runs_dir)
    models = [load_run(run) for run in find_runs(runs_dir)[0]]
    photo = a_photo(data)

    # 0. decoding a photo: JPEG draft mode (the default) against a full decode
    step("decoding")
    results["decode"] = {}
    for size in ((1600, 1200), (4000, 3000)):
        jpeg = a_photo(data, size)
        results["decode"][f"{size[0]}x{size[1]}"] = {
            "draft": timed(lambda: load_image(jpeg), args.repeats),
            "full": timed(lambda: load_image(jpeg, draft_size=0), args.repeats)}

    # 1. every bundled model predicts one uploaded photo, against the compute floor
    step("predicting one photo with every model")
    image = load_image(photo)
    tensors = {m.name: m.preprocess([image]) for m in models}
    for tta in (False, True):
        full = timed(lambda: predict_all(models, [load_image(photo)], tta=tta), args.repeats)
        floor = timed(lambda: [forward_probs(m.model, tensors[m.name], tta) for m in models], args.repeats)
        results[f"predict_all_{'tta' if tta else 'plain'}"] = {
            "full": full, "compute_floor": floor, "ratio": full["median"] / floor["median"]}

    # 2. Grad-CAM per model and method
    step("Grad-CAM")
    results["gradcam"] = {}
    for m in models:
        for method in ("Grad-CAM", "Grad-CAM++", "EigenCAM"):
            results["gradcam"][f"{m.name}/{method}"] = timed(lambda: explain(m, image, method), max(2, args.repeats // 2))

    # 3. batch evaluation throughput vs pure forward at the same batch size, per model and worker count
    step("batch evaluation")
    if data.is_dir():
        results["evaluation"] = {}
        for model in models:
            run = model.run
            manifest = run.manifest()
            files = manifest.loc[manifest["split"] == "test", "filename"].tolist()
            decoded = torch.stack([model.transform(load_image(data / f)) for f in files])
            contenders = {"forward": lambda: [forward_probs(model.model, decoded[i:i + 64])
                                              for i in range(0, len(files), 64)]}
            for workers in (0, 1):
                contenders[f"workers_{workers}"] = lambda workers=workers: evaluate_split(
                    model.model, run.card, data, manifest, "test", batch_size=64, workers=workers, progress=False)
            times = interleaved(contenders, max(3, args.repeats))
            row = {"images": len(files), "forward_images_per_s": len(files) / statistics.median(times["forward"])}
            for workers in (0, 1):
                evaluation = times[f"workers_{workers}"]
                # each repeat's ratio pairs an evaluation with the forward timed just before it
                ratios = [f / e for f, e in zip(times["forward"], evaluation)]
                row[f"workers_{workers}"] = {"images_per_s": len(files) / statistics.median(evaluation),
                                             "ratio": statistics.median(ratios), "ratio_min": min(ratios)}
            results["evaluation"][model.name] = row

    # 4. app responsiveness
    step("the app in headless Chromium")
    Path(args.out).write_text(json.dumps(results, indent=2))  # kept, should the browser part fail
    if not args.skip_browser:
        try:
            results["classroom"] = classroom.measure(runs_dir, data, max(2, args.repeats // 2))
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the other figures still count
            print(f"bench: the browser figure failed: {type(error).__name__}: {error}", file=sys.stderr)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"{'figure':55s} {'min':>8s} {'median':>8s}")
    print(f"{'cold start: load every bundled model (s)':55s} {results['cold_start_s']:8.2f}")
    for size, r in results["decode"].items():
        for how in ("full", "draft"):
            print(f"{f'decode a {size} JPEG, {how} (s)':55s} {r[how]['min']:8.3f} {r[how]['median']:8.3f}")
    for key in ("predict_all_plain", "predict_all_tta"):
        r = results[key]
        print(f"{key + ' (decode+preprocess+forward, s)':55s} {r['full']['min']:8.3f} {r['full']['median']:8.3f}")
        print(f"{key + ' compute floor (s)':55s} {r['compute_floor']['min']:8.3f} {r['compute_floor']['median']:8.3f}"
              f"   ratio {r['ratio']:.2f}")
    for key, r in results["gradcam"].items():
        print(f"{'grad-cam ' + key + ' (s)':55s} {r['min']:8.3f} {r['median']:8.3f}")
    for name, e in results.get("evaluation", {}).items():
        print(f"{'evaluate ' + name + ' (images/s, 0 workers (CPU default) | 1)':55s} {e['workers_0']['images_per_s']:8.1f} "
              f"{e['workers_1']['images_per_s']:8.1f}   pure forward {e['forward_images_per_s']:.1f}   ratio "
              f"{e['workers_0']['ratio']:.2f} | {e['workers_1']['ratio']:.2f}")
    if results.get("classroom"):
        classroom.print_figures(results["classroom"])
    return results


if __name__ == "__main__":
    main()
