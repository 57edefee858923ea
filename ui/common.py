"""Settings, loaded models and their engines, cached run files, thumbnails, friendly errors."""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from har_core.models import artifacts
from har_core import server
from har_core.evaluation.analysis import dataset_summary, thumbnail
from har_core.models.artifacts import Run, RunError
from har_core.evaluation.plots import enlarged, thumbnail_uri
from har_core.evaluation.calibration import calibrated_frame
from har_core.models.calibration_maths import CalibrationError
from har_core.models.temperature import run_temperature
from har_core.data.datasets import SPLITS, DataError, DataIndex, listing_stamp, scan_cached, scan_is_stored
from har_core.data.imaging import IMAGE_SUFFIXES, ImageError
from har_core.models.backend import AUTO, EXPORT_FILES, app_backend
from har_core.explain.slots import SLOW_SLOTS, Busy
from har_core.data.spans import timed
from har_core.data.video import VideoError

# what loads or runs a model (torch, timm, grad-cam) is imported inside the functions below that need it: the
# first page is drawn without them, and the warm-up loads them after it (#41)
if TYPE_CHECKING:
    from har_core.models.inference import LoadedModel


ROOT = Path(__file__).resolve().parents[1]  # the project folder


IMAGE_TYPES = [suffix[1:] for suffix in IMAGE_SUFFIXES]  # the uploader takes every format the decoder reads


@st.cache_resource
def _config(*environment) -> server.ServerConfig:
    settings = server.load_config()
    SLOW_SLOTS.resize(settings.slow_cam_slots)
    return settings


def config() -> server.ServerConfig:
    """The operator's settings (har_core.server), read once per server process and environment."""
    return _config(*(os.environ.get(k, "") for k in ("HAR_CONFIG", "HAR_RUNS", "HAR_DATA", "HAR_FREE_PATHS")))


@dataclass
class Selection:
    runs: list[Run] = field(default_factory=list)
    data_root: Path | None = None
    runs_dir: Path | None = None  # where the runs were found (a new run is saved there)
    in_folder: int = 0  # how many runs the sidebar found in runs_dir, chosen or not
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (run, why): chosen runs another class list keeps out

    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    def run(self, name: str) -> Run:
        return next(run for run in self.runs if run.name == name)


@st.cache_resource(show_spinner="Loading model…", max_entries=32)
def _load_model(path: str, stamp: tuple[float, ...]) -> LoadedModel:
    from har_core.models.inference import load_run
    # each visitor's backend is applied on top (`served_model`); the PyTorch network is built when first used
    loaded = load_run(path, backend="pytorch", lazy=True)
    print(f"HAR Studio: loaded model {loaded.name}", flush=True)  # once per process: visible in the server log
    return loaded


def model(run: Run) -> LoadedModel:
    """Each run's model is loaded once per process and shared by every session, its PyTorch network built (the
    pages that explain or look inside use it; a broken weights file raises RunError here)."""
    loaded = _load_model(str(run.path), model_stamp(run))
    loaded.network.tap  # noqa: B018 - built, with its embedding tap
    return loaded


def model_stamp(run: Run) -> tuple[float, ...]:
    """What a loaded model depends on: its weights, and its card, split manifest and val predictions (the
    temperature it applies and whether that calibration still holds)."""
    return tuple(file_stamp(run, name) for name in (artifacts.WEIGHTS, artifacts.CARD, artifacts.MANIFEST,
                                                      artifacts.predictions_file("val")))


@st.cache_resource(show_spinner=False, max_entries=64)
def _backend_model(path: str, stamps: tuple[float, ...], backend: str, _loaded: LoadedModel) -> LoadedModel:
    from har_core.models.inference import with_backend
    return with_backend(_loaded, backend)


