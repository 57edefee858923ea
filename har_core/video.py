"""Video clips: guarded decoding with PyAV, frame sampling, and an action timeline from the image models.

A clip is sampled at `fps` frames per second (or `count` frames evenly); the sampled frames go through the
image models exactly as photos do (same preprocessing, batched), giving per-frame probabilities per model.
The timeline smooths them over a window of seconds; segments are runs of the smoothed winning class that
last at least a minimum duration; frames whose best smoothed probability is under a threshold are
"no known action".

Decoding is sequential with FFmpeg's own threads, and only the sampled frames are converted to RGB; when
the next sampled frame is far ahead (sparse sampling of long clips) the decoder seeks to the keyframe
before it instead of decoding everything in between.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image

from har_core.ensemble import combine
from har_core.inference import LoadedModel, predict_all

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv")  # the one list of clip formats
NO_ACTION = "no known action"


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be; beyond any of these it is refused with the reason, before it is decoded."""

    max_bytes: int = 500 * 2**20  # a few minutes of phone video
    max_pixels: int = 3840 * 2160  # 4K UHD per frame
    min_side: int = 16
    max_seconds: float = 15 * 60  # a lesson's clip, not a film
    max_samples: int = 2000  # sampled frames per clip (2 fps × 15 min = 1800)
    seek_gap: float = 3.0  # seconds: a sampled frame further ahead than this is reached by seeking


DEFAULT_VIDEO_LIMITS = VideoLimits()


class VideoError(ValueError):
    """A clip that cannot be used, with a one-line reason fit to show a person."""


@dataclass
class Clip:
    """The sampled frames of a clip, upright, with their times in seconds."""

    times: list[float]
    frames: list[Image.Image]
    width: int
    height: int
    seconds: float
    rotation: int = 0  # degrees the stored frames were turned to be upright (phone video)


def _checked_size(source: bytes | str | Path, limits: VideoLimits) -> int:
    """The clip's size in bytes, refusing a missing, empty or too large file before anything is read."""
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise VideoError(f"file not found: {Path(source).name}")
        size = Path(source).stat().st_size
    else:
        size = len(source)
    if size == 0:
        raise VideoError("the file is empty")
    if size > limits.max_bytes:
        raise VideoError(f"the file is larger than {limits.max_bytes // 2**20} MB")
    return size


