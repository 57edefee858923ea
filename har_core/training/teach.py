"""Teach the models new actions: a linear head on a trained run's frozen embeddings (like Teachable Machine).

A teacher names 2–10 classes and gives each a few pictures. Each picture goes once through the chosen
run's network up to its classifier's input (`ModelSpec.embedding`); scikit-learn's logistic regression
learns the new classes on those embeddings, a held-out share of the pictures measures it, and the head
is folded into the run's own final linear layer, so the result is an ordinary run folder that every
page, CLI and the ensemble use like any other.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from har_core.models import artifacts
from har_core.data import fileio
from har_core.evaluation.evaluate import write_evaluation
from har_core.models.inference import EmbeddingTap, LoadedModel, forward_probs
from har_core.evaluation.metrics import compute_metrics, predictions_frame
from har_core.models.registry import REGISTRY

MIN_CLASSES, MAX_CLASSES = 2, 10
MIN_PICTURES = 2  # per class: one to learn from and one held out
HOLDOUT = 0.25
STRENGTHS = tuple(np.logspace(-3, 2, 11))  # inverse regularisation strengths C tried by cross-validation
FEW_HELD_OUT = 10  # below this many held-out pictures the accuracy is a rough guess: the page says so
PICTURES_DIR = "pictures"  # inside the run folder: the taught pictures, one folder per class


class TeachError(ValueError):
    """Input a head cannot be taught from, with what to do about it."""


def class_names(typed: list[str]) -> list[str]:
    """The teacher's class names, checked: 2–10, none empty, no two alike (ignoring case and spaces);
    spaces become underscores, as in the data set's class names."""
    names = [re.sub(r"\s+", "_", name.strip()) for name in typed]
    if any(not name for name in names):
        raise TeachError("a class has no name: type one for every class, or remove it")
    bad = [name for name in names if not re.fullmatch(r"[\w\-]+", name)]
    if bad:
        raise TeachError(f"class names use letters, digits, spaces, - and _ only: {', '.join(bad)}")
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            raise TeachError(f"two classes are called '{seen[name.lower()]}' and '{name}': give them different names")
        seen[name.lower()] = name
    if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
        raise TeachError(f"{len(names)} class(es): teach between {MIN_CLASSES} and {MAX_CLASSES}")
    return names


def check_pictures(names: list[str], pictures: list[list]) -> None:
    """Every class needs `MIN_PICTURES` pictures: some to learn from and one to test on."""
    empty = [name for name, images in zip(names, pictures) if not images]
    if empty:
        raise TeachError(f"no pictures for {', '.join(empty)}: add some from the camera, an upload or a folder")
    few = [f"{name} ({len(images)})" for name, images in zip(names, pictures) if len(images) < MIN_PICTURES]
    if few:
        raise TeachError(f"one picture is too few to learn and to test on: add at least one more to {', '.join(few)}")


@dataclass
class TaughtHead:
    """A logistic-regression head on a run's embeddings, with what it was measured on."""
    base: LoadedModel
    classes: list[str]
    pictures: list[list[Image.Image]]  # per class, in the order of `classes`
    pipeline: object  # StandardScaler → LogisticRegression (scikit-learn)
    split: pd.DataFrame  # filename, label, split (train / test)
    metrics: dict  # on the held-out pictures (har_core.evaluation.metrics)
    predictions: pd.DataFrame  # the held-out pictures' predictions
    seconds: dict  # embed / fit

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(vectors)

    def linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The head as one linear layer on the raw embedding: the scaler folded into the weights."""
        scaler, regression = self.pipeline[0], self.pipeline[-1]
        weight = regression.coef_ / scaler.scale_
        bias = regression.intercept_ - weight @ scaler.mean_
        if len(self.classes) == 2:  # scikit-learn keeps one row for two classes: logits (-z/2, z/2) give its softmax
            weight, bias = np.stack([-weight[0], weight[0]]) / 2, np.array([-bias[0], bias[0]]) / 2
        return weight.astype(np.float32), bias.astype(np.float32)


def final_linear(model: nn.Module, model_name: str) -> str:
    """The name of the linear layer that gives a network its logits: the last one inside its head. Its input is
    what a head learns on: the run's embedding, or for the custom CNN's two-layer head its hidden layer."""
    head = REGISTRY[model_name].head[0]
    names = [name for name, module in model.get_submodule(head).named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise TeachError(f"{model_name} has no linear classifier layer: a head cannot be taught on it")
    return f"{head}.{names[-1]}" if names[-1] else head


def embed(base: LoadedModel, images: list[Image.Image], batch: int = 16,
          on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The pictures' features under the base run (the input of its final linear layer), in batches."""
    tap = EmbeddingTap(base.model, final_linear(base.model, base.run.card["model"]))
    parts = []
    try:
        for start in range(0, len(images), batch):
            with tap.capture() as captured:
                forward_probs(base.model, base.preprocess(images[start:start + batch]))
            parts.append(torch.cat(captured).numpy())
            if on_batch is not None:
                on_batch(min(start + batch, len(images)), len(images))
    finally:
        tap.handle.remove()
    return np.concatenate(parts)


