"""Knowledge distillation: a student learns to match its teachers' probabilities (Hinton et al., 2015).

The teachers are trained runs. They see the student's own augmented (and mixed) view of each batch, moved
into their own input size and normalisation, and their mean probability at temperature T is the target:

    loss = weight · T² · KL(teachers_T ‖ student_T) + (1 − weight) · hard-label loss

Images without a label (`--extra-images`) only count in the first term: function matching works on any
picture, so unlabelled photos teach as well as labelled ones.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from har_core.models.artifacts import RunError
from har_core.data.datasets import read_manifest
from har_core.data.fileio import file_sha256
from har_core.models.inference import LoadedModel, load_run, logits_of

UNLABELLED = -1  # the label of an extra image


class DistillError(ValueError):
    """Teachers that cannot teach this student, with the reason."""


def teacher_paths(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",") if part.strip()]


def held_out_digests(manifest, index) -> dict[str, str]:
    """sha256 -> file name of the student's val and test pictures."""
    held_out = manifest.loc[manifest["split"].isin(["val", "test"]), "filename"]
    return {index.digests[f]: f for f in held_out if f in index.digests}


def teacher_leaks(teacher_dirs: list[str | Path], manifest, index) -> list[str]:
    """Teachers that trained on any of the student's val or test pictures (same file name or same content in
    their own split manifest), or whose training split cannot be checked: one reason each."""
    held_out = held_out_digests(manifest, index)
    held_names = set(held_out.values())
    reasons = []
    for folder in teacher_dirs:
        name = Path(folder).name
        path = Path(folder) / "split.csv"
        if not path.is_file():
            reasons.append(f"teacher {name} has no split manifest, so its training pictures cannot be checked "
                           "against the student's val and test pictures")
            continue
        theirs = read_manifest(path)
        trained = theirs.loc[theirs["split"] == "train", "filename"]
        leaked = sorted({f for f in trained if f in held_names or index.digests.get(f) in held_out})
        if leaked:
            reasons.append(f"teacher {name} trained on {len(leaked)} of the student's val/test pictures (e.g. "
                           f"{', '.join(leaked[:3])}): it would leak their labels; train the student with the "
                           f"teacher's split (--split {path})")
    return reasons


def extra_leaks(root: Path, files: list[str], manifest, index) -> list[tuple[str, str]]:
    """(extra picture, the student's val/test picture it is a copy of): byte-equal copies by sha256."""
    held_out = held_out_digests(manifest, index)
    found = []
    for rel in files:
        twin = held_out.get(file_sha256(Path(root) / rel))
        if twin is not None:
            found.append((rel, twin))
    return found


