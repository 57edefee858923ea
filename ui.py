"""What every page shares: the sidebar (runs, image folder), cached loading, friendly errors.

Pages are layout and widgets; the computations are in har_core. This module only wires
har_core to Streamlit's caches and turns failures into one-line messages.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from har_core import artifacts, cam, server
from har_core.analysis import dataset_summary, thumbnail
from har_core.artifacts import Run, RunError
from har_core.cam import Busy
from har_core.data import DataError
from har_core.ensemble import default_members
from har_core.imaging import IMAGE_SUFFIXES, ImageError, load_image, safe_name
from har_core.inference import LoadedModel, load_run

ROOT = Path(__file__).resolve().parent
IMAGE_TYPES = [suffix[1:] for suffix in IMAGE_SUFFIXES]  # the uploader takes every format the decoder reads


@st.cache_resource
def _config(*environment) -> server.ServerConfig:
    settings = server.load_config()
    cam.SLOW_SLOTS.resize(settings.slow_cam_slots)
    return settings


def config() -> server.ServerConfig:
    """The operator's settings (har_core.server), read once per server process and environment."""
    return _config(*(os.environ.get(k, "") for k in ("HAR_CONFIG", "HAR_RUNS", "HAR_DATA", "HAR_FREE_PATHS")))


@dataclass
class Selection:
    runs: list[Run] = field(default_factory=list)
    data_root: Path | None = None

    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    def run(self, name: str) -> Run:
        return next(run for run in self.runs if run.name == name)


@st.cache_resource(show_spinner="Loading model…", max_entries=32)
def _load_model(path: str, stamp: float) -> LoadedModel:
    loaded = load_run(path)
    print(f"HAR Studio: loaded model {loaded.name}", flush=True)  # once per process: visible in the server log
    return loaded


def model(run: Run) -> LoadedModel:
    """Each run's model is loaded once per process and shared by every session."""
    return _load_model(str(run.path), _file_stamp(run, artifacts.WEIGHTS))


def models(runs: list[Run]) -> list[LoadedModel]:
    """The runs' models; a run that fails to load is named on the page and left out."""
    loaded = []
    for run in runs:
        try:
            loaded.append(model(run))
        except RunError as error:
            st.error(str(error))
    return loaded


@st.cache_data(show_spinner=False, max_entries=256)
def _metrics(path: str, split: str, stamp: float):
    return artifacts.open_run(path).metrics(split)


@st.cache_data(show_spinner=False, max_entries=256)
def _predictions(path: str, split: str, stamp: float):
    return artifacts.open_run(path).predictions(split)


def _file_stamp(run: Run, name: str) -> float:
    path = run.path / name
    return path.stat().st_mtime if path.exists() else 0.0


def metrics(run: Run, split: str) -> dict | None:
    return _metrics(str(run.path), split, _file_stamp(run, artifacts.metrics_file(split)))


def predictions(run: Run, split: str) -> pd.DataFrame | None:
    return _predictions(str(run.path), split, _file_stamp(run, artifacts.predictions_file(split)))


@st.cache_data(show_spinner=False, max_entries=2048)
def _thumb(path: str, size: int):
    return thumbnail(Path(path), size)


def data_file(selection: Selection, filename: str) -> Path | None:
    """A file of the chosen image folder; None when there is none or the name leads outside it."""
    if selection.data_root is None:
        return None
    try:
        return server.inside(selection.data_root, filename)
    except server.OutsideRoots:
        return None


def thumb(selection: Selection, filename: str, size: int = 160):
    """A thumbnail of a data-set image, only from inside the chosen image folder."""
    path = data_file(selection, filename)
    return _thumb(str(path), size) if path is not None else None


def thumbnail_grid(selection: Selection, items: list[tuple[str, str]], columns: int = 6, size: int = 160) -> int:
    """Thumbnails of (filename, caption) pairs in a grid; files that cannot be shown are left out together
    with their captions. Returns how many were shown."""
    shown = [(image, caption) for name, caption in items if (image := thumb(selection, name, size)) is not None]
    grid = st.columns(columns)
    for i, (image, caption) in enumerate(shown):
        grid[i % columns].image(image, caption=caption)
    return len(shown)


def _remembered(widget, label: str, key: str, default, **kwargs):
    """A sidebar widget whose value survives page switches (each page renders the sidebar anew)."""
    value = widget(label, st.session_state.get(f"keep_{key}", default), key=key, **kwargs)
    st.session_state[f"keep_{key}"] = value
    return value


@st.cache_data(show_spinner="Reading the data set…", max_entries=8)
def _dataset(root: str, max_images: int) -> dict:
    return dataset_summary(root, confine=True, max_images=max_images)


def dataset(root: Path) -> dict:
    """The data-set summary, scanned once per folder; files outside it are refused, huge folders too."""
    return _dataset(str(root), config().max_scan_images)


def _folder_choice(label: str, key: str, choices: list[Path], optional: bool, help: str) -> Path | None:
    options = (["(none)"] if optional else []) + [str(path) for path in choices]
    kept = st.session_state.get(f"keep_{key}")
    index = options.index(kept) if kept in options else (1 if optional and len(options) > 1 else 0)
    if not options:
        return None
    picked = st.selectbox(label, options, index=index, key=key, help=help,
                          format_func=lambda value: value if value == "(none)" else _short(value))
    st.session_state[f"keep_{key}"] = picked
    return None if picked == "(none)" else Path(picked)


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def _free_folder(label: str, key: str, default: str, help: str) -> Path | None:
    typed = _remembered(st.text_input, label, key, default, help=help)
    if typed and not Path(typed).is_dir():
        st.caption(f"⚠️ folder not found: {typed}")
    return Path(typed) if typed and Path(typed).is_dir() else None


