"""ONNX export of a run: `model.onnx` (and optionally `model.int8.onnx`) beside its card, checked before it counts.

The exported graph takes the run's preprocessed batch (any batch size) and returns `logits` and `embedding`
(the input of the run's embedding module, har_core.retrieval.embeddings), so an ONNX Runtime prediction carries the
same two things as a PyTorch one. Before an export is kept, ONNX Runtime and PyTorch predict the run's test
images: the float model must agree on every argmax; the int8 model may lose at most `INT8_MAX_DROP` of test
accuracy. The card records each kept export (file, size, digest, opset, the weights it came from, the checks).
"""
from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from har_core.models import artifacts
from har_core.data import fileio
from har_core.models.artifacts import Run, RunError, open_run
from har_core.models.backend import EXPORT_FILES, INT8_FILE, ONNX_FILE, open_session, record_mismatch, softmax
from har_core.data.fileio import file_sha256
from har_core.data.datasets import eval_transform
from har_core.models.inference import capture_input, data_config_of, load_run, logits_of
from har_core.data.loaders import split_loader
from har_core.models.registry import REGISTRY

OPSET = 18
INT8_MAX_DROP = 0.01  # test accuracy an int8 model may lose against the float one
CALIBRATION_IMAGES = 64  # training images that fix the int8 activation ranges


class ExportError(RuntimeError):
    """An export that failed or did not pass its checks, with a one-line reason."""


class WithEmbedding(nn.Module):
    """The graph that is exported: the run's network returning (logits, embedding) from one forward. In eval
    mode from the start: the tracing exporter puts the wrapper back in its own mode afterwards, and a fresh
    module is in training mode, which left the exported model training with its batch-norm statistics moved."""

    def __init__(self, model: nn.Module, embedding_layer: str):
        super().__init__()
        self.model = model
        self.embedding_layer = embedding_layer
        self.eval()

    def forward(self, batch: torch.Tensor):
        captured = []
        hook = capture_input(self.model, self.embedding_layer, captured.append)
        try:
            logits = logits_of(self.model(batch))  # eval mode: InceptionV3's auxiliary head does not run
        finally:
            hook.remove()
        return logits, captured[0]


