"""PyTorch eager against ONNX Runtime fp32 and int8 on the bundled runs, side by side.

    python -m bench.deploy [--runs assets/runs] [--data ../shared/data/sports15] [--repeats 5] [--out DIR]

Exports a copy of every image run (python -m train.export RUN --quantize int8: checked on its test split;
the bundle itself is left as it is) into --out (default: a temporary folder), then prints per run:
  export       seconds; fp32 agreement with PyTorch; test accuracy PyTorch / fp32 / int8 and whether int8 was kept
  sizes        model.safetensors as bundled, model.onnx, model.int8.onnx (MiB)
  one photo    a 1600×1200 JPEG through every model: decode + preprocess + forward, per backend (min / median)
  batch 64     images per second on preprocessed test images, per backend
  memory       peak resident memory of a fresh process that loads all the runs and predicts a batch of 64 each:
               PyTorch (har_core) and the torch-free predictor (deploy/predict.py) with fp32 and int8 files
Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench.run import a_photo, in_fresh_process, timed
from har_core.models import artifacts
from har_core.models.artifacts import find_runs
from har_core.models.export import copy_for_export, export_run, is_exported
from har_core.data.imaging import load_image
from har_core.models.inference import load_run, predict_all

ROOT = Path(__file__).resolve().parents[1]
BACKEND_FILES = {"pytorch": artifacts.WEIGHTS, "onnxruntime": "model.onnx", "onnxruntime-int8": "model.int8.onnx"}

PEAK_MEMORY = """
import sys, numpy as np
from pathlib import Path
backend, runs = sys.argv[1], sys.argv[2:]
if backend == "pytorch":
    import torch
    from har_core.models.inference import load_run
    models = [load_run(r, backend="pytorch") for r in runs]
    for m in models:
        m.forward(torch.zeros(64, 3, m.run.card["input_size"], m.run.card["input_size"]))
else:
    sys.path.insert(0, "deploy")
    from predict import Model
    for r in runs:
        m = Model(Path(r), int8=backend == "onnxruntime-int8")
        m.session.run(["logits"], {"input": np.zeros((64, 3, m.size, m.size), np.float32)})
# the peak resident memory of this process (VmHWM starts afresh at exec; ru_maxrss would carry the parent's)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""


def copy_runs(runs_dir: Path, out: Path, reuse: bool = False) -> list[Path]:
    """Copies of the image runs to export; `reuse`: copies already in `out` (and their exports) are kept."""
    copies = []
    for run in find_runs(runs_dir)[0]:
        if not run.takes_clips:
            target = out / run.path.name
            copies.append(target if reuse and (target / artifacts.CARD).is_file() else copy_for_export(run.path, out))
    return copies


