"""Which layer should Grad-CAM look at? A faithfulness score per candidate layer on the bundled runs.

    python -m bench.cam_layers [--runs assets/runs] [--data ../shared/data/sports15] [--out bench/cam_layers.json]
    python -m bench.cam_layers --method ScoreCAM --runs assets/runs_har --data ../shared/data/har --limit 8 --splits val

For every image of a split, Grad-CAM explains the predicted class at each candidate layer; the score is
pytorch-grad-cam's `CamMultImageConfidenceChange`: the change in that class's softmax probability when
the (normalised) image is multiplied by the map. A faithful map keeps what the model needs, so the
probability drops little or rises; higher is better. The rule, fixed before measuring: per architecture
the candidate with the highest mean score on the *val* split wins (test is reported, not used); a
candidate within 0.005 of the current layer does not displace it. `--method` scores another method's maps at its
own candidates (`METHOD_CANDIDATES`; results in bench/cam_layers_<method>.json); ScoreCAM costs a forward per
channel, so `--limit` takes the first pictures of each split only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from har_core.models.artifacts import find_runs
from har_core.explain.cam import _LogitsOnly, make_cam
from har_core.data.imaging import load_image
from har_core.models.inference import load_run

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {  # architecture -> layers to compare (the registry's current choice first)
    "custom_cnn": ["features.4.0", "features.4.2", "features.4"],
    "efficientnet": ["conv_head", "bn2", "blocks.6"],
    "mobilenet_v2": ["features.18", "features.17"],
    "resnet50": ["layer4", "layer3"],
    "vgg16": ["features.29", "features.28", "features.30"],
    "inception_v3": ["Mixed_7c", "Mixed_7b", "Mixed_6e"],
}

METHOD_CANDIDATES = {  # method -> architecture -> layers, where the method's layer may differ from Grad-CAM's
    "ScoreCAM": {"efficientnet": ["conv_head", "bn2"], "mobilenet_v2": ["features.17", "features.18"]},
}


def family(model: str) -> str:
    return "efficientnet" if model.startswith("efficientnet") else model


def scores(loaded, root: Path, files: list[str], layer: str, batch: int = 16, method: str = "Grad-CAM") -> np.ndarray:
    metric, out = CamMultImageConfidenceChange(), []
    wrapped = _LogitsOnly(loaded.model)
    for start in range(0, len(files), batch):
        images = loaded.preprocess([load_image(root / f) for f in files[start:start + batch]])
        with torch.no_grad():
            predicted = wrapped(images).argmax(1).tolist()
        with make_cam(method, loaded.model, loaded.model.get_submodule(layer)) as cam:
            maps = cam(input_tensor=images.clone().requires_grad_(True),
                       targets=[ClassifierOutputTarget(c) for c in predicted])
        out += list(metric(images, maps, [ClassifierOutputSoftmaxTarget(c) for c in predicted], wrapped))
    return np.asarray(out, dtype=np.float64)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    parser.add_argument("--out", help="default: bench/cam_layers.json (Grad-CAM), bench/cam_layers_<method>.json")
    parser.add_argument("--method", default="Grad-CAM", choices=["Grad-CAM", *METHOD_CANDIDATES])
    parser.add_argument("--limit", type=int, default=0, help="the first N pictures of each split (0: all)")
    parser.add_argument("--splits", default="val,test")
    args = parser.parse_args(argv)
    candidates = CANDIDATES if args.method == "Grad-CAM" else METHOD_CANDIDATES[args.method]
    out = Path(args.out or ROOT / "bench" / ("cam_layers.json" if args.method == "Grad-CAM"
                                             else f"cam_layers_{args.method.lower().replace('-', '')}.json"))
    torch.manual_seed(0)
    runs, _ = find_runs(args.runs)
    results: dict = {}
    for run in runs:
        if family(run.card["model"]) not in candidates:
            continue
        loaded = load_run(run)
        manifest = run.manifest()
        for layer in candidates[family(run.card["model"])]:
            for split in args.splits.split(","):
                started = time.time()
                files = manifest.loc[manifest["split"] == split, "filename"].tolist()[:args.limit or None]
                values = scores(loaded, Path(args.data), files, layer, method=args.method)
                results.setdefault(run.name, {"model": run.card["model"]}).setdefault(layer, {})[split] = {
                    "mean": float(values.mean()), "sem": float(values.std(ddof=1) / np.sqrt(len(values))),
                    "n": len(values)}
                print(f"{run.name:20s} {layer:14s} {split:4s} {values.mean():+.4f} ({time.time() - started:.0f}s)",
                      file=sys.stderr, flush=True)
                out.write_text(json.dumps(results, indent=2) + "\n")  # after every measurement
    return results


if __name__ == "__main__":
    main()
