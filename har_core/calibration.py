"""How sure is it: calibrated confidence, prediction sets with a coverage guarantee, and when to abstain.

- Temperature scaling (Guo et al., 2017): one number T per run, fitted on the run's **val** predictions by
  minimising their negative log-likelihood, never on test. A run's probabilities p become softmax(log p / T):
  the ranking of the classes (so the answer and the accuracy) never changes, only how sure it sounds. T is
  applied to the probabilities as the run computes them (flip TTA averaged where it was used), because those
  are what the stored predictions hold.
- Split conformal prediction (Vovk et al.; Angelopoulos & Bates, 2021): on val, each picture's score is the
  probability mass the (calibrated) model puts on the classes it ranks above the true one (APS without
  randomisation: adaptive, so a hard picture gets a larger set; the top class always scores 0, so no set is
  empty). For a coverage 1 - α, a class joins a picture's set when its score is within the calibration
  quantile; on exchangeable pictures the true class is in the set with probability at least 1 - α. The
  p-values and sets come from crepes' ConformalClassifier, fed these scores.
- Risk–coverage: keep only the answers above a confidence threshold; the threshold that keeps a chosen
  accuracy is found on val and used by Predict's "not sure" and the Video page's "no known action".

A run's temperature lives on its card (`card["calibration"]`, with the sha256 of the split manifest it was
fitted on, so the torch-free predictor reads it too); the full report (reliability diagrams, ECE, NLL, Brier
before and after, conformal coverage) is `calibration.json` beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss, log_loss

from har_core import artifacts, fileio
from har_core.artifacts import Run
from har_core.labels import spoken
from har_core.metrics import probabilities

REPORT = "calibration.json"
BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram
COVERAGE_RANGE = (0.5, 0.999)  # outside it a set is either a coin toss or every class
DEFAULT_COVERAGE = 0.9
DEFAULT_TARGET_ACCURACY = 0.9
MIN_PICTURES = 30  # fewer val pictures than this fit a temperature to noise
TEMPERATURE_RANGE = (0.05, 20.0)
_EPS = 1e-12


class CalibrationError(RuntimeError):
    """Calibration that cannot be used; the message says what is missing (the raw probabilities are shown)."""


# ----------------------------------------------------------------------------------------- temperature

def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities at temperature T (T > 1 softens, T < 1 sharpens, 1 keeps)."""
    probs = np.asarray(probs)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs.astype(np.float64), _EPS, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    scaled /= scaled.sum(axis=-1, keepdims=True)
    return scaled.astype(probs.dtype) if np.issubdtype(probs.dtype, np.floating) else scaled  # the caller's dtype


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(log_loss(labels, np.clip(probs, _EPS, 1.0), labels=range(probs.shape[1])))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of `probs` (held-out predictions) on `labels`. Refused on fewer
    than MIN_PICTURES pictures, when every answer is right (the NLL then falls without end as T shrinks) or
    when the best temperature is a bound of the search."""
    labels = np.asarray(labels)
    if len(labels) < MIN_PICTURES:
        raise CalibrationError(f"{len(labels)} val pictures are too few to fit a temperature (need {MIN_PICTURES})")
    if (probs.argmax(1) == labels).all():
        raise CalibrationError(f"all {len(labels)} val pictures are answered right: the NLL falls without end as "
                               "the temperature shrinks, so no temperature fits")
    low, high = TEMPERATURE_RANGE
    result = minimize_scalar(lambda log_t: nll(temper(probs, float(np.exp(log_t))), labels),
                             bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": 1e-4})
    temperature = float(np.exp(result.x))
    if not low * 1.05 < temperature < high / 1.05:
        raise CalibrationError(f"no temperature fits these {len(labels)} val pictures (the best is the bound "
                               f"{temperature:.2f} of the search)")
    return temperature


# ----------------------------------------------------------------------------------------- measuring

def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """ECE: the bin-size-weighted gap between confidence and accuracy over `bins` equal-width bins."""
    import torch  # imported here: pages that only scale probabilities never pay for torch/torchmetrics
    from torchmetrics.functional.classification import multiclass_calibration_error
    return float(multiclass_calibration_error(torch.as_tensor(probs, dtype=torch.float64),
                                              torch.as_tensor(np.asarray(labels)), num_classes=probs.shape[1],
                                              n_bins=bins, norm="l1"))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean squared distance to the one-hot label, summed over classes."""
    return float(brier_score_loss(labels, probs, labels=list(range(probs.shape[1])), scale_by_half=False))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """The reliability diagram's bins: confidence range, pictures in it, their mean confidence and accuracy."""
    confidence, correct = probs.max(1), probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.digitize(confidence, edges[1:-1])  # [lo, hi), as torchmetrics' ECE bins them (1.0: the last bin)
    rows = [{"low": edges[b], "high": edges[b + 1], "count": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()) if (which == b).any() else np.nan,
             "accuracy": float(correct[which == b].mean()) if (which == b).any() else np.nan} for b in range(bins)]
    return pd.DataFrame(rows)


