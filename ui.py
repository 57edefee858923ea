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

from har_core import artifacts
from har_core.analysis import dataset_summary, thumbnail
from har_core.artifacts import Run, RunError
from har_core.imaging import ImageError, load_image, safe_name
from har_core.inference import LoadedModel, load_run

ROOT = Path(__file__).resolve().parent
DEMO_RUNS = ROOT / "assets" / "runs"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sports15"
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp"]


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


def thumb(selection: Selection, filename: str, size: int = 160):
    """A thumbnail of a data-set image, only from inside the configured image folder."""
    if selection.data_root is None:
        return None
    root = selection.data_root.resolve()
    path = (root / filename).resolve()
    if root not in path.parents:
        return None
    return _thumb(str(path), size)


def _remembered(widget, label: str, key: str, default, **kwargs):
    """A sidebar widget whose value survives page switches (each page renders the sidebar anew)."""
    value = widget(label, st.session_state.get(f"keep_{key}", default), key=key, **kwargs)
    st.session_state[f"keep_{key}"] = value
    return value


@st.cache_data(show_spinner="Reading the data set…", max_entries=8)
def _dataset(root: str) -> dict:
    return dataset_summary(root)


def dataset(root: Path) -> dict:
    return _dataset(str(root))


def sidebar() -> Selection:
    """Runs and image folder, chosen in the sidebar; every page starts by calling this."""
    with st.sidebar:
        runs_dir = _remembered(st.text_input, "Runs folder", "runs_dir", os.environ.get("HAR_RUNS", str(DEMO_RUNS)),
                               help="A folder of run folders written by `python -m train.train` (or one run).")
        found, failures = artifacts.find_runs(runs_dir)
        names = [run.name for run in found]
        kept = [n for n in st.session_state.get("keep_chosen_runs", names) if n in names]
        chosen = st.multiselect("Runs to show", names, default=kept, key="chosen_runs")
        st.session_state["keep_chosen_runs"] = chosen
        default_data = os.environ.get("HAR_DATA", str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else "")
        data_dir = _remembered(st.text_input, "Image folder (optional)", "data_dir", default_data,
                               help="The data set the runs were trained on; enables thumbnails and samples.")
        data_root = Path(data_dir) if data_dir and Path(data_dir).is_dir() else None
        if data_dir and data_root is None:
            st.caption(f"⚠️ image folder not found: {data_dir}")
        if not found:
            st.warning(f"No runs in {runs_dir}.")
        for name, reason in failures:
            st.error(f"Run **{name}** could not be loaded: {reason}", icon="⚠️")
    return Selection(runs=[run for run in found if run.name in chosen], data_root=data_root)


def need_runs(selection: Selection) -> None:
    if not selection.runs:
        st.info("No runs selected. Choose a runs folder in the sidebar (default: the bundled demo runs).")
        st.stop()


@contextmanager
def friendly(what: str):
    """Show a one-line message instead of a traceback; the rest of the page keeps working."""
    try:
        yield
    except (RunError, ImageError, ValueError, OSError) as error:
        st.error(f"{what}: {error}")
    except Exception as error:  # noqa: BLE001 - a classroom never sees a traceback
        st.error(f"{what} failed: {type(error).__name__}: {error}")


def read_uploads(files) -> tuple[list, list[str]]:
    """Decode uploaded files through the guarded decoder; report the ones that fail."""
    images, names = [], []
    for upload in files or []:
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
    return [f for f in files if (selection.data_root / f).is_file()]


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
    if picked and picked != "—":
        with friendly(f"Reading {picked}"):
            images.append(load_image(selection.data_root / picked))
            names.append(picked)
    return images, names
