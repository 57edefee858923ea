"""The frozen trunk of a cached-trunk training (har_core.training.trunk): eager PyTorch against ONNX Runtime.

    python -m bench.trunk [--models efficientnet_lite2,mobilenet_v2,inception_v3] [--batch 32] [--repeats 3]

For each registry entry with a trunk: milliseconds per image for one batch at the entry's input size (the
median of the repeats, after a warm-up), through eager PyTorch (channels-last) and through the ONNX Runtime
session `trunk_features` uses on a CPU, and the largest difference of their outputs. Random weights: the
cost is the architecture's, not the weights'.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from har_core.models.registry import REGISTRY
from har_core.training.trunk import OnnxTrunk, run_trunk


def timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite2,mobilenet_v2,inception_v3")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    figures = {}
    print(f"{'model':<20} {'size':>4}  PyTorch ms/img  ONNX Runtime ms/img  speed-up  max |Δ|")
    for name in args.models.split(","):
        spec = REGISTRY[name]
        model = spec.build(15).eval().to(memory_format=torch.channels_last)
        images = torch.randn(args.batch, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
        onnx = OnnxTrunk(model, spec.trunk, images)
        with torch.no_grad():
            eager = timed(lambda: run_trunk(model, spec.trunk, images.to(memory_format=torch.channels_last)), args.repeats)
            through_ort = timed(lambda: onnx(images), args.repeats)
            difference = float((onnx(images) - run_trunk(model, spec.trunk, images)).abs().max())
        figures[name] = {"pytorch_ms": 1000 * eager / args.batch, "onnxruntime_ms": 1000 * through_ort / args.batch,
                         "max_abs_diff": difference}
        print(f"{name:<20} {spec.input_size:>4}  {figures[name]['pytorch_ms']:>14.1f}  "
              f"{figures[name]['onnxruntime_ms']:>19.1f}  {eager / through_ort:>7.1f}×  {difference:.1e}")
    return figures


if __name__ == "__main__":
    main()
