"""What a classroom server lets its visitors reach, and how much work one visitor may ask of it.

The operator names the allowed run folders and image folders; visitors choose among them and never type
a path (unless the operator opts in to free paths). Every file read for a request must resolve inside
an allowed folder, symlinks included. Settings come from a TOML file and environment variables:

    # har_studio.toml (or the file named by HAR_CONFIG)
    runs = ["assets/runs", "/srv/har/runs"]     # folders of run folders (or single runs)
    data = ["../shared/data"]                   # image folders: each, or each data set directly inside it
    free_paths = false                          # true: visitors may type any server path
    max_scan_images = 20000                     # a data folder listing more is not scanned
    max_batch_images = 32                       # images one prediction request may carry
    slow_cam_slots = 1                          # ScoreCAMs computed at once, server-wide (har_core.explain.slots)

HAR_RUNS and HAR_DATA (paths separated by ':') replace the file's lists, HAR_FREE_PATHS=1 opts in.
Relative paths in the file are relative to the file. With neither, the bundled demo runs and
../shared/data (when present) are allowed.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from har_core.data.datasets import DataError, detect_layout
from har_core.data.fileio import is_inside

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILE = ROOT / "har_studio.toml"


class OutsideRoots(ValueError):
    """A path that resolves outside every allowed folder."""


@dataclass(frozen=True)
class ServerConfig:
    runs: tuple[Path, ...]
    data: tuple[Path, ...]
    free_paths: bool = False
    max_scan_images: int = 20_000
    max_batch_images: int = 32
    slow_cam_slots: int = 1


def inside(root: str | Path, relative: str | Path) -> Path:
    """`root / relative`, resolved; refused when it leaves `root` ('..', absolute names, symlinks)."""
    path = (Path(root) / relative).resolve()
    if not is_inside(root, path):
        raise OutsideRoots(f"'{relative}' is outside the allowed folder")
    return path


def _paths(value, base: Path) -> tuple[Path, ...]:
    items = value.split(os.pathsep) if isinstance(value, str) else list(value)
    return tuple((base / item).resolve() for item in items if str(item).strip())  # an absolute item stays itself


# the runs trained on the real HAR data set (the app opens on them), then the sports15 demo runs (the suite's fast
# stand-in, and the only custom CNN, InceptionV3, ResNet50 and MobileNetV2 runs shipped until HAR has its own)
BUNDLED_RUNS = (ROOT / "assets" / "runs_har", ROOT / "assets" / "runs")


def load_config(environ=None, config_file: str | Path | None = None) -> ServerConfig:
    environ = os.environ if environ is None else environ
    path = Path(config_file or environ.get("HAR_CONFIG") or CONFIG_FILE)
    settings: dict = {}
    if path.is_file():
        try:
            settings = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path.name} is not valid TOML: {error}") from None
    base = path.parent
    shared = ROOT.parent / "shared" / "data"
    runs = _paths(environ["HAR_RUNS"], Path.cwd()) if environ.get("HAR_RUNS") else \
        _paths(settings.get("runs", [str(folder) for folder in BUNDLED_RUNS if folder.is_dir()]), base)
    data = _paths(environ["HAR_DATA"], Path.cwd()) if environ.get("HAR_DATA") else \
        _paths(settings.get("data", [str(shared)] if shared.is_dir() else []), base)
    free = environ.get("HAR_FREE_PATHS", "").lower() in ("1", "true", "yes") or bool(settings.get("free_paths", False))
    return ServerConfig(runs=runs, data=data, free_paths=free,
                        max_scan_images=int(settings.get("max_scan_images", 20_000)),
                        max_batch_images=int(settings.get("max_batch_images", 32)),
                        slow_cam_slots=int(settings.get("slow_cam_slots", 1)))


def data_choices(config: ServerConfig) -> list[Path]:
    """The image folders a visitor may pick: each allowed folder that is a data set, and each data set
    directly inside one (so allowing ../shared/data offers ../shared/data/har and sports15). A folder whose
    "classes" are themselves data sets (../shared/data holding har/, sports15/, videos/) is not offered."""
    found = []
    for root in config.data:
        layout = _layout(root)
        if layout == "kaggle":  # a Kaggle folder given directly: its train/ and test/ are no data sets (and listing
            found.append(root.resolve())  # HAR's 11,100 pictures to find that out cost 0.2 s on every page)
            continue
        children = [c for c in (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
                    if is_inside(root, c)]  # not a symlinked folder pointing elsewhere
        data_sets = [c for c in children if _layout(c)]
        if layout and not data_sets:
            found.append(root.resolve())
        found += [c.resolve() for c in data_sets]
    return list(dict.fromkeys(found))


def _layout(folder: Path) -> str | None:
    """The folder's data-set layout (har_core.data.datasets.detect_layout), None when it is no data set."""
    try:
        return detect_layout(folder)
    except (DataError, OSError):
        return None


def learned_from(folder: Path, data_roots: list[str]) -> bool:
    """Whether `folder` is a data set the runs were trained on: a card's data root, or a folder of its name here."""
    return any(recorded and (str(folder) == str(Path(recorded).resolve()) or folder.name == Path(recorded).name)
               for recorded in data_roots)


def default_data_folder(choices: list[Path], data_roots: list[str]) -> Path | None:
    """The folder the runs were trained on (`learned_from`, in the cards' order), else the first choice; None when
    there is none."""
    for recorded in data_roots:
        for choice in choices:
            if learned_from(choice, [recorded]):
                return choice
    return choices[0] if choices else None
