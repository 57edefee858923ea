"""The ensemble: the one definition used by every page and the CLI.

Members are chosen runs; the ensemble's probability is the mean of its members' calibrated probabilities (as
they are computed: live for a photo, as stored for a split, so flip TTA where a run used it; each scaled by its
run's temperature), then scaled by the ensemble's own temperature, fitted on the pictures that calibrate every
member (the calibration halves of their val, else all of val). By default the members are the runs that started
from ImageNet weights, when there are at least two of them (from-scratch runs are much weaker and would drag the
mean down); else every run.
"""
from __future__ import annotations

import numpy as np

from har_core.models import artifacts
from har_core.models.artifacts import Run
from har_core.evaluation.calibration import (CalibrationPictures, calibration_files_of, calibration_rows, part_of_val,
                                             probabilities_of)
from har_core.models.calibration_maths import (DEFAULT_COVERAGE, CalibrationError, combine, expected_calibration_error,
                                               fit_temperature, nll, set_report, temper)
from har_core.data.labels import spoken
from har_core.evaluation.metrics import compute_metrics, headline
from har_core.models.temperature import run_temperature


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


def aligned_members(runs: list[Run], split: str, calibrated: bool = True,
                    files: set[str] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The members' stored probabilities on a split (each scaled by its run's temperature when `calibrated`),
    row by row the same pictures, matched by file name, and their labels; only the pictures of `files` when
    given. CalibrationError when a member has no predictions there, the members have different class lists or
    predicted different pictures."""
    if not runs:
        raise CalibrationError("no ensemble members")
    if any(run.classes != runs[0].classes for run in runs):
        raise CalibrationError("the ensemble's members have different class lists")
    frames = [run.predictions(split) for run in runs]
    missing = [run.name for run, frame in zip(runs, frames) if frame is None]
    if missing:
        raise CalibrationError(f"{', '.join(missing)}: no {split} predictions")
    if any(set(frame["filename"]) != set(frames[0]["filename"]) for frame in frames):
        raise CalibrationError(f"the ensemble's members predicted different {split} pictures")
    base = calibration_rows(frames[0], files, "the ensemble")["filename"]
    probs = []
    for run, frame in zip(runs, frames):
        raw, labels = probabilities_of(frame.set_index("filename").loc[base].reset_index(), run.classes)
        probs.append(temper(raw, run_temperature(run)[0]) if calibrated else raw)
    return probs, labels


def shared_calibration_files(runs: list[Run]) -> set[str] | None:
    """The val pictures that calibrate every member: the pictures all their calibration halves share (None: a
    member keeps no half, so all of val)."""
    halves = [calibration_files_of(run) for run in runs]
    return None if any(half is None for half in halves) else set.intersection(*halves)


def ensemble_calibration_pictures(runs: list[Run]) -> CalibrationPictures:
    """The ensemble's calibration pictures: the mean of its calibrated members, scaled by the ensemble's own
    temperature, fitted on the pictures that calibrate every member. Members must share the val pictures and
    class list."""
    files = shared_calibration_files(runs)
    try:
        probs, labels = aligned_members(runs, "val", calibrated=True, files=files)
    except CalibrationError as error:
        raise CalibrationError(f"{error}; the ensemble is not calibrated") from None
    mean = combine(probs)
    temperature = fit_temperature(mean, labels)
    notes = [note for run in runs if (note := run_temperature(run)[1])]
    return CalibrationPictures(temper(mean, temperature), labels, temperature, part_of_val(files), "; ".join(notes))


def ensemble_figures(runs: list[Run], coverage: float = DEFAULT_COVERAGE) -> dict:
    """The ensemble's headline figures on test, as calibration.coverage_figures gives a run's: before = the mean of
    the raw members, after = the mean of the calibrated members at the ensemble's own temperature."""
    fitted = ensemble_calibration_pictures(runs)
    raw, labels = aligned_members(runs, "test", calibrated=False)
    members, _ = aligned_members(runs, "test", calibrated=True)
    before, after = combine(raw), combine(members, fitted.temperature)
    sets = set_report(fitted.sets(coverage).predict(after), labels, runs[0].classes)
    return {"run": "ensemble of " + ", ".join(run.name for run in runs), "temperature": fitted.temperature,
            "accuracy": float((after.argmax(1) == labels).mean()),
            "ece_before": expected_calibration_error(before, labels),
            "ece_after": expected_calibration_error(after, labels),
            "nll_before": nll(before, labels), "nll_after": nll(after, labels), "coverage": sets["coverage"],
            "mean_set_size": sets["mean_size"], "worst_class": sets["worst_class"],
            "worst_class_coverage": sets["worst_class_coverage"], "calibrated_on": fitted.part}


def _stored_ensemble(runs: list[Run], split: str) -> tuple[list[Run], np.ndarray, np.ndarray] | None:
    with_predictions = [run for run in runs if run.has(artifacts.predictions_file(split))]
    if len(with_predictions) < 2:
        return None
    try:
        probs, labels = aligned_members(with_predictions, split)
    except CalibrationError:
        return None
    return with_predictions, combine(probs), np.asarray(labels)


def stored_metrics(runs: list[Run], split: str = "test") -> dict | None:
    """Metrics of the ensemble of `runs` on a split, from their stored predictions (None: fewer than two
    runs with predictions, or runs with different classes or that predicted different files: other splits,
    other data, a clip model beside image models)."""
    if (ensemble := _stored_ensemble(runs, split)) is None:
        return None
    members, probs, labels = ensemble
    return compute_metrics(list(labels), probs, members[0].classes) | {"runs": [run.name for run in members]}


def stored_headline(runs: list[Run], split: str = "test") -> dict | None:
    """The ensemble's accuracy and macro-F1 as `stored_metrics` gives them, without importing scikit-learn (the
    Overview, the first page a visitor sees)."""
    if (ensemble := _stored_ensemble(runs, split)) is None:
        return None
    members, probs, labels = ensemble
    return headline(labels, probs.argmax(1), len(members[0].classes)) | {"runs": [run.name for run in members]}
