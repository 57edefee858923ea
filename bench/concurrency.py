"""What the Grad-CAM thread fix costs: predictions per second on one shared model while Grad-CAMs run.

    python -m bench.concurrency [--run assets/runs/efficientnet_lite2] [--seconds 20]

Two threads predict other photos on the shared model while a third computes Grad-CAMs of one photo,
once with pytorch-grad-cam as it comes (every forward through the target layer is recorded, the old
behaviour) and once with HAR Studio's `make_cam` (only the CAM's own thread is recorded). Prints the
prediction throughput of each, beside the throughput with no CAM at all, and how many heatmaps differed
from the one computed alone.
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from har_core.explain.cam import METHODS, _LogitsOnly, cam_layer, make_cam
from har_core.data.imaging import load_image
from har_core.models.inference import load_run, predict_all

ROOT = Path(__file__).resolve().parents[1]


def plain_cam(loaded, batch, target):
    with METHODS["Grad-CAM"](model=_LogitsOnly(loaded.model), target_layers=[cam_layer(loaded)]) as cam:
        return cam(input_tensor=batch.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])[0]


def fixed_cam(loaded, batch, target):
    with make_cam("Grad-CAM", loaded.model, cam_layer(loaded)) as cam:
        return cam(input_tensor=batch.clone().requires_grad_(True), targets=[ClassifierOutputTarget(target)])[0]


def trial(loaded, photos, cam_fn, seconds: float, batch, alone):
    stop, counts, wrong, cams = threading.Event(), [0, 0], [0], [0]

    def predict(slot):
        while not stop.is_set():
            predict_all([loaded], photos[slot::2])
            counts[slot] += len(photos[slot::2])

    def explain():
        while not stop.is_set():
            heatmap = cam_fn(loaded, batch, 0)
            cams[0] += 1
            wrong[0] += int(np.abs(heatmap - alone).max() > 1e-5)
    threads = [threading.Thread(target=predict, args=(i,)) for i in (0, 1)]
    if cam_fn is not None:
        threads.append(threading.Thread(target=explain))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds, cams[0], wrong[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "assets" / "runs" / "efficientnet_lite2"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    loaded = load_run(args.run)
    files = loaded.run.manifest().query("split == 'test'")["filename"].tolist()
    photos = [load_image(Path(args.data) / f) for f in files[:8]]
    batch = loaded.preprocess([photos[0]])
    alone = fixed_cam(loaded, batch, 0)
    torch.set_num_threads(torch.get_num_threads())
    for name, fn in (("no CAM", None), ("pytorch-grad-cam as it comes (old)", plain_cam),
                     ("own-thread hooks (now)", fixed_cam)):
        rate, cams, wrong = trial(loaded, photos, fn, args.seconds, batch, alone)
        print(f"{name:36s} {rate:6.2f} predictions/s   {cams:3d} CAMs, {wrong:3d} differing from the lone one",
              flush=True)


if __name__ == "__main__":
    main()
