"""Tables behind the app's pages: model comparison, per-class scores, confusion cells, mistakes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from har_core.models.artifacts import Run
from har_core.data.datasets import DataIndex, scan, scan_cached
from har_core.data.imaging import ImageError, load_image
from har_core.data.video import VIDEO_SUFFIXES, VideoError, probe, read_clip
from har_core.evaluation.metrics import per_class_f1, summary


def starts_from(card: dict, teachers: str = "named") -> str:
    """Where a run's weights started, in plain words (random, ImageNet, a weight file, a taught head's base), and
    whether it learned from teachers too: `teachers` "named", "counted" (where a table has no room for two or
    more names) or "left out" (where a line of its own names them)."""
    if "taught" in card:
        return f"taught head on {card['taught']['base']}"
    pretrained = card["pretrained"]
    start = "random start" if pretrained.startswith("none") else \
        f"weights of {Path(pretrained.removeprefix('file ')).name}" if pretrained.startswith("file ") else "ImageNet"
    names = card.get("distillation", {}).get("teachers", [])
    if not names or teachers == "left out":
        return start
    if len(names) > 1 and teachers == "counted":
        return f"{start}, taught by {len(names)} runs"
    return f"{start}, taught by {', '.join(names)}"


OPTIMIZER_WORDS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
AUGMENTATION_WORDS = {"rrc": "random crops", "flip": "mirroring", "rotate": "turns", "affine": "shifts",
                      "perspective": "perspective", "color": "colour changes", "erasing": "erased patches",
                      "randaugment": "two random photo edits (RandAugment)"}


def training_in_words(card: dict) -> str:
    """How a run was trained, in one plain line from its card's recipe (empty when the card has none)."""
    recipe = card.get("recipe")
    if not recipe or "taught" in card:
        return ""
    epochs = card.get("epochs_trained", recipe["epochs"])
    parts = [f"{epochs} epoch{'s' * (epochs != 1)}" + (f", the first {recipe['freeze_epochs']} on the head alone"
                                                          if recipe.get("freeze_epochs") else ""),
             f"{OPTIMIZER_WORDS.get(recipe['optimizer'], recipe['optimizer'])} at learning rate {recipe['lr']:g} "
             f"({recipe['scheduler']})",
             f"batches of {recipe['batch_size']}", f"{card['input_size']} px pictures"]
    augment = [AUGMENTATION_WORDS.get(name, name) for name in filter(None, recipe.get("augment", "").split(","))]
    if augment:
        parts.append("with " + ", ".join(augment))
    precision = recipe.get("precision", "auto")
    if precision == "bf16" or (precision == "auto" and card.get("device", "cpu") != "cpu"):  # auto: bf16 on a GPU
        parts.append("bfloat16 arithmetic")
    return " · ".join(parts) + "."  # where it started, its teachers and its device: the card's first lines


def data_folder(runs: list[Run]) -> str | None:
    """The name of the data folder every run was trained on, or None when they differ or a card does not say."""
    names = {Path(root).name if (root := run.card.get("data", {}).get("root")) else None for run in runs}
    return names.pop() if len(names) == 1 else None


