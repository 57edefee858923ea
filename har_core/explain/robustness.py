"""How robust a model is: its accuracy on held-out pictures under every corruption of har_core.explain.whatif, at three
strengths (ImageNet-C style). Every row, strength 0 (the pictures as given: "clean") included, is measured the
same way: through the edit path and without flip TTA, so the corruptions are compared like with like. The clean
row is therefore train.evaluate's accuracy without --tta: for a run evaluated (and calibrated) with flip TTA it
can differ from the accuracy Evaluate's tables show. Stored in the run folder (`robustness.csv`: run, corruption, strength,
accuracy; `robustness.json`: on which pictures, by which weights) and read by Evaluate and the report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd
from torch import nn
from torch.utils.data import DataLoader

from har_core.data import fileio
from har_core.models.artifacts import Run
from har_core.data.datasets import dataset_for, eval_transform
from har_core.models.inference import data_config_of, predict_loader
from har_core.explain.whatif import CORRUPTIONS, STRENGTHS, Edit, as_model_sees, corruption

ROBUSTNESS = "robustness.csv"
ROBUSTNESS_INFO = "robustness.json"
COLUMNS = ["run", "corruption", "strength", "accuracy"]


class RobustnessError(RuntimeError):
    """A stored robustness table that cannot be used; the message names the run and the file."""


class EditedThen:
    """The edit at the model's own size (whatif.as_model_sees, as Predict's What-if panel), then the rest of its
    eval transform: the edit's strength does not depend on the photo's resolution."""

    def __init__(self, edit: Edit, card: dict):
        self.edit, self.transform = edit, eval_transform(data_config_of(card))

    def __call__(self, image):
        return self.transform(as_model_sees(image, self.edit, self.transform))


def accuracy_under(model: nn.Module, card: dict, root: Path, files: list[str], labels: list[int], edit: Edit,
                   device: str = "cpu", batch_size: int = 64, progress: bool = False, desc: str = "") -> float:
    """Top-1 accuracy of the model on the pictures with the edit applied, without flip TTA whatever the run's own
    mode (every row of the table alike)."""
    loader = DataLoader(dataset_for(root, files, labels, EditedThen(edit, card)), batch_size=batch_size)
    probs, truth = predict_loader(model, loader, device=device, desc=desc or "robustness", progress=progress)
    return float((probs.argmax(1) == truth).mean())


def robustness_table(name: str, model: nn.Module, card: dict, root: Path, files: list[str], labels: list[int],
                     corruptions: list[str] | None = None, device: str = "cpu", batch_size: int = 64,
                     progress: bool = True, on_step: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Rows run (`name`), corruption, strength, accuracy: every corruption at strengths 0 (clean, computed once)
    to 3."""
    corruptions = list(corruptions or CORRUPTIONS)
    steps = 1 + len(corruptions) * len(STRENGTHS)
    clean = accuracy_under(model, card, root, files, labels, Edit(), device, batch_size, progress, "clean")
    rows, done = [], 1
    for kind in corruptions:
        rows.append((name, kind, 0, clean))
        for strength in STRENGTHS:
            if on_step is not None:
                on_step(done, steps)
            rows.append((name, kind, strength,
                         accuracy_under(model, card, root, files, labels, corruption(kind, strength), device,
                                        batch_size, progress, f"{kind} {strength}")))
            done += 1
    if on_step is not None:
        on_step(steps, steps)
    return pd.DataFrame(rows, columns=COLUMNS)


def write_robustness(run: Run, table: pd.DataFrame, info: dict) -> None:
    fileio.atomic_write_text(run.path / ROBUSTNESS, table.to_csv(index=False))
    fileio.write_json(run.path / ROBUSTNESS_INFO, info | {"weights": run.weights_sha256()})


def read_robustness(run: Run) -> tuple[pd.DataFrame, dict] | None:
    """The run's stored robustness table and what it was measured on, read whole; None when it has none or it
    was measured by other weights than the run's (retrained since); RobustnessError, one line, when it cannot be
    read or is malformed."""
    if not (run.path / ROBUSTNESS).is_file():
        return None
    try:
        table = checked_table(pd.read_csv(run.path / ROBUSTNESS))
        info = json.loads((run.path / ROBUSTNESS_INFO).read_text())
        if not isinstance(info, dict) or not isinstance(info.get("pictures"), int) or \
                not isinstance(info.get("split"), str):
            raise ValueError(f"{ROBUSTNESS_INFO} does not say which pictures were measured")
    except (OSError, ValueError, TypeError, pd.errors.ParserError) as error:
        raise RobustnessError(f"{run.name}: {ROBUSTNESS} is unreadable ({error}); python -m train.robustness "
                              f"{run.path.name} measures it again") from None
    if info.get("weights") != run.weights_sha256():
        return None
    return table, info


def checked_table(table: pd.DataFrame) -> pd.DataFrame:
    """A robustness table with its columns, accuracies in [0, 1], strengths 0 to the strongest, and the clean
    row (strength 0) of every corruption; ValueError naming the first thing wrong."""
    if list(table.columns) != COLUMNS or table.empty:
        raise ValueError(f"its columns are not {', '.join(COLUMNS)}, or it is empty")
    if not pd.api.types.is_numeric_dtype(table["accuracy"]) or not table["accuracy"].between(0, 1).all():
        raise ValueError("an accuracy is not a number from 0 to 1")
    if not pd.api.types.is_integer_dtype(table["strength"]) or not table["strength"].isin([0, *STRENGTHS]).all():
        raise ValueError(f"a strength is not one of 0, {', '.join(map(str, STRENGTHS))}")
    without_clean = set(table["corruption"]) - set(table.loc[table["strength"] == 0, "corruption"])
    if without_clean:
        raise ValueError(f"no clean row (strength 0) for {', '.join(sorted(map(str, without_clean)))}")
    return table


def heatmap_table(tables: list[pd.DataFrame], strength: int) -> pd.DataFrame:
    """Models × (clean, corruptions...): accuracy at one strength, clean first."""
    frame = pd.concat(tables)
    wide = frame[frame["strength"] == strength].pivot(index="run", columns="corruption", values="accuracy")
    clean = frame[frame["strength"] == 0].groupby("run")["accuracy"].first()
    order = [c for c in CORRUPTIONS if c in wide.columns] + [c for c in wide.columns if c not in CORRUPTIONS]
    runs = list(dict.fromkeys(frame["run"]))
    return pd.concat([clean.rename("clean"), wide[order]], axis=1).loc[runs]


def clean_accuracy(table: pd.DataFrame) -> float:
    return float(table.loc[table["strength"] == 0, "accuracy"].iloc[0])


def mean_drop(table: pd.DataFrame) -> float:
    """Mean accuracy lost to the corruptions (all strengths) from the clean accuracy: one number per model."""
    return clean_accuracy(table) - float(table.loc[table["strength"] > 0, "accuracy"].mean())


def labelled(files_labels: list[tuple[str, str]], classes: list[str]) -> tuple[list[str], list[int]]:
    index = {c: i for i, c in enumerate(classes)}
    return [f for f, _ in files_labels], [index[label] for _, label in files_labels]

