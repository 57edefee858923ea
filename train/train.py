"""Train one model on a HAR-style data set and write a run folder.

    python -m train.train --model efficientnet_lite1 --data ../shared/data/sports15 --out runs
    python -m train.train --model custom_cnn --data DATA --out runs --epochs 5 --lr 1e-3
    python -m train.train --model resnet50 --data DATA --out runs --resume --epochs 20   # continue
    torchrun --nproc_per_node 2 -m train.train --model ... --backend gloo               # several processes

Every field of the recipe (see har_core.registry.Recipe) is a flag; the model's registry entry
gives the defaults. Reads top to bottom: config, data, model, loop, final evaluation.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from har_core import artifacts
from har_core.data import (DataError, class_weights_sampler, eval_transform, make_split, read_manifest,
                           scan, train_transform, write_manifest)
from har_core.evaluation import evaluate_split, negative_log_likelihood, split_loader, write_evaluation
from har_core.inference import logits_of, predict_loader
from har_core.metrics import compute_metrics
from har_core.pretrained import PretrainedError, load_pretrained
from har_core.registry import RECIPES, REGISTRY, Recipe, count_parameters, is_head_param
from har_core.trunk import CachedViews, trunk_features, trunk_parameters, trunk_skipped


# ---- config --------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(REGISTRY))
    parser.add_argument("--data", required=True, help="Kaggle layout (Training_set.csv + train/) or class folders")
    parser.add_argument("--out", default="runs", help="folder of run folders")
    parser.add_argument("--name", help="run folder name (default: the model name)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="named recipe (default: the model's)")
    parser.add_argument("--pretrained", help="none | hub | offline | PATH (default: the model's)")
    parser.add_argument("--split", help="reuse this split manifest CSV (same test images across models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", type=int, default=min(4, (os.cpu_count() or 2) - 1),
                        help="DataLoader worker processes")
    parser.add_argument("--backend", default="", help="torch.distributed backend under torchrun (default nccl/gloo)")
    parser.add_argument("--save-dtype", default="float32", choices=sorted(artifacts.SAVE_DTYPES))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    for f in dataclasses.fields(Recipe):  # every recipe field is overridable
        kind = type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f"recipe_{f.name}", default=None,
                            type=parse_bool if kind is bool else kind, help="recipe override")
    return parser.parse_args(argv)


def parse_bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def recipe_from(args, base: Recipe) -> Recipe:
    overrides = {f.name: getattr(args, f"recipe_{f.name}") for f in dataclasses.fields(Recipe)
                 if getattr(args, f"recipe_{f.name}") is not None}
    return base.replace(**overrides)


# ---- schedule and stages --------------------------------------------------------------------

def in_stage_one(recipe: Recipe, epoch: int) -> bool:
    return epoch < recipe.freeze_epochs


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


def check_cached_trunk(model, spec, recipe: Recipe, world: int) -> None:
    """Cached trunk features are only valid while the trunk never trains."""
    if not spec.trunk:
        raise SystemExit(f"error: {spec.name} declares no trunk in the registry; --cached-views needs one")
    if world > 1 or recipe.mixup_alpha > 0:
        raise SystemExit("error: --cached-views works in one process and without mixup")
    frozen = set(trunk_parameters(model, spec.trunk))
    for epoch in (0, recipe.freeze_epochs):  # stage one, stage two
        set_trainable(model, spec, recipe, epoch)
        trained = [n for n, p in model.named_parameters() if p.requires_grad and n in frozen]
        if trained:
            raise SystemExit(f"error: --trainable includes trunk parameters ({trained[0]}, ...); "
                             f"with --cached-views train only modules after {spec.trunk[-1]}")


def cache_trunk_views(model, spec, recipe: Recipe, index, manifest, classes, data_config, seed: int,
                      workers: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen trunk's output for `recipe.cached_views` augmented views of every training image
    (each view seeded, so a resumed run rebuilds the same cache), and for the plain val images."""
    views = []
    for view in range(recipe.cached_views):
        view_seed = seed * 1000 + 500 + view
        seed_everything(view_seed)
        loader = split_loader(index.root, manifest, "train", classes, train_transform(data_config, recipe.augment),
                              batch_size=recipe.batch_size, workers=workers,
                              generator=torch.Generator().manual_seed(view_seed))
        views.append(trunk_features(model, spec.trunk, loader, f"trunk view {view + 1}/{recipe.cached_views}",
                                    progress))
    val_loader = split_loader(index.root, manifest, "val", classes, eval_transform(data_config),
                              batch_size=recipe.batch_size, workers=workers)
    return torch.stack(views), trunk_features(model, spec.trunk, val_loader, "trunk val", progress)