def overview_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run, the answer first: test accuracy and macro-F1 beside the name, the most accurate first;
    the architecture only when some run's name does not begin with it, the data only when the runs differ in it
    (`data_folder` names the one they share), and the longest text, where each run started, last: at 1280 px
    the numbers stay in sight."""
    rows = []
    for run in runs:
        card = run.card
        test = card.get("metrics", {}).get("test", {})
        rows.append({
            "run": run.name, "test accuracy": test.get("accuracy"), "test macro-F1": test.get("macro_f1"),
            "architecture": card["model"], "parameters (M)": round(card.get("parameters", 0) / 1e6, 1),
            "input size": card["input_size"], "epochs": card.get("epochs_trained"), "data": data_folder([run]) or "?",
            "starts from": starts_from(card, teachers="counted"),
        })
    table = pd.DataFrame(rows)
    if not rows:
        return table
    if all(run.startswith(model) for run, model in zip(table["run"], table["architecture"])):  # custom_cnn_taught
        table = table.drop(columns="architecture")
    if table["data"].nunique() == 1:
        table = table.drop(columns="data")
    return table.sort_values("test accuracy", ascending=False, na_position="last", kind="stable", ignore_index=True)


METRIC_NAMES = {"accuracy": "accuracy", "top3_accuracy": "top-3 accuracy", "top5_accuracy": "top-5 accuracy",
                "macro_precision": "macro precision", "macro_recall": "macro recall", "macro_f1": "macro F1",
                "weighted_precision": "weighted precision", "weighted_recall": "weighted recall",
                "weighted_f1": "weighted F1"}  # what a table header says for each metrics-file key
HEADLINE = ("accuracy", "top-3 accuracy", "macro precision", "macro recall", "macro F1")  # what fits 1280 px


def metrics_table(runs: list[Run], split: str) -> pd.DataFrame:
    """The headline metrics of each run on a split (readable headers), the most accurate first."""
    rows = []
    for run in runs:
        metrics = run.metrics(split)
        if metrics is not None:
            rows.append({"run": run.name, **{METRIC_NAMES[k]: v for k, v in summary(metrics).items()}})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index("run").sort_values("accuracy", ascending=False, kind="stable")


def per_class_f1_table(runs: list[Run], split: str) -> pd.DataFrame:
    """Model × class F1 matrix (rows: runs, columns: classes)."""
    rows = {run.name: per_class_f1(m) for run in runs if (m := run.metrics(split)) is not None}
    return pd.DataFrame(rows).T


def biggest_mix_up(metrics: dict) -> tuple[str, str]:
    """(true, predicted) of the confusion matrix's largest off-diagonal count: the cell a page opens on. With no
    mistake, the first class's correct cell."""
    counts = np.array(metrics["confusion_matrix"], dtype=float)
    np.fill_diagonal(counts, -1)
    true, predicted = np.unravel_index(int(counts.argmax()), counts.shape)
    classes = metrics["classes"]
    return (classes[true], classes[predicted]) if counts[true, predicted] > 0 else (classes[0], classes[0])


def cell_samples(predictions: pd.DataFrame, true: str, predicted: str) -> pd.DataFrame:
    """The samples of one confusion-matrix cell, most confident first."""
    cell = predictions[(predictions["true"] == true) & (predictions["predicted"] == predicted)]
    return cell.sort_values("confidence", ascending=False)[["filename", "true", "predicted", "confidence"]]


