"""Which engine answers a prediction: PyTorch (always there; Grad-CAM always uses it) or ONNX Runtime on the
run's checked export (har_core.models.export). A run whose export cannot be used predicts with PyTorch, and says why.

    HAR_BACKEND=auto | pytorch | onnxruntime | onnxruntime-int8   (the app's sidebar chooses per visitor)

"auto" (the app's default) answers each run with the fastest of its checked exports, int8 first: exporting the
bundled runs once (`make exports`) is all it takes to serve a room faster; a run without one predicts with PyTorch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from har_core.models.artifacts import Run
from har_core.data.fileio import file_sha256

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
AUTO = "auto"
# backend -> the card's "exports" key whose file it runs (None: the PyTorch model itself, or for AUTO, chosen per run)
BACKENDS = {AUTO: None, "pytorch": None, "onnxruntime": "onnx", "onnxruntime-int8": "onnx_int8"}
FASTEST_FIRST = ("onnxruntime-int8", "onnxruntime")  # AUTO's order: int8 is kept only within a point of fp32 on val
EXPORT_FILES = {"onnx": ONNX_FILE, "onnx_int8": INT8_FILE}
LABELS = {AUTO: "Fastest checked export", "pytorch": "PyTorch", "onnxruntime": "ONNX Runtime",
          "onnxruntime-int8": "ONNX Runtime int8"}


class BackendError(RuntimeError):
    """A run's export that cannot be used, with a one-line reason naming the run."""


def backend_from_env(default: str = "pytorch") -> str:
    """HAR_BACKEND, else `default` (the library and the CLIs: PyTorch, whose numbers the run's files hold; the
    app: AUTO)."""
    chosen = os.environ.get("HAR_BACKEND", default).strip().lower() or default
    if chosen not in BACKENDS:
        raise ValueError(f"HAR_BACKEND={chosen} is not a backend; choose from {', '.join(BACKENDS)}")
    return chosen


def session_options(threads: int | None = None):
    """ONNX Runtime threads suited to this machine and to sharing the process with torch: an intra-op thread per
    usable core (torch's own default here), one inter-op thread, and no spinning: idle ORT threads would otherwise
    keep polling and take the cores torch needs (a Grad-CAM, another visitor's PyTorch model) in the same process."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    # no memory arena: a room's batches (up to 32 pictures, each size once) would leave each session holding its
    # largest batch's memory for good, and the server grow with every new batch size (#41's flat memory)
    options.enable_cpu_mem_arena = False
    return options


def usable_cores() -> int:
    """The intra-op threads torch would choose, without importing it (a server that ONNX Runtime answers never does,
    and asking a torch another thread is still importing raises, #41): as torch does, MKL_NUM_THREADS, else
    OMP_NUM_THREADS (its first level), else the cores this process may run on; never more than those cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for variable in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        given = os.environ.get(variable, "").split(",")[0].strip()
        if given.isdigit() and int(given) > 0:
            return min(cores, int(given))
    return cores


def open_session(path: Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass
class OnnxModel:
    """A run's checked ONNX export in an ONNX Runtime session (thread-safe: visitors share it)."""
    session: object
    file: str
    backend: str

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"input": np.ascontiguousarray(batch)})[0]

    def forward(self, batch: np.ndarray, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings; flip TTA runs both views in one call and averages them."""
        n = len(batch)
        inputs = np.concatenate([batch, batch[..., ::-1]]) if tta else batch
        logits, embedding = self.session.run(["logits", "embedding"], {"input": np.ascontiguousarray(inputs)})
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        if tta:
            probs = (probs[:n] + probs[n:]) / 2
        return probs, embedding[:n]


def app_backend() -> str:
    """The backend the app (and its benches) predict with unless a visitor chooses: HAR_BACKEND, else AUTO."""
    return backend_from_env(default=AUTO)


def exported_backends(run: Run) -> list[str]:
    """AUTO's candidates for `run`, fastest first: the backends whose export the card records and whose file is
    there (open_export still checks each)."""
    recorded = run.card.get("exports", {})
    return [b for b in FASTEST_FIRST if BACKENDS[b] in recorded and (run.path / EXPORT_FILES[BACKENDS[b]]).is_file()]


def open_export(run: Run, backend: str) -> OnnxModel:
    """The run's export for `backend`, checked against its card; BackendError says what is wrong with it."""
    key = BACKENDS[backend]
    file = EXPORT_FILES[key]
    path = run.path / file
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackendError(f"{run.name}: onnxruntime is not installed (pip install onnxruntime)") from None
    if not path.is_file():
        raise BackendError(f"{run.name}: no {file} (export it: python -m train.export {run.path}"
                           f"{' --quantize int8' if key == 'onnx_int8' else ''})")
    try:
        session = open_session(path)
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for damaged files
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        first = re.sub(r"\[ONNXRuntimeError\] : \d+ : |Load model from .* failed:", "", first)[:200]
        raise BackendError(f"{run.name}: {file} cannot be read by ONNX Runtime (corrupt or truncated?): {first}") \
            from None
    inputs, outputs = session.get_inputs(), {o.name: o for o in session.get_outputs()}
    size, classes = run.card["input_size"], len(run.classes)
    if [d for d in inputs[0].shape[-2:]] != [size, size]:
        raise BackendError(f"{run.name}: {file} takes {inputs[0].shape[-2:]} inputs but the card says {size}×{size}")
    if "logits" not in outputs or "embedding" not in outputs or outputs["logits"].shape[-1] != classes:
        given = outputs["logits"].shape[-1] if "logits" in outputs else "no logits"
        raise BackendError(f"{run.name}: {file} gives {given} classes but the card has {classes}")
    if (why := record_mismatch(run, key)) is not None:
        raise BackendError(why)
    return OnnxModel(session=session, file=file, backend=backend)


def record_mismatch(run: Run, key: str) -> str | None:
    """Why the run's export file for `key` ("onnx", "onnx_int8") is not the one its card records, made from its
    current weights (None: it is). `open_export` refuses such a file; `make exports` exports it again."""
    file = EXPORT_FILES[key]
    path, record = run.path / file, run.card.get("exports", {}).get(key)
    if record is None:
        return f"{run.name}: {file} is not recorded on the card (re-export it with python -m train.export)"
    if not path.is_file():
        return f"{run.name}: no {file} (export it: python -m train.export {run.path})"
    if record.get("sha256") != file_sha256(path):
        return f"{run.name}: {file} differs from the export recorded on the card (changed or replaced)"
    if record.get("weights_sha256") != file_sha256(run.weights_path()):
        return f"{run.name}: {file} was exported from other weights than the run's (re-export it)"
    return None