def served_model(run: Run, chosen: str) -> LoadedModel:
    """The run's model predicting through backend `chosen`, once per process, run files and exports. Its PyTorch
    network is built only when PyTorch answers (then now: a broken weights file raises RunError here), so a server
    whose runs all answer through their exports never builds one for predictions (#41)."""
    one = _load_model(str(run.path), model_stamp(run))
    if chosen != "pytorch":
        stamps = (*model_stamp(run), *(file_stamp(run, name) for name in EXPORT_FILES.values()))
        one = _backend_model(str(run.path), stamps, chosen, one)
    if one.onnx is None:
        one.network.tap  # noqa: B018 - built, with its embedding tap
    return one


def env_backend() -> str:
    """HAR_BACKEND, else AUTO: each run answers through its fastest checked export, if it has one (#41)."""
    try:
        return app_backend()
    except ValueError as error:
        st.toast(str(error), icon="⚠️")
        return AUTO


def backend() -> str:
    """The prediction backend this visitor chose in the sidebar (default: HAR_BACKEND, else AUTO)."""
    return st.session_state.get("keep_backend") or env_backend()


@timed("models")  # loaded once per server: the first answer's share that waits for the warm-up
def models(runs: list[Run]) -> list[LoadedModel]:
    """The runs' models, predicting through the visitor's backend; a run that fails to load is named on the
    page and left out. A run whose export cannot serve the backend predicts with PyTorch (see `backend_note`)."""
    loaded, chosen = [], backend()
    for run in runs:
        try:
            loaded.append(served_model(run, chosen))
        except RunError as error:
            st.error(str(error))
    return loaded


@st.cache_data(show_spinner=False, max_entries=256)
def _metrics(path: str, split: str, stamp: float):
    return artifacts.open_run(path).metrics(split)


@st.cache_data(show_spinner=False, max_entries=256)
def _predictions(path: str, split: str, stamp: float, temperature: float):
    frame = artifacts.open_run(path).predictions(split)
    return None if frame is None else calibrated_frame(frame, artifacts.open_run(path).classes, temperature)


@st.cache_data(show_spinner=False, max_entries=256)
def _temperature(path: str, stamp: tuple[float, ...]) -> tuple[float, str]:
    return run_temperature(artifacts.open_run(path))


def temperature(run: Run) -> float:
    """The calibration temperature every page applies to the run's probabilities (1.0: raw, `calibration_note`
    says why)."""
    return _temperature(str(run.path), model_stamp(run))[0]


def calibration_note(run: Run) -> str:
    """Why the run's probabilities are shown raw: one line ("" when they are calibrated)."""
    return _temperature(str(run.path), model_stamp(run))[1]


def file_stamp(run: Run, name: str) -> float:
    path = run.path / name
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(show_spinner=False, max_entries=64)
def _robustness(path: str, stamp: tuple[float, ...]):
    from har_core.explain.robustness import RobustnessError, read_robustness
    try:
        return read_robustness(artifacts.open_run(path))
    except RobustnessError as error:
        return str(error)


def robustness(run: Run) -> tuple[pd.DataFrame, dict] | str | None:
    """The run's stored robustness table and what it was measured on (None: not measured by these weights; one
    line saying why when it cannot be read)."""
    from har_core.explain.robustness import ROBUSTNESS, ROBUSTNESS_INFO
    return _robustness(str(run.path), tuple(file_stamp(run, name) for name in (ROBUSTNESS, ROBUSTNESS_INFO,
                                                                                  artifacts.WEIGHTS)))


def metrics(run: Run, split: str) -> dict | None:
    return _metrics(str(run.path), split, file_stamp(run, artifacts.metrics_file(split)))


def best_run(runs: list[Run]) -> Run:
    """The run a page's single-run choice opens on, the same on every page: the best val accuracy (the split runs
    are chosen on; test only reports), a tie broken by val macro-F1; else the first."""
    scores = {run.name: metrics(run, "val") or {} for run in runs}
    return max(runs, key=lambda run: (scores[run.name].get("accuracy", -1.0), scores[run.name].get("macro_f1", -1.0)))


