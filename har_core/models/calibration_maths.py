"""The maths of how sure a model is: temperature scaling, calibration measures, conformal prediction sets and
abstaining, on arrays of probabilities and labels. Which pictures they are fitted on, and the run files they are
read from and stored in, are har_core.evaluation.calibration's.

- Temperature scaling (Guo et al., 2017): one number T, fitted on held-out predictions by minimising their
  negative log-likelihood. Probabilities p become softmax(log p / T): the ranking of the classes (so the answer
  and the accuracy) never changes, only how sure it sounds.
- Calibration measures: the reliability table (equal-width confidence bins), the expected calibration error
  computed from that very table, NLL and the Brier score.
- Split conformal prediction (Vovk et al.; Angelopoulos & Bates, 2021): each held-out picture's score is the
  probability mass the (calibrated) model puts on the classes it ranks above the true one (APS without
  randomisation: adaptive, so a hard picture gets a larger set; the top class always scores 0, so no set is
  empty). For a coverage 1 - α, a class joins a picture's set when its score is within the calibration
  quantile; on pictures exchangeable with the calibration pictures the true class is in the set with
  probability at least 1 - α, on average over pictures (not for every class). The p-values and sets come from
  crepes' ConformalClassifier, fed these scores.
- Risk–coverage: keep only the answers above a confidence threshold; the lowest threshold whose kept held-out
  answers reach a chosen accuracy is the abstain threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from har_core.data.labels import spoken

BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram
COVERAGE_RANGE = (0.5, 0.999)  # outside it a set is either a coin toss or every class
DEFAULT_COVERAGE = 0.9
DEFAULT_TARGET_ACCURACY = 0.9
MIN_PICTURES = 30  # fewer calibration pictures than this fit a temperature to noise
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


def combine(probabilities_of_members: list[np.ndarray], temperature: float = 1.0) -> np.ndarray:
    """The ensemble's probabilities: the mean of its (calibrated) members, scaled by the ensemble's own
    temperature (fitted on its calibration pictures: har_core.evaluation.ensemble.ensemble_calibration_pictures). Here, not in
    inference: the first page shows the ensemble of the runs' stored predictions without torch (#41)."""
    return temper(np.mean(probabilities_of_members, axis=0), temperature)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """The mean negative log-probability of the true class, in float64 (scikit-learn's log_loss of the float64
    probabilities clipped at 1e-12, to the last digit: tests/test_calibration.py). Not log_loss itself: importing
    scikit-learn (0.6 s, SciPy's statistics with it) only to fit the ensemble's temperature held up a cold server's
    first answer (#41)."""
    chosen = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(chosen, _EPS, 1.0)).mean())


# scipy's optimizer is imported where it is used: the first page reads stored probabilities with `temper` and
# `combine` only, and importing it was part of the seconds of a cold start (#41)
def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of `probs` (held-out predictions) on `labels`. Refused on fewer
    than MIN_PICTURES pictures, when every answer is right (the NLL then falls without end as T shrinks) or
    when the best temperature is a bound of the search."""
    labels = np.asarray(labels)
    if len(labels) < MIN_PICTURES:
        raise CalibrationError(f"{len(labels)} calibration pictures are too few to fit a temperature "
                               f"(need {MIN_PICTURES})")
    if (probs.argmax(1) == labels).all():
        raise CalibrationError(f"all {len(labels)} calibration pictures are answered right: the NLL falls without "
                               "end as the temperature shrinks, so no temperature fits")
    from scipy.optimize import minimize_scalar
    low, high = TEMPERATURE_RANGE
    result = minimize_scalar(lambda log_t: nll(temper(probs, float(np.exp(log_t))), labels),
                             bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": 1e-4})
    temperature = float(np.exp(result.x))
    if not low * 1.05 < temperature < high / 1.05:
        raise CalibrationError(f"no temperature fits these {len(labels)} calibration pictures (the best is the bound "
                               f"{temperature:.2f} of the search)")
    return temperature


# ----------------------------------------------------------------------------------------- measuring

def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """ECE: the gap between mean confidence and accuracy of each bin of the reliability table, weighted by the
    bin's share of the pictures; computed from that very table, so the number and the diagram always agree."""
    table = reliability(probs, labels, bins)
    filled = table[table["count"] > 0]
    return float((filled["count"] * (filled["confidence"] - filled["accuracy"]).abs()).sum() / filled["count"].sum())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean squared distance to the one-hot label, summed over classes."""
    from sklearn.metrics import brier_score_loss
    return float(brier_score_loss(labels, probs, labels=list(range(probs.shape[1])), scale_by_half=False))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """The reliability diagram's bins: confidence range, pictures in it, their mean confidence and accuracy."""
    confidence, correct = probs.max(1), probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.digitize(confidence, edges[1:-1])  # [lo, hi); a confidence of 1.0 in the last bin, [lo, 1]
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
    """Split conformal sets, calibrated on held-out predictions for one coverage."""

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
        from crepes import ConformalClassifier  # crepes imports scikit-learn
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


def abstain_threshold(probs: np.ndarray, labels: np.ndarray,
                      accuracy: float = DEFAULT_TARGET_ACCURACY) -> float | None:
    """The lowest confidence threshold whose kept answers (every picture at least that sure, ties included)
    reach `accuracy` on the held-out predictions given, keeping at least MIN_PICTURES of them; None when none
    does (answer nothing: no confidence is sure enough)."""
    curve = risk_coverage(probs, labels).drop_duplicates("threshold", keep="last")  # a threshold keeps all its ties
    kept = curve["coverage"] * len(labels)
    reaching = curve[(curve["accuracy"] >= accuracy) & (kept >= min(MIN_PICTURES, len(labels)))]
    return float(reaching["threshold"].iloc[-1]) if len(reaching) else None