def teach(base: LoadedModel, names: list[str], pictures: list[list[Image.Image]], holdout: float = HOLDOUT,
          seed: int = 0, on_batch: Callable[[int, int], None] | None = None) -> TaughtHead:
    """Learn new classes (`names`, each with its list of `pictures`) on `base`'s embeddings; a stratified
    `holdout` share (at least one picture per class) is kept aside and measured."""
    if base.run.takes_clips:
        raise TeachError(f"{base.name} is a clip model: teach on the embeddings of a photo model")
    classes = class_names(names)
    check_pictures(classes, pictures)
    start = time.perf_counter()
    images = [image for group in pictures for image in group]
    labels = np.array([i for i, group in enumerate(pictures) for _ in group])
    files = [f"{name}/{n:03d}.jpg" for name, group in zip(classes, pictures) for n in range(len(group))]
    vectors = embed(base, images, on_batch=on_batch)
    embedded = time.perf_counter()
    held_out = max(len(classes), int(round(holdout * len(images))))
    if len(images) - held_out < len(classes):
        raise TeachError("too few pictures to keep one per class aside and still learn every class: add more")
    train_rows, test_rows = train_test_split(np.arange(len(images)), test_size=held_out, stratify=labels,
                                             random_state=seed)
    strength, cv_accuracy, cv_confidence = cross_validated(vectors[train_rows], labels[train_rows], seed)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=strength))
    pipeline.fit(vectors[train_rows], labels[train_rows])
    fitted = time.perf_counter()
    probs = pipeline.predict_proba(vectors[test_rows])
    split = pd.DataFrame({"filename": files, "label": [classes[i] for i in labels], "split": "train"})
    split.loc[test_rows, "split"] = "test"
    correct = int((probs.argmax(1) == labels[test_rows]).sum())
    interval = binomtest(correct, len(test_rows)).proportion_ci(confidence_level=0.95, method="wilson")
    metrics = compute_metrics(labels[test_rows], probs, classes) | {
        "split": "test", "tta": False, "held_out": len(test_rows), "C": pipeline[-1].C,
        "held_out_confidence": float(probs.max(1).mean()),
        "cross_validated": None if np.isnan(cv_accuracy) else {"accuracy": cv_accuracy, "confidence": cv_confidence},
        "accuracy_interval": [float(interval.low), float(interval.high)]}
    return TaughtHead(base=base, classes=classes, pictures=[list(group) for group in pictures], pipeline=pipeline, split=split, metrics=metrics,
                      predictions=predictions_frame([files[i] for i in test_rows], labels[test_rows], probs, classes),
                      seconds={"embed": embedded - start, "fit": fitted - embedded})