def splits_with(runs: list[Run], file_of=artifacts.metrics_file) -> list[str]:
    """The splits (train, val, test order) some run has a file of (`file_of(split)`: its metrics or predictions):
    a page offers only these, never a split that leads to an empty section."""
    return [split for split in SPLITS if any(run.has(file_of(split)) for run in runs)]


def predictions(run: Run, split: str) -> pd.DataFrame | None:
    """The run's stored predictions on a split, with calibrated probabilities and confidence."""
    return _predictions(str(run.path), split, file_stamp(run, artifacts.predictions_file(split)),
                        temperature(run))


@timed("figures")
def figure(build, *args, **kwargs):
    """`build(*args, **kwargs)`, a plotly figure, made once per content of its inputs and shared: plotly validates
    every property as a figure is built, which was most of a warm page switch. Draw it; never change it."""
    # Streamlit hashes a large array from a sample of its values: its full digest keeps two arrays apart
    digests = tuple(hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                    for a in args if isinstance(a, np.ndarray))
    return _figure(f"{build.__module__}.{build.__qualname__}", digests, presenting(), build, *args, **kwargs)


@st.cache_resource(show_spinner=False, max_entries=128)
def _figure(name: str, digests: tuple, large: bool, _build, *args, **kwargs):  # the builder, the inputs' content
    built = _build(*args, **kwargs)
    return enlarged(built, PRESENTATION_SCALE) if large else built  # presentation mode: type as large as the page's


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumb(path: str, size: int, stamp: tuple) -> str | None:  # stamp: the file's size and time (a changed file)
    # a data: URI, not the picture: st.image passes it through, where a picture was encoded anew for every visitor
    # and fetched as a media file afterwards (a room of thirty opening similar images, #41)
    return thumb_of(Path(path), size)


def thumb_of(path: Path, size: int) -> str | None:
    """A picture file's thumbnail as a data: URI (None: unreadable)."""
    picture = thumbnail(path, size)
    return None if picture is None else thumbnail_uri(picture, size)


def data_file(selection: Selection, filename: str) -> Path | None:
    """A file of the chosen image folder; None when there is none or the name leads outside it."""
    return None if selection.data_root is None else inside_or_none(selection.data_root, filename)


def inside_or_none(root: Path, filename: str) -> Path | None:
    try:
        return server.inside(root, filename)
    except server.OutsideRoots:
        return None


def thumb(selection: Selection, filename: str, size: int = 160) -> str | None:
    """A thumbnail of a data-set image (a data: URI for st.image), only from inside the chosen image folder."""
    path = data_file(selection, filename)
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return None
    return _thumb(str(path), size, (stat.st_size, stat.st_mtime_ns)) if stat is not None else None


def thumbnail_grid(selection: Selection, items: list[tuple[str, str]], columns: int = 6, size: int = 160) -> int:
    """Thumbnails of (filename, caption) pairs in a grid; files that cannot be shown are left out together
    with their captions. Returns how many were shown."""
    shown = [(image, caption) for name, caption in items if (image := thumb(selection, name, size)) is not None]
    image_grid(shown, columns)
    return len(shown)


def image_grid(shown: list[tuple[str, str]], columns: int) -> None:
    """(image, caption) pairs in a grid of `columns`."""
    cells = grid(len(shown), columns)
    for cell, (image, caption) in zip(cells, shown):
        cell.image(image, caption=caption)


def grid(count: int, per_row: int) -> list:
    """`count` cells, `per_row` a row, in reading order: each row is its own st.columns, so a row's cards start on
    one line and a keyboard walks them left to right. Card i in column i % n stacked each column on its own: the
    rows went ragged where cards differ in height, and Teach's third class came before its second (#41 walk)."""
    cells = []
    for _ in range(0, count, per_row):
        cells += st.columns(per_row)
    return cells[:count]


