"""Rebuild the demo bundle in assets/runs from sports15 (`make demo-models` on CPU; `--device cuda` on a GPU).

All models share one split manifest, so they are tested on the same images. On a CPU the recipes are the
groups' recipes shortened to fit its budget (DEMO_RUNS); with `--device cuda` the pretrained EfficientNets
and MobileNetV2 fine-tune every layer instead (GPU_RUNS). Each card records exactly what was run.

    python -m train.demo_models --data ../shared/data/sports15 --out assets/runs [--only resnet50,vgg16]
    python -m train.demo_models --device cuda --workers 3 --only efficientnet_lite2,efficientnet_lite1,mobilenet_v2
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

from har_core.models import artifacts
from har_core.data import fileio
from har_core.evaluation.ensemble import pretrained_runs, stored_metrics
from har_core.data.datasets import make_split, scan, write_manifest
from har_core.retrieval.embeddings import EMBEDDINGS
from har_core.models.export import copy_for_export, export_run
from har_core.retrieval.projection import MAP_FILE
from har_core.models.registry import REGISTRY
from har_core.retrieval.search import INDEX_FILE, INDEX_INFO
from train import train

# name -> (model, training flags, note for the card)
EFFICIENTNET_TAIL = "blocks.4,blocks.5,blocks.6,conv_head,bn2,classifier"
# Full fine-tuning is out of a 2-core CPU's reach (depthwise-conv backward is slow there), so the
# pretrained models train their head, then their last stages, on cached trunk features
# (README: "Cached trunk"): the frozen early stages run once per augmented view, not once per step.
CACHED_TAIL = ["--recipe", "efficientnet_b1", "--pretrained", "offline", "--cached-views", "8",
               "--batch-size", "32", "--lr", "1e-2", "--scheduler", "cosine", "--augment", "rrc,flip,color",
               "--mixup-alpha", "0", "--patience", "0", "--save-dtype", "float16"]
CACHED_NOTE = ("the B1 recipe (label smoothing 0.1, two stages, flip TTA) shortened for a CPU: the frozen "
               "trunk runs once on 8 augmented views of each training image (random crop, flip, colour), "
               "then {head} epochs train the head and {tail} epochs fine-tune {what}; mixup and RandAugment "
               "dropped, since they need the full 25 epochs.")
DEMO_RUNS = {
    "efficientnet_lite2": ("efficientnet_lite2", [
        *CACHED_TAIL, "--epochs", "12", "--freeze-epochs", "4", "--finetune-lr", "5e-4", "--bn-frozen", "true",
        "--ema-decay", "0.98", "--trainable", EFFICIENTNET_TAIL],
        "EfficientNet-Lite2 from ImageNet weights (the largest EfficientNet available offline), "
        + CACHED_NOTE.format(head=4, tail=8, what="the last three stages (blocks.4–6) and the head conv, every "
                             "batch norm keeping its ImageNet statistics")
        + " The weights kept are a moving average over the training steps (EMA, decay 0.98)."),
    "efficientnet_lite1": ("efficientnet_lite1", [
        *CACHED_TAIL, "--epochs", "12", "--freeze-epochs", "4", "--finetune-lr", "5e-4",
        "--trainable", EFFICIENTNET_TAIL],
        "Offline stand-in for EfficientNet-B1: EfficientNet-Lite1 from ImageNet weights with "
        + CACHED_NOTE.format(head=4, tail=8, what="the last three stages (blocks.4–6) and the head conv")),
    "mobilenet_v2": ("mobilenet_v2", [
        *CACHED_TAIL, "--epochs", "11", "--freeze-epochs", "3", "--finetune-lr", "5e-4",
        "--trainable", "features.14,features.15,features.16,features.17,features.18,classifier"],
        "MobileNetV2 from torchvision's exact ImageNet weights, "
        + CACHED_NOTE.format(head=3, tail=8, what="features.14–18")),
    "inception_v3": ("inception_v3", [
        *CACHED_TAIL, "--epochs", "8", "--freeze-epochs", "3", "--finetune-lr", "3e-4",
        "--trainable", "Mixed_7a,Mixed_7b,Mixed_7c,AuxLogits,fc", "--aux-weight", "0.4"],
        "InceptionV3 from Google's 2015 ImageNet backbone, "
        + CACHED_NOTE.format(head=3, tail=5, what="Mixed_7a–7c with the auxiliary head")),
    "custom_cnn": ("custom_cnn", [
        "--pretrained", "none", "--epochs", "10", "--image-size", "128", "--lr", "2e-3", "--warmup-epochs", "2",
        "--patience", "0", "--save-dtype", "float16"],
        "From scratch, as the groups do; 128 px and 10 epochs to fit a CPU budget (the groups: 256 px, 40 epochs)."),
    "resnet50": ("resnet50", [
        "--pretrained", "none", "--trainable", "all", "--epochs", "10", "--image-size", "96",
        "--optimizer", "adamw", "--lr", "1e-3", "--scheduler", "cosine", "--warmup-epochs", "1",
        "--label-smoothing", "0.1", "--save-dtype", "int8", "--teacher", "{teachers}"],
        "DISTILLED, no ImageNet weights: no ResNet50 weights exist offline here, so it learned from random "
        "initialisation to match the mean probabilities of pretrained runs ({teacher_names}; T 4; InceptionV3 "
        "left out for its CPU cost) on the same augmented views; 96 px, 10 epochs on CPU, the recipe of its "
        "from-scratch predecessor (val 0.451, test 0.506); weights stored as int8 to fit the bundle. With "
        "ImageNet weights the groups reach ~82% on HAR."),
    "vgg16": ("vgg16", [
        "--pretrained", "none", "--trainable", "all", "--freeze-epochs", "0", "--epochs", "10",
        "--image-size", "96", "--optimizer", "adamw", "--lr", "1e-4", "--scheduler", "cosine",
        "--warmup-epochs", "1", "--save-dtype", "int8", "--teacher", "{teachers}"],
        "DISTILLED, no ImageNet weights: no VGG16 weights exist offline here, so it learned from random "
        "initialisation to match the mean probabilities of pretrained runs ({teacher_names}; T 4; InceptionV3 "
        "left out for its CPU cost) on the same augmented views; 96 px, 10 epochs on CPU, the recipe of its "
        "from-scratch predecessor (val 0.185, test 0.149; at lr 3e-4 this plain 13-conv network without batch "
        "norm did not leave chance level, at 1e-4 it starts to learn); weights stored as int8 to fit the bundle."),
}


# The from-scratch models learn from these pretrained runs (`{teachers}` in their flags). InceptionV3 is the
# fourth pretrained run but not a teacher: its 299-px forwards would cost a CPU epoch about twice as much as
# the three others together (ONNX Runtime, batch 64: 18.5 images/s against 86, 103 and 219; bench.deploy).
DISTILL_TEACHERS = ("efficientnet_lite2", "efficientnet_lite1", "mobilenet_v2")

# With a GPU the pretrained models fine-tune every layer instead. The bundled EfficientNet-Lite1/Lite2
# and MobileNetV2 runs were trained so on a lent H100 (`--device cuda`), each chosen by val accuracy among
# a few recipes and seeds (README: "Demo models"); the seed each run used is pinned here.
FULL_FINETUNE = ["--recipe", "efficientnet_b1", "--pretrained", "offline", "--epochs", "30", "--batch-size", "32",
                 "--optimizer", "adamw", "--weight-decay", "1e-2", "--lr", "1e-3", "--freeze-epochs", "3",
                 "--finetune-lr", "2e-4", "--scheduler", "cosine", "--warmup-epochs", "1", "--trainable", "all",
                 "--bn-frozen", "true", "--ema-decay", "0.99", "--augment", "rrc,flip,color", "--mixup-alpha", "0",
                 "--patience", "0", "--save-dtype", "float16"]
FULL_FINETUNE_NOTE = ("{what} from ImageNet weights, fully fine-tuned on a GPU: the B1 recipe's two stages "
                      "(3 epochs train the head at lr 1e-3, then 27 epochs train every layer at 2e-4, AdamW, "
                      "cosine) with label smoothing 0.1, random crop, flip and colour, batch norms keeping their "
                      "ImageNet statistics, an EMA of the weights (decay 0.99) and flip TTA; mixup and "
                      "RandAugment dropped (they scored lower on val here).")
GPU_RUNS = {
    "efficientnet_lite2": ("efficientnet_lite2", [*FULL_FINETUNE, "--seed", "4"],
                           FULL_FINETUNE_NOTE.format(what="EfficientNet-Lite2 (the largest EfficientNet available offline)")),
    "efficientnet_lite1": ("efficientnet_lite1", [*FULL_FINETUNE, "--seed", "0"],
                           FULL_FINETUNE_NOTE.format(what="Offline stand-in for EfficientNet-B1: EfficientNet-Lite1")),
    "mobilenet_v2": ("mobilenet_v2", [*FULL_FINETUNE, "--seed", "1"],
                     FULL_FINETUNE_NOTE.format(what="MobileNetV2 (torchvision's exact weights)")),
}


BUNDLE_BUDGET = 120 * 2**20  # bytes: the whole of assets/runs (120 MiB)
ANALYSIS_FILES = (EMBEDDINGS, MAP_FILE, INDEX_FILE, INDEX_INFO)  # recomputable: the app embeds on demand


def bundle_bytes(runs_dir: Path) -> int:
    return sum(f.stat().st_size for f in Path(runs_dir).rglob("*") if f.is_file() and "checkpoint" not in f.parts)


def keep_embeddings_within_budget(runs_dir: Path, budget: int = BUNDLE_BUDGET) -> list[str]:
    """Ship embeddings only while the bundle stays within its budget: the best runs (test accuracy) keep
    theirs, the others' are removed (the app computes them on demand). Returns the runs that keep them."""
    runs, _ = artifacts.find_runs(runs_dir)
    runs.sort(key=lambda r: -r.card.get("metrics", {}).get("test", {}).get("accuracy", 0))
    analysis = {run.name: sum((run.path / f).stat().st_size for f in ANALYSIS_FILES if (run.path / f).is_file())
                for run in runs}
    total, kept = bundle_bytes(runs_dir) - sum(analysis.values()), []
    for run in runs:
        if analysis[run.name] and total + analysis[run.name] <= budget:
            total += analysis[run.name]
            kept.append(run.name)
        else:
            for name in ANALYSIS_FILES:
                (run.path / name).unlink(missing_ok=True)
    return kept