def freeze_batchnorm(model, recipe: Recipe) -> None:
    """Batch norms whose parameters are frozen keep their ImageNet statistics (as Keras' training=False);
    with `bn_frozen` the trainable ones do too, so the features the head learnt on in stage one keep
    their scale when stage two starts (small batches' statistics would shift them)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if recipe.bn_frozen or not any(p.requires_grad for p in module.parameters()):
                module.eval()


def learning_rate(recipe: Recipe, epoch: int, plateau_scale: float) -> float:
    """The lr of an epoch: stage base lr × warmup × schedule (cosine, step) × plateau reductions."""
    stage_two = recipe.freeze_epochs > 0 and not in_stage_one(recipe, epoch)
    base = recipe.finetune_lr if stage_two and recipe.finetune_lr > 0 else recipe.lr
    if stage_two:  # each stage runs its own schedule
        local, length = epoch - recipe.freeze_epochs, recipe.epochs - recipe.freeze_epochs
    else:
        local, length = epoch, recipe.freeze_epochs or recipe.epochs
    if local < recipe.warmup_epochs:
        return base * (local + 1) / (recipe.warmup_epochs + 1)
    if recipe.scheduler == "cosine":
        progress = (local - recipe.warmup_epochs) / max(1, length - recipe.warmup_epochs)
        return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if recipe.scheduler == "step":
        return base * recipe.gamma ** (local // recipe.step_size)
    if recipe.scheduler == "plateau":
        return base * plateau_scale
    return base


def update_plateau(state: dict, val_loss: float, recipe: Recipe, patience: int = 2) -> None:
    """ReduceLROnPlateau on validation loss, kept as plain numbers so a resume restores it exactly."""
    if val_loss < state["best_loss"] - 1e-4:
        state["best_loss"], state["bad_epochs"] = val_loss, 0
    else:
        state["bad_epochs"] += 1
        if state["bad_epochs"] > patience:
            state["scale"], state["bad_epochs"] = state["scale"] * recipe.gamma, 0


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
    artifacts.atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


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


def log(message: str, rank: int) -> None:
    if rank == 0:
        tqdm.write(message)


# ---- main ----------------------------------------------------------------------------------

def main(argv=None) -> Path:
    args = parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if world > 1:
        dist.init_process_group(backend=args.backend or ("nccl" if device == "cuda" else "gloo"))
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            device = f"cuda:{torch.cuda.current_device()}"
    on_cuda = device.startswith("cuda")
    spec = REGISTRY[args.model]
    run_dir = Path(args.out) / (args.name or args.model)
    progress = not args.quiet and rank == 0

    # config: a resumed run keeps its card's recipe, with the flags given now on top
    checkpoint_path = run_dir / artifacts.CHECKPOINT_DIR / "last.safetensors"
    if args.resume:
        if not checkpoint_path.is_file():
            raise SystemExit(f"error: nothing to resume in {run_dir} (no {checkpoint_path.name})")
        card = artifacts.validate_card(artifacts.read_json(run_dir / artifacts.CARD), run_dir.name)
        recipe = recipe_from(args, Recipe(**card["recipe"]))
        classes, seed = card["classes"], card.get("seed", 0)
    else:
        recipe = recipe_from(args, RECIPES[args.recipe] if args.recipe else spec.recipe)
        classes, seed, card = None, args.seed, {}
    data_config = spec.data_config(recipe.image_size)
    if rank == 0:
        check_output_folder(run_dir, needed_bytes=12 * count_parameters(spec.build(2)) + 50 * 2**20)

    # data: index (reporting unusable files), split manifest, loaders
    manifest_path = run_dir / artifacts.MANIFEST
    try:
        index = scan(args.data, classes=classes, progress=progress)
        if manifest_path.is_file():
            manifest = read_manifest(manifest_path)
        elif args.split:
            manifest = read_manifest(Path(args.split))
        else:
            manifest = make_split(index, seed=seed)
    except DataError as error:
        raise SystemExit(f"error: {error}")
    for rel, reason in index.problems:
        log(f"skipped {rel}: {reason}", rank)
    usable = {rel for rel, _ in index.samples}
    manifest = manifest[manifest["filename"].isin(usable)].reset_index(drop=True)
    if rank == 0:
        write_manifest(manifest, manifest_path)
    classes = index.classes
    label_of = {c: i for i, c in enumerate(classes)}
    train_labels = [label_of[l] for l in manifest.loc[manifest["split"] == "train", "label"]]

    # model
    seed_everything(seed)  # the random initialisation is part of the run's identity
    model = spec.build(len(classes))
    pretrained = card.get("pretrained", "none")
    if not args.resume:
        try:
            pretrained = load_pretrained(model, spec, args.pretrained or spec.default_pretrained)
        except PretrainedError as error:
            raise SystemExit(f"error: {error}")
    model.to(device, memory_format=torch.channels_last)  # faster on CUDA and with oneDNN on CPU
    optimizer = make_optimizer(recipe, model)
    # with --ema-decay, validation, the saved weights and the final evaluation use the running average,
    # which smooths out the last minibatches' noise (the best epoch is then less of a lucky draw)
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
               if recipe.ema_decay > 0 else None)
    evaluated = average.module if average is not None else model
    state = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": -1, "history": [],
             "plateau": {"best_loss": float("inf"), "bad_epochs": 0, "scale": 1.0}}
    if args.resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, average)
        log(f"resuming {run_dir.name} after epoch {state['epoch']} (best val acc "
            f"{state['best_accuracy']:.3f} at epoch {state['best_epoch'] + 1})", rank)

    card = {
        "name": run_dir.name, "model": spec.name, "description": spec.description, "classes": classes,
        "input_size": data_config["input_size"][-1], "mean": list(spec.mean), "std": list(spec.std),
        "crop_pct": spec.crop_pct, "interpolation": spec.interpolation, "recipe": dataclasses.asdict(recipe),
        "pretrained": pretrained, "seed": seed, "parameters": count_parameters(model),
        "data": {"root": str(Path(args.data).resolve()), "layout": index.layout,
                 "fingerprint": index.fingerprint(), "images": len(index.samples),
                 "skipped": len(index.problems)},
        "split": {"manifest": artifacts.MANIFEST,
                  "counts": manifest["split"].value_counts().reindex(["train", "val", "test"]).fillna(0)
                  .astype(int).to_dict()},
        "versions": artifacts.versions(), "weights_dtype": args.save_dtype,
        "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "created": card.get("created", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "metrics": card.get("metrics", {}), "notes": card.get("notes", ""),
    }
    if rank == 0:
        artifacts.write_json(run_dir / artifacts.CARD, card)

    cached = recipe.cached_views > 0
    if cached:
        check_cached_trunk(model, spec, recipe, world)
        train_views, val_features = cache_trunk_views(model, spec, recipe, index, manifest, classes, data_config,
                                                      seed, args.workers, progress)
    # with a cached trunk, a model takes trunk features (only inside this context: saving needs the trunk)
    features_in = (lambda m: trunk_skipped(m, spec.trunk)) if cached else (lambda m: contextlib.nullcontext())
    partly_frozen = recipe.freeze_epochs > 0 or recipe.trainable != "all"
    train_model = DistributedDataParallel(model, find_unused_parameters=partly_frozen) if world > 1 else model
    if world > 1 and recipe.weighted_sampler:
        log("note: the weighted sampler is not used with several processes (DistributedSampler instead)", rank)
    if cached:
        val_labels = [label_of[l] for l in manifest.loc[manifest["split"] == "val", "label"]]
        val_loader = torch.utils.data.DataLoader(CachedViews(val_features[None], val_labels,
                                                             torch.zeros(len(val_labels), dtype=torch.long)),
                                                 batch_size=recipe.batch_size)
    else:
        val_loader = split_loader(index.root, manifest, "val", classes, eval_transform(data_config),
                                  batch_size=recipe.batch_size, workers=args.workers)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    log(f"{spec.name}: {card['parameters'] / 1e6:.1f}M parameters, pretrained: {pretrained}, device {device}"
        f"{f' × {world} processes' if world > 1 else ''}, {len(train_labels)} train / "
        f"{int((manifest['split'] == 'val').sum())} val images", rank)

    # the loop: each epoch is seeded on its own, so a resumed run replays exactly
    for epoch in range(state["epoch"], recipe.epochs):
        seed_everything(seed * 1000 + epoch)
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        if world > 1:
            sampler = DistributedSampler(range(len(train_labels)), num_replicas=world, rank=rank, seed=seed)
            sampler.set_epoch(epoch)
        elif recipe.weighted_sampler:
            sampler = class_weights_sampler(train_labels, len(classes), generator)
        else:
            sampler = None
        if cached:  # each image in one of its cached views, drawn anew each epoch
            view_of = torch.randint(recipe.cached_views, (len(train_labels),), generator=generator)
            train_loader = torch.utils.data.DataLoader(
                CachedViews(train_views, train_labels, view_of), batch_size=recipe.batch_size,
                shuffle=sampler is None, sampler=sampler, generator=generator, pin_memory=on_cuda)
        else:
            train_loader = split_loader(index.root, manifest, "train", classes,
                                        train_transform(data_config, recipe.augment), batch_size=recipe.batch_size,
                                        workers=args.workers, shuffle=True, sampler=sampler, generator=generator,
                                        pin_memory=on_cuda)
        lr = learning_rate(recipe, epoch, state["plateau"]["scale"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        set_trainable(model, spec, recipe, epoch)
        train_model.train()
        freeze_batchnorm(model, recipe)
        total_loss, correct, seen, started = 0.0, 0, 0, time.time()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not progress, leave=False)
        for images, labels, _ in bar:
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            mixed, lam = recipe.mixup_alpha > 0 and images.shape[0] > 1, 1.0
            if mixed:
                lam = float(np.random.beta(recipe.mixup_alpha, recipe.mixup_alpha))
                perm = torch.randperm(images.shape[0], device=images.device)
                images = lam * images + (1 - lam) * images[perm]
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_cuda), features_in(model):
                output = train_model(images)
                outputs = output if isinstance(output, (tuple, list)) else (output,)
                loss = 0.0
                for weight, out in zip((1.0, recipe.aux_weight), outputs):
                    term = criterion(out.float(), labels)
                    if mixed:
                        term = lam * term + (1 - lam) * criterion(out.float(), labels[perm])
                    loss = loss + weight * term
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update_parameters(model)
            total_loss += loss.item() * labels.shape[0]
            correct += (logits_of(output).argmax(1) == labels).sum().item()
            seen += labels.shape[0]
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        if world > 1:
            totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            total_loss, correct, seen = totals.tolist()

        # validation on rank 0; the others wait at the barrier
        if rank == 0:
            with features_in(evaluated):
                probs, labels = predict_loader(evaluated, val_loader, device=device, desc="validating",
                                               progress=progress)
            val = compute_metrics(labels, probs, classes, top_k=())
            val_loss = negative_log_likelihood(probs, labels)
            record = {"epoch": epoch + 1, "lr": lr, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                      "val_loss": val_loss, "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                      "seconds": round(time.time() - started, 1)}
            state["history"].append(record)
            update_plateau(state["plateau"], val_loss, recipe)
            improved = val["accuracy"] > state["best_accuracy"]
            if improved:
                state["best_accuracy"], state["best_epoch"] = val["accuracy"], epoch
                artifacts.save_weights(run_dir / artifacts.WEIGHTS, evaluated, args.save_dtype)
            state["epoch"] = epoch + 1
            artifacts.write_json(run_dir / artifacts.HISTORY, state["history"])
            save_checkpoint(checkpoint_path, model, optimizer, state, average)
            log(f"epoch {epoch + 1:3d}/{recipe.epochs}  lr {lr:.2e}  train loss {record['train_loss']:.3f} "
                f"acc {record['train_accuracy']:.3f}  val loss {val_loss:.3f} acc {val['accuracy']:.3f} "
                f"F1 {val['macro_f1']:.3f}  {record['seconds']:.0f}s{'  *best*' if improved else ''}", rank)
        if world > 1:
            flags = torch.tensor([state["epoch"], state["best_epoch"]], device=device)
            dist.broadcast(flags, 0)
            state["epoch"], state["best_epoch"] = int(flags[0]), int(flags[1])
        if recipe.patience and epoch - state["best_epoch"] >= recipe.patience:
            log(f"early stop: no better val accuracy for {recipe.patience} epochs", rank)
            break

    # final evaluation of the best weights on val and test, written into the run
    if rank == 0:
        artifacts.load_weights(run_dir / artifacts.WEIGHTS, model, run_dir.name)
        card["epochs_trained"], card["best_epoch"] = state["epoch"], state["best_epoch"] + 1
        for split in ("val", "test"):
            if (manifest["split"] == split).any():
                metrics, predictions = evaluate_split(model, card, index.root, manifest, split, tta=recipe.tta,
                                                      device=device, batch_size=recipe.batch_size,
                                                      workers=args.workers, progress=progress)
                card = write_evaluation(run_dir, card, metrics, predictions)
                log(f"{split}: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}"
                    f"{'  (flip TTA)' if recipe.tta else ''}", rank)
        log(f"run written to {run_dir}", rank)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


if __name__ == "__main__":
    main()
