"""How many test predictions does JPEG draft decoding change? (ImageLimits.draft_side)

    python -m bench.draft_decoding [--runs assets/runs] [--data ../shared/data/sports15]

Every bundled run predicts its test split twice: images decoded as the app and evaluation decode them
(large JPEGs at a power-of-two reduction keeping ≥ 512 px) and fully decoded. Draft mode only touches
JPEGs at least 1024 px on both sides, and no sports15 image is that large; so the test images are also
re-encoded as phone-sized photos (`--long-side`, JPEG quality 92, bicubic upscale) and compared the
same way. Prints, per run, how many predicted classes differ.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import runs_and_data_parser
from har_core.models.artifacts import find_runs
from har_core.data.imaging import load_image
from har_core.models.inference import load_run


def main(argv=None) -> None:
    parser = runs_and_data_parser(__doc__, runs="runs", data="sports15")
    parser.add_argument("--long-side", type=int, default=3000)
    args = parser.parse_args(argv)
    runs, _ = find_runs(args.runs)
    files = runs[0].manifest().query("split == 'test'")["filename"].tolist()
    stored = [(Path(args.data) / f).read_bytes() for f in files]
    for label, sources in (("as stored", stored), (f"as {args.long_side}-px photos", [phone(b, args.long_side)
                                                                                      for b in stored])):
        drafted = [load_image(data) for data in sources]
        full = [load_image(data, draft_size=0) for data in sources]
        touched = sum(a.size != b.size for a, b in zip(drafted, full))
        print(f"{label}: {len(files)} test images, {touched} decoded at a reduction", flush=True)
        if not touched:  # the same pixels: nothing can change
            continue
        total = 0
        for run in runs:
            loaded = load_run(run)
            tta = run.card["recipe"].get("tta", False)
            a = np.concatenate([loaded.predict(drafted[i:i + 32], tta) for i in range(0, len(files), 32)])
            b = np.concatenate([loaded.predict(full[i:i + 32], tta) for i in range(0, len(files), 32)])
            changed = int((a.argmax(1) != b.argmax(1)).sum())
            total += changed
            print(f"  {run.name:20s} predictions changed: {changed:3d} of {len(files)}   "
                  f"max |Δp| {np.abs(a - b).max():.4f}", flush=True)
        print(f"  all runs: {total} of {len(files) * len(runs)} predictions changed", flush=True)


def phone(data: bytes, long_side: int) -> bytes:
    image = load_image(data, draft_size=0)
    scale = long_side / max(image.size)
    buffer = io.BytesIO()
    image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC).save(
        buffer, format="JPEG", quality=92)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
