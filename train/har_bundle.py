"""Rebuild the HAR bundle: every run's recipe in order, then what the pages need of each run.

    python -m train.har_bundle --data ../shared/data/har --out ~/har-train/runs [--device cuda] [--only NAME ...]
    python -m train.har_bundle --data DIR --out ~/har-train/runs --copy-to assets/runs_har   # ship finished runs
    python -m train.har_bundle --list                                                     # the recipes, no work

Runs train in the order below (teachers before their students) into --out, all on one split manifest (--split,
default: the bundle's own assets/runs_har/split.csv, which keeps half of val for calibration). Each step is
resumable: a finished run is skipped, a stopped one continues with --resume from its last epoch (its checkpoint
and its cached views live in --out and in HAR_TRAIN_DIR, default ~/har-train, outside the project), and an
artefact already written is not computed again. After training: the 128-d embeddings with their map, the
channel tops (Inside), robustness on 40 test pictures a class; calibration and val/test predictions are
written by train.train itself. The commands are the ones a user with a GPU runs (add --device cuda).
With --copy-to, every finished run's folder is copied there without its checkpoint (float16 weights).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from har_core.models import artifacts

BUNDLE_SPLIT = Path(__file__).resolve().parents[1] / "assets" / "runs_har" / "split.csv"
FLOAT16 = ["--save-dtype", "float16"]  # half the size; val within 0.1 point of float32 on the bundled runs


@dataclass(frozen=True)
class BundleRun:
    name: str
    model: str
    recipe: dict  # har_core.models.registry.Recipe fields, as on the run's card
    teachers: tuple[str, ...] = ()  # runs of this bundle that teach it (trained first)
    why: str = ""
    image_size: int = 0  # 0: the model's own input size
    rival: str = ""  # a run of the same model by another recipe: --copy-to ships only the better of the two on val

    @property
    def epochs(self) -> int:
        return self.recipe["epochs"]

    @property
    def flags(self) -> list[str]:
        flags = ["--image-size", str(self.image_size)] if self.image_size else []
        for key, value in self.recipe.items():
            flags += [f"--{key.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
        return flags


TWO_STAGES = dict(optimizer="adam", lr=1e-2, weight_decay=1e-4, scheduler="cosine", label_smoothing=0.1,
                  mixup_alpha=0.0, augment="rrc,flip,color", weighted_sampler=False, freeze_epochs=3, patience=0,
                  tta=True, bn_frozen=True, ema_decay=0.98)
EFFICIENTNET = dict(TWO_STAGES, trainable="blocks.4,blocks.5,blocks.6,conv_head,bn2,classifier", finetune_lr=5e-4,
                    cached_views=4)
CUSTOM_CNN = dict(epochs=24, optimizer="adamw", lr=2e-3, weight_decay=1e-4, scheduler="cosine", warmup_epochs=2,
                  label_smoothing=0.1, augment="rrc,flip,randaugment", weighted_sampler=False, patience=0, tta=True)

RUNS = (
    BundleRun("efficientnet_lite2", "efficientnet_lite2", dict(EFFICIENTNET, epochs=8),
              why="ImageNet weights; stem to stage 4 frozen and cached on 4 views, stages 5-7 fine-tuned"),
    BundleRun("efficientnet_lite1", "efficientnet_lite1", dict(EFFICIENTNET, epochs=7),
              why="ImageNet weights; the same two stages as Lite2"),
    BundleRun("vgg16", "vgg16", dict(TWO_STAGES, epochs=6, lr=1e-3, freeze_epochs=2, bn_frozen=False,
                                     trainable="features.24,features.26,features.28,head", finetune_lr=5e-5,
                                     cached_views=2), image_size=160,
              why="Oxford's ImageNet conv weights; blocks 1-4 cached, block 5 and the head trained at 160 px"),
    BundleRun("inception_v3", "inception_v3", dict(TWO_STAGES, epochs=8, finetune_lr=3e-4, cached_views=3,
                                                   trainable="Mixed_7a,Mixed_7b,Mixed_7c,AuxLogits,fc"),
              why="the 2015 ImageNet backbone; stem to Mixed_6e cached on 3 views, Mixed_7a-7c and both heads trained"),
    BundleRun("custom_cnn", "custom_cnn", CUSTOM_CNN, image_size=128,
              why="the groups' five-block CNN from a random start, at 128 px (the groups: 256 px)"),
    BundleRun("custom_cnn_taught", "custom_cnn", dict(CUSTOM_CNN, cached_views=4, distill_temperature=2.0,
                                                      distill_weight=1.0),
              teachers=("efficientnet_lite2", "efficientnet_lite1"), image_size=128, rival="custom_cnn",
              why="the same CNN and recipe, taught by the pretrained EfficientNets on 4 fixed views of every "
                  "picture (their logits computed once); the bundle keeps whichever of the two is better on val"),
    BundleRun("resnet50", "resnet50", dict(epochs=12, pretrained="none", optimizer="adamw", lr=2e-3, weight_decay=0.05,
                                           scheduler="cosine", warmup_epochs=2, trainable="all", label_smoothing=0.0,
                                           augment="rrc,flip,randaugment", mixup_alpha=0.0, cached_views=4,
                                           distill_temperature=2.0, distill_weight=1.0, patience=0, tta=True,
                                           precision="bf16"),
              teachers=("efficientnet_lite2", "efficientnet_lite1"), image_size=128,
              why="no ResNet50 weights offline: a random start taught by the pretrained EfficientNets on the custom "
                  "CNN's 4 fixed views of every picture (their logits computed once), in bfloat16 on the CPU"),
)


def finished(run_dir: Path, run: BundleRun) -> bool:
    card_path = run_dir / artifacts.CARD
    if not card_path.is_file():
        return False
    card = json.loads(card_path.read_text())
    return card.get("epochs_trained", 0) >= run.epochs and "test" in card.get("metrics", {})


def train_command(run: BundleRun, data: str, out: Path, split: Path, device: str) -> list[str]:
    run_dir = out / run.name
    argv = ["--model", run.model, "--data", data, "--out", str(out), "--name", run.name, *FLOAT16]
    if (run_dir / artifacts.CHECKPOINT_DIR / "last.safetensors").is_file():
        return [*argv, "--resume", "--epochs", str(run.epochs), "--device", device]
    teachers = ["--teacher", ",".join(str(out / t) for t in run.teachers)] if run.teachers else []
    return [*argv, "--split", str(split), *run.flags, *teachers, "--device", device, "--quiet"]


def artefact_steps(run_dir: Path, data: str, device: str) -> list[tuple[str, str, list[str]]]:
    """(what, module, argv) for each missing artefact of a trained run."""
    steps = []
    if not (run_dir / "embedding_map.safetensors").is_file():
        steps.append(("embeddings and their map", "train.embed",
                      [str(run_dir), "--data", data, "--map", "--reduce", "128", "--device", device]))
    if not (run_dir / "channels.safetensors").is_file():
        steps.append(("channel tops", "train.embed", [str(run_dir), "--data", data, "--channels", "--device", device]))
    if not (run_dir / "robustness.csv").is_file():
        steps.append(("robustness on the test split", "train.robustness",
                      [str(run_dir), "--data", data, "--split", "test", "--per-class", "40", "--device", device,
                       "--out", str(run_dir / "robustness_all.csv")]))
    return steps


def run_module(module: str, argv: list[str]) -> None:
    """A step in this process: the modules' main(argv) (each CLI parses its own arguments)."""
    import importlib
    main = importlib.import_module(module).main
    print(f"$ python -m {module} {' '.join(argv)}", flush=True)
    result = main(argv)
    if isinstance(result, int) and result != 0:
        raise SystemExit(result)


