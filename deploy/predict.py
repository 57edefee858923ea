"""Predict photos with an exported HAR Studio run, anywhere: needs only onnxruntime, numpy and pillow.

    python predict.py RUN_FOLDER photo.jpg [more.jpg | a_folder ...] [--csv out.csv] [--no-tta] [--int8] [--top 3]

Copy har_imaging.py beside it (HAR Studio's decoding). RUN_FOLDER is a run folder holding card.json and model.onnx (python -m train.export RUN on the machine that
trained it). The card gives the classes and the preprocessing (input size, resize/crop, interpolation,
mean/std), applied here exactly as HAR Studio applies them (timm's eval transform), so the probabilities are
HAR Studio's. The probabilities are calibrated with the temperature on the card (fitted on the run's val
predictions by HAR Studio: python -m train.calibrate RUN); --raw gives the network's own. Each picture is also
seen mirrored (flip TTA) when the card says the temperature was fitted that way; --tta / --no-tta choose, with a
note when the choice differs from the card's. Prints one line per
image, or writes a CSV (filename, label, confidence, one prob_ column per class). Unreadable images are named
on stderr and left out.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# HAR Studio's own decoding (formats, limits, EXIF, 16-bit and float rescaling, transparency): har_imaging.py is
# a copy of har_core/data/imaging.py that `make deploy-copy` writes and tests/test_export.py keeps byte-equal
sys.path.insert(0, str(Path(__file__).resolve().parent))
from har_imaging import IMAGE_SUFFIXES, ImageError, eval_pixels, load_image  # noqa: E402

TEMPERATURE_RANGE = (0.05, 20.0)  # har_core.models.calibration_maths.TEMPERATURE_RANGE: outside it a card's T is refused


class Model:
    def __init__(self, run: Path, int8: bool = False, calibrated: bool = True):
        import onnxruntime as ort
        self.card = json.loads((run / "card.json").read_text())
        key, file = ("onnx_int8", "model.int8.onnx") if int8 else ("onnx", "model.onnx")
        path = run / file
        if not path.is_file():
            raise SystemExit(f"error: {run.name}: no {file} (export it: python -m train.export {run.name}"
                             f"{' --quantize int8' if int8 else ''})")
        record = self.card.get("exports", {}).get(key, {})
        if record.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            raise SystemExit(f"error: {run.name}: {file} differs from the export recorded on card.json "
                             "(changed, truncated or not exported by HAR Studio)")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.classes = self.card["classes"]
        self.temperature, self.note = 1.0, "" if calibrated else "raw probabilities (asked for)"
        self.tta = calibrated_tta(self.card)
        temperature = (self.card.get("calibration") or {}).get("temperature")
        low, high = TEMPERATURE_RANGE
        if calibrated and isinstance(temperature, (int, float)) and low <= temperature <= high:
            self.temperature = float(temperature)
        elif calibrated and temperature is None:
            self.note = "not calibrated (no temperature on card.json): raw probabilities"
        elif calibrated:
            self.note = (f"the temperature on card.json ({temperature!r}) is not a number in [{low}, {high}]: "
                         "raw probabilities")

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The card's eval preprocessing (timm's eval transform), as HAR Studio applies it: har_imaging.eval_pixels."""
        card = self.card
        return eval_pixels(image, card["input_size"], card["crop_pct"], card["interpolation"], card["mean"],
                           card["std"])

    def predict(self, images: list[Image.Image], tta: bool = False) -> np.ndarray:
        batch = np.stack([self.preprocess(image) for image in images])
        if tta:
            batch = np.concatenate([batch, batch[..., ::-1]])
        logits = self.session.run(["logits"], {"input": np.ascontiguousarray(batch)})[0].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        probs = (probs[:len(images)] + probs[len(images):]) / 2 if tta else probs
        return temper(probs, self.temperature)


def calibrated_tta(card: dict) -> bool:
    """The flip TTA mode the card's temperature was fitted in (har_core.models.temperature.calibrated_tta)."""
    stored = card.get("calibration")
    if isinstance(stored, dict) and isinstance(stored.get("tta"), bool):
        return stored["tta"]
    return bool(((card.get("metrics") or {}).get("val") or {}).get("tta", False))


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): har_core.models.calibration_maths.temper, the calibrated probabilities."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, None)) / temperature
    scaled = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return scaled / scaled.sum(axis=-1, keepdims=True)


def image_files(paths: list[str]) -> list[Path]:
    files = []
    for given in map(Path, paths):
        if given.is_dir():
            files += sorted(p for p in given.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(given)
    return files


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder with card.json and model.onnx")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--csv", help="write the predictions here instead of printing them")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction,
                        help="average with the horizontally flipped image (default: as the card was calibrated)")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx")
    parser.add_argument("--raw", action="store_true", help="uncalibrated probabilities (ignore the card's temperature)")
    parser.add_argument("--top", type=int, default=3, help="classes printed per image")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "card.json").is_file():
        raise SystemExit(f"error: {run} is not a run folder (no card.json)")
    model = Model(run, args.int8, calibrated=not args.raw)
    if model.note:
        print(f"note: {model.note}", file=sys.stderr)
    tta = model.tta if args.tta is None else args.tta
    if tta != model.tta:
        print(f"note: {run.name} was calibrated {'with flip TTA' if model.tta else 'without TTA'}; these answers are "
              f"{'with flip TTA' if tta else 'without TTA'}, so its temperature was fitted on other probabilities "
              "than these", file=sys.stderr)
    rows, files = [], image_files(args.images)
    for start in range(0, len(files), args.batch_size):
        images, names = [], []
        for path in files[start:start + args.batch_size]:
            try:
                images.append(load_image(path))
                names.append(path.name)
            except ImageError as error:
                print(f"skipped {path.name}: {error}", file=sys.stderr)
        if not images:
            continue
        for name, probs in zip(names, model.predict(images, tta)):
            best = int(probs.argmax())
            rows.append({"filename": name, "label": model.classes[best], "confidence": float(probs[best]),
                         **{f"prob_{c}": float(p) for c, p in zip(model.classes, probs)}})
            if not args.csv:
                top = np.argsort(-probs)[:args.top]
                print(f"{name}: " + ", ".join(f"{model.classes[i]} {probs[i]:.1%}" for i in top))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["filename", "label", "confidence"] +
                                    [f"prob_{c}" for c in model.classes])
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} predictions to {args.csv}")
    return rows


if __name__ == "__main__":
    main()
