"""Video clips: guarded decoding with PyAV and frame sampling (the timeline is har_core.explain.timeline).

A clip is sampled at `fps` frames per second, `count` frames evenly, or every `stride`-th frame (training
clips for the 3D CNNs, har_core.data.datasets.ClipTransform). Decoding is sequential with FFmpeg's own threads, and
only the sampled frames are converted to RGB; when the next sampled frame is far ahead (sparse sampling of
long clips) the decoder seeks to the keyframe before it instead of decoding everything in between.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv")  # the one list of clip formats


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
    rate: float = 0.0  # the stream's own frame rate (frames per second), 0 when it states none


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
    import av  # here, not at the top: the first page imports this module (VIDEO_SUFFIXES), not PyAV
    _checked_size(source, limits)
    opener = str(source) if isinstance(source, (str, Path)) else io.BytesIO(source)
    try:
        return av.open(opener, mode="r")
    except (av.error.FFmpegError, OSError, ValueError):
        raise VideoError("not a video this server can read") from None  # the decoder's error name helps no one


def _duration(container, stream) -> float:
    import av  # lazily, as in _open
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


def read_clip(source: bytes | str | Path, fps: float = 2.0, count: int = 0, stride: int = 0,
              limits: VideoLimits = DEFAULT_VIDEO_LIMITS, start: float = 0.0, frames: int = 0) -> Clip:
    """Decode the sampled frames of a clip, or raise VideoError with a one-line reason. Sampling: `fps`
    frames per second, or `count` evenly spread, or every `stride`-th frame at the clip's own rate. A window:
    with `frames`, only that many samples from `start` seconds on are decoded (the decoder seeks to them), so a
    clip model's 16-frame sample of a long clip costs 16 frames, not the whole clip."""
    import av  # lazily, as in _open
    if fps <= 0 and not count and not stride:
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
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if stride:
            fps = (rate or 25.0) / stride  # a stream without a rate: the common 25 fps
        if seconds > limits.max_seconds:
            raise VideoError(f"the clip is {seconds / 60:.1f} minutes long; at most {limits.max_seconds / 60:.0f}")
        wanted = sample_times(seconds, fps, count) if seconds > 0 else None
        if frames:
            wanted = [t for t in (start + np.arange(frames) / fps).tolist() if not seconds or t < seconds] or [start]
        if wanted is not None and len(wanted) > limits.max_samples:
            raise VideoError(f"{len(wanted)} frames would be sampled; at most {limits.max_samples} (lower the rate)")
        stream.thread_type = "AUTO"
        clip = Clip(times=[], frames=[], width=width, height=height, seconds=seconds, rate=rate)
        _decode_samples(container, stream, wanted, fps, clip, limits)
    except av.error.FFmpegError:
        raise VideoError("the video is damaged or truncated") from None
    finally:
        container.close()
    if not clip.frames:
        raise VideoError("no frame could be decoded (damaged or truncated file)")
    if not clip.seconds:  # a stream that states no duration (a browser recording): its last sample's time
        clip.seconds = clip.times[-1] + (1.0 / fps if fps > 0 else 0.0)
    return clip


def clip_facts(source: str | Path, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> tuple[float, float]:
    """(seconds, frame rate) as the container states them (0 where it states none), without decoding a frame."""
    container = _open(source, limits)
    try:
        if not container.streams.video:
            raise VideoError("the file has no video stream")
        stream = container.streams.video[0]
        return _duration(container, stream), float(stream.average_rate or stream.guessed_rate or 0)
    finally:
        container.close()


def probe(source: bytes | str | Path, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> Clip:
    """A clip's facts and its first frame, or VideoError: the cheap check that a file is a usable clip."""
    return read_clip(source, fps=1.0 / limits.max_seconds, limits=limits)  # one sample: time 0


def _decode_samples(container, stream, wanted: list[float] | None, fps: float, clip: Clip,
                    limits: VideoLimits) -> None:
    """Walk the decoded frames and keep, for each wanted time, the first frame at or after it. Without a
    known duration (`wanted` None) every 1/fps seconds is kept as the frames come."""
    import av  # lazily, as in _open
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
            if time > limits.max_seconds:  # no stated duration: the limit holds on the decoded time
                raise VideoError(f"the clip is longer than {limits.max_seconds / 60:g} minutes (it states no duration; "
                                 "decoding stopped there)")
