"""How long a 60-second 720p clip takes at 2 fps through the best bundled model (decode + predict).

    python -m bench.video [--run assets/runs/efficientnet_lite2] [--repeats 3]

The clip is made once from ../shared/data/videos/arm_wrestling.mp4 (real footage): upscaled to 1280×720,
looped to 60 s at 28 fps, H.264 (libx264 defaults), in a temporary folder, never in the project.
Prints the median of the repeats for decoding the 120 sampled frames and for predicting them.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from har_core.models.inference import load_run
from har_core.explain.timeline import timeline
from har_core.data.video import read_clip

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "videos" / "arm_wrestling.mp4"


def make_clip(path: Path, seconds: int = 60, fps: int = 28) -> Path:
    with av.open(str(SOURCE)) as source:
        frames = [np.asarray(f.to_image().resize((1280, 720))) for f in source.decode(video=0)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(seconds * fps):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "assets" / "runs" / "efficientnet_lite2"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    model = load_run(args.run)
    with tempfile.TemporaryDirectory() as folder:
        print("making the 60 s 720p clip…", flush=True)
        clip_path = make_clip(Path(folder) / "clip720p.mp4")
        timeline([model], read_clip(clip_path, count=8))  # warm-up
        decode, predict = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            clip = read_clip(clip_path, fps=2)
            decode.append(time.perf_counter() - started)
            started = time.perf_counter()
            timeline([model], clip)
            predict.append(time.perf_counter() - started)
    figures = {"frames": len(clip.frames), "decode_s": statistics.median(decode),
               "predict_s": statistics.median(predict)}
    figures["total_s"] = figures["decode_s"] + figures["predict_s"]
    print(f"60 s 1280×720 H.264 clip, {figures['frames']} frames at 2 fps through {model.name}: decode "
          f"{figures['decode_s']:.2f} s + predict {figures['predict_s']:.2f} s = {figures['total_s']:.2f} s "
          f"(median of {args.repeats}; target ≤ 10 s)")
    return figures


if __name__ == "__main__":
    main()
