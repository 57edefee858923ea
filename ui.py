"""What every page shares: the sidebar (runs, image folder), cached loading, friendly errors.

Pages are layout and widgets; the computations are in har_core. This module only wires
har_core to Streamlit's caches and turns failures into one-line messages.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from har_core import artifacts, cam, server
from har_core.fileio import file_sha256
from har_core.analysis import dataset_summary, thumbnail
from har_core.artifacts import Run, RunError, run_zip
from har_core.audit import audit
from har_core.cam import Busy, ClassMaps, Explanation, class_maps
from har_core.data import DataError, listing_stamp, read_manifest, scan_cached
from har_core.embeddings import EMBEDDINGS, EmbeddingError, Embeddings, run_embeddings, staleness
from har_core.ensemble import class_groups, default_members, describe_classes
from har_core.imaging import IMAGE_SUFFIXES, ImageError, image_digest, load_image, safe_name
from har_core.backend import BACKENDS, EXPORT_FILES, LABELS, backend_from_env
from har_core.inference import LoadedModel, Prediction, load_run, predict_all, with_backend
from har_core.projection import embedding_map
from har_core.report import build_report
from har_core.teach import TaughtHead, TeachError, embed, save_head, teach
from har_core.similarity import (RETRIEVAL, SHOW_K, VOTE_K, VectorIndex, augmented, embed_run, retrieval_report,
                                 neighbours_of, training_index, vote)
from har_core.timeline import Timeline, timeline
from har_core.video import VIDEO_SUFFIXES, Clip, VideoError, read_clip, read_video_file

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
    runs_dir: Path | None = None  # where the runs were found (a new run is saved there)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (run, why): chosen runs another class list keeps out

    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    def run(self, name: str) -> Run:
        return next(run for run in self.runs if run.name == name)


@st.cache_resource(show_spinner="Loading model…", max_entries=32)
def _load_model(path: str, stamp: float) -> LoadedModel:
    loaded = load_run(path, backend="pytorch")  # each visitor's backend is applied on top (`models`)
    print(f"HAR Studio: loaded model {loaded.name}", flush=True)  # once per process: visible in the server log
    return loaded


def model(run: Run) -> LoadedModel:
    """Each run's model is loaded once per process and shared by every session."""
    return _load_model(str(run.path), _file_stamp(run, artifacts.WEIGHTS))


