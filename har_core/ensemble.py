"""The ensemble: the one definition used by every page and the CLI.

Members are chosen runs; the ensemble's probability is the mean of its members' probabilities (as they
are computed: live for a photo, as stored for a split, so flip TTA where a run used it). By default the
members are the runs that started from ImageNet weights, when there are at least two of them (from-scratch
runs are much weaker and would drag the mean down); else every run.
"""
from __future__ import annotations

import numpy as np

from har_core.artifacts import Run
from har_core.metrics import compute_metrics, probabilities


def pretrained_runs(runs: list[Run]) -> list[Run]:
    """Runs that started from ImageNet weights (the card records "none ..." for random initialisation)."""
    return [run for run in runs if not run.card["pretrained"].startswith("none")]


def default_members(runs: list[Run]) -> list[str]:
    pretrained = pretrained_runs(runs)
    return [run.name for run in (pretrained if len(pretrained) >= 2 else runs)]


def combine(probabilities_of_members: list[np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities: the members' mean."""
    return np.mean(probabilities_of_members, axis=0)


def stored_metrics(runs: list[Run], split: str = "test") -> dict | None:
    """Metrics of the ensemble of `runs` on a split, from their stored predictions (None: fewer than two
    runs with predictions, or runs with different classes or that predicted different files: other splits,
    other data, a clip model beside image models)."""
    frames = [(run, f) for run in runs if (f := run.predictions(split)) is not None]
    first_run, first = frames[0] if frames else (None, None)
    if len(frames) < 2 or any(run.classes != first_run.classes or set(f["filename"]) != set(first["filename"])
                              for run, f in frames):
        return None
    classes = frames[0][0].classes
    base = frames[0][1].set_index("filename")
    aligned = [f.set_index("filename").loc[base.index] for _, f in frames]
    probs = combine([probabilities(f, classes) for f in aligned])
    labels = [classes.index(t) for t in base["true"]]
    return compute_metrics(labels, probs, classes) | {"runs": [run.name for run, _ in frames]}
