"""Train one model on a HAR-style data set and write a run folder.

    python -m train.train --model efficientnet_lite1 --data ../shared/data/sports15 --out runs
    python -m train.train --model custom_cnn --data DATA --out runs --epochs 5 --lr 1e-3
    python -m train.train --model resnet50 --data DATA --out runs --resume --epochs 20   # continue
    torchrun --nproc_per_node 2 -m train.train --model ... --backend gloo               # several processes
    python -m train.train --model resnet50 --data DATA --teacher runs/efficientnet_lite2,runs/inception_v3 \
        [--distill-temperature 4 --distill-weight 1.0] [--extra-images unlabelled/]        # distillation

Every field of the recipe (see har_core.models.registry.Recipe) is a flag; the model's registry entry
gives the defaults. Reads top to bottom: config, data, model, loop, final evaluation. Under torchrun
every rank holds the same training state (weights, batch-norm statistics, schedule, history, best
epoch); only rank 0 validates and writes files, and it hands its validation figures to the others.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler, PlateauLRScheduler, StepLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from har_core.models import artifacts
from har_core.data import fileio
from har_core.data.datasets import (DataError, calibration_files, choice_part, class_weights_sampler, dataset_for,
                                    describe_leaks, eval_transform, fingerprint_change, leaks, make_split,
                                    read_manifest, scan, train_transform, readable_images, unlabelled_images,
                                    write_manifest)
from har_core.training.distill import (UNLABELLED, DistillError, Teachers, distillation_loss, extra_leaks, resized,
                                       labelled_after_mixup, teacher_leaks, teacher_paths)
from har_core.evaluation.calibration import calibrate_run
from har_core.models.calibration_maths import CalibrationError
from har_core.evaluation.evaluate import evaluate_split, negative_log_likelihood, write_evaluation
from har_core.data.loaders import split_loader
from har_core.models.inference import fast_layout, load_run, logits_of, predict_loader
from har_core.evaluation.metrics import compute_metrics
from har_core.models.pretrained import PretrainedError, load_pretrained
from har_core.models.registry import (PRECISIONS, RECIPES, REGISTRY, Recipe, count_parameters, is_head_param,
                                      trains_in_bf16)
from har_core.retrieval.similarity import embed_run
from har_core.training import view_cache
from har_core.training.trunk import run_trunk
from har_core.training.trunk import onnx_trunk, trunk_features, trunk_parameters, trunk_skipped
from har_core.training.view_cache import CachedTeachers, CachedViews


# ---- config --------------------------------------------------------------------------------

def parse_bool(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0; anything else is an error (a typo must not silently mean False)."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(REGISTRY))
    parser.add_argument("--data", required=True, help="Kaggle layout (Training_set.csv + train/) or class folders")
    parser.add_argument("--out", default="runs", help="folder of run folders")
    parser.add_argument("--name", help="run folder name (default: the model name)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="named recipe (default: the model's)")
    parser.add_argument("--pretrained", help="none | hub | offline | PATH (default: the model's)")
    parser.add_argument("--split", help="use this split manifest CSV (same test images across models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", type=int, default=min(4, (os.cpu_count() or 2) - 1),
                        help="DataLoader worker processes")
    parser.add_argument("--backend", default="", help="torch.distributed backend under torchrun (default nccl/gloo)")
    parser.add_argument("--save-dtype", default="float32", choices=sorted(artifacts.SAVE_DTYPES))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--extra-images", help="a folder of unlabelled pictures that only the teachers label "
                        "(with --teacher)")
    parser.add_argument("--embed", type=parse_bool, nargs="?", const=True, default=True, metavar="true|false",
                        help="embed every image at the end (similar images, embedding map, data audit; default true)")
    for f in dataclasses.fields(Recipe):  # every recipe field is overridable; a bare boolean flag means true
        flag, dest = f"--{f.name.replace('_', '-')}", f"recipe_{f.name}"
        if type(f.default) is bool:
            parser.add_argument(flag, dest=dest, default=None, type=parse_bool, nargs="?", const=True,
                                metavar="true|false", help="recipe override")
        else:
            parser.add_argument(flag, dest=dest, default=None, type=type(f.default), help="recipe override")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def recipe_from(args, base: Recipe) -> Recipe:
    overrides = {f.name: getattr(args, f"recipe_{f.name}") for f in dataclasses.fields(Recipe)
                 if getattr(args, f"recipe_{f.name}") is not None}
    recipe = base.replace(**overrides)
    if recipe.precision not in PRECISIONS:
        raise SystemExit(f"--precision must be one of {', '.join(PRECISIONS)}, not '{recipe.precision}'")
    return recipe



@dataclass
class Processes:
    """Where this process runs: torchrun's world (1 without it), its rank and its device."""

    world: int
    rank: int
    device: str

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def log(self, message: str) -> None:
        if self.rank == 0:
            tqdm.write(message)

    def from_rank0(self, values: list[float]) -> list[float]:
        """Rank 0's numbers on every rank (one process: unchanged)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, 0)
        return tensor.tolist()

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def share_buffers(self, *modules) -> None:
        """Batch-norm statistics are updated from each rank's own batches; rank 0's are kept everywhere."""
        if self.world > 1:
            for module in modules:
                for buffer in module.buffers():
                    dist.broadcast(buffer, 0)


def start_processes(args) -> Processes:
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if world > 1:
        dist.init_process_group(backend=args.backend or ("nccl" if device == "cuda" else "gloo"))
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            device = f"cuda:{torch.cuda.current_device()}"
    return Processes(world, rank, device)


# ---- schedule and stages --------------------------------------------------------------------

def in_stage_one(recipe: Recipe, epoch: int) -> bool:
    return epoch < recipe.freeze_epochs


def stage_of(recipe: Recipe, epoch: int) -> int:
    return 1 if recipe.freeze_epochs > 0 and in_stage_one(recipe, epoch) else 2


def set_trainable(model, spec, recipe: Recipe, epoch: int) -> None:
    """Stage 1 trains the head only; stage 2 trains `recipe.trainable` (all, head, or module prefixes)."""
    chosen = "head" if in_stage_one(recipe, epoch) else recipe.trainable
    prefixes = [p.strip() for p in chosen.split(",")]
    for name, param in model.named_parameters():
        if chosen == "all":
            param.requires_grad = True
        elif chosen == "head":
            param.requires_grad = is_head_param(spec, name)
        else:
            param.requires_grad = any(name == p or name.startswith(p + ".") for p in prefixes)


def stage_scheduler(recipe: Recipe, optimizer, epoch: int):
    """timm's scheduler for the stage holding `epoch`; each stage runs its own schedule from its own base lr
    (stage two: `finetune_lr` when set). Stepped once per epoch with the stage-local epoch, after validation."""
    stage_two = recipe.freeze_epochs > 0 and not in_stage_one(recipe, epoch)
    base = recipe.finetune_lr if stage_two and recipe.finetune_lr > 0 else recipe.lr
    length = recipe.epochs - recipe.freeze_epochs if stage_two else (recipe.freeze_epochs or recipe.epochs)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = base
    warmup = {"warmup_t": recipe.warmup_epochs, "warmup_lr_init": base / (recipe.warmup_epochs + 1)} \
        if recipe.warmup_epochs else {}
    if recipe.scheduler == "cosine":
        return CosineLRScheduler(optimizer, t_initial=max(1, length - recipe.warmup_epochs), warmup_prefix=True,
                                 **warmup)
    if recipe.scheduler == "step":
        return StepLRScheduler(optimizer, decay_t=recipe.step_size, decay_rate=recipe.gamma, **warmup)
    if recipe.scheduler == "plateau":  # on validation loss
        return PlateauLRScheduler(optimizer, decay_rate=recipe.gamma, patience_t=recipe.plateau_patience,
                                  mode="min", **warmup)
    if recipe.scheduler == "none":
        return StepLRScheduler(optimizer, decay_t=recipe.epochs + 1, decay_rate=1.0, **warmup)
    raise ValueError(f"unknown scheduler '{recipe.scheduler}'")


def local_epoch(recipe: Recipe, epoch: int) -> int:
    return epoch - recipe.freeze_epochs if stage_of(recipe, epoch) == 2 else epoch


def scheduler_state(scheduler) -> dict:
    """What a resume needs to continue the schedule exactly (the plateau counters live in torch's scheduler)."""
    return scheduler.lr_scheduler.state_dict() if isinstance(scheduler, PlateauLRScheduler) else {}


def resume_schedule(scheduler, state: dict, recipe: Recipe, optimizer) -> None:
    """Continue the schedule at the resumed epoch. Cosine and step are functions of the epoch and the recipe
    (so a resume with more --epochs stretches them as if the run had been that long); the plateau schedule
    depends on the losses seen, so its counters and learning rate come back from the checkpoint."""
    epoch = state["epoch"]
    if not isinstance(scheduler, PlateauLRScheduler):
        if local_epoch(recipe, epoch) > 0:
            scheduler.step(local_epoch(recipe, epoch))
    elif state.get("stage") == stage_of(recipe, epoch):  # same stage: else the new stage starts afresh
        scheduler.lr_scheduler.load_state_dict(state["scheduler"])
        for group in optimizer.param_groups:
            group["lr"] = state["next_lr"]


def check_cached_views(model, spec, recipe: Recipe, world: int) -> None:
    """Cached views are fixed: no mixup (it would change the view the teachers saw) and one process; a trunk's
    cached output is only valid while the trunk never trains."""
    if world > 1 or recipe.mixup_alpha > 0:
        raise SystemExit("error: --cached-views works in one process and without mixup")
    if not spec.trunk:
        return  # the views' pixels are kept: every layer may train
    frozen = set(trunk_parameters(model, spec.trunk))
    for epoch in (0, recipe.freeze_epochs):  # stage one, stage two
        set_trainable(model, spec, recipe, epoch)
        trained = [n for n, p in model.named_parameters() if p.requires_grad and n in frozen]
        if trained:
            raise SystemExit(f"error: --trainable includes trunk parameters ({trained[0]}, ...); "
                             f"with --cached-views train only modules after {spec.trunk[-1]}")


def trunk_digest(model, trunk: tuple[str, ...]) -> str:
    """What the frozen trunk computes: a digest of its weights and buffers (the key of its cached output)."""
    digest = hashlib.sha256()
    for name in trunk:
        for key, tensor in sorted(model.get_submodule(name).state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def pixel_config(data_config: dict, augment: str) -> dict:
    """The part of the student's data config that makes a cached view's pixels: a random resized crop ignores
    crop_pct, so students that differ only there (the custom CNN, a random-start ResNet50) share their views."""
    ignored = ("crop_pct",) if "rrc" in augment.split(",") and "frames" not in data_config else ()  # clips: it does
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items() if k not in ignored}


def training_views(model, spec, recipe: Recipe, index, manifest, classes, data_config, seed: int, teachers,
                   workers: int, progress: bool):
    """`recipe.cached_views` fixed augmented views of every training picture, made once and kept in the state
    folder (har_core.training.view_cache): the frozen trunk's output on each (a model with a trunk) or its pixels at the
    student's size, and the teachers' logits on exactly those views. Returns (views, teachers' logits or None)."""
    student_size = data_config["input_size"][-1]
    view_size = teachers.view_size if teachers is not None else student_size
    rows = manifest[manifest["split"] == "train"]
    label_of = {c: i for i, c in enumerate(classes)}
    spec_of_views = view_cache.ViewSpec(
        data=index.fingerprint(), files=view_cache.digest(rows["filename"].tolist()), augment=recipe.augment,
        view_size=view_size, count=recipe.cached_views, seed=seed,
        student=pixel_config(data_config, recipe.augment),
        kept=trunk_digest(model, spec.trunk) if spec.trunk else view_cache.PIXELS)
    transform = train_transform(data_config | {"input_size": (3, view_size, view_size)}, recipe.augment)

    def loader_for(view: int):
        dataset = dataset_for(index.root, rows["filename"].tolist(), [label_of[l] for l in rows["label"]], transform)
        return torch.utils.data.DataLoader(view_cache.SeededViews(dataset, view_cache.view_seed(seed, view)),
                                           batch_size=64, num_workers=workers)

    runner = None

    def trunk_output(images):
        nonlocal runner
        images = resized(images, student_size)
        if runner is None:
            runner = onnx_trunk(model, spec.trunk, images) or (lambda batch: run_trunk(model, spec.trunk, batch))
        return runner(images).half()

    keep = trunk_output if spec.trunk else (lambda images: view_cache.pixels_of(images, data_config))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        views, logits = view_cache.build(spec_of_views, loader_for, keep, teachers, progress)
    model.train(was_training)
    return views, logits


def freeze_batchnorm(model, recipe: Recipe) -> None:
    """Batch norms whose parameters are frozen keep their ImageNet statistics (as Keras' training=False);
    with `bn_frozen` the trainable ones do too, so the features the head learnt on in stage one keep
    their scale when stage two starts (small batches' statistics would shift them)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if recipe.bn_frozen or not any(p.requires_grad for p in module.parameters()):
                module.eval()


# ---- checkpoints: one safetensors file with the JSON state in its metadata ------------------

def prefixed(prefix: str, module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(f"{prefix}."): v for k, v in tensors.items() if k.startswith(f"{prefix}.")}


def save_checkpoint(path: Path, model, optimizer, state: dict, average=None) -> None:
    tensors = prefixed("model", model) | (prefixed("average", average) if average is not None else {})
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"])}
    fileio.atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def load_checkpoint(path: Path, model, optimizer, average=None) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    model.load_state_dict(unprefixed("model", tensors))
    averaged = unprefixed("average", tensors)
    if average is not None and averaged:  # else (EMA switched on at resume) it starts from the resumed weights
        average.load_state_dict(averaged)
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            opt_state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"])


def make_optimizer(recipe: Recipe, model):
    params = list(model.parameters())  # frozen ones have no grad and are skipped by the optimiser
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer '{recipe.optimizer}'")


def check_output_folder(run_dir: Path, needed_bytes: int) -> None:
    """Fail before training, not after hours of it, when results could not be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as error:
        raise SystemExit(f"error: cannot write to {run_dir}: {error.strerror or error}")
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise SystemExit(f"error: only {free / 2**20:.0f} MB free in {run_dir}; "
                         f"this run needs about {needed_bytes / 2**20:.0f} MB")


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- the steps of main ---------------------------------------------------------------------

def choose_manifest(args, run_dir: Path, index, seed: int, procs: Processes):
    """The run's split: its own split.csv, or --split, or a new one. A --split that differs from the run's
    own manifest is refused (never silently ignored); copies of one picture in two splits are refused for a
    new run and reported for a resumed one."""
    own = run_dir / artifacts.MANIFEST
    given = Path(args.split) if args.split else None
    if given is not None and own.is_file() and given.resolve() != own.resolve() \
            and not read_manifest(given).equals(read_manifest(own)):
        raise DataError(f"--split {given} differs from this run's own split {own}; a run keeps the split it "
                        "started with: pass --name for a new run, or delete its split.csv to start over")
    manifest = read_manifest(own) if own.is_file() else read_manifest(given) if given else make_split(index, seed)
    found = leaks(manifest, index)
    if found and not args.resume:
        raise DataError(f"{describe_leaks(found)}; the split would test on training pictures. Leave out --split "
                        "(a new split keeps copies together) or fix the manifest")
    if found:
        procs.log(f"warning: {describe_leaks(found)}")
    return manifest


def check_data_kind(spec, index) -> None:
    """A clip model trains on class folders of clips, an image model on images: say so before anything runs."""
    clips = index.layout == "clips"
    if spec.takes_clips == clips:
        return
    clip_models = ", ".join(name for name, entry in REGISTRY.items() if entry.takes_clips)
    remedy = (f"a clip model ({clip_models}) or a folder of images" if clips
              else "an image model or a folder of clips per class")
    raise DataError(f"{spec.name} takes {'video clips' if spec.takes_clips else 'images'} but {index.root} holds "
                    f"{'clips' if clips else 'images'}; choose {remedy}")


def check_fingerprint(card: dict, index, procs: Processes) -> None:
    """A resumed run trains on the data it started with; say so when the pictures or labels changed."""
    change = fingerprint_change(card.get("data", {}).get("fingerprint"), index)
    if change:
        procs.log(f"warning: the data changed since this run started ({change}): images or labels were added, "
                  "removed or edited")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished loader processes (every core counts)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_card(run_dir: Path, spec, recipe: Recipe, classes, data_config, pretrained: str, seed: int, model,
               args, index, manifest, procs: Processes, previous: dict) -> dict:
    counts = manifest["split"].value_counts().reindex(["train", "val", "test"]).fillna(0).astype(int).to_dict()
    command = "python -m train.train " + " ".join(shlex.quote(a) for a in args.argv)
    training = previous.get("training", {})
    return {
        "name": run_dir.name, "model": spec.name, "description": spec.description, "classes": classes,
        "input_size": data_config["input_size"][-1], "mean": list(data_config["mean"]),
        "std": list(data_config["std"]), "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
        **{key: data_config[key] for key in ("frames", "frame_stride") if key in data_config},
        "recipe": dataclasses.asdict(recipe),
        "pretrained": pretrained, "seed": seed, "parameters": count_parameters(model),
        "data": {"root": str(Path(args.data).resolve()), "layout": index.layout, "fingerprint": index.fingerprint(),
                 "images": len(index.samples), "skipped": len(index.problems), "copies": len(index.copies())},
        "split": {"manifest": artifacts.MANIFEST, "counts": counts,
                  # the calibration half never chooses the checkpoint (har_core.data.datasets.choice_part)
                  "checkpoint_chosen_on": "the other half of val" if calibration_files(manifest) else "all of val"},
        "versions": artifacts.versions(), "weights_dtype": args.save_dtype,
        "device": torch.cuda.get_device_name(procs.device) if procs.on_cuda else "cpu",
        "created": previous.get("created", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "metrics": previous.get("metrics", {}), "notes": previous.get("notes", ""),
        # how it was made: every command that trained it (a resume adds one), the side it trained at, CPU-hours
        "training": {"commands": [*training.get("commands", []), command],
                     "resolution": data_config["input_size"][-1], "cpu_hours": training.get("cpu_hours", 0.0),
                     "processes": procs.world, "device": "cuda" if procs.on_cuda else "cpu"},
    }


def extra_images(folder: str, procs: Processes) -> tuple[Path, list[str]]:
    """The unlabelled pictures of --extra-images that decode (the others are named and left out)."""
    try:
        root, files, problems = unlabelled_images(folder)
    except DataError as error:
        raise SystemExit(f"error: --extra-images: {error}")
    usable, unreadable = readable_images(root, files, progress=procs.rank == 0)
    for rel, reason in problems + unreadable:
        procs.log(f"skipped extra image {rel}: {reason}")
    if not usable:
        raise SystemExit(f"error: --extra-images {folder} holds no readable pictures")
    return root, usable


def epoch_loader(recipe: Recipe, epoch: int, seed: int, train_labels, classes, index, manifest, data_config,
                 args, procs: Processes, train_views=None, extra=None, teachers=None, pixel_config=None):
    """This epoch's training batches, drawn with the epoch's own seed (so a resumed run replays exactly).
    `extra` (root, files): unlabelled pictures drawn along with the training images."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    count = len(train_labels) + (len(extra[1]) if extra else 0)
    if procs.world > 1:
        sampler = DistributedSampler(range(count), num_replicas=procs.world, rank=procs.rank, seed=seed)
        sampler.set_epoch(epoch)
    elif recipe.weighted_sampler and extra is None:
        sampler = class_weights_sampler(train_labels, len(classes), generator)
    else:
        sampler = None
    if train_views is not None:  # each image in one of its cached views, drawn anew each epoch
        view_of = torch.randint(recipe.cached_views, (len(train_labels),), generator=generator)
        return torch.utils.data.DataLoader(CachedViews(train_views, train_labels, view_of, pixel_config),
                                           batch_size=recipe.batch_size, shuffle=sampler is None, sampler=sampler,
                                           generator=generator, pin_memory=procs.on_cuda)
    if teachers is not None:  # views at the largest input size: the teachers see them sharp
        data_config = data_config | {"input_size": (3, teachers.view_size, teachers.view_size)}
    transform = train_transform(data_config, recipe.augment)
    also = dataset_for(extra[0], extra[1], None, transform) if extra is not None else None
    return split_loader(index.root, manifest, "train", classes, transform,
                        batch_size=recipe.batch_size, workers=args.workers, shuffle=True, sampler=sampler,
                        generator=generator, pin_memory=procs.on_cuda, also=also)


def autocast_for(recipe: Recipe, procs: Processes):
    """The training step's arithmetic (Recipe.precision); evaluation always runs in float32, as the app does."""
    return torch.autocast(device_type="cuda" if procs.on_cuda else "cpu", dtype=torch.bfloat16,
                          enabled=trains_in_bf16(recipe.precision, procs.on_cuda))


def train_one_epoch(train_model, model, loader, optimizer, recipe: Recipe, mixup, average, features_in,
                    procs: Processes, desc: str, progress: bool, teachers: Teachers | None = None) -> tuple[float, float]:
    """One pass over the training batches; returns (mean loss, accuracy on the labelled images) over every
    rank's samples. With `teachers`, the loss also (or only) matches their probabilities on the same view."""
    hard_loss = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    soft_loss = SoftTargetCrossEntropy()
    total_loss, correct, seen, labelled_seen = 0.0, 0, 0, 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    for images, labels, keys in bar:
        images = images.to(procs.device, non_blocking=True, memory_format=fast_layout(images))
        labels = labels.to(procs.device, non_blocking=True)
        labelled = labels != UNLABELLED
        targets = labels
        if mixup is not None and images.shape[0] % 2 == 0:  # timm's batch mixup pairs each image with another
            images, targets = mixup(images, labels.clamp(min=0))
            labelled = labelled_after_mixup(labelled)
        criterion = soft_loss if targets.dim() == 2 else hard_loss
        taught = None
        if teachers is not None:  # the view is made at the teachers' size; the student sees it resized. Outside the
            taught = teachers.targets(images, keys, recipe.distill_temperature)  # autocast: teachers answer in float32
            images = teachers.for_student(images)  # (a bf16 graph is no ONNX Runtime export)
        with autocast_for(recipe, procs), features_in(model):
            output = train_model(images)
            outputs = output if isinstance(output, (tuple, list)) else (output,)

            def loss_of(out):
                hard = criterion(out[labelled].float(), targets[labelled]) if labelled.any() else out.sum() * 0
                if taught is None:
                    return hard
                soft = distillation_loss(out, taught, recipe.distill_temperature)
                return recipe.distill_weight * soft + (1 - recipe.distill_weight) * hard

            loss = sum(weight * loss_of(out) for weight, out in zip((1.0, recipe.aux_weight), outputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        total_loss += loss.item() * labels.shape[0]
        correct += (logits_of(output).argmax(1) == labels)[labels != UNLABELLED].sum().item()
        seen += labels.shape[0]
        labelled_seen += int((labels != UNLABELLED).sum())
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / max(1, labelled_seen):.3f}")
    total_loss, correct, seen, labelled_seen = procs.sum([total_loss, correct, seen, labelled_seen])
    return total_loss / seen, correct / max(1, labelled_seen)


def validate(evaluated, val_loader, classes, features_in, procs: Processes, progress: bool) -> list[float]:
    """[val loss, accuracy, macro-F1], computed on rank 0 and the same on every rank."""
    values = [0.0, 0.0, 0.0]
    if procs.rank == 0:
        with features_in(evaluated):
            probs, labels = predict_loader(evaluated, val_loader, device=procs.device, desc="validating",
                                           progress=progress)
        metrics = compute_metrics(labels, probs, classes, top_k=())
        values = [negative_log_likelihood(probs, labels), metrics["accuracy"], metrics["macro_f1"]]
    return procs.from_rank0(values)


def final_evaluation(model, run_dir: Path, card: dict, state: dict, index, manifest, recipe: Recipe, args,
                     procs: Processes, progress: bool) -> None:
    """The best weights evaluated on val and test, written into the run (rank 0)."""
    artifacts.load_weights(run_dir / artifacts.WEIGHTS, model, run_dir.name)
    card["epochs_trained"], card["best_epoch"] = state["epoch"], state["best_epoch"] + 1
    card["training"]["cpu_hours"] = round(state.get("cpu_seconds", 0.0) / 3600, 3)
    for split in ("val", "test"):
        if (manifest["split"] == split).any():
            metrics, predictions = evaluate_split(model, card, index.root, manifest, split, tta=recipe.tta,
                                                  device=procs.device, batch_size=recipe.batch_size,
                                                  workers=args.workers, progress=progress)
            card = write_evaluation(run_dir, card, metrics, predictions)
            procs.log(f"{split}: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}"
                      f"{'  (flip TTA)' if recipe.tta else ''}")
    if (manifest["split"] == "val").any():  # the temperature every page applies, fitted on val
        try:
            calibration = calibrate_run(artifacts.open_run(run_dir))
        except CalibrationError as error:
            procs.log(f"not calibrated: {error}")
        else:
            split = "test" if "test" in calibration["splits"] else "val"
            measured = calibration["splits"][split]
            procs.log(f"calibration: temperature {calibration['temperature']:.3f} (fitted on val); {split} ECE "
                      f"{measured['before']['ece']:.3f} → {measured['after']['ece']:.3f}")
    if args.embed:  # the best weights' embeddings of every image, for similar images, the map and the audit
        loaded = load_run(run_dir, backend="pytorch")
        loaded.model.to(procs.device)
        embeddings, report = embed_run(loaded, index, recipe.batch_size, procs.device, progress=progress)
        procs.log(f"embeddings: {len(embeddings)} images; test kNN (k={report['k']}) accuracy "
                  f"{report.get('test', {}).get('knn', float('nan')):.4f}")


# ---- main ----------------------------------------------------------------------------------

@dataclass
class Setup:
    """What the run is: its folder, recipe, classes, seed and input config (a resume keeps its card's recipe)."""
    args: argparse.Namespace
    procs: Processes
    spec: object
    run_dir: Path
    recipe: Recipe
    classes: list[str] | None
    seed: int
    previous: dict
    data_config: dict
    progress: bool

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / artifacts.CHECKPOINT_DIR / "last.safetensors"


@dataclass
class Data:
    index: object
    manifest: object  # the whole split
    chooser: object  # without the calibration half of val: what chooses the checkpoint
    classes: list[str]
    train_labels: list[int]
    val_labels: list[int]


@dataclass
class Training:
    """The model and everything that moves while it trains; with --ema-decay, validation, the saved weights and
    the final evaluation use the running average (it smooths out the last minibatches' noise)."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    average: AveragedModel | None
    state: dict
    scheduler: object
    mixup: Mixup | None
    pretrained: str
    cpu_before: float  # CPU seconds of earlier sessions of this run
    cpu_at_start: float

    @property
    def evaluated(self):
        return self.average.module if self.average is not None else self.model


@dataclass
class Inputs:
    """What the loop feeds the model: cached views (trunk output or pixels) or pictures, and the teachers."""
    train_views: object
    pixel_config: dict | None
    val_loader: object
    features_in: object  # context manager factory: inside, the model takes what the loader gives
    teachers: object
    extra: tuple | None


def configure(args) -> Setup:
    procs = start_processes(args)
    spec = REGISTRY[args.model]
    run_dir = Path(args.out) / (args.name or args.model)
    checkpoint = run_dir / artifacts.CHECKPOINT_DIR / "last.safetensors"
    if args.resume:
        if not checkpoint.is_file():
            raise SystemExit(f"error: nothing to resume in {run_dir} (no {checkpoint.name})")
        previous = artifacts.validate_card(artifacts.read_json(run_dir / artifacts.CARD), run_dir.name)
        recipe = recipe_from(args, Recipe(**previous["recipe"]))
        classes, seed = previous["classes"], previous.get("seed", 0)
    else:
        recipe = recipe_from(args, RECIPES[args.recipe] if args.recipe else spec.recipe)
        classes, seed, previous = None, args.seed, {}
    if procs.rank == 0:
        check_output_folder(run_dir, needed_bytes=12 * count_parameters(spec.build(2)) + 50 * 2**20)
    return Setup(args, procs, spec, run_dir, recipe, classes, seed, previous, spec.data_config(recipe.image_size),
                 progress=not args.quiet and procs.rank == 0)


def load_data(setup: Setup) -> Data:
    """The index (reporting unusable files and copies), the split manifest and the labels."""
    args, procs = setup.args, setup.procs
    try:
        index = scan(args.data, classes=setup.classes, progress=setup.progress)
        check_data_kind(setup.spec, index)
        manifest = choose_manifest(args, setup.run_dir, index, setup.seed, procs)
    except DataError as error:
        raise SystemExit(f"error: {error}")
    for rel, reason in index.problems:
        procs.log(f"skipped {rel}: {reason}")
    if args.resume:
        check_fingerprint(setup.previous, index, procs)
    manifest = manifest[manifest["filename"].isin({rel for rel, _ in index.samples})].reset_index(drop=True)
    if procs.rank == 0:
        write_manifest(manifest, setup.run_dir / artifacts.MANIFEST)
    label_of = {c: i for i, c in enumerate(index.classes)}
    chooser = choice_part(manifest)
    return Data(index, manifest, chooser, index.classes,
                [label_of[l] for l in manifest.loc[manifest["split"] == "train", "label"]],
                [label_of[l] for l in chooser.loc[chooser["split"] == "val", "label"]])


def build_training(setup: Setup, data: Data) -> Training:
    """Model (its start: random, pretrained, or the checkpoint being resumed), optimiser, schedule, average."""
    recipe, procs = setup.recipe, setup.procs
    seed_everything(setup.seed)  # the random initialisation is part of the run's identity
    model = setup.spec.build(len(data.classes))
    pretrained = setup.previous.get("pretrained", "none")
    if not setup.args.resume:
        try:
            pretrained = load_pretrained(model, setup.spec, setup.args.pretrained or setup.spec.default_pretrained)
        except PretrainedError as error:
            raise SystemExit(f"error: {error}")
    model.to(procs.device, memory_format=setup.spec.memory_format)  # faster on CUDA and with oneDNN on CPU
    optimizer = make_optimizer(recipe, model)
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
               if recipe.ema_decay > 0 else None)
    state = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": -1, "history": []}
    if setup.args.resume:
        state = load_checkpoint(setup.checkpoint, model, optimizer, average)
        procs.log(f"resuming {setup.run_dir.name} after epoch {state['epoch']} (best val acc "
                  f"{state['best_accuracy']:.3f} at epoch {state['best_epoch'] + 1})")
    scheduler = stage_scheduler(recipe, optimizer, state["epoch"])
    if setup.args.resume:
        resume_schedule(scheduler, state, recipe, optimizer)
    mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=0.0, label_smoothing=recipe.label_smoothing,
                  num_classes=len(data.classes)) if recipe.mixup_alpha > 0 else None
    return Training(model, optimizer, average, state, scheduler, mixup, pretrained,
                    state.get("cpu_seconds", 0.0), cpu_seconds())


def load_teachers(setup: Setup, data: Data):
    """Distillation: the teachers (checked for leaks of the student's held-out pictures) and the unlabelled
    pictures only they label; (None, None) without --teacher."""
    recipe, args, procs = setup.recipe, setup.args, setup.procs
    extra_folder = args.extra_images or setup.previous.get("distillation", {}).get("extra_images_folder")
    if extra_folder and not recipe.teacher:
        raise SystemExit("error: --extra-images needs --teacher: only teachers can label them")
    if not recipe.teacher:
        return None, None
    if recipe.cached_views > 0 and extra_folder:
        raise SystemExit("error: --extra-images works without --cached-views (the cache holds the training "
                         "pictures' views only)")
    if not 0.0 <= recipe.distill_weight <= 1.0 or recipe.distill_temperature <= 0:
        raise SystemExit("error: --distill-weight must lie in [0, 1] and --distill-temperature be positive")
    try:
        teachers = Teachers(teacher_paths(recipe.teacher), data.classes, setup.data_config, procs.device)
    except DistillError as error:
        raise SystemExit(f"error: {error}")
    leaks = teacher_leaks(teacher_paths(recipe.teacher), data.manifest, data.index)
    if leaks:
        raise SystemExit("error: " + "; ".join(leaks))
    extra = extra_images(extra_folder, procs) if extra_folder else None
    copies = extra_leaks(*extra, data.manifest, data.index) if extra else []
    if copies:
        raise SystemExit(f"error: --extra-images holds {len(copies)} of the student's val/test pictures (e.g. "
                         + ", ".join(f"{rel} = {twin}" for rel, twin in copies[:3])
                         + "): the teachers would label them for the student; remove them from the folder")
    return teachers, extra


def write_card(setup: Setup, data: Data, training: Training, teachers, extra) -> dict:
    card = build_card(setup.run_dir, setup.spec, setup.recipe, data.classes, setup.data_config, training.pretrained,
                      setup.seed, training.model, setup.args, data.index, data.manifest, setup.procs, setup.previous)
    if teachers is not None:
        folder = setup.args.extra_images or setup.previous.get("distillation", {}).get("extra_images_folder")
        card["distillation"] = {"teachers": teachers.names, "teacher_paths": teacher_paths(setup.recipe.teacher),
                                "temperature": setup.recipe.distill_temperature,
                                "weight": setup.recipe.distill_weight, "extra_images": len(extra[1]) if extra else 0,
                                "extra_images_folder": str(Path(folder).resolve()) if extra else None}
    if setup.procs.rank == 0:
        fileio.write_json(setup.run_dir / artifacts.CARD, card)
    return card


def prepare_inputs(setup: Setup, data: Data, training: Training, teachers, extra) -> Inputs:
    """Cached views (har_core.training.view_cache): a frozen trunk's output on each, inside `features_in` the model takes
    it instead of a picture (only there: saving needs the trunk), or the views' pixels; else pictures."""
    recipe, spec, args = setup.recipe, setup.spec, setup.args
    train_views = None
    if recipe.cached_views > 0:
        check_cached_views(training.model, spec, recipe, setup.procs.world)
        train_views, logits = training_views(training.model, spec, recipe, data.index, data.chooser, data.classes,
                                             setup.data_config, setup.seed, teachers, args.workers, setup.progress)
        if teachers is not None:  # from here on the teachers speak from the cache
            teachers = CachedTeachers(logits, teachers.names)
    val_loader = split_loader(data.index.root, data.chooser, "val", data.classes, eval_transform(setup.data_config),
                              batch_size=recipe.batch_size, workers=args.workers)
    if recipe.cached_views > 0 and spec.trunk:
        val_features = trunk_features(training.model, spec.trunk, val_loader, "trunk val", setup.progress)
        val_loader = torch.utils.data.DataLoader(
            CachedViews(val_features[None], data.val_labels, torch.zeros(len(data.val_labels), dtype=torch.long)),
            batch_size=recipe.batch_size)
        return Inputs(train_views, None, val_loader, lambda m: trunk_skipped(m, spec.trunk), teachers, extra)
    pixel_config = setup.data_config if recipe.cached_views > 0 else None
    return Inputs(train_views, pixel_config, val_loader, lambda m: contextlib.nullcontext(), teachers, extra)


def announce(setup: Setup, data: Data, card: dict, training: Training, inputs: Inputs) -> None:
    procs, recipe, teachers, extra = setup.procs, setup.recipe, inputs.teachers, inputs.extra
    if procs.world > 1 and recipe.weighted_sampler:
        procs.log("note: the weighted sampler is not used with several processes (DistributedSampler instead)")
    procs.log(f"{setup.spec.name}: {card['parameters'] / 1e6:.1f}M parameters, pretrained: {training.pretrained}, "
              f"device {procs.device}{f' × {procs.world} processes' if procs.world > 1 else ''}, "
              f"{len(data.train_labels)} train / {len(data.val_labels)} val images"
              + (f"; distilled from {', '.join(teachers.names)} (T {recipe.distill_temperature:g}, weight "
                 f"{recipe.distill_weight:g}){f', + {len(extra[1])} unlabelled pictures' if extra else ''}"
                 if teachers is not None else ""))


def train_epochs(setup: Setup, data: Data, training: Training, inputs: Inputs) -> None:
    """The loop: each epoch is seeded on its own, so a resumed run replays exactly; every rank updates the same
    state from the same numbers, and rank 0 writes the weights (when val improved), history and checkpoint."""
    recipe, procs, model, state = setup.recipe, setup.procs, training.model, training.state
    partly_frozen = recipe.freeze_epochs > 0 or recipe.trainable != "all"
    train_model = DistributedDataParallel(model, find_unused_parameters=partly_frozen) if procs.world > 1 else model
    first_epoch = state["epoch"]
    for epoch in range(first_epoch, recipe.epochs):
        if epoch == recipe.freeze_epochs > 0 and epoch > first_epoch:
            training.scheduler = stage_scheduler(recipe, training.optimizer, epoch)  # stage two: its own schedule
        seed_everything(setup.seed * 1000 + epoch)
        loader = epoch_loader(recipe, epoch, setup.seed, data.train_labels, data.classes, data.index, data.manifest,
                              setup.data_config, setup.args, procs, inputs.train_views, inputs.extra, inputs.teachers,
                              inputs.pixel_config)
        lr = training.optimizer.param_groups[0]["lr"]
        set_trainable(model, setup.spec, recipe, epoch)
        train_model.train()
        freeze_batchnorm(model, recipe)
        started = time.time()
        train_loss, train_accuracy = train_one_epoch(
            train_model, model, loader, training.optimizer, recipe, training.mixup, training.average,
            inputs.features_in, procs, f"epoch {epoch + 1}/{recipe.epochs}", setup.progress, inputs.teachers)
        procs.share_buffers(model, *([training.average] if training.average is not None else []))
        val_loss, val_accuracy, val_f1 = validate(training.evaluated, inputs.val_loader, data.classes,
                                                  inputs.features_in, procs, setup.progress)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_accuracy": train_accuracy,
                  "val_loss": val_loss, "val_accuracy": val_accuracy, "val_macro_f1": val_f1,
                  "seconds": round(time.time() - started, 1)}
        state["history"].append(record)
        improved = val_accuracy > state["best_accuracy"]
        if improved:
            state["best_accuracy"], state["best_epoch"] = val_accuracy, epoch
        training.scheduler.step(local_epoch(recipe, epoch) + 1, val_loss)
        state.update(epoch=epoch + 1, stage=stage_of(recipe, epoch), scheduler=scheduler_state(training.scheduler),
                     next_lr=training.optimizer.param_groups[0]["lr"],
                     cpu_seconds=training.cpu_before + procs.sum([cpu_seconds() - training.cpu_at_start])[0])
        if procs.rank == 0:
            if improved:
                artifacts.save_weights(setup.run_dir / artifacts.WEIGHTS, training.evaluated, setup.args.save_dtype)
            fileio.write_json(setup.run_dir / artifacts.HISTORY, state["history"])
            save_checkpoint(setup.checkpoint, model, training.optimizer, state, training.average)
        procs.log(f"epoch {epoch + 1:3d}/{recipe.epochs}  lr {lr:.2e}  train loss {train_loss:.3f} "
                  f"acc {train_accuracy:.3f}  val loss {val_loss:.3f} acc {val_accuracy:.3f} F1 {val_f1:.3f}  "
                  f"{record['seconds']:.0f}s{'  *best*' if improved else ''}")
        if recipe.patience and epoch - state["best_epoch"] >= recipe.patience:
            procs.log(f"early stop: no better val accuracy for {recipe.patience} epochs")
            break


def main(argv=None) -> Path:
    setup = configure(parse_args(argv))  # config: the recipe (a resume keeps its card's, flags on top)
    data = load_data(setup)  # data: the pictures, the split, the labels
    training = build_training(setup, data)  # model, optimiser, schedule, average, state
    teachers, extra = load_teachers(setup, data)  # distillation, when asked for
    card = write_card(setup, data, training, teachers, extra)
    inputs = prepare_inputs(setup, data, training, teachers, extra)  # cached views or pictures
    announce(setup, data, card, training, inputs)
    train_epochs(setup, data, training, inputs)
    procs = setup.procs
    if procs.world > 1:
        write_rank_digest(setup.run_dir, training.model, training.state, procs)
    if procs.rank == 0:
        final_evaluation(training.model, setup.run_dir, card, training.state, data.index, data.manifest,
                         setup.recipe, setup.args, procs, setup.progress)
        procs.log(f"run written to {setup.run_dir}")
    if procs.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return setup.run_dir


def write_rank_digest(run_dir: Path, model, state: dict, procs: Processes) -> None:
    """Each rank's final weights, batch-norm statistics and learning-rate history as one digest, written
    by rank 0 into ranks.json: equal digests show that every rank trained the same model."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([h["lr"] for h in state["history"]]).encode())
    gathered = [None] * procs.world
    dist.all_gather_object(gathered, {"rank": procs.rank, "digest": digest.hexdigest(),
                                      "lr": [h["lr"] for h in state["history"]]})
    if procs.rank == 0:
        fileio.write_json(run_dir / "ranks.json", gathered)


if __name__ == "__main__":
    main()