class Teachers(nn.Module):
    """The teachers' mean probabilities (at a temperature) on a batch the student sees."""

    def __init__(self, runs: list[str | Path], classes: list[str], student_config: dict, device: str = "cpu"):
        super().__init__()
        if not runs:
            raise DistillError("no teacher runs given")
        loaded: list[LoadedModel] = []
        for path in runs:
            try:  # HAR_BACKEND=onnxruntime: teachers with a checked export label through ONNX Runtime (on CPU)
                teacher = load_run(path, backend=None if device == "cpu" else "pytorch")
            except RunError as error:
                raise DistillError(f"teacher {Path(path).name}: {error}") from None
            if teacher.classes != list(classes):
                raise DistillError(f"teacher {teacher.name} has other classes than the data "
                                   f"({', '.join(teacher.classes[:4])}… vs {', '.join(classes[:4])}…)")
            if teacher.run.takes_clips != ("frames" in student_config):
                raise DistillError(f"teacher {teacher.name} takes {'clips' if teacher.run.takes_clips else 'images'}"
                                   f", the student {'clips' if 'frames' in student_config else 'images'}")
            loaded.append(teacher)
        self.names = [t.name for t in loaded]
        self.classes = len(classes)
        # what the teachers are: their weight files and input sizes (the key of their cached logits)
        self.key = hashlib.sha256(json.dumps([[t.name, t.weights, t.run.card["input_size"]] for t in loaded])
                                  .encode()).hexdigest()[:20]
        self.exported = [_ExportedLogits(t.onnx) if t.onnx is not None else None for t in loaded]  # None: PyTorch
        self.device = device
        self.student_size = student_config["input_size"][-1]
        self.models = nn.ModuleList(t.model.to(device).eval() for t in loaded)
        self.sizes = [t.run.card["input_size"] for t in loaded]
        spatial = 3 if "frames" in student_config else 2  # (frames,) height, width
        to_tensor = lambda values: torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, *[1] * spatial)
        self.student_mean, self.student_std = to_tensor(student_config["mean"]), to_tensor(student_config["std"])
        self.means = [to_tensor(t.run.card["mean"]) for t in loaded]
        self.stds = [to_tensor(t.run.card["std"]) for t in loaded]

    @property
    def view_size(self) -> int:
        """The side the augmented views are made at: the largest of the student's and the teachers' inputs, so
        no teacher sees a student-sized view blown up; the student gets it resized down (`for_student`)."""
        return max([self.student_size, *self.sizes])

    def for_student(self, images: torch.Tensor) -> torch.Tensor:
        return resized(images, self.student_size)

    def view_for(self, i: int, images: torch.Tensor) -> torch.Tensor:
        """The student's view in teacher i's normalisation and input size (the same pixels, resized)."""
        pixels = images.float() * self.student_std + self.student_mean
        view = (pixels - self.means[i]) / self.stds[i]
        return resized(view, self.sizes[i])

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Each teacher's raw logits on the student's view: (N, teachers, classes). On the CPU a teacher without
        a checked export is exported on its first batch and runs in ONNX Runtime (several times faster)."""
        out = []
        for i, model in enumerate(self.models):
            view = self.view_for(i, images)
            if self.exported[i] is None and self.device == "cpu":
                self.exported[i] = _onnx_or_none(model, view)
            if self.exported[i] is not None:
                logits = self.exported[i](view.contiguous())
            else:
                logits = logits_of(model(view))
            out.append(logits.float())
        return torch.stack(out, 1)

    def forward(self, images: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self.logits(images).div(temperature).softmax(-1).mean(1)

    def targets(self, images: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
        """The training target of a batch (the same call as har_core.training.view_cache.CachedTeachers')."""
        return self(images, temperature)

    def train(self, mode: bool = True):
        return super().train(False)  # teachers stay in eval mode: no dropout, fixed batch-norm statistics


class _ExportedLogits:
    """A run's checked ONNX export, called like a module on a tensor."""

    def __init__(self, exported):
        self.exported = exported

    def __call__(self, view: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.exported.logits(view.numpy()))


def _onnx_or_none(model: nn.Module, example: torch.Tensor):
    from har_core.training.trunk import OnnxModule
    try:
        return OnnxModule(_Logits(model), example)
    except Exception as error:  # noqa: BLE001 - a layer the exporter cannot take: the teacher stays in PyTorch
        print(f"note: a teacher runs in PyTorch (ONNX export failed: {str(error).splitlines()[0][:200]})")
        return None


class _Logits(nn.Module):
    """The model's logits alone (InceptionV3 also returns auxiliary logits in training)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return logits_of(self.model(x))


def resized(view: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, 3, H, W) or clips (N, 3, T, H, W) at size × size (antialiased bilinear), in the fast layout."""
    if view.shape[-1] != size or view.shape[-2] != size:
        if view.dim() == 5:  # clips: resize every frame, keep the frames
            batch, channels, frames = view.shape[:3]
            flat = view.transpose(1, 2).reshape(batch * frames, channels, *view.shape[-2:])
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            view = flat.reshape(batch, frames, channels, size, size).transpose(1, 2)
        else:
            view = F.interpolate(view, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return view.contiguous(memory_format=torch.channels_last_3d if view.dim() == 5 else torch.channels_last)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student) at temperature T, averaged over the batch (T² keeps gradients comparable)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature ** 2


def labelled_after_mixup(labelled: torch.Tensor) -> torch.Tensor:
    """timm's batch mixup blends image i with image N-1-i: a mixed image has a label only when both had one
    (an unlabelled extra picture makes its partner's hard label half unknown)."""
    return labelled & labelled.flip(0)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of inputs on which two sets of probabilities pick the same class."""
    return float((a.argmax(1) == b.argmax(1)).float().mean())
