"""Classification metrics, computed by scikit-learn; the first page's two headline figures without it."""
from __future__ import annotations

import numpy as np
import pandas as pd


def compute_metrics(y_true, probs: np.ndarray, classes: list[str], top_k=(3, 5)) -> dict:
    """Metrics of class probabilities `probs` (N × C) against integer labels `y_true`."""
    from sklearn import metrics  # here: see `headline`
    y_true = np.asarray(y_true)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(1)
    result = {"classes": list(classes), "n": int(len(y_true)),
              "accuracy": float(metrics.accuracy_score(y_true, y_pred))}
    for k in top_k:
        if k < len(classes):
            result[f"top{k}_accuracy"] = float(metrics.top_k_accuracy_score(y_true, probs, k=k, labels=labels))
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                             zero_division=0)
        result.update({f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)})
    result["per_class"] = metrics.classification_report(y_true, y_pred, labels=labels, target_names=classes,
                                                        output_dict=True, zero_division=0)
    result["confusion_matrix"] = metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return result


def headline(y_true, y_pred, n_classes: int) -> dict:
    """Accuracy and macro-F1 (a class nobody predicts and nobody is scores F1 0, as compute_metrics' zero_division=0)
    from the confusion counts. The Overview shows only these two, and importing sklearn.metrics alone takes longer
    than the whole first page may (#41); the tests hold them equal to scikit-learn's."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError(f"{len(y_true)} labels and {len(y_pred)} predictions: need the same number, at least one")
    if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n_classes:
        raise ValueError(f"labels and predictions must be class numbers 0..{n_classes - 1}")
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    # F1 = 2 TP / (predicted + true): per class, from the diagonal and the column and row sums
    hits, seen = np.diag(counts).astype(float), (counts.sum(0) + counts.sum(1)).astype(float)
    f1 = np.divide(2 * hits, seen, out=np.zeros(n_classes), where=seen > 0)
    return {"accuracy": float(hits.sum() / len(y_true)), "macro_f1": float(f1.mean())}


def summary(metrics: dict) -> dict:
    """The headline numbers of a metrics dict."""
    keys = ["accuracy", "top3_accuracy", "top5_accuracy", "macro_precision", "macro_recall", "macro_f1",
            "weighted_precision", "weighted_recall", "weighted_f1"]
    return {k: metrics[k] for k in keys if k in metrics}


def per_class_f1(metrics: dict) -> dict[str, float]:
    return {c: metrics["per_class"][c]["f1-score"] for c in metrics["classes"]}


def predictions_frame(files: list[str], y_true, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per sample: file, true and predicted class names, confidence, every class probability."""
    predicted = probs.argmax(1)
    frame = pd.DataFrame({
        "filename": files,
        "true": [classes[i] if i >= 0 else "" for i in y_true],
        "predicted": [classes[i] for i in predicted],
        "confidence": probs.max(1).round(6),
    })
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, i].round(6)
    return frame


def probabilities(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
