"""How long one training step takes per picture, for each architecture at the sizes the HAR runs use.

    python -m bench.train_speed [--models custom_cnn resnet50 ...] [--batch-size 32] [--steps 3] [--threads N]

A step is forward, backward and an AdamW update on a batch of random pictures in channels_last, in float32 or
under bfloat16 autocast (the recipe's `precision`; fast where the CPU has AVX512-BF16), on this CPU, after one warm-up step; the figure is the fastest of --steps steps divided by the batch, and the minutes an
epoch over HAR's 7,771 training pictures follow from it. What the step trains is what the bundle's recipe trains
(every layer from a random start; a cached trunk's tail on its stored features: har_core.training.trunk).
"""
from __future__ import annotations

import argparse
import time

import torch

from har_core.models.registry import REGISTRY
from har_core.training.trunk import run_trunk, trunk_skipped

HAR_TRAIN_PICTURES = 7771

# (model, side, trained part, precision): "all" trains every layer on pictures; "tail" trains after the cached trunk
CASES = (
    ("custom_cnn", 128, "all", "fp32"), ("custom_cnn", 128, "all", "bf16"), ("custom_cnn", 160, "all", "fp32"),
    ("custom_cnn", 256, "all", "fp32"), ("resnet50", 128, "all", "fp32"), ("resnet50", 128, "all", "bf16"),
    ("resnet50", 160, "all", "fp32"), ("inception_v3", 299, "tail", "fp32"), ("efficientnet_lite2", 260, "tail", "fp32"),
    ("vgg16", 160, "tail", "fp32"),
)


def step_seconds(name: str, side: int, part: str, precision: str, batch_size: int, steps: int) -> float:
    spec = REGISTRY[name]
    model = spec.build(15).to(memory_format=torch.channels_last).train()
    pictures = torch.randn(batch_size, 3, side, side).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(15, (batch_size,))
    inputs, context = pictures, None
    if part == "tail":
        with torch.no_grad():
            inputs = run_trunk(model.eval(), spec.trunk, pictures).contiguous()
        model.train()
        for trunk_name in spec.trunk:
            for p in model.get_submodule(trunk_name).parameters():
                p.requires_grad = False
        context = spec.trunk
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def one_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            output = model(inputs)
        logits = output[0] if isinstance(output, (tuple, list)) else output
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        if context:
            with trunk_skipped(model, context):
                one_step()
        else:
            one_step()
        if i:  # the first step warms up oneDNN's kernels
            times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="only these architectures")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, batch {args.batch_size}, fastest of {args.steps} steps")
    print(f"{'model':<20}{'side':>6}  {'trains':<7}{'math':<5}{'ms / picture':>14}{'min / HAR epoch':>17}")
    for name, side, part, precision in CASES:
        if args.models and name not in args.models:
            continue
        seconds = step_seconds(name, side, part, precision, args.batch_size, args.steps)
        per_picture = seconds / args.batch_size
        print(f"{name:<20}{side:>6}  {part:<7}{precision:<5}{per_picture * 1000:>14.1f}{per_picture * HAR_TRAIN_PICTURES / 60:>17.1f}",
              flush=True)


if __name__ == "__main__":
    main()