def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, ECE, NLL and Brier score of a set of predictions."""
    return {"n": int(len(labels)), "accuracy": float((probs.argmax(1) == labels).mean()),
            "ece": expected_calibration_error(probs, labels), "nll": nll(probs, labels), "brier": brier(probs, labels)}


# ----------------------------------------------------------------------------------------- conformal sets

def check_coverage(coverage: float) -> float:
    low, high = COVERAGE_RANGE
    if not low <= coverage <= high:
        raise CalibrationError(f"coverage {coverage:.1%} refused: below {low:.0%} a set is right less often than "
                               f"not, above {high:.1%} it holds nearly every class; choose between them")
    return float(coverage)


def set_scores(probs: np.ndarray) -> np.ndarray:
    """For every picture and class: the probability mass of the classes ranked above it (0 for the top class)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, axis=1)
    above = np.cumsum(ranked, axis=1) - ranked
    result = np.empty_like(probs, dtype=np.float64)
    np.put_along_axis(result, order, above, axis=1)
    return result


@dataclass
class PredictionSets:
    """Split conformal sets, calibrated on held-out (val) predictions for one coverage."""

    coverage: float
    calibration_size: int
    _classifier: object  # crepes.ConformalClassifier, fitted on the scores of the true classes

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> "PredictionSets":
        coverage = check_coverage(coverage)
        labels = np.asarray(labels)
        need = int(np.floor(1 / (1 - coverage) - 1 + 1e-9)) + 1  # fewer: the smallest p-value 1/(n+1) ≥ α,
        if len(labels) < need:                                       # so every set would hold every class
            raise CalibrationError(f"{len(labels)} held-out pictures cannot calibrate {coverage:.1%} sets "
                                   f"(need at least {need})")
        from crepes import ConformalClassifier
        scores_of_truth = set_scores(probs)[np.arange(len(labels)), labels]
        return cls(coverage, len(labels), ConformalClassifier().fit(scores_of_truth))

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """(n, C) booleans: class c is in picture i's set."""
        return self._classifier.predict_set(set_scores(np.atleast_2d(probs)), confidence=self.coverage,
                                            smoothing=False).astype(bool)


def set_names(members: np.ndarray, probs: np.ndarray, classes: list[str]) -> list[list[str]]:
    """Each picture's set as class names, most likely first."""
    return [[classes[c] for c in np.argsort(-p, kind="stable") if row[c]] for row, p in zip(np.atleast_2d(members),
                                                                                            np.atleast_2d(probs))]


def set_phrase(names: list[str]) -> str:
    """A set in words: "texting", "texting or calling", "texting, calling or eating"."""
    words = [spoken(name) for name in names]
    return " or ".join(words) if len(words) <= 2 else f"{', '.join(words[:-1])} or {words[-1]}"