@st.cache_resource(show_spinner=False, max_entries=8)
def _warm_up(paths: tuple[str, ...], stamps: tuple[float, ...]) -> threading.Thread:
    def load_all():
        for path, stamp in zip(paths, stamps):
            try:
                _load_model(path, stamp)
            except Exception as error:  # noqa: BLE001 - the page that needs the model names the failure
                print(f"HAR Studio: could not preload {Path(path).name}: {error}", flush=True)
    thread = threading.Thread(target=load_all, name="har-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up(runs: list[Run]) -> None:
    """Load the image models in the background, once per server process and set of runs: the first page
    appears at once, and by the time a photo is uploaded its models are usually ready."""
    runs = [run for run in runs if not run.takes_clips]
    _warm_up(tuple(str(run.path) for run in runs), tuple(_file_stamp(run, artifacts.WEIGHTS) for run in runs))


@st.cache_resource(show_spinner=False, max_entries=64)
def _backend_model(path: str, stamps: tuple[float, ...], backend: str, _loaded: LoadedModel) -> LoadedModel:
    return with_backend(_loaded, backend)


def env_backend() -> str:
    try:
        return backend_from_env()
    except ValueError as error:
        st.toast(str(error), icon="⚠️")
        return "pytorch"


def backend() -> str:
    """The prediction backend this visitor chose in the sidebar (default: HAR_BACKEND, else PyTorch)."""
    return st.session_state.get("keep_backend") or env_backend()


def models(runs: list[Run]) -> list[LoadedModel]:
    """The runs' models, predicting through the visitor's backend; a run that fails to load is named on the
    page and left out. A run whose export cannot serve the backend predicts with PyTorch (see `backend_note`)."""
    loaded, chosen = [], backend()
    for run in runs:
        try:
            one = model(run)
        except RunError as error:
            st.error(str(error))
            continue
        if chosen != "pytorch":
            stamps = tuple(_file_stamp(run, name) for name in (artifacts.WEIGHTS, artifacts.CARD, *EXPORT_FILES.values()))
            one = _backend_model(str(run.path), stamps, chosen, one)
        loaded.append(one)
    return loaded


# ---- answers for one image: cached by the image's pixels, the model (and its weights) and the options ----

@st.cache_data(show_spinner=False, max_entries=512)
def _prediction(path: str, stamp: float, digests: tuple[str, ...], tta: bool, backend: str, _loaded: LoadedModel,
                _images: list) -> Prediction:
    return predict_all([_loaded], _images, tta=tta, embed=True)[0]


def predict(loaded: list[LoadedModel], images: list, tta: bool) -> list[Prediction]:
    """Every model's prediction (with the images' embeddings) for the images: a widget that changes neither the
    images, the models nor TTA reruns the page without a single forward pass."""
    digests = tuple(image_digest(image) for image in images)
    return [_prediction(str(m.run.path), _file_stamp(m.run, artifacts.WEIGHTS), digests, tta, m.backend, m, images)
            for m in loaded]


@st.cache_resource(show_spinner=False, max_entries=128)
def _class_maps(path: str, stamp: float, digest: str, method: str, classes: tuple | None, _loaded: LoadedModel,
                _image) -> ClassMaps:
    return class_maps(_loaded, _image, method, classes=None if classes is None else list(classes))


def explanation(loaded: LoadedModel, image, digest: str, method: str, target: int | None) -> Explanation:
    """A model's map of `target` (None: the predicted class) for the image. A fast method computes every class
    from one forward pass the first time, so moving the opacity or switching the class only picks and blends;
    a slow one (a forward per channel) computes the class asked for."""
    classes = (target,) if method in cam.SLOW_METHODS else None
    return _class_maps(str(loaded.run.path), _file_stamp(loaded.run, artifacts.WEIGHTS), digest, method, classes,
                       loaded, image).explanation(target)


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
    return None if selection.data_root is None else _inside_or_none(selection.data_root, filename)


def _inside_or_none(root: Path, filename: str) -> Path | None:
    try:
        return server.inside(root, filename)
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


@st.cache_data(show_spinner=False, ttl=3, max_entries=16)
def folder_stamp(root: str) -> str:
    """The folder's listing stamp (names, sizes, mtimes), looked at most every 3 s: every scan below is keyed
    by it, so relabelling or adding pictures is seen while the server runs."""
    return listing_stamp(root)


@st.cache_data(show_spinner="Reading the data set…", max_entries=8)
def _dataset(root: str, max_images: int, stamp: str) -> dict:
    return dataset_summary(root, confine=True, max_images=max_images, stamp=stamp)


def dataset(root: Path) -> dict:
    """The data-set summary, scanned once per folder content; files outside it are refused, huge folders too."""
    return _dataset(str(root), config().max_scan_images, folder_stamp(str(root)))


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
        known = st.session_state.get("keep_known_runs", names)
        kept = [n for n in st.session_state.get("keep_chosen_runs", names) if n in names]
        if new := [n for n in names if n not in known]:  # a run saved since (Teach) is shown too
            kept += new
            st.session_state.pop("chosen_runs", None)
        chosen = st.multiselect("Runs to show", names, default=kept, key="chosen_runs")
        st.session_state["keep_chosen_runs"], st.session_state["keep_known_runs"] = chosen, names
        if not found:
            st.warning(f"No runs in {runs_dir}." if runs_dir else "The operator allows no runs folder.")
        for name, reason in failures:
            st.error(f"Run **{name}** could not be loaded: {reason}", icon="⚠️")
        default = env_backend()  # HAR_BACKEND, read once per rerun (`backend()` then reads the kept choice)
        kept = st.session_state.get("keep_backend") or default
        if any("exports" in run.card for run in found) or default != "pytorch":
            options = list(BACKENDS)
            kept = st.selectbox("Prediction backend", options, index=options.index(kept), key="backend",
                                format_func=LABELS.get, help="ONNX Runtime runs a run's checked export "
                                "(python -m train.export RUN); runs without one, and Grad-CAM, use PyTorch.")
        st.session_state["keep_backend"] = kept
        was = presenting()
        present = _remembered(st.toggle, "Presentation mode", "present", False,
                              help="Sidebar collapsed, larger type, one model per row. Link: add ?present=1.")
        if present != was:
            st.rerun()  # app.py sets the sidebar's state before the page runs
        runs, left_out = one_class_list([run for run in found if run.name in chosen])
    selection = Selection(runs=runs, data_root=data_root, runs_dir=Path(runs_dir) if runs_dir else None,
                          left_out=left_out)
    warm_up(selection.runs)
    if present:
        st.html(PRESENTATION_CSS)
        share_view(present=1)
    elif "present" in st.query_params:
        del st.query_params["present"]
    return selection


# widgets whose value is a choice among the shown runs (reset when the class list changes)
RUN_CHOICES = ("predict_models", "predict_ensemble", "overview_ensemble", "cam_models", "video_models", "map_run",
               "eval_model", "mistakes_models", "teach_base", "dataset_audit_run")


def one_class_list(runs: list[Run]) -> tuple[list[Run], list[tuple[str, str]]]:
    """Pages compare runs of one class list: the largest group of the chosen runs, or the one picked in the
    sidebar when they have several; the others are named there with the reason."""
    groups = class_groups(runs)
    if len(groups) < 2:
        return runs, []
    labels = [f"{describe_classes(g[0].classes)} ({len(g)} run{'s' if len(g) > 1 else ''})" for g in groups]
    picked = st.selectbox("Class list", range(len(groups)), format_func=labels.__getitem__, key="class_list",
                          help="The chosen runs were trained on different classes; the pages compare runs of one "
                          "class list at a time.")
    if st.session_state.get("keep_class_list", picked) != picked:
        for key in RUN_CHOICES:  # choices among the other group's runs: each page starts from its default again
            st.session_state.pop(key, None)
    st.session_state["keep_class_list"] = picked
    left_out = [(run.name, f"trained on {describe_classes(run.classes)}")
                for i, group in enumerate(groups) if i != picked for run in group]
    st.caption("Not shown (other classes): " + "; ".join(f"**{name}**, {why}" for name, why in left_out))
    return groups[picked], left_out


# ---- deep links and presentation mode -------------------------------------------------------------

def follow_link(param: str, key: str, allowed=None, many: bool = False) -> None:
    """Deep links: a URL parameter (?models=a,b&split=test&sample=…&method=…&cls=…&present=1) sets the widget
    `key` when the page opens with it, once; values not among `allowed` are left out. `share_view` writes the
    current choices back, so the address bar is always a link that reopens this view."""
    raw = st.query_params.get(param)
    if raw is None or st.session_state.get(f"_link_{key}") == raw:
        return
    st.session_state[f"_link_{key}"] = raw
    if many:
        values = [v for v in raw.split(",") if allowed is None or v in allowed]
        if values:
            st.session_state[key] = values
    elif allowed is None or raw in allowed:
        st.session_state[key] = raw
    if (not many and allowed is not None and raw not in allowed) or (many and not values):
        st.caption(f"⚠️ The link's {param}={raw} is not available here; the page's default is used.")


def share_view(**params) -> None:
    """Mirror the page's choices into the URL (lists comma-joined), so a teacher copies the address bar."""
    for param, value in params.items():
        raw = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        if st.query_params.get(param) != raw:
            st.query_params[param] = raw


PRESENTATION_CSS = """<style>
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 1200px; padding-top: 2rem; }
[data-testid="stMarkdownContainer"] p, [data-testid="stCaptionContainer"] { font-size: 1.05rem; }
.har-bars { font-size: 1.15rem; }
</style>"""


def presenting() -> bool:
    """Presentation mode (sidebar toggle or ?present=1): sidebar collapsed, larger type, one model per row."""
    if st.query_params.get("present") in ("1", "true") and st.session_state.get("_link_present") is None:
        st.session_state["_link_present"] = "1"
        st.session_state["keep_present"] = True
    return bool(st.session_state.get("keep_present", False))


def model_columns(count: int) -> list:
    """The grid that holds one card per model: three per row, one per row in presentation mode."""
    return st.columns(1 if presenting() else min(3, max(1, count)))


def ensemble_members(runs: list[Run], key: str) -> list[str]:
    """The ensemble's members, chosen among `runs`; both pages start from har_core.ensemble's default."""
    return st.multiselect("Ensemble members", [run.name for run in runs], default=default_members(runs), key=key,
                          help="The ensemble averages its members' probabilities. Default: the runs that started "
                          "from ImageNet weights (when there are two or more), else all.")


def need_runs(selection: Selection) -> None:
    if not selection.runs:
        st.info("No runs selected. Choose a runs folder in the sidebar (default: the bundled demo runs).")
        st.stop()


def image_models(selection: Selection) -> Selection:
    """The selection's image models, for a page that runs models on photos or frames; the clip models (3D
    CNNs) left out are named, and a selection of clip models only stops the page with the reason."""
    clips = [run.name for run in selection.runs if run.takes_clips]
    kept = replace(selection, runs=[run for run in selection.runs if not run.takes_clips])
    if clips:
        message = (f"{', '.join(clips)}: clip model{'s' if len(clips) > 1 else ''} (3D CNN), trained on 16-frame "
                   "clips, not on photos or single frames; see {} on Overview, Evaluate, Mistakes and Training.")
        (st.caption if kept.runs else st.info)(message.format("its results" if len(clips) == 1 else "their results"))
        if not kept.runs:
            st.stop()
    return kept


@contextmanager
def friendly(what: str):
    """Show a one-line message instead of a traceback; the rest of the page keeps working."""
    try:
        yield
    except (RunError, ImageError, VideoError, DataError, EmbeddingError, Busy, ValueError, OSError) as error:
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


@st.cache_data(show_spinner=False, ttl=60, max_entries=16)
def _sample_files(manifest_path: str, stamp: float, data_root: str, limit: int) -> list[str]:
    manifest = read_manifest(Path(manifest_path))
    files = manifest.loc[manifest["split"] == "test", "filename"].tolist()[:limit]
    root = Path(data_root)
    return [f for f in files if (path := _inside_or_none(root, f)) is not None and path.is_file()]


def sample_files(selection: Selection, limit: int = 200) -> list[str]:
    """Test-split images of the first run (when the image folder is known) to pick as samples; the folder is
    checked at most once a minute, not on every rerun."""
    if selection.data_root is None or not selection.runs or not selection.runs[0].has(artifacts.MANIFEST):
        return []
    run = selection.runs[0]
    return _sample_files(str(run.path / artifacts.MANIFEST), _file_stamp(run, artifacts.MANIFEST),
                         str(selection.data_root), limit)


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
        follow_link("sample", f"{key}_sample", samples)
        picked = st.selectbox("Sample from the test split", ["—"] + samples, key=f"{key}_sample",
                              disabled=not samples, help=None if samples else "Set an image folder in the sidebar.")
    images, names = read_uploads(files)
    if shot is not None:
        more, more_names = read_uploads([shot])
        images, names = images + more, names + more_names
    if picked != "—":
        share_view(sample=picked)
    elif "sample" in st.query_params:
        del st.query_params["sample"]
    if picked and picked != "—" and (path := data_file(selection, picked)) is not None:
        with friendly(f"Reading {picked}"):
            images.append(load_image(path))
            names.append(picked)
    return images, names


# ---- embeddings, similar images, the map: computed once per run (har_core), cached per content ----

@st.cache_resource(show_spinner="Reading embeddings…", max_entries=16)
def _embeddings(path: str, stamp: float, weights: str) -> Embeddings:
    return run_embeddings(artifacts.open_run(path))  # checks that `weights` made them


def embeddings(run: Run) -> Embeddings:
    """A run's stored embeddings (raises EmbeddingError when it has none or they are unusable); embeddings
    computed in this process for a read-only runs folder are kept in `_computed`."""
    weights = run.weights_sha256()
    computed = _computed().get(str(run.path))
    if computed is not None and computed.weights == weights:
        return computed
    return _embeddings(str(run.path), _file_stamp(run, EMBEDDINGS), weights)


@st.cache_resource
def _computed() -> dict:
    return {}


@st.cache_resource(show_spinner="Building the similarity index…", max_entries=16)
def _training_index(path: str, ident: str, _embeddings: Embeddings) -> VectorIndex:
    return training_index(_embeddings, Path(path))


def search_index(run: Run, found: Embeddings) -> VectorIndex:
    return _training_index(str(run.path), found.ident, found)


@st.cache_data(show_spinner=False, max_entries=64)
def _retrieval(path: str, ident: str, _embeddings: Embeddings) -> dict:
    stored = artifacts.read_json(Path(path) / RETRIEVAL) if (Path(path) / RETRIEVAL).is_file() else {}
    return stored if stored.get("embeddings") == ident else retrieval_report(artifacts.open_run(path), _embeddings)


def retrieval(run: Run, found: Embeddings) -> dict:
    """The run's retrieval report (kNN accuracy, the mixing weight chosen on val)."""
    return _retrieval(str(run.path), found.ident, found)


@st.cache_resource(show_spinner="Scanning the image folder…", max_entries=8)
def _data_index(root: str, classes: tuple[str, ...], max_images: int, stamp: str):
    return scan_cached(root, classes=list(classes), confine=True, max_images=max_images, stamp=stamp)


def embeddings_or_offer(selection: Selection, run: Run, key: str) -> Embeddings | None:
    """The run's embeddings; when it has none (or unusable ones), says why and offers to compute them
    with a progress bar. A warning when they were computed on other data than the chosen image folder."""
    try:
        found = embeddings(run)
    except EmbeddingError as error:
        st.info(str(error))
        if selection.data_root is None:
            st.caption("Choose the run's image folder in the sidebar to compute them here.")
            return None
        if not st.button(f"Compute embeddings of {run.name}", key=f"{key}_embed_{run.name}"):
            return None
        found = compute_embeddings(selection, run)
        if found is None:
            return None
    if selection.data_root is not None:
        with friendly("Checking the image folder"):
            note = staleness(found, dataset(selection.data_root)["fingerprint"])
            if note:
                st.warning(note)
    return found


def compute_embeddings(selection: Selection, run: Run) -> Embeddings | None:
    """Embed the image folder with the run's model, with a progress bar; stored in the run folder when
    it is writable, else kept for this server process."""
    bar = st.progress(0.0, text=f"Embedding with {run.name}…")
    with friendly(f"Embedding with {run.name}"):
        index = _data_index(str(selection.data_root), tuple(run.classes), config().max_scan_images,
                            folder_stamp(str(selection.data_root)))
        found, report = embed_run(model(run), index, progress=False,
                                  on_batch=lambda done, total: bar.progress(done / total,
                                                                            text=f"Embedding with {run.name}: {done}/{total} images"))
        bar.empty()
        if "not_stored" in report:
            st.caption(f"The runs folder is read-only ({report['not_stored']}): the embeddings are kept for this "
                       "server process only.")
            _computed()[str(run.path)] = found
        return found
    bar.empty()
    return None


@st.cache_data(show_spinner="Placing every image on the map (UMAP; about a minute for 10,000 images)…",
               max_entries=16)
def _map(path: str, ident: str, _embeddings: Embeddings) -> pd.DataFrame:
    return embedding_map(_embeddings, Path(path))


def has_embeddings(run: Run) -> bool:
    return str(run.path) in _computed() or run.has(EMBEDDINGS)


def embedding_map_of(run: Run, found: Embeddings) -> pd.DataFrame:
    return _map(str(run.path), found.ident, found)


def neighbour_grid(selection: Selection, run: Run, found: Embeddings, similarities, rows, columns: int = 6,
                   size: int = 120) -> None:
    """Thumbnails of neighbours (rows of `found`) with label and similarity. A thumbnail is shown only when the
    chosen image folder holds the very picture that was embedded (same sha256): Kaggle-layout sets share names
    (train/Image_N.jpg), so a name alone would show another data set's picture beside this one's label."""
    rows_shown = [(r, s) for s, r in zip(similarities, rows) if r >= 0]
    items = [(found.files[r], f"{found.labels[r].replace('_', ' ')} · {s:.2f}") for r, s in rows_shown]
    if selection.data_root is None:
        st.caption(" · ".join(caption for _, caption in items))
        st.caption("The pictures appear once the run's data folder is there (README: Data).")
        return
    same = [same_picture(selection, found.files[r], found.digests[r]) for r, _ in rows_shown]
    thumbnail_grid(selection, [item for item, ok in zip(items, same) if ok], columns, size)
    others = [caption for (name, caption), ok in zip(items, same) if not ok]
    if others:
        origin = run.card.get("data", {}).get("root", "its training folder")
        st.caption(f"{' · '.join(others)} — pictures not shown: the chosen image folder ({selection.data_root.name}) "
                   f"does not hold them (another data set under the same names?); {run.name}'s embeddings come "
                   f"from {origin}.")


def same_picture(selection: Selection, filename: str, digest: str) -> bool:
    """The chosen image folder's file of that name is the picture with this sha256."""
    path = data_file(selection, filename)
    try:
        return path is not None and path.is_file() and file_sha256(path) == digest
    except OSError:
        return False


def similar_images(selection: Selection, run: Run, vector, probs, k: int = SHOW_K, columns: int = 3) -> None:
    """Under a prediction: the k most similar training images of the run with label and similarity, their
    vote, and the retrieval-augmented prediction (mixing weight chosen on val)."""
    try:
        found = embeddings(run)
    except EmbeddingError:
        st.caption("No embeddings for this run yet: compute them on the Embeddings page to see similar images.")
        return
    similarities, rows = search_index(run, found).search(vector, max(k, VOTE_K))
    shown_votes, all_votes = vote(rows[:, :k], found)[0], vote(rows[:, :VOTE_K], found)[0]
    winner = int(shown_votes.argmax())
    st.markdown(f"**{k} most similar training images** · vote: {found.classes[winner]} "
                f"({shown_votes[winner]:.0%})")
    neighbour_grid(selection, run, found, similarities[0, :k], rows[0, :k], columns=columns)
    report = retrieval(run, found)
    mixed = augmented(probs, all_votes, report["weight"])
    st.caption(f"Retrieval-augmented: **{found.classes[int(mixed.argmax())]}** ({mixed.max():.0%}) — "
               f"{1 - report['weight']:.2f} × model + {report['weight']:.2f} × vote of {VOTE_K} neighbours "
               "(weight chosen on val)")


def nearest_training_images(selection: Selection, run: Run, filename: str, k: int = SHOW_K) -> None:
    """A data-set image's nearest training images in the run's embedding, with the model's prediction."""
    try:
        found = embeddings(run)
    except EmbeddingError:
        st.caption(f"{run.name}: no embeddings yet (Embeddings page).")
        return
    row = found.row_of.get(filename)
    if row is None:
        st.caption(f"{run.name}: {filename} is not among its embedded images.")
        return
    similarities, rows = neighbours_of(search_index(run, found), found.vectors[row], k, exclude=np.array([row]))
    predicted = found.classes[int(found.probs[row].argmax())]
    st.markdown(f"**{run.name}** predicts {predicted} · its neighbours vote "
                f"{', '.join(f'{c} {v:.0%}' for c, v in top_votes(vote(rows, found)[0], found.classes))}")
    neighbour_grid(selection, run, found, similarities[0], rows[0], columns=k)


def top_votes(shares, classes: list[str], n: int = 3) -> list[tuple[str, float]]:
    return [(classes[i], float(shares[i])) for i in np.argsort(-shares)[:n] if shares[i] > 0]


@st.cache_data(show_spinner="Auditing the data (near-duplicates, label errors, outliers)…", max_entries=16)
def _audit(ident: str, threshold: float, _embeddings: Embeddings):
    return audit(_embeddings, threshold)


def data_audit(found: Embeddings, threshold: float):
    """The audit of a run's embeddings, computed once per embeddings and threshold."""
    return _audit(found.ident, threshold, found)


# ---- video: clips decoded and timelines computed once per clip content and settings ----------

@st.cache_data(show_spinner=False, ttl=60, max_entries=8)
def _video_files(root: str, limit: int) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*")
                  if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())[:limit]


