"""A run's stored calibration as every loaded model applies it: the temperature on its card (or why its
probabilities stay raw) and the flip TTA mode it was fitted in. Fitting and writing it is har_core.evaluation.calibration's."""
from __future__ import annotations

from har_core.models import artifacts
from har_core.data import fileio
from har_core.models.artifacts import Run, RunError
from har_core.models.calibration_maths import TEMPERATURE_RANGE


def run_temperature(run: Run) -> tuple[float, str]:
    """The temperature every page applies to the run's probabilities, and "" — or 1.0 and one line saying why
    the raw probabilities are shown (never calibrated, or calibrated on another split manifest or on other val
    predictions than the run holds now)."""
    found = run.card.get("calibration")
    if not isinstance(found, dict) or not isinstance(found.get("temperature"), (int, float)) or \
            isinstance(found.get("temperature"), bool):
        return 1.0, f"{run.name}: not calibrated yet (python -m train.calibrate {run.path.name}); raw probabilities"
    if found.get("manifest_sha256") and found["manifest_sha256"] != manifest_digest(run):
        return 1.0, f"{run.name}: calibrated on another split manifest than its split.csv; raw probabilities"
    if found.get("val_predictions_sha256") and found["val_predictions_sha256"] != val_digest(run):
        return 1.0, (f"{run.name}: its val predictions changed since it was calibrated (python -m train.calibrate "
                     f"{run.path.name}); raw probabilities")
    if not TEMPERATURE_RANGE[0] <= found["temperature"] <= TEMPERATURE_RANGE[1]:
        return 1.0, f"{run.name}: calibration temperature {found['temperature']} is out of range; raw probabilities"
    return float(found["temperature"]), ""


def evaluated_with_tta(run: Run) -> bool:
    """Whether the run's stored val predictions average each picture with its mirror image (flip TTA)."""
    try:
        measured = run.metrics("val") or {}
    except RunError:
        measured = {}
    return bool(measured.get("tta", run.card.get("metrics", {}).get("val", {}).get("tta", False)))


def calibrated_tta(run: Run) -> bool:
    """The flip TTA mode the run's temperature, sets and threshold were fitted with: what every place that
    predicts with the run defaults to (read from its val evaluation for a card calibrated before it was stored)."""
    stored = run.card.get("calibration")
    if isinstance(stored, dict) and isinstance(stored.get("tta"), bool):
        return stored["tta"]
    return evaluated_with_tta(run)


def manifest_digest(run: Run) -> str:
    return fileio.file_sha256(run.path / artifacts.MANIFEST) if run.has(artifacts.MANIFEST) else ""


def val_digest(run: Run) -> str:
    name = artifacts.predictions_file("val")
    return fileio.file_sha256(run.path / name) if run.has(name) else ""