def comparison_table(runs_dir: Path) -> str:
    runs, _ = artifacts.find_runs(runs_dir)
    ensemble = stored_metrics(pretrained_runs(runs))
    lines = ["| model | params | input | pretrained | epochs | test accuracy | test macro-F1 | flip TTA |",
             "|---|---:|---:|---|---:|---:|---:|:-:|"]
    for run in sorted(runs, key=lambda r: -r.card.get("metrics", {}).get("test", {}).get("accuracy", 0)):
        card, test = run.card, run.card.get("metrics", {}).get("test", {})
        lines.append(f"| {run.name} | {card.get('parameters', 0) / 1e6:.1f}M | {card['input_size']} | "
                     f"{card['pretrained'].split(' (')[0]}{', distilled' if card.get('distillation') else ''} | "
                     f"{card.get('epochs_trained', '?')} | "
                     f"{test.get('accuracy', float('nan')):.3f} | {test.get('macro_f1', float('nan')):.3f} | "
                     f"{'yes' if test.get('tta') else 'no'} |")
    if ensemble:
        lines.append(f"| **ensemble** of {', '.join(ensemble['runs'])} | | | | | {ensemble['accuracy']:.3f} | "
                     f"{ensemble['macro_f1']:.3f} | as stored |")
    return "\n".join(lines) + "\n"