def joined_predictions(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per sample: its true class and, per run, the predicted class and confidence."""
    frames = []
    for name, frame in predictions.items():
        part = frame.set_index("filename")[["true", "predicted", "confidence"]]
        part = part.rename(columns={"predicted": f"{name}:predicted", "confidence": f"{name}:confidence"})
        frames.append(part if not frames else part.drop(columns="true"))
    return pd.concat(frames, axis=1, join="inner").reset_index() if frames else pd.DataFrame()


def picture_cards(predictions: dict[str, pd.DataFrame], table: pd.DataFrame, limit: int = 24) -> list[dict]:
    """One card per picture of a mistakes table (FiftyOne's sample view), in the table's order (the most
    confident mistake first): its true class and every model's answer — {"filename", "true", "answers":
    [(run, predicted, confidence, right)], "wrong": how many models err}."""
    joined = joined_predictions(predictions).set_index("filename")
    cards = []
    for filename in table["filename"].drop_duplicates().head(limit):
        row = joined.loc[filename]
        answers = [(name, row[f"{name}:predicted"], float(row[f"{name}:confidence"]),
                    row[f"{name}:predicted"] == row["true"]) for name in predictions]
        cards.append({"filename": filename, "true": row["true"], "answers": answers,
                      "wrong": sum(not right for *_, right in answers)})
    return cards


def disagreement_matrix(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Fraction of shared samples on which two runs predict different classes."""
    joined = joined_predictions(predictions)
    names = list(predictions)
    matrix = pd.DataFrame(0.0, index=names, columns=names)
    for a in names:
        for b in names:
            matrix.loc[a, b] = float((joined[f"{a}:predicted"] != joined[f"{b}:predicted"]).mean()) if len(joined) else 0
    return matrix


def mistakes(predictions: dict[str, pd.DataFrame], models: list[str] | None = None, true_class: str | None = None,
             predicted_class: str | None = None, confidence: tuple[float, float] = (0.0, 1.0),
             only: str = "any") -> pd.DataFrame:
    """Misclassified samples, one row per (sample, run), most confident mistakes first.

    only: "any" (every mistake), "all wrong" (samples every shown run gets wrong),
          "disagree" (samples on which the shown runs predict different classes).
    """
    models = models or list(predictions)
    joined = joined_predictions({m: predictions[m] for m in models})
    if joined.empty:
        return pd.DataFrame(columns=["filename", "run", "true", "predicted", "confidence"])
    predicted = joined[[f"{m}:predicted" for m in models]]
    wrong = predicted.ne(joined["true"], axis=0)
    if only == "all wrong":
        joined = joined[wrong.all(axis=1)]
    elif only == "disagree":
        joined = joined[predicted.nunique(axis=1) > 1]
    rows = []
    for model in models:
        part = joined[joined[f"{model}:predicted"] != joined["true"]]
        rows.append(pd.DataFrame({"filename": part["filename"], "run": model, "true": part["true"],
                                  "predicted": part[f"{model}:predicted"],
                                  "confidence": part[f"{model}:confidence"]}))
    result = pd.concat(rows, ignore_index=True)
    if true_class:
        result = result[result["true"] == true_class]
    if predicted_class:
        result = result[result["predicted"] == predicted_class]
    low, high = confidence
    result = result[(result["confidence"] >= low) & (result["confidence"] <= high)]
    return result.sort_values("confidence", ascending=False).reset_index(drop=True)


def agreement(labels: list[str], prefer: str | None = None) -> tuple[str, float]:
    """The most common label among models and the share of models that chose it; on a tie, `prefer` (the
    ensemble's answer) when it is among the most common."""
    values, counts = np.unique(labels, return_counts=True)
    top = [str(v) for v, c in zip(values, counts) if c == counts.max()]
    return (prefer if prefer in top else top[0]), float(counts.max() / len(labels))


def dataset_summary(root: str | Path, progress: bool = False, confine: bool = False, max_images: int = 0,
                    stamp: str | None = None, index: DataIndex | None = None) -> dict:
    """Class distribution, image sizes, unreadable files and copies of one picture in a data folder (the scan
    comes from the on-disk store while the folder's listing stamp is unchanged; `index`: the scan already at
    hand)."""
    if index is None:
        index = scan_cached(root, confine=confine, max_images=max_images, stamp=stamp) if not progress else \
            scan(root, progress=progress, confine=confine, max_images=max_images)
    sizes = []
    for rel, label in tqdm(index.samples, desc="reading sizes", disable=not progress, leave=False):
        width, height = _picture_size(index.root / rel, clip=index.layout == "clips")
        sizes.append({"filename": rel, "label": label, "width": width, "height": height})
    labels = dict(index.samples)
    copies = pd.DataFrame([{"picture": i + 1, "file": rel, "label": labels[rel]}
                           for i, group in enumerate(index.copies()) for rel in group],
                          columns=["picture", "file", "label"])
    return {"layout": index.layout, "classes": index.classes, "fingerprint": index.fingerprint(),
            "counts": pd.Series([l for _, l in index.samples]).value_counts().reindex(index.classes),
            "sizes": pd.DataFrame(sizes), "problems": pd.DataFrame(index.problems, columns=["file", "reason"]),
            "copies": copies}


def _picture_size(path: Path, clip: bool) -> tuple[int, int]:
    """An image's size, or a clip's upright frame size (read from its first frame)."""
    if clip:
        frame = probe(path).frames[0]
        return frame.width, frame.height
    with Image.open(path) as image:
        return image.size


def thumbnail(path: Path, size: int = 160) -> Image.Image | None:
    """A small preview for the app (a clip's middle frame); None when the file is gone or unreadable."""
    try:
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:
            image = read_clip(path, count=1).frames[0]
        else:
            image = load_image(path, draft_size=size)
    except (ImageError, VideoError):
        return None
    image.thumbnail((size, size))
    return image

