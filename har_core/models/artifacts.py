"""Run folders: everything a training run leaves behind, written atomically, read with checks.

A run folder holds
  card.json              what the model is: architecture, classes, preprocessing, recipe, data, versions, metrics
  model.safetensors      the best weights (by validation accuracy)
  history.json           one record per epoch: train/val loss, accuracy, macro-F1, lr
  split.csv              the split manifest: filename,label,split
  metrics_<split>.json   accuracy, top-k, P/R/F1, per-class report, confusion matrix
  predictions_<split>.csv  file, true, predicted, confidence and the probability of every class
  checkpoint/            last epoch's weights + optimiser state for --resume
"""
from __future__ import annotations

import io
import json
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from har_core.data.datasets import read_manifest
from har_core.data.fileio import atomic_write_bytes, file_sha256, is_inside

if TYPE_CHECKING:  # only named in annotations here
    import torch
    from torch import nn

CARD = "card.json"
WEIGHTS = "model.safetensors"
HISTORY = "history.json"
MANIFEST = "split.csv"
CHECKPOINT_DIR = "checkpoint"

CARD_FIELDS = {"name": str, "model": str, "classes": list, "input_size": int, "mean": list, "std": list,
               "crop_pct": float, "interpolation": str, "recipe": dict, "pretrained": str}


class RunError(RuntimeError):
    """A run folder that cannot be used; the message names the run and the reason."""


def metrics_file(split: str) -> str:
    return f"metrics_{split}.json"