def video_files(selection: Selection, limit: int = 200) -> list[str]:
    """Clips in the chosen image folder (relative paths), to pick instead of uploading; the folder is walked
    at most once a minute, not on every rerun."""
    if selection.data_root is None:
        return []
    return [f for f in _video_files(str(selection.data_root), limit) if data_file(selection, f) is not None]


def folder_clip(selection: Selection, filename: str) -> bytes | None:
    """A clip of the chosen image folder, within the video size limit (None, said on the page, when unusable)."""
    path = data_file(selection, filename)
    if path is None:
        return None
    with friendly(f"Reading {filename}"):
        return read_video_file(path)
    return None


def content_digest(data: bytes) -> str:
    """What clips are cached by: computed once per rerun by the page, not once per cached step."""
    return hashlib.sha256(data).hexdigest()


@st.cache_resource(show_spinner="Decoding the clip…", max_entries=4)
def _clip(digest: str, fps: float, _data: bytes) -> Clip:
    return read_clip(_data, fps=fps)


def clip_of(digest: str, data: bytes, fps: float) -> Clip:
    """The clip's sampled frames, decoded once per clip content and rate (VideoError when unusable)."""
    return _clip(digest, fps, data)


@st.cache_resource
def _timelines() -> dict:
    return {}


def timeline_of(digest: str, data: bytes, fps: float, loaded: list[LoadedModel]) -> Timeline:
    """Every model's per-frame probabilities (and their ensemble), computed once per clip, rate and set of
    models with a progress bar (kept in a plain dict: a cached function could not draw the bar)."""
    key = (digest, fps, tuple((str(m.run.path), m.weights, m.backend) for m in loaded))  # as predictions are
    store = _timelines()
    if key not in store:
        bar = st.progress(0.0, text="Predicting the frames…")
        store[key] = timeline(loaded, clip_of(digest, data, fps), on_batch=lambda done, total: bar.progress(
            done / total, text=f"Predicting the frames: {done}/{total}"), source=data)
        bar.empty()
        while len(store) > 8:  # the oldest first
            store.pop(next(iter(store)))
    return store[key]


