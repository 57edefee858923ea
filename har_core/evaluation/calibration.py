"""How sure is it, for runs: which pictures calibrate a run, its stored temperature and report, and the calibrated
predictions its prediction sets and abstain threshold are fitted on. The maths is har_core.models.calibration_maths's;
reading the stored temperature back, as every loaded model does, is har_core.models.temperature's.

- Which pictures calibrate: the calibration half of val, when the run's split manifest marks one (its
  `calibrate` column, har_core.data.datasets.with_calibration_half). Training chose its checkpoint on the other half
  (har_core.data.datasets.choice_part), so the choice's luck on the pictures it looked at does not leak into the
  temperature, the sets, the abstain threshold or the retrieval weight. A manifest without that column: all of
  val, with a note that the pictures which chose the checkpoint calibrate it too.
- What the temperature scales: the run's probabilities as its stored val predictions hold them, computed with
  the flip TTA its evaluation used or not; that mode is stored with the temperature (`tta`), and every place
  that predicts defaults to it.
- Where it lives: a run's temperature on its card (`card["calibration"]`, with the sha256 of the split
  manifest and of the val predictions it was fitted on, so the torch-free predictor reads it too); the full
  report (which pictures calibrated, reliability tables, ECE, NLL, Brier before and after, conformal
  coverage) in `calibration.json` beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from har_core.models import artifacts
from har_core.data import fileio
from har_core.models.artifacts import Run, RunError
from har_core.models.calibration_maths import (BINS, DEFAULT_COVERAGE, DEFAULT_TARGET_ACCURACY, CalibrationError,
                                               PredictionSets, abstain_threshold, fit_temperature, reliability,
                                               risk_coverage, scores, set_report, temper)
from har_core.data.datasets import calibration_files
from har_core.evaluation.metrics import probabilities
from har_core.models.temperature import (calibrated_tta, evaluated_with_tta, manifest_digest, run_temperature,
                                         val_digest)

REPORT = "calibration.json"
CALIBRATION_HALF = "calibration half of val"
ALL_OF_VAL = "all of val"
ALL_OF_VAL_NOTE = ("its split manifest keeps no calibration half of val, so the val pictures that chose the "
                   "checkpoint calibrate it too: on new pictures its sets may cover less than promised")


# ----------------------------------------------------------------------------------------- which pictures

def probabilities_of(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stored predictions as (probabilities, integer labels), rows whose true class is one of `classes`."""
    frame = frame[frame["true"].isin(classes)]
    probs = probabilities(frame, classes)  # stored to 6 decimals: renormalised so each row sums to 1
    return probs / probs.sum(1, keepdims=True), np.array([classes.index(t) for t in frame["true"]])