def read_video_file(path: str | Path, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> bytes:
    """The bytes of a clip file (to play and decode), refusing what is missing or over the limit unread."""
    _checked_size(path, limits)
    return Path(path).read_bytes()


def _open(source: bytes | str | Path, limits: VideoLimits):
    _checked_size(source, limits)
    opener = str(source) if isinstance(source, (str, Path)) else io.BytesIO(source)
    try:
        return av.open(opener, mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"not a video this server can read ({type(error).__name__})") from None


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _rotation(stream, frame) -> int:
    """Degrees (counter-clockwise) that make the frame upright: the display matrix, else the 'rotate' tag."""
    degrees = getattr(frame, "rotation", 0) or 0
    if not degrees:
        try:
            degrees = -int(float(stream.metadata.get("rotate", 0)))
        except ValueError:
            degrees = 0
    return int(round(degrees / 90.0)) * 90 % 360


def sample_times(seconds: float, fps: float = 2.0, count: int = 0) -> list[float]:
    """Sample times: every 1/fps seconds from 0, or `count` evenly spread (frame centres)."""
    if count:
        return [float(t) for t in (np.arange(count) + 0.5) * seconds / count]
    return [float(t) for t in np.arange(0.0, max(seconds, 1e-6), 1.0 / fps)]


def read_clip(source: bytes | str | Path, fps: float = 2.0, count: int = 0,
              limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> Clip:
    """Decode the sampled frames of a clip, or raise VideoError with a one-line reason."""
    if fps <= 0 and not count:
        raise VideoError("the sampling rate must be positive")
    container = _open(source, limits)
    try:
        if container.format.name.endswith("_pipe") or container.format.name.startswith("image2"):
            raise VideoError(f"this is a still image ({container.format.name.removesuffix('_pipe')}), not a video: "
                             "predict it as a photo")
        if not container.streams.video:
            raise VideoError("the file has no video stream" + (" (audio only)" if container.streams.audio else ""))
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if min(width, height) < limits.min_side:
            raise VideoError(f"the frames are too small ({width}×{height})")
        if width * height > limits.max_pixels:
            raise VideoError(f"the frames are too large ({width}×{height}; at most "
                             f"{limits.max_pixels / 1e6:.1f} megapixels)")
        seconds = _duration(container, stream)
        if seconds > limits.max_seconds:
            raise VideoError(f"the clip is {seconds / 60:.1f} minutes long; at most {limits.max_seconds / 60:.0f}")
        wanted = sample_times(seconds, fps, count) if seconds > 0 else None
        if wanted is not None and len(wanted) > limits.max_samples:
            raise VideoError(f"{len(wanted)} frames would be sampled; at most {limits.max_samples} (lower the rate)")
        stream.thread_type = "AUTO"
        clip = Clip(times=[], frames=[], width=width, height=height, seconds=seconds)
        _decode_samples(container, stream, wanted, fps, clip, limits)
    except av.error.FFmpegError as error:
        raise VideoError(f"the video is damaged or truncated ({type(error).__name__})") from None
    finally:
        container.close()
    if not clip.frames:
        raise VideoError("no frame could be decoded (damaged or truncated file)")
    return clip


def _decode_samples(container, stream, wanted: list[float] | None, fps: float, clip: Clip,
                    limits: VideoLimits) -> None:
    """Walk the decoded frames and keep, for each wanted time, the first frame at or after it. Without a
    known duration (`wanted` None) every 1/fps seconds is kept as the frames come."""
    base = stream.time_base or Fraction(1, 1000)
    start = float(stream.start_time * base) if stream.start_time is not None else 0.0
    position, next_free, frames, sought = 0, 0.0, container.decode(stream), -1
    while True:
        if wanted is not None and position >= len(wanted):
            return
        target = wanted[position] if wanted is not None else next_free
        try:
            frame = next(frames)
        except StopIteration:
            return
        except av.error.FFmpegError:
            if clip.frames:  # a truncated tail: keep what decoded
                return
            raise
        if frame.pts is None:
            continue
        time = float(frame.pts * base) - start
        if time + 1e-6 < target:
            if wanted is not None and target - time > limits.seek_gap and sought != position:
                sought = position  # once per target: the keyframe before it may still be far back
                container.seek(int((target + start) / base), stream=stream, backward=True)
                frames = container.decode(stream)
            continue
        image = frame.to_image()
        rotation = _rotation(stream, frame)
        if rotation:
            image = image.rotate(rotation, expand=True)
            clip.rotation = rotation
        clip.times.append(round(target if wanted is not None else time, 3))
        clip.frames.append(image)
        if len(clip.frames) > limits.max_samples:
            raise VideoError(f"more than {limits.max_samples} frames sampled (lower the rate)")
        if wanted is not None:
            position += 1
            while position < len(wanted) and wanted[position] <= time + 1e-6:  # one frame, several times
                clip.times.append(round(wanted[position], 3))
                clip.frames.append(image)
                position += 1
        else:
            next_free = time + 1.0 / fps


# ---- the timeline -----------------------------------------------------------------------------

@dataclass
class Segment:
    label: str
    start: float
    end: float
    confidence: float  # mean smoothed probability of the label over the segment

    def as_dict(self) -> dict:
        return {"label": self.label, "start_s": round(self.start, 2), "end_s": round(self.end, 2),
                "confidence": round(self.confidence, 4)}


@dataclass
class Timeline:
    times: np.ndarray  # (T,) seconds
    classes: list[str]
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # model (or "ensemble") -> (T, classes)

    def smoothed(self, name: str, window: float = 1.0) -> np.ndarray:
        """Each frame's probabilities averaged over the frames within ±window/2 seconds."""
        probs = self.probs[name]
        if window <= 0 or len(self.times) < 2:
            return probs
        near = np.abs(self.times[:, None] - self.times[None, :]) <= window / 2 + 1e-9
        return (near @ probs) / near.sum(1, keepdims=True)

    def labels(self, name: str, window: float = 1.0, threshold: float = 0.5) -> list[str]:
        """The smoothed winner of each frame, or NO_ACTION under the threshold."""
        smooth = self.smoothed(name, window)
        return [self.classes[i] if p >= threshold else NO_ACTION
                for i, p in zip(smooth.argmax(1), smooth.max(1))]

    def segments(self, name: str, window: float = 1.0, min_duration: float = 1.0,
                 threshold: float = 0.5) -> list[Segment]:
        """Runs of one smoothed label; runs shorter than `min_duration` join the run before them (the
        first, the run after it). A segment ends where the next one starts (or the clip's last frame + step)."""
        if not len(self.times):
            return []
        labels = self.labels(name, window, threshold)
        step = float(np.median(np.diff(self.times))) if len(self.times) > 1 else 0.5
        runs = _runs(labels)
        ends = [self.times[b] if b < len(labels) else self.times[-1] + step for _, _, b in runs]
        short = [ends[i] - self.times[a] < min_duration for i, (_, a, _) in enumerate(runs)]
        if len(runs) > 1 and not all(short):
            kept = [runs[i] for i in range(len(runs)) if not short[i]]
            labels = list(labels)
            for i, (label, a, b) in enumerate(runs):
                if short[i]:
                    before = [r for r in kept if r[2] <= a]
                    donor = before[-1][0] if before else next(r for r in kept if r[1] >= b)[0]
                    labels[a:b] = [donor] * (b - a)
            runs = _runs(labels)
        smooth = self.smoothed(name, window)
        segments = []
        for label, a, b in runs:
            end = self.times[b] if b < len(labels) else self.times[-1] + step
            confidence = float(smooth[a:b, self.classes.index(label)].mean()) if label != NO_ACTION \
                else float(smooth[a:b].max(1).mean())
            segments.append(Segment(label, float(self.times[a]), float(end), confidence))
        return segments


def _runs(labels: list[str]) -> list[tuple[str, int, int]]:
    """(label, first index, index after the last) of each run of equal labels."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((labels[start], start, i))
            start = i
    return runs


def timeline(models: list[LoadedModel], clip: Clip, members: list[str] | None = None, batch_size: int = 16,
             on_batch: Callable[[int, int], None] | None = None) -> Timeline:
    """Every model's per-frame probabilities for a clip's sampled frames, plus their ensemble."""
    classes = models[0].classes
    parts: dict[str, list[np.ndarray]] = {m.name: [] for m in models}
    for start in range(0, len(clip.frames), batch_size):
        for prediction in predict_all(models, clip.frames[start:start + batch_size]):
            parts[prediction.model].append(prediction.probs)
        if on_batch is not None:
            on_batch(min(start + batch_size, len(clip.frames)), len(clip.frames))
    result = Timeline(times=np.asarray(clip.times, dtype=float), classes=classes,
                      probs={name: np.concatenate(chunks) for name, chunks in parts.items()})
    chosen = [result.probs[name] for name in (members or list(result.probs)) if name in result.probs]
    if len(models) > 1:
        result.probs["ensemble"] = combine(chosen or list(result.probs.values()))
    return result