def predictions_file(split: str) -> str:
    return f"predictions_{split}.csv"


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{Path(path).parent.name}: {Path(path).name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{Path(path).parent.name}: {Path(path).name} is not valid JSON ({error})") from None


SAVE_DTYPES = ("float32", "float16", "int8")
_SCALE = ".__int8_scale"


# torch, timm and safetensors are imported inside the functions that read or write weights: the first page reads
# run folders without them (importing them was most of a cold start, #41)
def _quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight ≈ q * scale."""
    import torch
    flat = weight.float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(1).clamp(min=1e-12) / 127).reshape(-1, *([1] * (weight.dim() - 1)))
    return torch.round(weight.float() / scale).clamp(-127, 127).to(torch.int8), scale


def save_weights(path: Path, model: nn.Module, dtype: str = "float32") -> None:
    """Weights as safetensors. float16 halves the file; int8 (per-channel, for conv/linear weights)
    quarters it — what is stored is exactly what a reload evaluates."""
    import safetensors.torch
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"save dtype must be one of {SAVE_DTYPES}")
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if value.is_floating_point() and dtype == "int8" and value.dim() >= 2:
            state[key], state[key + _SCALE] = _quantize_int8(value)
        elif value.is_floating_point() and dtype != "float32":
            state[key] = value.half()
        else:
            state[key] = value
    atomic_write_bytes(path, safetensors.torch.save(state))


def _dequantize(state: dict) -> dict:
    scales = {k[: -len(_SCALE)]: v for k, v in state.items() if k.endswith(_SCALE)}
    return {k: (v.float() * scales[k] if k in scales else v) for k, v in state.items() if not k.endswith(_SCALE)}


def load_weights(path: Path, model: nn.Module, run_name: str) -> None:
    """Load safetensors weights into `model` (float32), with a clear error for any mismatch."""
    import safetensors.torch
    try:
        state = _dequantize(safetensors.torch.load_file(str(path)))
    except FileNotFoundError:
        raise RunError(f"{run_name}: weights file {Path(path).name} is missing") from None
    except Exception as error:
        raise RunError(f"{run_name}: weights file {Path(path).name} is corrupt or truncated ({error})") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise RunError(f"{run_name}: weights do not fit the architecture on its card "
                       f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong shape"
                       f"{', e.g. ' + wrong[0] + ' ' + str(tuple(state[wrong[0]].shape)) if wrong else ''})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def versions() -> dict:
    import timm
    import torch
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__}


def validate_card(card, run_name: str) -> dict:
    if not isinstance(card, dict):
        raise RunError(f"{run_name}: card.json does not hold an object")
    for key, kind in CARD_FIELDS.items():
        if key not in card:
            raise RunError(f"{run_name}: card.json lacks the field '{key}'")
        value = card[key]
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RunError(f"{run_name}: card field '{key}' should be {kind.__name__}, got {type(value).__name__}")
    classes = card["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise RunError(f"{run_name}: card 'classes' must be two or more distinct names")
    if not 8 <= card["input_size"] <= 1024:
        raise RunError(f"{run_name}: card input_size {card['input_size']} is out of range")
    if len(card["mean"]) != 3 or len(card["std"]) != 3 or not all(s > 0 for s in card["std"]):
        raise RunError(f"{run_name}: card mean/std must be three numbers (std > 0)")
    return card


@dataclass
class Run:
    """A run folder on disk with its validated card. Heavy files are read on demand."""

    path: Path
    card: dict

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name

    @property
    def classes(self) -> list[str]:
        return self.card["classes"]

    @property
    def takes_clips(self) -> bool:
        """A clip model (3D CNN), trained and evaluated on video clips rather than images."""
        return bool(self.card.get("frames"))

    def _inside(self, filename: str) -> Path:
        target = (self.path / filename).resolve()
        if self.path.resolve() not in target.parents:
            raise RunError(f"{self.name}: '{filename}' points outside the run folder")
        return target

    def has(self, filename: str) -> bool:
        return self._inside(filename).is_file()

    def history(self) -> list[dict]:
        return read_json(self._inside(HISTORY)) if self.has(HISTORY) else []

    def metrics(self, split: str) -> dict | None:
        if not self.has(metrics_file(split)):
            return None
        metrics = read_json(self._inside(metrics_file(split)))
        if metrics.get("classes") != self.classes:
            raise RunError(f"{self.name}: {metrics_file(split)} was computed for other classes than the card's")
        return metrics

    def predictions(self, split: str) -> pd.DataFrame | None:
        if not self.has(predictions_file(split)):
            return None
        frame = pd.read_csv(self._inside(predictions_file(split)), keep_default_na=False)
        expected = {"filename", "true", "predicted", "confidence"} | {f"prob_{c}" for c in self.classes}
        if not expected <= set(frame.columns):
            raise RunError(f"{self.name}: {predictions_file(split)} does not match the card's classes")
        return frame

    def manifest(self) -> pd.DataFrame | None:
        return read_manifest(self._inside(MANIFEST)) if self.has(MANIFEST) else None

    def data_root(self, given: str | Path | None = None) -> Path:
        """The data folder: `given` (a --data flag), else the one on the card; RunError when it is not there."""
        root = Path(given or self.card.get("data", {}).get("root", ""))
        if not root.is_dir():
            raise RunError(f"{self.name}: data folder {root} not found; pass --data")
        return root

    def weights_path(self) -> Path:
        return self._inside(WEIGHTS)

    def weights_sha256(self) -> str:
        """The digest of the run's weights file: what every result computed from the weights is keyed by
        (embeddings, their map and index, retrieval.json), so a retrained or edited run is never shown
        another network's vectors."""
        return file_sha256(self.weights_path())


def open_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path.name}: run folder not found")
    card = validate_card(read_json(path / CARD), path.name)
    return Run(path=path, card=card)


def find_runs(root: str | Path, confine: bool = False) -> tuple[list[Run], list[tuple[str, str]]]:
    """Every run folder under `root` (a run itself, or a folder of runs), plus those that failed and why.
    `confine`: a run folder that resolves outside `root` (a symlink) is refused, not read."""
    root = Path(root)
    if not root.is_dir():
        return [], [(str(root), "folder not found")]
    candidates = [root] if (root / CARD).exists() else sorted(p for p in root.iterdir() if (p / CARD).exists())
    runs, failures = [], []
    for candidate in candidates:
        if confine and not is_inside(root, candidate):
            failures.append((candidate.name, "the run folder lies outside the allowed runs folder"))
            continue
        try:
            runs.append(open_run(candidate))
        except RunError as error:
            failures.append((candidate.name, str(error)))
    return runs, failures


def run_zip(run_dir: Path) -> bytes:
    """A run folder as a zip (its folder name at the top), to download or hand on."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(run_dir).rglob("*")):
            if path.is_file():
                archive.write(path, Path(run_dir.name) / path.relative_to(run_dir))
    return buffer.getvalue()
