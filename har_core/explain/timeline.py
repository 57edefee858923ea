"""An action timeline of a clip from image models and clip models (3D CNNs), on one time axis.

A clip's sampled frames (har_core.data.video) go through the image models exactly as photos do (same
preprocessing, batched), giving per-frame probabilities per model. A clip model sees, for each sampled time,
one window of its own frames (16 frames at its stride) centred on that time, decoded on its own (the decoder
seeks to it), so both kinds answer for the same moments. The timeline smooths them over a window
of seconds; segments are runs of the smoothed winning class that last at least a minimum duration; frames
whose best smoothed probability is under a threshold are "no known action".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from har_core.models.inference import LoadedModel, predict_all
from har_core.models.calibration_maths import combine
from har_core.data.video import Clip, clip_facts, read_clip

NO_ACTION = "no known action"


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


def window_clips(loaded: LoadedModel, source: bytes | str | Path, times: list[float]) -> list[Clip]:
    """For each time, the clip model's window of `frames` frames at its stride, centred on that time (moved
    inside the clip at its ends, where the clip is long enough)."""
    transform = loaded.transform  # har_core.data.datasets.ClipTransform
    seconds, rate = clip_facts(source)
    rate = rate or 25.0  # as read_clip: a stream without a rate is taken as 25 fps
    span = transform.frames * transform.stride / rate
    latest = max(0.0, seconds - span) if seconds else float("inf")
    return [read_clip(source, stride=transform.stride, start=min(max(0.0, t - span / 2), latest),
                      frames=transform.frames) for t in times]


def timeline(models: list[LoadedModel], clip: Clip, members: list[str] | None = None, batch_size: int = 16,
             on_batch: Callable[[int, int], None] | None = None, source: bytes | str | Path | None = None,
             ensemble_temperature: float = 1.0, tta: bool | None = None) -> Timeline:
    """Every model's per-frame (calibrated) probabilities for a clip's sampled frames, plus their ensemble at its
    own temperature. Clip models need the clip itself (`source`: its bytes or path) to read their windows;
    without it they are left out. `tta`: flip TTA for every model, or None for each in the mode its temperature
    was fitted in (LoadedModel.tta)."""
    classes = models[0].classes
    image_models = [m for m in models if not m.run.takes_clips]
    clip_models = [m for m in models if m.run.takes_clips and source is not None]
    parts: dict[str, list[np.ndarray]] = {m.name: [] for m in image_models + clip_models}
    steps, total = 0, len(clip.frames) * (bool(image_models) + len(clip_models))
    mode_of = {m.name: m.tta if tta is None else tta for m in models}
    for start in range(0, len(clip.frames), batch_size):
        for mode in sorted({mode_of[m.name] for m in image_models}):  # the models of one TTA mode share a pass
            in_mode = [m for m in image_models if mode_of[m.name] == mode]
            for prediction in predict_all(in_mode, clip.frames[start:start + batch_size], tta=mode):
                parts[prediction.model].append(prediction.probs)
        if image_models:
            steps += len(clip.frames[start:start + batch_size])
            if on_batch is not None:
                on_batch(steps, total)
    for loaded in clip_models:
        for start in range(0, len(clip.times), batch_size // 2 or 1):
            windows = window_clips(loaded, source, clip.times[start:start + (batch_size // 2 or 1)])
            with torch.inference_mode():
                parts[loaded.name].append(loaded.forward(loaded.preprocess(windows), mode_of[loaded.name])[0])
            steps += len(windows)
            if on_batch is not None:
                on_batch(steps, total)
    result = Timeline(times=np.asarray(clip.times, dtype=float), classes=classes,
                      probs={name: np.concatenate(chunks) for name, chunks in parts.items()})
    chosen = [result.probs[name] for name in (members or list(result.probs)) if name in result.probs]
    if len(result.probs) > 1:
        result.probs["ensemble"] = combine(chosen or list(result.probs.values()), ensemble_temperature)
    return result