def scored_table(table) -> None:
    """A table with every score at three decimals: as stored, the audit's 0.981 stood beside 0.9812 and Evaluate's
    confidences beside 0.8771 (#41 walk). The columns as wide as their headers (narrow ones cut "similarit" when
    presenting)."""
    scores = table.select_dtypes("float").columns
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={name: st.column_config.NumberColumn(format="%.3f") for name in scores})


def remembered(widget, label: str, key: str, default, **kwargs):
    """A widget whose value survives the runs that do not draw it: a page switch (each page renders the sidebar
    anew), or a card left out for a while (Streamlit forgets a widget's value once a run does not draw it)."""
    value = widget(label, st.session_state.get(f"keep_{key}", default), key=key, **kwargs)
    st.session_state[f"keep_{key}"] = value
    return value


@st.cache_data(show_spinner=False, ttl=3, max_entries=16)
def folder_stamp(root: str) -> str:
    """The folder's listing stamp (names, sizes, mtimes), looked at most every 3 s: every scan below is keyed
    by it, so relabelling or adding pictures is seen while the server runs."""
    return listing_stamp(root)


@st.cache_data(show_spinner="Reading the data set…", max_entries=8)
def _dataset(root: str, max_images: int, stamp: str, _index: DataIndex | None = None) -> dict:
    return dataset_summary(root, confine=True, max_images=max_images, stamp=stamp, index=_index)


_first_scans: dict[str, threading.Lock] = {}  # a folder's first scan, one at a time: a second visitor waits for it
_first_scans_lock = threading.Lock()
SCANS_KEPT = 8  # folders whose scan this process keeps for its pages (as many as their caches keep)
_made: OrderedDict[tuple, DataIndex] = OrderedDict()  # the scans this process made: every page that reads the
# folder (Dataset, Teach) gets the same one, also when the store could not keep it (a read-only home)


def first_scan(root: Path) -> DataIndex | None:
    """A folder's scan (every picture decoded and hashed: 10 s or more for 11,100): made here once, with a progress
    bar where it is first asked for, one at a time per folder, and given to every page that asks after it; None
    when the scan store already held it before this process (the pages' caches read it there)."""
    stamp, limit = folder_stamp(str(root)), config().max_scan_images
    folder = (str(root), limit, stamp)
    if (made := _made.get(folder)) is not None:
        return made
    if scan_is_stored(root, confine=True, max_images=limit, stamp=stamp):
        return None
    with _first_scans_lock:
        lock = _first_scans.setdefault(str(root), threading.Lock())
    with st.spinner("Another visitor's first scan of this folder is under way…") if lock.locked() \
            else contextlib.nullcontext(), lock:
        if folder not in _made:  # a visitor who waited for another's scan finds it made
            bar = st.progress(0.0, text="Reading the data set…")
            try:
                made = scan_cached(root, confine=True, max_images=limit, stamp=stamp,
                                   on_progress=lambda done, total: bar.progress(done / total, text=(
                                       f"Reading the data set once: {done:,} of {total:,} pictures")))
            finally:
                bar.empty()  # a folder refused (too large, nothing usable) leaves no bar behind
            with _first_scans_lock:  # before the folder's lock is let go: a visitor waiting for it finds it made
                _made[folder] = made
                while len(_made) > SCANS_KEPT:
                    _made.popitem(last=False)
    return _made.get(folder)


def dataset(root: Path) -> dict:
    """The data-set summary, scanned once per folder content; files outside it are refused, huge folders too."""
    index = first_scan(root)
    return _dataset(str(root), config().max_scan_images, folder_stamp(str(root)), _index=index)


