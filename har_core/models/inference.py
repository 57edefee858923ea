"""Loading trained runs and predicting with them.

torch, timm and the registry are imported where a PyTorch network is built or run: a run that ONNX Runtime answers
is preprocessed in NumPy (har_core.data.datasets.EvalTransform) and predicts without them, so a classroom server
serving exports gives its first answer without importing torch (#41)."""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from har_core.models.artifacts import WEIGHTS, Run, RunError, load_weights, open_run
from har_core.models.backend import (AUTO, LABELS, BackendError, OnnxModel, backend_from_env, exported_backends,
                                     open_export)
from har_core.models.batching import shared_forward
from har_core.models.calibration_maths import combine, temper
from har_core.data.datasets import eval_transform
from har_core.data.spans import timed
from har_core.models.temperature import calibrated_tta, run_temperature

if TYPE_CHECKING:
    import torch
    from torch import nn


def data_config_of(card: dict) -> dict:
    """The preprocessing a run was trained with, as recorded on its card (clip models: frames and stride)."""
    size = card["input_size"]
    config = {"input_size": (3, size, size), "mean": tuple(card["mean"]), "std": tuple(card["std"]),
              "crop_pct": card["crop_pct"], "interpolation": card["interpolation"]}
    if card.get("frames"):
        config |= {"frames": card["frames"], "frame_stride": card["frame_stride"]}
    return config


def fast_layout(batch: torch.Tensor) -> torch.memory_format:
    """The layout a batch goes in as (the model's, `ModelSpec.memory_format`): channels-last, 3-D for clips."""
    import torch
    return torch.channels_last_3d if batch.dim() == 5 else torch.channels_last


def logits_of(output) -> torch.Tensor:
    """Models with auxiliary heads return (logits, aux) in training; the first is the prediction."""
    return output[0] if isinstance(output, (tuple, list)) else output