def write_into_readme(table: str, readme: Path = Path("README.md")) -> None:
    """Replace the table between the demo-table markers of the README."""
    text = readme.read_text()
    start, end = "<!-- demo-table -->\n", "<!-- /demo-table -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        fileio.atomic_write_text(readme, head + start + table + end + rest.split(end, 1)[1])


# With a network, the groups' real recipes start from the published ImageNet weights (`--pretrained hub`):
# slot -> (run name, model, flags, note). Without one, the slot falls back to its DEMO_RUNS entry.
HUB_RUNS = {
    "efficientnet_lite1": ("efficientnet_b1", "efficientnet_b1", ["--recipe", "efficientnet_b1", "--pretrained", "hub"],
                           "EfficientNet-B1 from timm's ImageNet weights with the groups' B1 recipe."),
    "resnet50": ("resnet50", "resnet50", ["--recipe", "resnet50", "--pretrained", "hub", "--save-dtype", "int8"],
                 "ResNet50 from torchvision's ImageNet weights with the groups' recipe (layer4 and fc trained)."),
    "vgg16": ("vgg16", "vgg16", ["--recipe", "vgg16", "--pretrained", "hub", "--save-dtype", "int8"],
              "VGG16 from torchvision's ImageNet weights with the groups' two-stage recipe."),
}
HUB_HOSTS = {"torchvision": "download.pytorch.org", "timm": "huggingface.co"}


