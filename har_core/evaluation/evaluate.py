"""Evaluating a model on one split of its manifest, and writing the results into the run folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from har_core.models import artifacts
from har_core.data import fileio
from har_core.data.datasets import eval_transform
from har_core.models.inference import data_config_of, predict_loader
from har_core.data.loaders import split_loader
from har_core.evaluation.metrics import compute_metrics, predictions_frame, summary


def default_workers(device: str) -> int:
    """DataLoader workers for evaluation. A GPU leaves the CPU free, so images decode in workers beside
    it. On a CPU the forward already keeps every core busy and a worker process only competes with it
    (bench, 2 cores: no bundled model evaluated faster with one, most 10–30% slower), so decoding stays inline."""
    return 0 if device == "cpu" else min(4, max(0, (os.cpu_count() or 1) - 1))


def evaluate_split(model: nn.Module, card: dict, root: Path, manifest: pd.DataFrame, split: str,
                   tta: bool = False, device: str = "cpu", batch_size: int = 64, workers: int | None = None,
                   progress: bool = True) -> tuple[dict, pd.DataFrame]:
    classes = card["classes"]
    loader = split_loader(root, manifest, split, classes, eval_transform(data_config_of(card)), batch_size=batch_size,
                          workers=default_workers(device) if workers is None else workers, pin_memory=device != "cpu")
    probs, labels = predict_loader(model, loader, tta=tta, device=device, desc=f"evaluating {split}",
                                   progress=progress)
    metrics = compute_metrics(labels, probs, classes)
    metrics.update({"split": split, "tta": tta})
    files = manifest.loc[manifest["split"] == split, "filename"].tolist()
    return metrics, predictions_frame(files, labels, probs, classes)


def write_evaluation(run_dir: Path, card: dict, metrics: dict, predictions: pd.DataFrame) -> dict:
    """Store metrics and predictions of one split and record the headline numbers on the card."""
    split = metrics["split"]
    fileio.write_json(run_dir / artifacts.metrics_file(split), metrics)
    fileio.atomic_write_text(run_dir / artifacts.predictions_file(split), predictions.to_csv(index=False))
    card = dict(card)
    card["metrics"] = {**card.get("metrics", {}), split: summary(metrics) | {"tta": metrics["tta"]}}
    fileio.write_json(run_dir / artifacts.CARD, card)
    return card


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