def forward_probs(model: nn.Module, batch: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Softmax probabilities; with flip TTA both views go through one forward and are averaged."""
    import torch
    with torch.inference_mode():
        if tta:
            n = batch.shape[0]
            probs = logits_of(model(torch.cat([batch, batch.flip(-1)]))).float().softmax(1)
            return (probs[:n] + probs[n:]) / 2
        return logits_of(model(batch)).float().softmax(1)


def capture_input(model: nn.Module, layer: str, sink: Callable[[torch.Tensor], None]):
    """The one way HAR Studio captures an embedding: the input of `layer`, flattened to (batch, dim), handed to
    `sink` on every forward (a removable hook). EmbeddingTap (predictions, similar images), the exported graph's
    `embedding` output and Teach (the input of the final linear layer, where a taught head is folded in) use it."""
    return model.get_submodule(layer).register_forward_pre_hook(lambda module, args: sink(args[0].flatten(1)))


class ThreadCapture:
    """What a forward hook records for the calling thread only, inside `capture()`: sessions share loaded models
    and predict at the same time (see har_core.explain.cam), so a hook that recorded every forward would hand one visitor
    another's tensors. Outside a capture a hook costs one lookup. Subclasses install the hooks and fill
    `recording()` (None outside a capture) with what they record."""

    def __init__(self, empty: Callable[[], object]):
        self._local, self._empty = threading.local(), empty

    def recording(self):
        return getattr(self._local, "captured", None)

    @contextmanager
    def capture(self):
        """Inside, this thread's forwards record into the yielded container."""
        self._local.captured = captured = self._empty()
        try:
            yield captured
        finally:
            self._local.captured = None


class EmbeddingTap(ThreadCapture):
    """Records the input of a model's embedding module (`ModelSpec.embedding`): inside `capture()`, every
    forward of this thread appends its (batch, dim) embedding to the yielded list."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__(list)
        self.handle = capture_input(model, layer, self._record)

    def _record(self, vectors: torch.Tensor) -> None:
        if (captured := self.recording()) is not None:
            captured.append(vectors.detach().float().cpu())


class Network:
    """A run's PyTorch network and its embedding tap, built on first use (once, whichever thread asks first): a
    run that ONNX Runtime answers needs it only for Grad-CAM, Inside, Teach and training, so a classroom server
    serving exports neither spends the first answer's seconds nor the memory on it (#41). `build` gives the
    network and the layer whose input is its embedding (None: no tap)."""

    def __init__(self, build: Callable[[], tuple[nn.Module, str | None]]):
        self._build, self._lock = build, threading.RLock()  # the tap builds the model inside the lock
        self._model: nn.Module | None = None
        self._layer: str | None = None
        self._tap: EmbeddingTap | None = None

    @classmethod
    def of(cls, model: nn.Module, embedding_layer: str | None = None) -> "Network":
        """A network already built (None: no embedding tap)."""
        network = cls(lambda: (model, embedding_layer))
        network.model  # noqa: B018 - built now
        return network

    @property
    def built(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model, self._layer = self._build()
        return self._model

    @property
    def tap(self) -> EmbeddingTap:
        if self._tap is None:
            with self._lock:
                if self._tap is None:
                    model = self.model
                    if self._layer is None:
                        raise RuntimeError("this network has no embedding layer to tap")
                    self._tap = EmbeddingTap(model, self._layer)
        return self._tap


@dataclass
class LoadedModel:
    run: Run
    network: Network  # PyTorch: Grad-CAM and training always use it (`model`, `tap`), built on first use
    transform: object
    onnx: OnnxModel | None = None  # predictions go through ONNX Runtime when set (har_core.models.backend)
    backend_note: str = ""  # why the chosen backend is not the one answering
    weights: str = ""  # sha256 of the weights file it was loaded from: the key of whatever they compute
    temperature: float = 1.0  # calibration (har_core.evaluation.calibration): every probability it gives is scaled by it
    calibration_note: str = ""  # why its probabilities are raw (not calibrated, or calibrated on another split)
    tta: bool = False  # the flip TTA mode its temperature, sets and threshold were fitted in: every toggle's default

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def model(self) -> nn.Module:
        return self.network.model

    @property
    def tap(self) -> EmbeddingTap:
        return self.network.tap

    @property
    def backend(self) -> str:
        """The backend that answers this model's predictions."""
        return self.onnx.backend if self.onnx else "pytorch"

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    @property
    def preprocess_key(self) -> tuple:
        """Models with equal keys see identical input tensors, so one preprocessing serves them all."""
        return tuple(sorted((k, str(v)) for k, v in data_config_of(self.run.card).items()))

    def pixels(self, images: list[Image.Image]) -> np.ndarray:
        """The images as the network eats them, a float32 NumPy batch (image models: without torch)."""
        if self.run.takes_clips:
            return self.preprocess(images).numpy()
        return np.stack([self.transform.pixels(image) for image in images])

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """The same batch as a torch tensor (Grad-CAM, Inside, Teach)."""
        import torch
        if self.run.takes_clips:
            return torch.stack([self.transform(clip) for clip in images])
        return torch.from_numpy(self.pixels(images))

    def forward(self, batch: np.ndarray | torch.Tensor, tta: bool = False,
                embed: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities of a preprocessed batch (`pixels` or `preprocess`), and (`embed`) its
        embeddings, from the backend's one forward."""
        if self.onnx is not None:
            probs, vectors = self.onnx.forward(np.asarray(batch), tta)
            return temper(probs, self.temperature), vectors if embed else None
        import torch
        with self.tap.capture() if embed else nullcontext([]) as captured:
            probs = forward_probs(self.model, torch.as_tensor(batch), tta).numpy()
        vectors = torch.cat(captured)[:len(batch)].numpy() if embed else None  # TTA: first half unflipped
        return temper(probs, self.temperature), vectors

    def predict(self, images: list[Image.Image], tta: bool = False) -> np.ndarray:
        return self.forward(self.pixels(images), tta)[0]


def spec_for_card(card: dict, run_name: str):
    """The registry entry of the card's architecture; RunError names the run when there is none."""
    from har_core.models.registry import REGISTRY  # timm and torch: only where a PyTorch network is built
    if card["model"] not in REGISTRY:
        raise RunError(f"{run_name}: unknown architecture '{card['model']}' on its card")
    return REGISTRY[card["model"]]


def build_for_card(card: dict, run_name: str) -> nn.Module:
    return spec_for_card(card, run_name).build(len(card["classes"]))


def with_backend(loaded: LoadedModel, backend: str) -> LoadedModel:
    """The same loaded model (sharing its PyTorch network) predicting through `backend`; when the run's export
    cannot serve it, PyTorch answers and `backend_note` says why (also printed once to the log). AUTO tries the
    run's recorded exports fastest first; a run with none predicts with PyTorch and no note."""
    if backend == "pytorch" or (backend == AUTO and not exported_backends(loaded.run)):
        return dataclasses.replace(loaded, onnx=None, backend_note="")
    notes = []
    for candidate in exported_backends(loaded.run) if backend == AUTO else [backend]:
        try:
            onnx = open_export(loaded.run, candidate)
        except BackendError as error:
            notes.append(str(error))
            continue
        note = f"{'; '.join(notes)}; {LABELS[candidate]} answers" if notes else ""  # a faster export failed its check
        if note:
            print(f"HAR Studio: {note}", file=sys.stderr, flush=True)
        return dataclasses.replace(loaded, onnx=onnx, backend_note=note)
    note = f"{'; '.join(notes)}; {LABELS[backend]} not used, predicting with PyTorch"
    print(f"HAR Studio: {note}", file=sys.stderr, flush=True)
    return dataclasses.replace(loaded, onnx=None, backend_note=note)


def load_run(path_or_run: str | Path | Run, backend: str | None = None, calibrated: bool = True,
             lazy: bool = False) -> LoadedModel:
    """A run's model, ready to predict; `backend` (default: HAR_BACKEND, else PyTorch) picks the engine.
    `calibrated`: its probabilities are scaled by the temperature on its card (raw when False or when it has
    none, `calibration_note` saying why). `lazy`: the PyTorch network is built when first used (the app: a run
    that an export answers may never need it, nor torch); otherwise now, so a broken weights file or an unknown
    architecture fails here."""
    run = path_or_run if isinstance(path_or_run, Run) else open_run(path_or_run)
    weights = run.weights_sha256() if run.has(WEIGHTS) else ""

    def build() -> tuple[nn.Module, str]:
        spec = spec_for_card(run.card, run.name)  # an unknown architecture fails here: now, or lazily when needed
        model = spec.build(len(run.classes))
        load_weights(run.weights_path(), model, run.name)
        # channels_last: oneDNN's fast layout on CPU too (EfficientNet-Lite1 and InceptionV3 forward ~1.5× faster)
        model.eval().to(memory_format=spec.memory_format)
        # no weight gradients: a CAM differentiates with respect to its input, so backward skips the weights
        # and shared models never accumulate .grad (pytorch-grad-cam makes its input require grad)
        model.requires_grad_(False)
        return model, spec.embedding
    network = Network(build)
    if not lazy:
        network.tap  # noqa: B018 - built now, with its tap
    temperature, note = run_temperature(run) if calibrated else (1.0, f"{run.name}: raw probabilities (asked for)")
    loaded = LoadedModel(run=run, network=network, transform=eval_transform(data_config_of(run.card)),
                         weights=weights, temperature=temperature, calibration_note=note, tta=calibrated_tta(run))
    return with_backend(loaded, backend or backend_from_env())


def image_model(loaded: LoadedModel) -> LoadedModel:
    """The loaded model, when it takes images: a clip model (3D CNN) is refused with the reason."""
    if loaded.run.takes_clips:
        raise RunError(f"{loaded.name} is a clip model (3D CNN) on {loaded.run.card['frames']}-frame clips, not "
                       "photos or single frames; evaluate it on its clip data with python -m train.evaluate")
    return loaded


@dataclass
class Prediction:
    model: str
    probs: np.ndarray  # (n_images, n_classes)
    seconds: float
    embeddings: np.ndarray | None = None  # (n_images, dim) of the unflipped images, when asked for
    backend: str = "pytorch"  # which engine answered (har_core.models.backend)

    def of(self, j: int) -> Prediction:
        """The prediction of picture `j` alone: its rows of this batch's answer."""
        return dataclasses.replace(self, probs=self.probs[j:j + 1],
                                   embeddings=None if self.embeddings is None else self.embeddings[j:j + 1])


@timed("forwards")
def predict_all(models: list[LoadedModel], images: list[Image.Image], tta: bool = False,
                embed: bool = False, shared: bool = False) -> list[Prediction]:
    """Every model predicts every image; preprocessing is shared between models that agree on it.
    `embed`: each prediction also carries the images' embeddings, taken from the same forward.
    `shared`: each model's forward joins its shared queue (har_core.models.batching), batched with other visitors'."""
    cache: dict[tuple, np.ndarray] = {}
    results = []
    for loaded in models:
        start = time.perf_counter()
        key = loaded.preprocess_key
        if key not in cache:
            cache[key] = loaded.pixels(images)
        forward = partial(shared_forward, loaded) if shared else loaded.forward
        probs, vectors = forward(cache[key], tta, embed)
        results.append(Prediction(loaded.name, probs, time.perf_counter() - start, vectors, loaded.backend))
    return results


def ensemble(predictions: list[Prediction], members: list[str] | None = None, temperature: float = 1.0) -> np.ndarray:
    """The ensemble (`combine`) of the predictions of `members` (default: all of them), at the
    ensemble's own temperature (har_core.evaluation.ensemble.ensemble_calibration_pictures)."""
    chosen = [p.probs for p in predictions if members is None or p.model in members]
    return combine(chosen or [p.probs for p in predictions], temperature)


def predict_loader(model: nn.Module, loader, tta: bool = False, device: str = "cpu",
                   desc: str = "predicting", progress: bool = True,
                   on_batch: Callable[[int, int], None] | None = None):
    """Probabilities and labels for every batch of a DataLoader of (image, label, index);
    `on_batch(done, total)` after each batch (a progress bar in the app)."""
    import torch
    model.eval()
    all_probs, all_labels, all_indices = [], [], []
    with torch.inference_mode():
        for images, labels, indices in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            if device != "cpu":
                images = images.to(memory_format=fast_layout(images))
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device != "cpu"):
                all_probs.append(forward_probs(model, images, tta).cpu())
            all_labels.append(labels)
            all_indices.append(indices)
            if on_batch is not None:
                on_batch(sum(len(i) for i in all_indices), len(loader.dataset))
        order = torch.cat(all_indices).argsort()
        return torch.cat(all_probs)[order].numpy().astype(np.float64), torch.cat(all_labels)[order].numpy()