# ---- teach: a linear head on a run's embeddings (har_core.teach), one per visitor --------------------

@st.cache_resource(show_spinner="Scanning the image folder…", max_entries=8)
def _folder_index(root: str, max_images: int, stamp: str):
    return scan_cached(root, confine=True, max_images=max_images, stamp=stamp)


def teach_pictures(selection: Selection, i: int) -> list:
    """One class's pictures: uploads, a folder, camera shots (each new shot is added) or pictures of a class
    of the chosen image folder. Undecodable files are named and left out."""
    tabs = st.tabs(["📁 Upload", "🗂️ Folder", "📷 Camera", "🖼️ Data set"])
    with tabs[0]:
        files = list(st.file_uploader("Pictures", type=IMAGE_TYPES, accept_multiple_files=True,
                                      key=f"teach_upload_{i}") or [])
    with tabs[1]:
        files += list(st.file_uploader("A folder of pictures", type=IMAGE_TYPES, accept_multiple_files="directory",
                                       key=f"teach_folder_{i}") or [])
    shots = st.session_state.setdefault(f"teach_shots_{i}", {})
    with tabs[2]:
        if st.toggle("Use the camera", key=f"teach_cam_on_{i}"):
            shot = st.camera_input("Each shot is added", key=f"teach_camera_{i}")
            if shot is not None:
                shots.setdefault(shot.file_id, shot)
        if shots and st.button(f"Forget {len(shots)} shot(s)", key=f"teach_forget_{i}"):
            shots.clear()
    images, _ = read_uploads(files + list(shots.values()))
    with tabs[3]:
        if selection.data_root is None:
            st.caption("Choose an image folder in the sidebar to take pictures from it.")
        else:
            with friendly("Reading the image folder"):
                index = _folder_index(str(selection.data_root), config().max_scan_images,
                                      folder_stamp(str(selection.data_root)))
                left, right = st.columns([2, 1])
                label = left.selectbox("Class of the data set", ["—"] + index.classes, key=f"teach_data_{i}")
                how_many = right.number_input("Pictures", 2, 100, 12, key=f"teach_data_n_{i}")
                if label != "—":
                    for filename in [f for f, lab in index.samples if lab == label][:how_many]:
                        with friendly(f"Reading {filename}"):
                            images.append(load_image(index.root / filename))
    return images