def set_report(members: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Empirical coverage and mean set size, overall and per true class."""
    labels = np.asarray(labels)
    covered, size = members[np.arange(len(labels)), labels], members.sum(1)
    per_class = {c: {"n": int((labels == i).sum()),
                     "coverage": float(covered[labels == i].mean()) if (labels == i).any() else None,
                     "mean_size": float(size[labels == i].mean()) if (labels == i).any() else None}
                 for i, c in enumerate(classes)}
    measured = [v["coverage"] for v in per_class.values() if v["coverage"] is not None]
    worst = min(per_class, key=lambda c: per_class[c]["coverage"] if per_class[c]["coverage"] is not None else 2)
    return {"n": int(len(labels)), "coverage": float(covered.mean()), "mean_size": float(size.mean()),
            "worst_class": worst, "worst_class_coverage": float(min(measured)), "per_class": per_class}


# ----------------------------------------------------------------------------------------- abstaining

def risk_coverage(probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Answers kept most-confident first: for each threshold (a confidence reached), the share kept and their
    accuracy."""
    confidence, correct = probs.max(1), probs.argmax(1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    kept = np.arange(1, len(order) + 1)
    return pd.DataFrame({"threshold": confidence[order], "coverage": kept / len(order),
                         "accuracy": np.cumsum(correct[order]) / kept})


def abstain_threshold(probs: np.ndarray, labels: np.ndarray, accuracy: float = DEFAULT_TARGET_ACCURACY) -> float:
    """The lowest confidence threshold whose kept answers (every picture at least that sure, ties included)
    reach `accuracy` on the held-out predictions given, keeping at least MIN_PICTURES of them; 1.0 (answer
    nothing) when none does."""
    curve = risk_coverage(probs, labels).drop_duplicates("threshold", keep="last")  # a threshold keeps all its ties
    kept = curve["coverage"] * len(labels)
    reaching = curve[(curve["accuracy"] >= accuracy) & (kept >= min(MIN_PICTURES, len(labels)))]
    return float(reaching["threshold"].iloc[-1]) if len(reaching) else 1.0


# ----------------------------------------------------------------------------------------- runs

def _labelled(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    frame = frame[frame["true"].isin(classes)]
    probs = probabilities(frame, classes)  # stored to 6 decimals: renormalised so each row sums to 1
    return probs / probs.sum(1, keepdims=True), np.array([classes.index(t) for t in frame["true"]])


def manifest_digest(run: Run) -> str:
    return fileio.file_sha256(run.path / artifacts.MANIFEST) if run.has(artifacts.MANIFEST) else ""


def held_out(run: Run, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's stored (raw) probabilities and integer labels on a split; CalibrationError when missing."""
    frame = run.predictions(split)
    if frame is None or frame.empty:
        raise CalibrationError(f"{run.name} has no {split} predictions (python -m train.evaluate {run.path} "
                               f"--split {split})")
    return _labelled(frame, run.classes)


def calibrate_run(run: Run, coverage: float = DEFAULT_COVERAGE) -> dict:
    """Fit the run's temperature on its val predictions, measure before/after on val and test, write
    calibration.json and the temperature on the card. Returns the report."""
    try:
        val_probs, val_labels = held_out(run, "val")
        temperature = fit_temperature(val_probs, val_labels)
    except CalibrationError:
        forget_calibration(run)  # an older temperature would no longer describe these predictions
        raise
    report = {"run": run.name, "temperature": temperature, "fitted_on": "val", "manifest_sha256": manifest_digest(run),
              "val_predictions_sha256": val_digest(run), "classes": run.classes, "bins": BINS, "coverage": coverage,
              "splits": {}}
    try:
        sets = PredictionSets.fit(temper(val_probs, temperature), val_labels, coverage)
    except CalibrationError as error:  # too few val pictures for sets: the temperature still holds
        sets, report["sets_note"] = None, str(error)
    for split in ("val", "test"):
        try:
            probs, labels = held_out(run, split)
        except CalibrationError:
            continue
        calibrated = temper(probs, temperature)
        report["splits"][split] = {
            "before": scores(probs, labels), "after": scores(calibrated, labels),
            "reliability_before": reliability(probs, labels).to_dict("list"),
            "reliability_after": reliability(calibrated, labels).to_dict("list"),
            "sets": set_report(sets.predict(calibrated), labels, run.classes) if sets else None}
    fileio.write_json(run.path / REPORT, report)
    card = dict(run.card, calibration={"temperature": temperature, "fitted_on": "val", "n": int(len(val_labels)),
                                       "manifest_sha256": report["manifest_sha256"],
                                       "val_predictions_sha256": report["val_predictions_sha256"]})
    fileio.write_json(run.path / artifacts.CARD, card)
    run.card = card
    return report


def val_digest(run: Run) -> str:
    name = artifacts.predictions_file("val")
    return fileio.file_sha256(run.path / name) if run.has(name) else ""


def forget_calibration(run: Run) -> None:
    """Take a run's temperature off its card and delete its report (a refit failed: raw probabilities)."""
    if "calibration" in run.card:
        run.card = {k: v for k, v in run.card.items() if k != "calibration"}
        fileio.write_json(run.path / artifacts.CARD, run.card)
    (run.path / REPORT).unlink(missing_ok=True)


def run_temperature(run: Run) -> tuple[float, str]:
    """The temperature every page applies to the run's probabilities, and "" — or 1.0 and one line saying why
    the raw probabilities are shown (never calibrated, or calibrated on another split manifest or on other val
    predictions than the run holds now)."""
    found = run.card.get("calibration")
    if not isinstance(found, dict) or not isinstance(found.get("temperature"), (int, float)):
        return 1.0, f"{run.name}: not calibrated yet (python -m train.calibrate {run.path.name}); raw probabilities"
    if found.get("manifest_sha256") and found["manifest_sha256"] != manifest_digest(run):
        return 1.0, f"{run.name}: calibrated on another split manifest than its split.csv; raw probabilities"
    if found.get("val_predictions_sha256") and found["val_predictions_sha256"] != val_digest(run):
        return 1.0, (f"{run.name}: its val predictions changed since it was calibrated (python -m train.calibrate "
                     f"{run.path.name}); raw probabilities")
    if not TEMPERATURE_RANGE[0] <= found["temperature"] <= TEMPERATURE_RANGE[1]:
        return 1.0, f"{run.name}: calibration temperature {found['temperature']} is out of range; raw probabilities"
    return float(found["temperature"]), ""


def report_of(run: Run) -> dict | None:
    """The run's calibration.json, when it matches the card's classes and temperature (else None)."""
    if not run.has(REPORT):
        return None
    report = artifacts.read_json(run.path / REPORT)
    temperature, note = run_temperature(run)
    if note or report.get("classes") != run.classes or abs(report.get("temperature", 0) - temperature) > 1e-9:
        return None
    return report


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
class HeldOut:
    """The calibrated val predictions of a run or of an ensemble: what its sets and abstain threshold come from."""

    probs: np.ndarray
    labels: np.ndarray
    temperature: float
    note: str = ""

    def sets(self, coverage: float = DEFAULT_COVERAGE) -> PredictionSets:
        return PredictionSets.fit(self.probs, self.labels, coverage)

    def threshold(self, accuracy: float = DEFAULT_TARGET_ACCURACY) -> float:
        return abstain_threshold(self.probs, self.labels, accuracy)


def run_held_out(run: Run, calibrated: bool = True) -> HeldOut:
    """A run's calibrated val predictions (raw, with a note, when it is not calibrated or `calibrated` is
    False): what its sets and threshold are calibrated on, so they must match the probabilities they judge."""
    temperature, note = run_temperature(run) if calibrated else (1.0, f"{run.name}: raw probabilities (asked for)")
    probs, labels = held_out(run, "val")
    return HeldOut(temper(probs, temperature), labels, temperature, note)


def ensemble_held_out(runs: list[Run]) -> HeldOut:
    """The ensemble's val predictions: the mean of its calibrated members, scaled by the ensemble's own
    temperature, fitted on the same val pictures. Members must share the val pictures and class list."""
    from har_core.ensemble import combine  # ensemble imports this module
    if not runs:
        raise CalibrationError("no ensemble members")
    if any(run.classes != runs[0].classes for run in runs):
        raise CalibrationError("the ensemble's members have different class lists; the ensemble is not calibrated")
    probs, labels = _aligned(runs, "val", calibrated=True)
    mean = combine(probs)
    temperature = fit_temperature(mean, labels)
    notes = [note for run in runs if (note := run_temperature(run)[1])]
    return HeldOut(temper(mean, temperature), labels, temperature, "; ".join(notes))


def _aligned(runs: list[Run], split: str, calibrated: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """The members' probabilities on a split, row-aligned by file name, and the labels."""
    frames = [run.predictions(split) for run in runs]
    missing = [run.name for run, frame in zip(runs, frames) if frame is None]
    if missing:
        raise CalibrationError(f"{', '.join(missing)}: no {split} predictions; the ensemble is not calibrated")
    base = frames[0]["filename"]
    if any(set(frame["filename"]) != set(base) for frame in frames):
        raise CalibrationError(f"the ensemble's members predicted different {split} pictures; the ensemble is not "
                               "calibrated")
    probs = []
    for run, frame in zip(runs, frames):
        raw, labels = _labelled(frame.set_index("filename").loc[base].reset_index(), run.classes)
        probs.append(temper(raw, run_temperature(run)[0]) if calibrated else raw)
    return probs, labels


def ensemble_figures(runs: list[Run], coverage: float = DEFAULT_COVERAGE) -> dict:
    """The ensemble's headline figures on test, as coverage_figures gives a run's: before = the mean of the raw
    members, after = the mean of the calibrated members at the ensemble's own temperature (fitted on val)."""
    from har_core.ensemble import combine
    fitted = ensemble_held_out(runs)
    raw, labels = _aligned(runs, "test", calibrated=False)
    members, _ = _aligned(runs, "test", calibrated=True)
    before, after = combine(raw), combine(members, fitted.temperature)
    sets = set_report(fitted.sets(coverage).predict(after), labels, runs[0].classes)
    return {"run": "ensemble of " + ", ".join(run.name for run in runs), "temperature": fitted.temperature,
            "accuracy": float((after.argmax(1) == labels).mean()),
            "ece_before": expected_calibration_error(before, labels),
            "ece_after": expected_calibration_error(after, labels),
            "nll_before": nll(before, labels), "nll_after": nll(after, labels), "coverage": sets["coverage"],
            "mean_set_size": sets["mean_size"], "worst_class": sets["worst_class"],
            "worst_class_coverage": sets["worst_class_coverage"]}


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
            "worst_class": test["sets"]["worst_class"], "worst_class_coverage": test["sets"]["worst_class_coverage"]}


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
    class) and what the abstain threshold keeps."""
    probs, labels = _labelled(frame, classes)
    result = {"curve": risk_coverage(probs, labels), "sets": None, "kept": None, "kept_accuracy": None}
    if sets is not None:
        result["sets"] = set_report(sets.predict(probs), labels, classes)
    if threshold is not None:
        kept = probs.max(1) >= threshold
        result["kept"] = float(kept.mean())
        result["kept_accuracy"] = float((probs[kept].argmax(1) == labels[kept]).mean()) if kept.any() else float("nan")
    return result