PRESENTATION_SCALE = 21 / 16  # presentation mode's type over the page's (html's font size below)
PRESENTATION_CSS = """<style>
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding: 4.5rem 2.5rem 0 2.5rem; }  /* below the header */
[data-testid="stMarkdownContainer"] p, [data-testid="stCaptionContainer"] { font-size: 1.05rem; }
/* a metric's number as large as its column lets it be: with the sidebar opened, two in a card's row ran into
   each other ("71.7%0.716") and their labels were cut ("test accu…"), which now wrap */
/* a column's metric only: one sized by its content would shrink to nothing */
[data-testid="stColumn"] [data-testid="stMetric"] { container-type: inline-size; }
[data-testid="stMetricValue"], [data-testid="stMetricValue"] p { font-size: min(2.6rem, 30cqi); line-height: 1.15; }
[data-testid="stMetricValue"] * { white-space: normal; overflow: visible; text-overflow: clip; }  /* a long answer wraps */
[data-testid="stMetricLabel"] * { white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; }  /* Streamlit's own rule on a label is the more specific */
.har-bars { font-size: 1.15rem; }
/* a picker's choice and its list as large as its label (#41 walk: "The cards of" read in small type) */
[data-testid="stMain"] [data-testid="stSelectbox"] input, [data-testid="stSelectboxVirtualDropdown"] [role="option"] {
  font-size: 1.05rem; }
/* typed values too (Teach's number of classes, a class's name, its placeholder): 18.4 px under a 22 px label */
[data-testid="stMain"] :is([data-testid="stNumberInput"], [data-testid="stTextInput"]) input { font-size: 1.05rem; }
/* and a multiselect's chosen names (the models): 18.4 px under 22 px labels (not the uploader's hint: larger, it
   was cut in Teach's cards) */
[data-testid="stMain"] [data-testid="stMultiSelect"] [data-tag] { font-size: 1.05rem; }
/* a table draws on a canvas in fixed pixels: scale it whole, at a width that fills the page once scaled */
[data-testid="stFullScreenFrame"]:has(> [data-testid="stDataFrame"]) { zoom: 1.3; width: calc(100% / 1.3); }
</style>"""


def folded_when_presenting(label: str):
    """Where a page's choices go: presenting, into an expander named `label`, so the answer comes first on a
    projector's screen; at a desk, in sight."""
    return st.expander(label) if presenting() else st.container()


def presenting() -> bool:
    """Presentation mode (sidebar toggle or ?present=1): sidebar collapsed, larger type, the whole width."""
    if st.query_params.get("present") in ("1", "true") and st.session_state.get("_link_present") is None:
        st.session_state["_link_present"] = "1"
        st.session_state["keep_present"] = True
    return bool(st.session_state.get("keep_present", False))


CARDS_A_ROW = 3


def columns_for(cards: int) -> int:
    """Up to three cards a row, also in presentation mode (which uses the screen's whole width, so a card stays a
    third of it and fits a screen's height)."""
    return min(CARDS_A_ROW, max(1, cards))


def model_columns(count: int) -> list:
    """The grid that holds one card per model: a cell per model, a row at a time."""
    return grid(count, columns_for(count))


def model_rows(count: int) -> list[tuple[list, object]]:
    """model_columns' grid a row at a time: each row's columns, then a slot the page's whole width under the row,
    for what a card of the row opens. A card stays as tall as its neighbours; opened in its column, it grew long
    beside them and left a big empty gap there (#41 walk)."""
    width = columns_for(count)
    return [(st.columns(width), st.container()) for _ in range(0, count, width)]


def headings_on_one_line(key: str, names: list[str]) -> None:
    """The cards in containers keyed `key`_… name their run in a heading on one line: a name longer than its card
    is wide (custom_cnn_taught at 1280 px, three cards a row beside the sidebar) is set smaller for every card,
    never broken inside the word ('custom_cnn_taugh' / 't'). A bold glyph of the heading font is about half an
    em wide (0.51 measured on these names; 0.56 leaves room for wider ones)."""
    ems = 0.56 * max(map(len, names), default=1)
    # st.markdown, not st.html: a style-only st.html came after the cards were drawn, so they were drawn broken first
    st.markdown(f"<style>[class*='st-key-{key}_'] [data-testid='stMarkdownContainer']:has(h5) "
                f"{{ container-type: inline-size; }} [class*='st-key-{key}_'] h5 "
                f"{{ font-size: min(1.25rem, {100 / ems:.2f}cqi); white-space: nowrap; }}</style>",
                unsafe_allow_html=True)  # nowrap: drawn before the size applies, a name still never breaks