def regularisation(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """The logistic regression's C: the one whose answers on pictures it did not learn from are as sure as they
    are right. Each C is cross-validated (stratified folds of the pictures given); its average confidence there
    is compared with its accuracy there, counted as if one more right and one more wrong answer had been seen
    (a few pictures all answered right do not prove a head that is never wrong). A few pictures of
    high-dimensional embeddings are separable, so an unregularised head is 100 % sure of everything; choosing C
    by log loss went the other way on a few photos (C = 0.001: a clear photo answered 51 % / 49 %). With fewer
    than two pictures of a class to learn from, the strongest-but-one strength."""
    return cross_validated(vectors, labels, seed)[0]


def cross_validated(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """The chosen C (see `regularisation`), with its cross-validated accuracy and average confidence (NaN for
    both when there are too few pictures to cross-validate)."""
    smallest = int(np.bincount(labels).min())
    if smallest < 2:
        return STRENGTHS[1], float("nan"), float("nan")
    folds = StratifiedKFold(min(5, smallest), shuffle=True, random_state=seed)
    best = None
    for strength in STRENGTHS:
        head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=strength))
        probs = cross_val_predict(head, vectors, labels, cv=folds, method="predict_proba", n_jobs=1)
        right, sure = int((probs.argmax(1) == labels).sum()), float(probs.max(1).mean())
        gap = abs(sure - (right + 1) / (len(labels) + 2))
        if best is None or gap < best[0]:
            best = gap, float(strength), right / len(labels), sure
    return best[1:]


def headed_model(head: TaughtHead) -> nn.Module:
    """The base run's network with the taught classes: every weight of the base, its final linear layer the head."""
    name = head.base.run.card["model"]
    torch.manual_seed(0)  # heads the taught one replaces (InceptionV3's auxiliary head) start the same every time
    model = REGISTRY[name].build(len(head.classes))
    own, base = model.state_dict(), head.base.model.state_dict()
    model.load_state_dict({k: base[k] if k in base and base[k].shape == v.shape else v for k, v in own.items()})
    weight, bias = head.linear()
    layer = model.get_submodule(final_linear(model, name))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return model.eval()


def run_name(typed: str) -> str:
    """A run folder name from what a visitor typed: letters, digits, - and _ (never a path)."""
    name = re.sub(r"[^\w\-]+", "_", typed.strip()).strip("_")[:80]
    if not name:
        raise TeachError("type a name for the run (letters, digits, - and _)")
    return name


def save_head(head: TaughtHead, out_dir: Path, name: str) -> Path:
    """An ordinary run folder: card (saying what it is), weights, split manifest, the held-out metrics and
    predictions, and the pictures themselves (class folders under `pictures/`, the run's data folder)."""
    name = run_name(name)
    run_dir = Path(out_dir) / name
    if run_dir.exists():
        raise TeachError(f"a run called {name} already exists in {out_dir}: choose another name")
    for filename, image in zip(head.split["filename"], (image for group in head.pictures for image in group)):
        target = run_dir / PICTURES_DIR / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(target, quality=92)
    artifacts.save_weights(run_dir / artifacts.WEIGHTS, headed_model(head))
    fileio.atomic_write_text(run_dir / artifacts.MANIFEST, head.split.to_csv(index=False))
    counts = head.split["label"].value_counts()
    base = head.base.run.card
    card = {key: base[key] for key in ("model", "input_size", "mean", "std", "crop_pct", "interpolation",
                                       "recipe", "pretrained")} | {
        "name": name, "classes": head.classes,
        "parameters": base.get("parameters", 0),  # the base network's, which it keeps whole
        "notes": f"linear head on {head.base.name}'s embeddings, {counts.min()}"
                       f"{'' if counts.min() == counts.max() else f'–{counts.max()}'} pictures per class",
        "taught": {"base": head.base.name, "pictures": {c: int(counts[c]) for c in head.classes},
                   "held_out": int((head.split["split"] == "test").sum()), "head": "scikit-learn LogisticRegression "
                   "on standardised embeddings, folded into the final linear layer"},
        "data": {"root": str((run_dir / PICTURES_DIR).resolve())},
        "split": {"counts": head.split["split"].value_counts().to_dict()},
        "versions": artifacts.versions(),
    }
    fileio.write_json(run_dir / artifacts.CARD, card)
    write_evaluation(run_dir, card, head.metrics, head.predictions)
    return run_dir