class LayerTrail:
    """Records, during an eager forward, the layers being inside (a stack), the order layers finish in and
    each layer's inputs: enough to find the layer an export failure comes from."""

    def __init__(self, model: nn.Module):
        self.stack: list[str] = []
        self.finished: list[str] = []
        self.inputs: dict[str, tuple] = {}
        self.handles = []
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name):
        def hook(module, args):
            self.stack.append(name)
            self.inputs.setdefault(name, args)
        return hook

    def _leave(self, name):
        def hook(module, args, output):
            self.stack.pop()
            if name not in self.finished:
                self.finished.append(name)
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def traced_to_onnx(module: nn.Module, inputs, out, input_names=None, output_names=None) -> None:
    """One ONNX file (weights inside, the batch size free) from PyTorch's tracing exporter, several times faster
    than the torch.export-based one here (README, "Deployment"). Tracing records one path through the forward, so a
    branch on a tensor's value is refused (its TracerWarning is an error) instead of baked in."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", torch.jit.TracerWarning)
        names = input_names or ["input"]
        torch.onnx.export(module, inputs if isinstance(inputs, tuple) else (inputs,), out, input_names=names,
                          output_names=output_names, opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          dynamic_axes={name: {0: "batch"} for name in names + list(output_names or [])})


def failing_layer(model: nn.Module, batch: torch.Tensor) -> str | None:
    """The innermost layer that fails: in an eager forward, or else exported on its own (inner layers first)."""
    trail = LayerTrail(model)
    try:
        with torch.no_grad():
            model(batch)
    except Exception:  # noqa: BLE001 - the forward itself fails: the layer it was inside
        return trail.stack[-1] if trail.stack else None
    finally:
        trail.remove()
    for name in trail.finished:
        try:
            traced_to_onnx(model.get_submodule(name), trail.inputs[name], io.BytesIO())
        except Exception:  # noqa: BLE001 - this layer alone does not export
            return name
    return None


def root_cause(error: BaseException) -> str:
    """The first line of the innermost cause, without terminal colours."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"\x1b\[[0-9;]*m", "", line)[:300]


def example_input(card: dict, batch: int = 2) -> torch.Tensor:
    size = card["input_size"]
    shape = (batch, 3, card["frames"], size, size) if card.get("frames") else (batch, 3, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def export_graph(model: nn.Module, card: dict, out: Path) -> int:
    """Write the ONNX file (one file, weights inside, dynamic batch size); the opset it got. A failure names
    the layer it comes from."""
    import onnx
    batch = example_input(card)
    try:
        traced_to_onnx(WithEmbedding(model.eval(), REGISTRY[card["model"]].embedding), batch, str(out),
                       input_names=["input"], output_names=["logits", "embedding"])
    except Exception as error:  # noqa: BLE001 - any exporter failure becomes one named line
        layer = failing_layer(model, batch)
        where = f"in layer '{layer}' ({type(model.get_submodule(layer)).__name__})" if layer else "(no single layer fails alone)"
        raise ExportError(f"{card.get('name', card['model'])}: ONNX export failed {where}: {root_cause(error)}") from None
    return max(o.version for o in onnx.load(str(out), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


@dataclass
class CheckImages:
    """The preprocessed images an export is checked on, with labels (-1: unlabelled) and where they came from."""
    batches: list[torch.Tensor]
    labels: np.ndarray
    source: str
    calibration: list[torch.Tensor] = field(default_factory=list)
    # (model, its outputs on `batches`): the float and the int8 file are checked against the same reference, computed
    # once (it is most of an export's time); kept with the model itself, whose id a later model could reuse
    reference: tuple | None = field(default=None, repr=False)


def check_images(run: Run, data: str | Path | None, limit: int = 0, calibration: int = CALIBRATION_IMAGES,
                 batch_size: int = 32, split: str = "test") -> CheckImages:
    """The run's images of `split` (first `limit`, 0: all) and `calibration` training images, preprocessed as the
    run does; without the data folder, random inputs (agreement can be checked, accuracy cannot)."""
    manifest = run.manifest()
    try:
        root = run.data_root(data)
    except RunError:
        root = None
    if manifest is None or root is None or not (manifest["split"] == split).any():
        why = "no manifest" if manifest is None else f"no {split} split" if root else "data folder not found"
        batches = [example_input(run.card, 8) for _ in range(2)]
        return CheckImages(batches, np.full(16, -1), f"16 random inputs ({why})", batches[:1])
    if limit:
        checked = manifest[manifest["split"] == split].head(limit)
        manifest = pd.concat([manifest[manifest["split"] != split], checked])
    transform = eval_transform(data_config_of(run.card))
    loader = split_loader(root, manifest, split, run.classes, transform, batch_size=batch_size)
    batches, labels = [], []
    for images, targets, _ in loader:
        batches.append(images)
        labels.append(targets.numpy())
    calibrating = []
    if calibration and (manifest["split"] == "train").any():
        train = manifest[manifest["split"] == "train"].sample(frac=1.0, random_state=0)
        for images, _, _ in split_loader(root, train.head(calibration), "train", run.classes, transform,
                                         batch_size=batch_size):
            calibrating.append(images)
    return CheckImages(batches, np.concatenate(labels), f"{split}: {sum(map(len, batches))} images", calibrating)


def compare(model: nn.Module, session, images: CheckImages) -> dict:
    """PyTorch and ONNX Runtime on the same tensors: largest probability difference, argmax agreement, accuracy;
    and, when `model` gives (logits, embedding) (`WithEmbedding`), how alike the embeddings are (cosine per picture:
    Predict's similar images search the stored PyTorch embeddings with the exported model's)."""
    if images.reference is None or images.reference[0] is not model:
        with torch.inference_mode():
            outputs = [model(batch) for batch in images.batches]
        images.reference = model, [(logits_of(output).float().softmax(1).numpy(),
                                    output[1].float().numpy() if isinstance(output, tuple) else None)
                                   for output in outputs]
    ours, theirs, cosines = [], [], []
    for batch, (probs, reference) in zip(images.batches, images.reference[1]):
        ours.append(probs)
        logits, embedding = session.run(["logits", "embedding"], {"input": batch.numpy()})
        theirs.append(softmax(logits))
        if reference is not None:
            cosines.append((reference * embedding).sum(1) / np.maximum(
                np.linalg.norm(reference, axis=1) * np.linalg.norm(embedding, axis=1), 1e-12))
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    agree = int((ours.argmax(1) == theirs.argmax(1)).sum())
    labelled = images.labels >= 0
    accuracy = lambda probs: float((probs.argmax(1) == images.labels)[labelled].mean()) if labelled.any() else None
    found = {"checked_on": images.source, "images": len(ours), "max_abs_diff": float(np.abs(ours - theirs).max()),
             "argmax_agree": agree, "accuracy_pytorch": accuracy(ours), "accuracy": accuracy(theirs)}
    if cosines:
        cosines = np.concatenate(cosines)
        found |= {"embedding_cosine_min": float(cosines.min()), "embedding_cosine_median": float(np.median(cosines))}
    return found


class Calibration:
    """ONNX Runtime's CalibrationDataReader over the calibration batches."""

    def __init__(self, batches: list[torch.Tensor]):
        self.items = iter([{"input": b.numpy()} for b in batches])

    def get_next(self):
        return next(self.items, None)


def quantize_int8(source: Path, out: Path, calibration: list[torch.Tensor]) -> None:
    """Static int8 (QDQ, per-channel weights, activation ranges from the calibration images)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Calibration(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)


def check_int8(run: Run, model: nn.Module, fp32_file: Path, out: Path, test: CheckImages, fp32_test: dict,
               data, check_limit: int, on_step: Callable[[str], None]) -> dict:
    """Quantize, then decide on **val** (kept when val accuracy drops by at most `INT8_MAX_DROP`); test accuracy
    is measured and reported, never used to decide."""
    on_step(f"{run.name}: quantizing to int8 (static, calibrated on {sum(map(len, test.calibration))} "
            "training images)")
    quantize_int8(fp32_file, out, test.calibration)
    session = open_session(out)
    int8 = compare(model, session, test) | {"accuracy_fp32": fp32_test["accuracy"]}
    if int8["accuracy"] is not None:
        int8["drop"] = fp32_test["accuracy"] - int8["accuracy"]
    val = check_images(run, data, check_limit, calibration=0, split="val")
    if (val.labels < 0).all():
        on_step(f"{run.name}: int8 not kept: no labelled val images to decide on ({val.source})")
        return int8 | {"val_drop": None, "kept": False}
    fp32_val, int8_val = compare(model, open_session(fp32_file), val), compare(model, session, val)
    int8 |= {"val_checked_on": val.source, "val_accuracy": int8_val["accuracy"],
             "val_accuracy_fp32": fp32_val["accuracy"], "val_drop": fp32_val["accuracy"] - int8_val["accuracy"]}
    int8["kept"] = int8["val_drop"] <= INT8_MAX_DROP
    verdict = "kept" if int8["kept"] else f"not kept: over {100 * INT8_MAX_DROP:.0f} point on val, fp32 only"
    if "embedding_cosine_median" in int8:
        verdict += (f"; its embeddings' cosine to PyTorch's on test: median {int8['embedding_cosine_median']:.4f}, "
                    f"min {int8['embedding_cosine_min']:.4f}")
    tested = (f"; test (reported, not used to decide) {int8['accuracy']:.4f} vs {fp32_test['accuracy']:.4f}"
              if int8["accuracy"] is not None else "")
    on_step(f"{run.name}: int8 val accuracy {int8_val['accuracy']:.4f} vs {fp32_val['accuracy']:.4f} "
            f"(drop {100 * int8['val_drop']:.1f} points): {verdict}{tested}")
    return int8


EXPORT_INPUTS = (artifacts.CARD, artifacts.WEIGHTS, artifacts.MANIFEST)  # what an export reads of a run


def copy_for_export(run_dir: Path, folder: Path) -> Path:
    """A copy of what an export reads (card, weights, split) in `folder`, so the run's own folder stays as it is."""
    target = Path(folder) / Path(run_dir).name
    target.mkdir(parents=True, exist_ok=True)
    for name in EXPORT_INPUTS:
        if (Path(run_dir) / name).is_file():
            shutil.copy2(Path(run_dir) / name, target / name)
    return target


def is_exported(run_dir: str | Path, quantize: str | None = None) -> bool:
    """Whether the run's exports are there as the card records them (same bytes) and made from its current weights;
    with `quantize` "int8", also whether int8 was decided for them (kept, or recorded as not kept)."""
    run = open_run(run_dir)
    if record_mismatch(run, "onnx") is not None:
        return False
    return (quantize != "int8" or record_mismatch(run, "onnx_int8") is None
            or run.card["exports"]["onnx"].get("int8_kept") is False)


def export_run(run_dir: str | Path, quantize: str | None = None, data: str | Path | None = None,
               check_limit: int = 0, on_step: Callable[[str], None] = print) -> dict:
    """Export, check and record on the card; returns each format's checks and whether it was kept. Nothing
    half-done is left: a file that fails its check is not written (an earlier good export of it stays)."""
    run = open_run(run_dir)
    on_step(f"{run.name}: loading the run")
    loaded = load_run(run, backend="pytorch")
    model = WithEmbedding(loaded.model.to(memory_format=torch.contiguous_format),  # checked: logits and embedding
                          REGISTRY[run.card["model"]].embedding)
    weights_sha256 = file_sha256(run.weights_path())
    exports = dict(run.card.get("exports", {}))
    with tempfile.TemporaryDirectory(dir=run.path) as tmp:
        staged = Path(tmp) / ONNX_FILE
        start = time.perf_counter()
        on_step(f"{run.name}: exporting to ONNX (opset {OPSET}, dynamic batch size)")
        opset = export_graph(model.model, run.card, staged)
        on_step(f"{run.name}: exported in {time.perf_counter() - start:.1f} s; checking against PyTorch")
        images = check_images(run, data, check_limit)
        fp32 = compare(model, open_session(staged), images)
        if fp32["argmax_agree"] != fp32["images"]:
            raise ExportError(f"{run.name}: ONNX Runtime and PyTorch disagree on {fp32['images'] - fp32['argmax_agree']} "
                              f"of {fp32['images']} images ({images.source}); model.onnx not written")
        on_step(f"{run.name}: ONNX Runtime agrees on {fp32['argmax_agree']}/{fp32['images']} argmaxes "
                f"({images.source}); largest probability difference {fp32['max_abs_diff']:.2e}")
        report = {"onnx": fp32 | {"kept": True}}
        if quantize == "int8":
            report["onnx_int8"] = check_int8(run, model, staged, Path(tmp) / INT8_FILE, images, fp32, data,
                                             check_limit, on_step)
        import onnxruntime
        if quantize == "int8":  # decided for these weights either way: make exports does not quantize them again
            report["onnx"]["int8_kept"] = report["onnx_int8"]["kept"]
        for key, checks in report.items():
            if not checks["kept"]:  # "keeps only fp32": an int8 file of earlier weights goes too
                (run.path / EXPORT_FILES[key]).unlink(missing_ok=True)
                exports.pop(key, None)
                continue
            target = run.path / EXPORT_FILES[key]
            (Path(tmp) / EXPORT_FILES[key]).replace(target)
            exports[key] = {"file": EXPORT_FILES[key], "bytes": target.stat().st_size, "sha256": file_sha256(target),
                            "opset": opset, "weights_sha256": weights_sha256, "torch": torch.__version__,
                            "onnxruntime": onnxruntime.__version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                            **{k: v for k, v in checks.items() if k != "kept"}}
    card = artifacts.validate_card(artifacts.read_json(run.path / artifacts.CARD), run.name)  # re-read: fresh
    fileio.write_json(run.path / artifacts.CARD, card | {"exports": exports})
    sizes = ", ".join(f"{record['file']} {record['bytes'] / 2**20:.1f} MiB" for record in exports.values())
    on_step(f"{run.name}: card updated ({sizes})")
    return report
