"""The ensemble: the one definition used by every page and the CLI.

Members are chosen runs; the ensemble's probability is the mean of its members' calibrated probabilities (as
they are computed: live for a photo, as stored for a split, so flip TTA where a run used it; each scaled by its
run's temperature), then scaled by the ensemble's own temperature. By default the
members are the runs that started from ImageNet weights, when there are at least two of them (from-scratch
runs are much weaker and would drag the mean down); else every run.
"""
from __future__ import annotations

import numpy as np

from har_core.artifacts import Run
from har_core.calibration import run_temperature, temper
from har_core.labels import spoken
from har_core.metrics import compute_metrics, probabilities


def pretrained_runs(runs: list[Run]) -> list[Run]:
    """Runs that started from ImageNet weights and were trained as whole networks (the card records "none ..."
    for random initialisation; a head taught on a few pictures on the Teach page is no member either)."""
    return [run for run in runs if not run.card["pretrained"].startswith("none") and "taught" not in run.card]


def class_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by class list (in order), the largest group first (ties: the one listed first). Only runs
    of one class list can be compared or averaged."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.classes), []).append(run)
    return sorted(groups.values(), key=len, reverse=True)


def describe_classes(classes: list[str], limit: int = 4) -> str:
    """'15 classes: calling, clapping, cycling, dancing, …'"""
    shown = ", ".join(spoken(c) for c in classes[:limit])
    return f"{len(classes)} classes: {shown}{', …' if len(classes) > limit else ''}"


def default_members(runs: list[Run]) -> list[str]:
    """The default ensemble: the pretrained runs of the largest class group when there are two or more,
    else every run of that group."""
    group = class_groups(runs)[0] if runs else []
    pretrained = pretrained_runs(group)
    return [run.name for run in (pretrained if len(pretrained) >= 2 else group)]


def combine(probabilities_of_members: list[np.ndarray], temperature: float = 1.0) -> np.ndarray:
    """The ensemble's probabilities: the mean of its (calibrated) members, scaled by the ensemble's own
    temperature (fitted on val: har_core.calibration.ensemble_held_out)."""
    return temper(np.mean(probabilities_of_members, axis=0), temperature)


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
    probs = combine([temper(probabilities(f, classes), run_temperature(run)[0])
                     for (run, _), f in zip(frames, aligned)])
    labels = [classes.index(t) for t in base["true"]]
    return compute_metrics(labels, probs, classes) | {"runs": [run.name for run, _ in frames]}