def controls_at_the_foot(key: str, while_the_row_is_closed: bool = False) -> None:
    """In rows of bordered cards of one height (containers keyed `key`_…), each card's last element (Predict's
    More details, a mistake's Open button) sits at the card's foot: a card whose answer took a second line put it
    lower than its neighbours' (#41 walk). `while_the_row_is_closed`: only while no card of the row has an
    expander open; an Overview card's open "How it was trained" stretched the row, and took its neighbours' numbers
    800 px down to their feet."""
    row = "[data-testid='stHorizontalBlock']:not(:has(details[open])) " if while_the_row_is_closed else ""
    st.markdown(f"<style>{row}[class*='st-key-{key}_'] > :last-child {{ margin-top: auto; }}</style>",
                unsafe_allow_html=True)


def need_runs(selection: Selection) -> None:
    """Stop a page that has no run to show, saying what the sidebar needs (its own warning may be below the fold:
    the page said 'default: the bundled HAR runs' beside a sidebar asking for a typed folder, #41 walk)."""
    if selection.runs:
        return
    if selection.runs_dir is None:
        st.info("No runs folder: choose or type one under Runs folder in the sidebar.")
    elif not selection.in_folder:
        st.info(f"No runs in {verbatim(str(selection.runs_dir))}: choose another runs folder in the sidebar.")
    else:
        st.info("No runs chosen: choose some under Runs to show in the sidebar.")
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


def _said_in_one_line() -> tuple[type[Exception], ...]:
    """The errors `friendly` says in one line, looked up as one is caught: har_core.retrieval.embeddings's only once that
    module is loaded (nothing else raises it, and importing it here would bring torch into the first page)."""
    embeddings = sys.modules.get("har_core.retrieval.embeddings")
    return (RunError, ImageError, VideoError, DataError, CalibrationError, Busy, ValueError, OSError,
            *([embeddings.EmbeddingError] if embeddings else []))


@contextmanager
def friendly(what: str):
    """Show a one-line message instead of a traceback; the rest of the page keeps working."""
    try:
        yield
    except _said_in_one_line() as error:
        st.error(f"{what}: {error}")
    except Exception as error:  # noqa: BLE001 - a classroom never sees a traceback
        st.error(f"{what} failed: {type(error).__name__}: {error}")



GLOSSARY = {
    "EMA": "EMA (exponential moving average): the weights kept are an average of the weights over the last "
           "training steps, which smooths out the noise of the last mini-batches.",
    "distilled": "Distilled: this network learned to copy the probabilities of other, stronger networks (its "
                 "teachers) on the same pictures, instead of only the labels.",
    "TTA": "TTA (test-time augmentation): each picture is also shown mirrored and the two answers are averaged.",
    "groups": "The groups: the course's student groups, who trained these classifiers on the Kaggle HAR photos; "
              "their recipes are the runs' defaults and their GPU figures the ones to compare with.",
    "linear head": "A taught run: the base network is kept whole; only a new last layer was learned from the "
                   "few pictures given on the Teach page.",
}


def verbatim(value: str, limit: int = 60) -> str:
    """Markdown that shows `value` as typed, in code type, on one line and at most `limit` characters: a value from
    a link is the visitor's own, and as plain markdown a crafted link drew links, remote images and red headings
    on the page (#41 walk)."""
    flat = " ".join(value.replace("`", "'").split())
    return f"`{flat[:limit] + '…' if len(flat) > limit else flat}`" if flat else "(empty)"


def glossary(text: str) -> str | None:
    """Plain-words help for the jargon a card's text uses (a tooltip), None when it uses none."""
    found = [meaning for term, meaning in GLOSSARY.items() if term.lower() in text.lower()]
    return "\n\n".join(found) or None
