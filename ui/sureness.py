"""How sure: the calibrated predictions of the pictures that calibrate a run or an ensemble (the calibration half
of val, or all of val), their prediction sets and abstain threshold (har_core.evaluation.calibration), cached by the files
they come from."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import streamlit as st

from har_core.models import artifacts
from har_core.models.artifacts import Run
from har_core.evaluation.calibration import (REPORT, CalibrationPictures, report_of, run_calibration_pictures,
                                             split_sureness)
from har_core.models.calibration_maths import (DEFAULT_TARGET_ACCURACY, CalibrationError, PredictionSets, set_names,
                                               set_phrase)
from har_core.evaluation.ensemble import ensemble_calibration_pictures
from har_core.data.spans import timed
from ui.common import file_stamp, model_stamp, predictions


def _stamps(runs: list[Run]) -> tuple:
    return tuple((model_stamp(run), file_stamp(run, artifacts.predictions_file("val"))) for run in runs)


@st.cache_data(show_spinner=False, max_entries=64)
def _calibration_pictures(paths: tuple[str, ...], stamps: tuple) -> CalibrationPictures | str:
    runs = [artifacts.open_run(path) for path in paths]
    try:
        return run_calibration_pictures(runs[0]) if len(runs) == 1 else ensemble_calibration_pictures(runs)
    except CalibrationError as error:
        return str(error)


def calibration_pictures(runs: list[Run]) -> CalibrationPictures | str:
    """The calibrated predictions of the pictures that calibrate one run, or the ensemble of several (at its own
    temperature); a one-line reason instead when they cannot be had."""
    return _calibration_pictures(tuple(str(run.path) for run in runs), _stamps(runs))


@st.cache_resource(show_spinner=False, max_entries=128)
def _sets(paths: tuple[str, ...], stamps: tuple, coverage: float) -> PredictionSets | str:
    found = _calibration_pictures(paths, stamps)
    if isinstance(found, str):
        return found
    try:
        return found.sets(coverage)
    except CalibrationError as error:
        return str(error)


def prediction_sets(runs: list[Run], coverage: float) -> PredictionSets | str:
    """Split conformal sets at `coverage`, calibrated on the calibration pictures of the run (or the ensemble)."""
    return _sets(tuple(str(run.path) for run in runs), _stamps(runs), round(float(coverage), 4))


def ensemble_temperature(runs: list[Run]) -> float:
    """The ensemble's own temperature (1.0 for a single member or when it cannot be fitted)."""
    found = calibration_pictures(runs) if len(runs) > 1 else None
    return found.temperature if isinstance(found, CalibrationPictures) else 1.0


@st.cache_data(show_spinner=False, max_entries=128)
def _report(path: str, stamp: tuple) -> dict | str | None:
    try:
        return report_of(artifacts.open_run(path))
    except CalibrationError as error:
        return str(error)


def calibration_report(run: Run) -> dict | None:
    """The run's calibration.json (reliability, ECE/NLL/Brier before and after, coverage), None when missing or
    stale, one line saying why when it cannot be read."""
    return _report(str(run.path), (model_stamp(run), file_stamp(run, REPORT)))


def never_reached(target: float = DEFAULT_TARGET_ACCURACY) -> str:
    return f"never reached {target:.0%}"


@dataclass
class Sureness:
    """What the page says beside an answer: each picture's prediction set and whether it is "not sure"."""

    sets: list[list[str]] | None  # each picture's set, most likely first (None: no calibration to build it)
    not_sure: list[bool]  # confidence below the threshold that kept DEFAULT_TARGET_ACCURACY on val
    threshold: float | None  # None: not calibrated (`note` says why), or no confidence reached the target
    note: str = ""  # why sets or the threshold are missing
    reached: bool = True  # False: no confidence kept DEFAULT_TARGET_ACCURACY, so every answer is "not sure"
    calibrated: bool = True  # False: no calibration pictures (`note` says why), so neither threshold nor sets
    no_sets: str = ""  # why a calibrated verdict has no prediction sets (in `note` too, after its own reasons)

    def of(self, j: int) -> Sureness:
        """Picture `j`'s alone."""
        return replace(self, sets=None if self.sets is None else self.sets[j:j + 1], not_sure=self.not_sure[j:j + 1])

    def words(self, i: int, coverage: float) -> str:
        """Picture i's prediction set in words."""
        return f"{coverage:.0%} set (what it cannot rule out): {set_phrase(self.sets[i])}" \
            if self.sets is not None else ""

    def doubt(self) -> str:
        """Why an answer is "not sure", in words."""
        if not self.reached:
            return (f"not sure: its answers on calibration pictures {never_reached()} right, however sure")
        return (f"not sure: below {self.threshold:.0%}, the confidence above which its answers on calibration "
                f"pictures were {DEFAULT_TARGET_ACCURACY:.0%} right")


