"""An action timeline of a clip from the image models.

A clip's sampled frames (har_core.video) go through the image models exactly as photos do (same
preprocessing, batched), giving per-frame probabilities per model. The timeline smooths them over a window
of seconds; segments are runs of the smoothed winning class that last at least a minimum duration; frames
whose best smoothed probability is under a threshold are "no known action".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from har_core.ensemble import combine
from har_core.inference import LoadedModel, predict_all
from har_core.video import Clip

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