def sidebar() -> Selection:
    """Runs and image folder, chosen in the sidebar among the folders the operator allows; every page
    starts by calling this. Visitors never type a path unless the operator opts in to free paths."""
    settings = config()
    runs_help = "A folder of run folders written by `python -m train.train` (or one run)."
    data_help = "The data set the runs were trained on; enables thumbnails and samples."
    with st.sidebar:
        data_sets = server.data_choices(settings)
        if settings.free_paths:
            runs_dir = _free_folder("Runs folder", "runs_dir", str(settings.runs[0]) if settings.runs else "", runs_help)
            data_root = _free_folder("Image folder (optional)", "data_dir", str(data_sets[0]) if data_sets else "",
                                     data_help)
        else:
            runs_dir = _folder_choice("Runs folder", "runs_dir", list(settings.runs), False, runs_help)
            data_root = _folder_choice("Image folder", "data_dir", data_sets, True, data_help)
        found, failures = artifacts.find_runs(runs_dir, confine=not settings.free_paths) if runs_dir else ([], [])
        names = [run.name for run in found]
        kept = [n for n in st.session_state.get("keep_chosen_runs", names) if n in names]
        chosen = st.multiselect("Runs to show", names, default=kept, key="chosen_runs")
        st.session_state["keep_chosen_runs"] = chosen
        if not found:
            st.warning(f"No runs in {runs_dir}." if runs_dir else "The operator allows no runs folder.")
        for name, reason in failures:
            st.error(f"Run **{name}** could not be loaded: {reason}", icon="⚠️")
    return Selection(runs=[run for run in found if run.name in chosen], data_root=data_root)


def ensemble_members(runs: list[Run], key: str) -> list[str]:
    """The ensemble's members, chosen among `runs`; both pages start from har_core.ensemble's default."""
    return st.multiselect("Ensemble members", [run.name for run in runs], default=default_members(runs), key=key,
                          help="The ensemble averages its members' probabilities. Default: the runs that started "
                          "from ImageNet weights (when there are two or more), else all.")


def need_runs(selection: Selection) -> None:
    if not selection.runs:
        st.info("No runs selected. Choose a runs folder in the sidebar (default: the bundled demo runs).")
        st.stop()


@contextmanager
def friendly(what: str):
    """Show a one-line message instead of a traceback; the rest of the page keeps working."""
    try:
        yield
    except (RunError, ImageError, DataError, Busy, ValueError, OSError) as error:
        st.error(f"{what}: {error}")
    except Exception as error:  # noqa: BLE001 - a classroom never sees a traceback
        st.error(f"{what} failed: {type(error).__name__}: {error}")


def read_uploads(files) -> tuple[list, list[str]]:
    """Decode uploaded files through the guarded decoder; report the ones that fail. One request carries
    at most the operator's `max_batch_images`: the rest are named and left out."""
    images, names = [], []
    files, limit = list(files or []), config().max_batch_images
    if len(files) > limit:
        st.warning(f"{len(files)} images uploaded; this server predicts at most {limit} at a time, so the "
                   f"first {limit} are used.")
        files = files[:limit]
    for upload in files:
        name = safe_name(upload.name)
        try:
            images.append(load_image(upload.getvalue()))
            names.append(name)
        except ImageError as error:
            st.warning(f"**{name}**: {error}")
    return images, names


def sample_files(selection: Selection, limit: int = 200) -> list[str]:
    """Test-split images of the first run (when the image folder is known) to pick as samples."""
    if selection.data_root is None or not selection.runs:
        return []
    manifest = selection.runs[0].manifest()
    if manifest is None:
        return []
    files = manifest.loc[manifest["split"] == "test", "filename"].tolist()[:limit]
    return [f for f in files if (path := data_file(selection, f)) is not None and path.is_file()]


def image_source(selection: Selection, key: str, multiple: bool = True) -> tuple[list, list[str]]:
    """Upload, camera or a sample from the image folder: the images and their names."""
    tabs = st.tabs(["📁 Upload", "📷 Camera", "🖼️ Sample"])
    with tabs[0]:
        files = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=multiple, key=f"{key}_upload")
        files = files if isinstance(files, list) else [files] if files else []
    with tabs[1]:
        shot = st.camera_input("Take a photo", key=f"{key}_camera") if st.toggle("Use the camera", key=f"{key}_cam_on") else None
    with tabs[2]:
        samples = sample_files(selection)
        picked = st.selectbox("Sample from the test split", ["—"] + samples, key=f"{key}_sample",
                              disabled=not samples, help=None if samples else "Set an image folder in the sidebar.")
    images, names = read_uploads(files)
    if shot is not None:
        more, more_names = read_uploads([shot])
        images, names = images + more, names + more_names
    if picked and picked != "—" and (path := data_file(selection, picked)) is not None:
        with friendly(f"Reading {picked}"):
            images.append(load_image(path))
            names.append(picked)
    return images, names