def peak_memory_mb(backend: str, runs: list[Path]) -> float:
    return in_fresh_process(PEAK_MEMORY, backend, *map(str, runs))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="where the exported copies go (default: a temporary folder, removed)")
    parser.add_argument("--reuse", action="store_true", help="runs in --out already exported (by this bench, "
                        "make exports or train.export --quantize int8): time them again without exporting")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="har_deploy_"))
    results: dict = {"threads": torch.get_num_threads(), "runs": {}}
    try:
        runs = copy_runs(Path(args.runs), out, args.reuse)
        for run in runs:
            start = time.perf_counter()
            if args.reuse and (run / "bench_export.json").is_file():
                report, seconds = json.loads((run / "bench_export.json").read_text())
            elif args.reuse and is_exported(run, "int8"):  # exported by make exports / train.export: its card's record
                exports = artifacts.read_json(run / artifacts.CARD)["exports"]
                report = {key: record | {"kept": True} for key, record in exports.items()}
                report.setdefault("onnx_int8", {"kept": False})
                seconds = None
            else:
                report = export_run(run, quantize="int8", data=args.data, on_step=lambda line: print(line, flush=True))
                seconds = time.perf_counter() - start
                (run / "bench_export.json").write_text(json.dumps([report, seconds]))
            results["runs"][run.name] = {"export_s": seconds, "report": report,
                                         "mib": {b: (run / f).stat().st_size / 2**20 if (run / f).is_file() else None
                                                 for b, f in BACKEND_FILES.items()}}
        photo = a_photo(Path(args.data))
        backends = {b: [load_run(r, backend=b) for r in runs] for b in BACKEND_FILES}
        # where int8 was not kept, the int8 figure uses that run's fp32 ONNX model (as a deployment would)
        results["int8_missing"] = [m.name for m in backends["onnxruntime-int8"] if m.backend != "onnxruntime-int8"]
        mixed = [m if m.backend == "onnxruntime-int8" else f for m, f in zip(backends["onnxruntime-int8"],
                                                                          backends["onnxruntime"])]
        results["one_photo_s"] = {b: timed(lambda: predict_all(models, [load_image(photo)]), args.repeats)
                                  for b, models in {**backends, "onnxruntime-int8": mixed}.items()}
        for i, run in enumerate(runs):
            loaded = backends["pytorch"][i]
            manifest = loaded.run.manifest()
            files = manifest.loc[manifest["split"] == "test", "filename"].tolist()[:64]
            batch = loaded.preprocess([load_image(Path(args.data) / f) for f in files])
            batch = torch.cat([batch] * (64 // len(batch) + 1))[:64]
            row = results["runs"][run.name]["batch64_images_per_s"] = {}
            for backend, models in backends.items():
                if models[i].backend == backend:
                    row[backend] = 64 / timed(lambda: models[i].forward(batch), max(3, args.repeats // 2))["median"]
        del backends
        results["peak_memory_mb"] = {"pytorch (har_core)": peak_memory_mb("pytorch", runs),
                                     "onnxruntime fp32 (deploy/predict.py)": peak_memory_mb("onnxruntime", runs)}
        int8_runs = [r for r in runs if (r / "model.int8.onnx").is_file()]
        results["peak_memory_mb"][f"pytorch, the {len(int8_runs)} int8 runs"] = peak_memory_mb("pytorch", int8_runs)
        results["peak_memory_mb"][f"onnxruntime fp32, the {len(int8_runs)} int8 runs"] = peak_memory_mb("onnxruntime", int8_runs)
        results["peak_memory_mb"][f"onnxruntime int8, the {len(int8_runs)} int8 runs"] = peak_memory_mb(
            "onnxruntime-int8", int8_runs)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print_figures(results)
    (ROOT / "bench" / "deploy_results.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def print_figures(results: dict) -> None:
    names = list(results["runs"])
    print(f"\n{'run':20s} {'export s':>8s} {'max |Δp|':>9s} {'acc torch':>9s} {'fp32':>6s} {'int8':>6s} {'kept':>5s} "
          f"{'MiB st':>7s} {'onnx':>6s} {'int8':>6s} {'img/s torch':>11s} {'ort':>6s} {'int8':>6s}")
    for name in names:
        r = results["runs"][name]
        fp32, int8 = r["report"]["onnx"], r["report"].get("onnx_int8", {})
        speed = r.get("batch64_images_per_s", {})
        cell = lambda v, f: format(v, f) if v is not None else "-"
        print(f"{name:20s} {cell(r['export_s'], '8.1f')} {fp32['max_abs_diff']:9.1e} {cell(fp32['accuracy_pytorch'], '9.3f')} "
              f"{cell(fp32['accuracy'], '6.3f')} {cell(int8.get('accuracy'), '6.3f')} {str(int8.get('kept', '-')):>5s} "
              f"{cell(r['mib']['pytorch'], '7.1f')} {cell(r['mib']['onnxruntime'], '6.1f')} "
              f"{cell(r['mib']['onnxruntime-int8'], '6.1f')} {cell(speed.get('pytorch'), '11.1f')} "
              f"{cell(speed.get('onnxruntime'), '6.1f')} {cell(speed.get('onnxruntime-int8'), '6.1f')}")
    for backend, t in results["one_photo_s"].items():
        print(f"all {len(names)} models, one 1600×1200 photo, {backend:18s} min {t['min']:.3f} s  median {t['median']:.3f} s")
    if results["int8_missing"]:
        print(f"int8 not kept for: {', '.join(results['int8_missing'])} (the int8 photo figure uses their fp32 ONNX)")
    for what, mb in results["peak_memory_mb"].items():
        print(f"peak memory, all runs + a batch of 64 each, {what:30s} {mb:7.0f} MB")


if __name__ == "__main__":
    main()
