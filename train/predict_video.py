"""An action timeline for video clips with a trained image model or clip model (3D CNN).

    python -m train.predict_video RUN CLIP [CLIP ...] --fps 2 --out timeline.csv [--segments segments.json]

Samples each clip at --fps frames per second (or --frames N evenly), predicts every sampled frame (the
same preprocessing as photos; a clip model sees a window of its own 16 frames centred on each sampled time),
writes one row per frame (clip, time_s, label, confidence and every
class's probability), and prints the segments: runs of the smoothed winning class (--window seconds)
lasting at least --min-duration seconds; frames whose best smoothed probability is under --threshold are
"no known action". Frames are seen mirrored too (flip TTA) when the run was calibrated that way; --tta / --no-tta
choose, with a note when the choice differs. A clip that cannot be read is named with the reason; the others go on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from har_core.models.artifacts import RunError
from har_core.evaluation.calibration import tta_mismatch
from har_core.data.fileio import atomic_write_text, write_json
from har_core.models.inference import load_run
from har_core.explain.timeline import NO_ACTION, timeline
from har_core.data.video import VideoError, read_clip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("clips", nargs="+", help="video files (mp4, webm, mov, avi, mkv)")
    parser.add_argument("--fps", type=float, default=2.0, help="sampled frames per second")
    parser.add_argument("--frames", type=int, default=0, help="sample this many frames evenly instead")
    parser.add_argument("--window", type=float, default=1.0, help="smoothing window in seconds")
    parser.add_argument("--min-duration", type=float, default=1.0, help="shortest segment in seconds")
    parser.add_argument("--threshold", type=float, default=0.5, help="below: no known action")
    parser.add_argument("--out", default="timeline.csv")
    parser.add_argument("--segments", help="write the segments as JSON here")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction,
                        help="average each frame with its mirror image (default: as the run was calibrated)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        loaded = load_run(args.run)
    except RunError as error:
        raise SystemExit(f"error: {error}")
    tta = loaded.tta if args.tta is None else args.tta
    if differs := tta_mismatch([(loaded.name, loaded.tta)], tta):
        print(f"note: {differs}", file=sys.stderr)
    rows, all_segments, failed = [], {}, 0
    for path in args.clips:
        name = Path(path).name
        bar = None
        try:
            clip = read_clip(path, fps=args.fps, count=args.frames)
            bar = tqdm(total=len(clip.frames), desc=f"predicting {name}", disable=args.quiet, leave=False)
            result = timeline([loaded], clip, on_batch=lambda done, total: bar.update(done - bar.n), source=path,
                              tta=tta)
        except VideoError as error:
            print(f"skipped {name}: {error}", file=sys.stderr)
            failed += 1
            continue
        finally:
            if bar is not None:
                bar.close()
        probs = result.probs[loaded.name]
        for time, p in zip(result.times, probs):
            rows.append({"clip": name, "time_s": round(float(time), 3), "label": loaded.classes[int(p.argmax())],
                         "confidence": round(float(p.max()), 4),
                         **{f"prob_{c}": round(float(v), 5) for c, v in zip(loaded.classes, p)}})
        segments = result.segments(loaded.name, args.window, args.min_duration, args.threshold)
        all_segments[name] = [s.as_dict() for s in segments]
        print(f"{name} ({clip.seconds:.1f} s, {len(clip.frames)} frames at {args.fps:g} fps):")
        for s in segments:
            shown = s.label if s.label != NO_ACTION else f"({NO_ACTION})"
            print(f"  {s.start:6.1f}–{s.end:6.1f} s  {shown}  {s.confidence:.0%}")
    if rows:
        atomic_write_text(args.out, pd.DataFrame(rows).to_csv(index=False))
        print(f"wrote {len(rows)} frame predictions to {args.out}")
    if args.segments:
        write_json(Path(args.segments), all_segments)
    if failed == len(args.clips):
        raise SystemExit("error: no clip could be read")
    return all_segments


if __name__ == "__main__":
    main()