def teach_head(run: Run, names: list[str], pictures: list[list]) -> None:
    """Teach the classes on the run's embeddings with a progress bar; the head is kept for this visitor."""
    bar = st.progress(0.0, text="Embedding the pictures…")
    try:
        st.session_state["teach_head"] = teach(model(run), names, pictures, on_batch=lambda done, total: bar.progress(
            done / total, text=f"Embedding the pictures: {done}/{total}"))
    except (TeachError, RunError) as error:
        st.error(str(error))
    finally:
        bar.empty()


def taught_probabilities(head: TaughtHead, image) -> np.ndarray:
    return head.predict(embed(head.base, [image]))[0]


def runs_folder_writable(selection: Selection) -> bool:
    folder = selection.runs_dir
    return folder is not None and folder.is_dir() and not (folder / artifacts.CARD).exists() \
        and os.access(folder, os.W_OK)


def save_taught(selection: Selection, head: TaughtHead, name: str) -> Path:
    """Save the head as a run in the sidebar's runs folder (never over an existing run)."""
    return save_head(head, selection.runs_dir, name)


def taught_zip(head: TaughtHead, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        return run_zip(save_head(head, Path(scratch), name))


# ---- the report to share (har_core.report) -----------------------------------------------------------

@st.cache_resource
def _report_lock() -> threading.Lock:
    return threading.Lock()


@st.cache_data(show_spinner=False, max_entries=4)
def _report(paths: tuple[str, ...], stamps: tuple[float, ...], data_root: str | None) -> str:
    runs = [artifacts.open_run(path) for path in paths]
    lock = _report_lock()  # one report at a time, server-wide: the others wait for it
    if not lock.acquire(blocking=False):
        st.toast("Another visitor's report is being made; yours follows it.")
        lock.acquire()
    try:
        return build_report(runs, Path(data_root) if data_root else None, load=model,
                            max_images=config().max_scan_images)
    finally:
        lock.release()


def report(selection: Selection) -> str:
    """The selected runs' report, built once per runs (and their metrics) and image folder, with the server's
    shared models and scan limit."""
    stamps = tuple(_file_stamp(run, artifacts.metrics_file("test")) for run in selection.runs)
    return _report(tuple(str(run.path) for run in selection.runs), stamps,
                   str(selection.data_root) if selection.data_root else None)