@timed("not sure")
def doubts(runs: list[Run], probs: np.ndarray) -> Sureness:
    """The "not sure" flags of calibrated `probs` from `runs` (one run, or the ensemble of several), from their
    calibration pictures; no prediction sets yet (`with_sets`): they import crepes and SciPy's statistics, so
    Predict draws its cards first and a cold server's first answer does not wait for them (#41)."""
    found = calibration_pictures(runs)
    if isinstance(found, str):
        return Sureness(None, [False] * len(probs), None, found, calibrated=False)
    threshold = _threshold(tuple(str(run.path) for run in runs), _stamps(runs))
    return Sureness(None, [threshold is None or bool(p.max() < threshold) for p in probs], threshold, found.note,
                    reached=threshold is not None)


@timed("prediction sets")
def with_sets(verdict: Sureness, runs: list[Run], probs: np.ndarray, classes: list[str],
              coverage: float) -> Sureness:
    """`verdict` (of `probs`, from `doubts`) with each picture's prediction set at `coverage`, or with the reason
    the sets cannot be had (`no_sets`, and added to its note)."""
    if not verdict.calibrated:  # its note says why already
        return verdict
    sets = prediction_sets(runs, coverage)
    if isinstance(sets, str):
        return replace(verdict, note="; ".join(filter(None, [verdict.note, sets])), no_sets=sets)
    return replace(verdict, sets=set_names(sets.predict(probs), probs, classes))


def sureness(runs: list[Run], probs: np.ndarray, classes: list[str], coverage: float) -> Sureness:
    """The prediction sets (at `coverage`) and "not sure" flags of calibrated `probs` from `runs` (one run, or
    the ensemble of several), from their calibration pictures."""
    return with_sets(doubts(runs, probs), runs, probs, classes, coverage)


@st.cache_data(show_spinner=False, max_entries=64)
def _threshold(paths: tuple[str, ...], stamps: tuple) -> float | None | str:
    found = _calibration_pictures(paths, stamps)
    return found if isinstance(found, str) else found.threshold(DEFAULT_TARGET_ACCURACY)


def abstain_threshold_of(runs: list[Run]) -> float | None | str:
    """The confidence above which the answers of one run, or of the ensemble of several, on their calibration
    pictures were DEFAULT_TARGET_ACCURACY right; None when no confidence reaches that; a one-line reason when
    they cannot be calibrated."""
    return _threshold(tuple(str(run.path) for run in runs), _stamps(runs))


@st.cache_data(show_spinner=False, max_entries=256)
def _split_sureness(path: str, stamps: tuple, split: str, coverage: float, target: float) -> dict | str:
    run = artifacts.open_run(path)
    found = _calibration_pictures((path,), stamps)
    if isinstance(found, str):
        return found
    frame = predictions(run, split)
    if frame is None:
        return f"{run.name}: no {split} predictions"
    sets = _sets((path,), stamps, coverage)
    threshold = found.threshold(target)
    return split_sureness(frame, run.classes, None if isinstance(sets, str) else sets, threshold) | {
        "threshold": threshold}


def sureness_on(run: Run, split: str, coverage: float, target: float) -> dict | str:
    """On a split's calibrated predictions: the sets' coverage at `coverage`, the threshold (found on val) that
    keeps `target` accuracy and what it keeps there, and the risk–coverage curve; cached, so moving another
    widget recomputes none of it. A one-line reason instead when the run has no val predictions."""
    return _split_sureness(str(run.path), _stamps([run]) + ((file_stamp(run, artifacts.predictions_file(split)),),),
                           split, round(float(coverage), 4), round(float(target), 4))