def split_probabilities(run: Run, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's stored (raw) probabilities and integer labels on every picture of a split; CalibrationError when
    it has none."""
    frame = run.predictions(split)
    if frame is None or frame.empty:
        raise CalibrationError(f"{run.name} has no {split} predictions (python -m train.evaluate {run.path} "
                               f"--split {split})")
    return probabilities_of(frame, run.classes)


def calibration_files_of(run: Run) -> set[str] | None:
    """The val pictures that calibrate the run: its split manifest's calibration half (None: all of val)."""
    manifest = run.manifest()
    return None if manifest is None else calibration_files(manifest)


def part_of_val(files: set[str] | None) -> str:
    return ALL_OF_VAL if files is None else CALIBRATION_HALF


def calibration_rows(frame: pd.DataFrame | None, files: set[str] | None, name: str) -> pd.DataFrame:
    """The rows of val predictions that calibrate: those of `files` (predictions keep all of val; the rows are
    picked by file name), every row when `files` is None. CalibrationError when none is left."""
    if frame is None or frame.empty:
        raise CalibrationError(f"{name} has no val predictions (python -m train.evaluate RUN --split val)")
    if files is None:
        return frame
    kept = frame[frame["filename"].isin(files)]
    if kept.empty:
        raise CalibrationError(f"{name}: its val predictions hold none of the {CALIBRATION_HALF} its split.csv "
                               "marks (python -m train.evaluate RUN --split val)")
    return kept


def calibration_probabilities(run: Run) -> tuple[np.ndarray, np.ndarray, str]:
    """A run's stored (raw) probabilities and labels on the pictures that calibrate it, and which part of val
    they are (CALIBRATION_HALF or ALL_OF_VAL)."""
    files = calibration_files_of(run)
    probs, labels = probabilities_of(calibration_rows(run.predictions("val"), files, run.name), run.classes)
    return probs, labels, part_of_val(files)


def default_tta(runs: list[Run]) -> bool:
    """The TTA mode a toggle over `runs` starts in: the one most of them were calibrated in (ties: without)."""
    modes = [calibrated_tta(run) for run in runs]
    return sum(modes) > len(modes) / 2


def tta_words(tta: bool) -> str:
    return "with flip TTA" if tta else "without TTA"


def tta_mismatch(names_and_modes: list[tuple[str, bool]], tta: bool) -> str:
    """One line naming the models calibrated in another TTA mode than the one predicting now ("" when none)."""
    other = [name for name, mode in names_and_modes if mode != tta]
    if not other:
        return ""
    return (f"{', '.join(other)} {'was' if len(other) == 1 else 'were'} calibrated {tta_words(not tta)}; these "
            f"answers are {tta_words(tta)}, so {'its' if len(other) == 1 else 'their'} temperature and sets were "
            "fitted on other probabilities than these")


# ----------------------------------------------------------------------------------------- runs

def calibrated_on(part: str, pictures: int, tta: bool) -> dict:
    """What calibration.json says about the pictures that calibrated the run."""
    return {"part": part, "pictures": int(pictures), "tta": tta} | ({"note": ALL_OF_VAL_NOTE} if part == ALL_OF_VAL
                                                                    else {})


def calibrate_run(run: Run, coverage: float = DEFAULT_COVERAGE) -> dict:
    """Fit the run's temperature and conformal sets on the pictures that calibrate it (the calibration half of
    val, else all of val), measure before/after on all of val and on test, write calibration.json and the
    temperature on the card. Returns the report."""
    try:
        probs, labels, part = calibration_probabilities(run)
        temperature = fit_temperature(probs, labels)
    except CalibrationError:
        forget_calibration(run)  # an older temperature would no longer describe these predictions
        raise
    tta = evaluated_with_tta(run)
    report = {"run": run.name, "temperature": temperature, "fitted_on": "val",
              "calibrated_on": calibrated_on(part, len(labels), tta), "manifest_sha256": manifest_digest(run),
              # runs trained before val was split chose their checkpoint on all of val, these pictures included
              "checkpoint_chosen_on": run.card.get("split", {}).get("checkpoint_chosen_on", ALL_OF_VAL),
              "val_predictions_sha256": val_digest(run), "classes": run.classes, "bins": BINS, "coverage": coverage,
              "splits": {}}
    try:
        sets = PredictionSets.fit(temper(probs, temperature), labels, coverage)
    except CalibrationError as error:  # too few calibration pictures for sets: the temperature still holds
        sets, report["sets_note"] = None, str(error)
    for split in ("val", "test"):
        try:
            split_probs, split_labels = split_probabilities(run, split)
        except CalibrationError:
            continue
        calibrated = temper(split_probs, temperature)
        report["splits"][split] = {
            "before": scores(split_probs, split_labels), "after": scores(calibrated, split_labels),
            "reliability_before": reliability(split_probs, split_labels).to_dict("list"),
            "reliability_after": reliability(calibrated, split_labels).to_dict("list"),
            "sets": set_report(sets.predict(calibrated), split_labels, run.classes) if sets else None}
    fileio.write_json(run.path / REPORT, report)
    card = dict(run.card, calibration={"temperature": temperature, "fitted_on": "val", "part": part,
                                       "n": int(len(labels)), "tta": tta,
                                       "manifest_sha256": report["manifest_sha256"],
                                       "val_predictions_sha256": report["val_predictions_sha256"]})
    fileio.write_json(run.path / artifacts.CARD, card)
    run.card = card
    return report


def forget_calibration(run: Run) -> None:
    """Take a run's temperature off its card and delete its report (a refit failed: raw probabilities)."""
    if "calibration" in run.card:
        run.card = {k: v for k, v in run.card.items() if k != "calibration"}
        fileio.write_json(run.path / artifacts.CARD, run.card)
    (run.path / REPORT).unlink(missing_ok=True)


def report_of(run: Run) -> dict | None:
    """The run's calibration.json, when it matches the card's classes and temperature (else None: missing, or
    fitted before the run changed). CalibrationError, one line, when the file is unreadable or malformed."""
    if not run.has(REPORT):
        return None
    try:
        report = check_report(artifacts.read_json(run.path / REPORT))
    except (RunError, CalibrationError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise CalibrationError(f"{run.name}: {REPORT} is unreadable ({error}); python -m train.calibrate "
                               f"{run.path.name} writes it again") from None
    temperature, note = run_temperature(run)
    if note or report["classes"] != run.classes or abs(report["temperature"] - temperature) > 1e-9:
        return None
    return report


REPORT_SCORES = ("n", "accuracy", "ece", "nll", "brier")
RELIABILITY_COLUMNS = ("low", "high", "count", "confidence", "accuracy")
SET_FIGURES = ("coverage", "mean_size", "worst_class_coverage")


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalibrationError(f"{what} is {type(value).__name__}, not a number")
    return value


def check_report(report) -> dict:
    """A calibration.json read whole: every figure a page or the report shows is where it should be and a number
    (None for a reliability bin without pictures); CalibrationError naming the first that is not."""
    if not isinstance(report, dict):
        raise CalibrationError("it holds no object")
    for key in ("temperature", "classes", "splits"):
        if key not in report:
            raise CalibrationError(f"it lacks \"{key}\"")
    _number(report["temperature"], "the temperature")
    if not isinstance(report["classes"], list) or not isinstance(report["splits"], dict):
        raise CalibrationError("its classes or splits are of the wrong kind")
    if "calibrated_on" in report and (not isinstance(report["calibrated_on"], dict) or
                                      report["calibrated_on"].get("part") not in (CALIBRATION_HALF, ALL_OF_VAL)):
        raise CalibrationError("it does not say which pictures calibrated")
    if "calibrated_on" in report:
        _number(report["calibrated_on"].get("pictures"), "the count of calibration pictures")
    for split, measured in report["splits"].items():
        for stage in ("before", "after"):
            for key in REPORT_SCORES:
                _number(measured[stage][key], f"{split} {stage} {key}")
            table = measured[f"reliability_{stage}"]
            lengths = {len(table[column]) for column in RELIABILITY_COLUMNS}
            if len(lengths) != 1:
                raise CalibrationError(f"its {split} reliability table has columns of different lengths")
            for column in RELIABILITY_COLUMNS:
                for value in table[column]:
                    if value is not None and not (isinstance(value, float) and np.isnan(value)):
                        _number(value, f"{split} reliability {column}")
        if measured.get("sets") is not None:
            for key in SET_FIGURES:
                _number(measured["sets"][key], f"{split} sets {key}")
            sets = measured["sets"]
            if not isinstance(sets["per_class"], dict) or not isinstance(sets["worst_class"], str):
                raise CalibrationError(f"its {split} sets lack their classes")
    return report


def fitted_on_line(reports: dict[str, dict]) -> str:
    """Which pictures calibrated each run, in one line for a page: "Fitted on the calibration half of val: 838
    pictures (efficientnet_lite1, vgg16)."; runs calibrated on all of val are said apart, with what that costs."""
    groups: dict[tuple[str, int | None], list[str]] = {}
    for name, report in reports.items():
        fitted = report.get("calibrated_on") or {  # a report from before the half existed: all of val
            "part": ALL_OF_VAL, "pictures": report["splits"].get("val", {}).get("before", {}).get("n")}
        groups.setdefault((fitted["part"], fitted.get("pictures")), []).append(name)
    parts = [f"the {part}" if part == CALIBRATION_HALF else part for part, _ in groups]
    said = "; ".join(f"{words}{f': {count:,} pictures' if count else ''} ({', '.join(names)})"
                     for words, ((_, count), names) in zip(parts, groups.items()))
    warning = (" All of val includes the pictures that chose the checkpoint: on new pictures those sets may cover "
               "less than promised." if ALL_OF_VAL in {part for part, _ in groups} else "")
    chosen_on_all = [name for name, report in reports.items()  # the half, but a checkpoint chosen before the split
                     if (report.get("calibrated_on") or {}).get("part") == CALIBRATION_HALF
                     and report.get("checkpoint_chosen_on", ALL_OF_VAL) == ALL_OF_VAL]
    if chosen_on_all:
        warning += (f" {', '.join(chosen_on_all)} chose {'its' if len(chosen_on_all) == 1 else 'their'} checkpoint "
                    "on all of val before it was split, these pictures included: on new pictures the sets may "
                    "cover less than promised.")
    return f"Temperature, sets and threshold fitted on {said}.{warning}"


def calibrated_frame(frame: pd.DataFrame, classes: list[str], temperature: float) -> pd.DataFrame:
    """Stored predictions with calibrated probabilities and confidence (the predicted class never changes)."""
    if temperature == 1.0:
        return frame
    frame = frame.copy()
    probs = temper(probabilities(frame, classes), temperature)
    frame[[f"prob_{c}" for c in classes]] = probs.round(6)
    frame["confidence"] = probs.max(1).round(6)
    return frame


@dataclass
class CalibrationPictures:
    """The calibrated predictions of the pictures that calibrate a run or an ensemble (the calibration half of
    val, or all of val): what its sets and abstain threshold are fitted on."""

    probs: np.ndarray
    labels: np.ndarray
    temperature: float
    part: str = CALIBRATION_HALF  # CALIBRATION_HALF or ALL_OF_VAL
    note: str = ""  # members shown raw, or why the pictures are all of val

    def sets(self, coverage: float = DEFAULT_COVERAGE) -> PredictionSets:
        return PredictionSets.fit(self.probs, self.labels, coverage)

    def threshold(self, accuracy: float = DEFAULT_TARGET_ACCURACY) -> float | None:
        """The abstain threshold (None: no confidence kept `accuracy` on these pictures)."""
        return abstain_threshold(self.probs, self.labels, accuracy)


def run_calibration_pictures(run: Run, calibrated: bool = True) -> CalibrationPictures:
    """A run's calibrated predictions of the pictures that calibrate it (raw, with a note, when it is not
    calibrated or `calibrated` is False): what its sets and threshold are fitted on, so they must match the
    probabilities they judge."""
    temperature, note = run_temperature(run) if calibrated else (1.0, f"{run.name}: raw probabilities (asked for)")
    probs, labels, part = calibration_probabilities(run)
    return CalibrationPictures(temper(probs, temperature), labels, temperature, part, note)


def coverage_figures(run: Run) -> dict:
    """The headline calibration figures of a run on test, from its report (README and the closing note)."""
    report = report_of(run)
    if report is None or "test" not in report["splits"] or report["splits"]["test"]["sets"] is None:
        raise CalibrationError(f"{run.name}: no calibration report with test figures"
                               + (f" ({report['sets_note']})" if report and report.get("sets_note") else ""))
    test = report["splits"]["test"]
    return {"run": run.name, "temperature": report["temperature"], "accuracy": test["after"]["accuracy"],
            "ece_before": test["before"]["ece"],
            "ece_after": test["after"]["ece"], "nll_before": test["before"]["nll"], "nll_after": test["after"]["nll"],
            "coverage": test["sets"]["coverage"], "mean_set_size": test["sets"]["mean_size"],
            "worst_class": test["sets"]["worst_class"], "worst_class_coverage": test["sets"]["worst_class_coverage"],
            "calibrated_on": report.get("calibrated_on", {}).get("part", ALL_OF_VAL)}


# ----------------------------------------------------------------------------------------- pages

def calibration_table(reports: dict[str, dict], split: str) -> pd.DataFrame:
    """One row per run: its temperature and ECE, NLL and Brier score on `split` before and after it."""
    rows = {}
    for name, report in reports.items():
        measured = report["splits"][split]
        rows[name] = {"temperature": report["temperature"],
                      **{f"{label} {stage}": measured[stage][key] for key, label in (("ece", "ECE"), ("nll", "NLL"),
                                                                                     ("brier", "Brier"))
                         for stage in ("before", "after")}}
    return pd.DataFrame.from_dict(rows, orient="index")


def split_sureness(frame: pd.DataFrame, classes: list[str], sets: PredictionSets | None,
                   threshold: float | None) -> dict:
    """On a split's (calibrated) predictions: the risk–coverage curve, the sets' coverage (overall and per
    class) and what the abstain threshold keeps (None: the target was never reached, so nothing is kept)."""
    probs, labels = probabilities_of(frame, classes)
    result = {"curve": risk_coverage(probs, labels), "sets": None, "kept": None, "kept_accuracy": None}
    if sets is not None:
        result["sets"] = set_report(sets.predict(probs), labels, classes)
    kept = probs.max(1) >= threshold if threshold is not None else np.zeros(len(labels), bool)
    if len(labels):
        result["kept"] = float(kept.mean())
        result["kept_accuracy"] = float((probs[kept].argmax(1) == labels[kept]).mean()) if kept.any() else float("nan")
    return result