def bundle_run(name: str) -> BundleRun:
    return next(run for run in RUNS if run.name == name)


def last_val_accuracy(run_dir: Path) -> float:
    """Val accuracy on the checkpoint-choice half at the run's last epoch (history.json): the rule between rivals,
    fixed before either finished."""
    return json.loads((run_dir / "history.json").read_text())[-1]["val_accuracy"]


def without_beaten_rivals(out: Path, names: list[str]) -> list[str]:
    """The runs to ship: of two rivals that are both finished, only the one better on val."""
    keep = list(names)
    for run in RUNS:
        pair = [run.name, run.rival]
        if not run.rival or not all(finished(out / name, bundle_run(name)) for name in pair):
            continue
        loser, winner = sorted(pair, key=lambda name: last_val_accuracy(out / name))
        if loser in keep:
            keep.remove(loser)
            print(f"{loser} is not shipped: {winner} is better on val", flush=True)
    return keep


def copy_finished(out: Path, target: Path, names: list[str]) -> None:
    for name in names:
        source = out / name
        dest = target / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns(artifacts.CHECKPOINT_DIR, "*.onnx",
                                                                   "robustness_all.csv"))
        print(f"copied {name} to {dest}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the Kaggle HAR folder (Training_set.csv + train/)")
    parser.add_argument("--out", type=Path, help="folder of run folders (keep it outside the project)")
    parser.add_argument("--split", type=Path, default=BUNDLE_SPLIT, help="the split manifest every run shares")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--only", nargs="+", choices=[r.name for r in RUNS], help="these runs only (in bundle order)")
    parser.add_argument("--copy-to", type=Path, help="copy every finished run here (without its checkpoint)")
    parser.add_argument("--list", action="store_true", help="print each run's command and stop")
    args = parser.parse_args(argv)
    if not args.list and (not args.data or not args.out):
        parser.error("--data and --out are needed (or --list)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    chosen = [r for r in RUNS if not args.only or r.name in args.only]
    out = args.out or Path("RUNS")
    if args.list:
        for run in chosen:
            command = train_command(run, args.data or "DATA", out, args.split, args.device)
            print(f"# {run.name}: {run.why or run.model}\npython -m train.train {' '.join(command)}\n")
        return 0
    if not Path(args.data).is_dir():
        raise SystemExit(f"error: no data folder at {args.data}")
    if not args.split.is_file():
        raise SystemExit(f"error: no split manifest at {args.split}")
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for number, run in enumerate(chosen, 1):
        run_dir = out / run.name
        missing = [t for t in run.teachers if not finished(out / t, bundle_run(t))]
        if missing:
            print(f"[{number}/{len(chosen)}] {run.name}: waits for its teachers {', '.join(missing)}", flush=True)
            continue
        if finished(run_dir, run):
            print(f"[{number}/{len(chosen)}] {run.name}: trained", flush=True)
        else:
            print(f"[{number}/{len(chosen)}] {run.name}: training ({run.why or run.model})", flush=True)
            run_module("train.train", train_command(run, args.data, out, args.split, args.device))
        for what, module, argv in artefact_steps(run_dir, args.data, args.device):
            print(f"[{number}/{len(chosen)}] {run.name}: {what}", flush=True)
            run_module(module, argv)
        done.append(run.name)
    if args.copy_to:
        copy_finished(out, args.copy_to, without_beaten_rivals(out, done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