def hub_reachable(model: str, timeout: float = 3.0) -> bool:
    """Whether the host of the model's published weights answers (no download yet)."""
    host = HUB_HOSTS[REGISTRY[model].hub.partition(":")[0]]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def train_slot(name: str, args, out: Path, split_path: Path, hub: str) -> tuple[Path, str]:
    """Train one bundle slot; returns the run folder and where its starting point came from."""
    common = ["--data", args.data, "--out", str(out), "--split", str(split_path), "--seed", str(args.seed),
              "--workers", args.workers, "--device", args.device]
    if name in HUB_RUNS and hub != "never":
        run_name, model, flags, note = HUB_RUNS[name]
        if hub == "always" or hub_reachable(model):
            try:
                return finish(train.main(["--model", model, "--name", run_name, *common, *flags]), note), "hub"
            except SystemExit as error:  # a download that failed halfway: the offline way still works
                print(f"{name}: hub weights could not be used ({error}); falling back")
        else:
            print(f"{name}: {HUB_HOSTS[REGISTRY[model].hub.partition(':')[0]]} is not reachable; falling back")
    recipes = GPU_RUNS if args.device.startswith("cuda") and name in GPU_RUNS else DEMO_RUNS
    model, flags, note = recipes[name]
    if "{teachers}" not in flags:
        source = "offline" if REGISTRY[model].offline else "scratch"
        return finish(train.main(["--model", model, "--name", name, *common, *flags]), note), source
    teachers = [run for run in pretrained_runs(artifacts.find_runs(out)[0]) if run.name in DISTILL_TEACHERS]
    if not teachers:
        raise SystemExit(f"error: {name} is distilled from {', '.join(DISTILL_TEACHERS)}: train those first")
    note = note.replace("{teacher_names}", ", ".join(run.name for run in teachers))
    with tempfile.TemporaryDirectory() as tmp, teachers_exported(teachers, Path(tmp), args) as paths:
        run_dir = train.main(["--model", model, "--name", name, *common,
                              *[f.replace("{teachers}", ",".join(paths)) for f in flags]])
    card = artifacts.read_json(run_dir / artifacts.CARD)  # the copies were the bundle's runs: name those
    bundled = [str(run.path) for run in teachers]
    card["recipe"]["teacher"], card["distillation"]["teacher_paths"] = ",".join(bundled), bundled
    card["distillation"]["labelled_through"] = "PyTorch" if paths == bundled else "ONNX Runtime (checked exports)"
    fileio.write_json(run_dir / artifacts.CARD, card)
    return finish(run_dir, note), "distilled"


@contextlib.contextmanager
def teachers_exported(teachers: list, tmp: Path, args):
    """On a CPU the teachers label through ONNX Runtime (2–6× faster here): checked exports of copies of them
    (the bundle's own folders stay as they are); on a GPU they run in PyTorch."""
    if args.device.startswith("cuda"):
        yield [str(run.path) for run in teachers]
        return
    paths = []
    for run in teachers:
        copy = copy_for_export(run.path, tmp)
        export_run(copy, data=args.data)
        paths.append(str(copy))
    previous = os.environ.get("HAR_BACKEND")
    os.environ["HAR_BACKEND"] = "onnxruntime"
    try:
        yield paths
    finally:
        if previous is None:
            os.environ.pop("HAR_BACKEND", None)
        else:
            os.environ["HAR_BACKEND"] = previous


def finish(run_dir: Path, note: str) -> Path:
    card = artifacts.read_json(run_dir / artifacts.CARD)
    card["notes"] = note
    fileio.write_json(run_dir / artifacts.CARD, card)
    return run_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/sports15")
    parser.add_argument("--out", default="assets/runs")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", default="1", help="DataLoader workers per run")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (cuda: full fine-tuning of the pretrained "
                        "EfficientNets and MobileNetV2, as bundled)")
    parser.add_argument("--hub", default="auto", choices=("auto", "always", "never"),
                        help="published ImageNet weights for EfficientNet-B1, ResNet50 and VGG16 (auto: when the "
                        "download host answers)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    split_path = out / "split.csv"
    if not split_path.exists():
        write_manifest(make_split(scan(args.data), seed=args.seed), split_path)
    names = [n for n in args.only.split(",") if n] or list(DEMO_RUNS)
    sources = {}
    for name in names:
        started = time.time()
        run_dir, sources[name] = train_slot(name, args, out, split_path, args.hub)  # a --seed in flags pins it
        card = artifacts.read_json(run_dir / artifacts.CARD)
        card["source"] = sources[name]
        card["training_minutes"] = round((time.time() - started) / 60, 1)
        fileio.write_json(run_dir / artifacts.CARD, card)
    for name, source in sources.items():
        print(f"{name}: {source}")
    kept = keep_embeddings_within_budget(out)
    print(f"embeddings shipped for {', '.join(kept) or 'no run'} (bundle {bundle_bytes(out) / 1e6:.1f} MB of "
          f"{BUNDLE_BUDGET / 1e6:.0f} MB)")
    table = comparison_table(out)
    fileio.atomic_write_text(out / "MODELS.md", "# Demo models (sports15 test split)\n\n" + table)
    write_into_readme(table)
    print(table)


if __name__ == "__main__":
    main()
