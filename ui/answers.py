"""Answers for pictures: predictions and explanations cached by content, uploads and samples."""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from har_core.models import artifacts
from har_core.data.datasets import read_manifest
from har_core.data.imaging import ImageError, image_digest, load_image, safe_name
from har_core.models.inference import LoadedModel, Prediction, predict_all
from har_core.data.labels import picture_name, spoken
from har_core.data.spans import timed
from ui.choices import follow_link, share_view
from ui.common import IMAGE_TYPES, Selection, file_stamp, inside_or_none, config, data_file, friendly, model_stamp

if TYPE_CHECKING:  # Grad-CAM (and the scikit-learn and SciPy it imports) loads with the first explanation, and the
    from har_core.explain import whatif  # What-if edits (torch) with the panel under the cards: not with Predict's
    from har_core.explain.cam import ClassMaps, Explanation  # first answer (#41)

# an answer too long for its metric ("listening to music" in a third of Predict's column at 1280 px) wraps onto a
# second line instead of being cut to "listening to m…"
WRAPPED_ANSWERS = """<style>
[data-testid="stMetricValue"], [data-testid="stMetricValue"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }
</style>"""  # !important and the value itself too: Streamlit's own rule kept it on one line, over the next metric


@st.cache_data(show_spinner=False, max_entries=512)
def _prediction(path: str, stamp: tuple, temperature: float, digests: tuple[str, ...], tta: bool, backend: str,
                _loaded: LoadedModel, _images: list) -> Prediction:
    return predict_all([_loaded], _images, tta=tta, embed=True, shared=True)[0]  # batched with other visitors'


@timed("forwards")  # in the run's own thread: the asking threads' spans are their own (har_core.data.spans)
def predict(loaded: list[LoadedModel], images: list, tta: bool) -> list[Prediction]:
    """Every model's prediction (with the images' embeddings) for the images: a widget that changes neither the
    images, the models nor TTA reruns the page without a single forward pass. The models are asked side by side,
    each from a thread of this run: their forwards (each in its model's shared queue) overlap on the cores
    instead of waiting for one another (#41: six models' queue windows and small batches, one after another)."""
    digests = tuple(image_digest(image) for image in images)
    return _side_by_side(loaded, lambda model: (images, digests), tta)


def _side_by_side(loaded: list[LoadedModel], pictures: Callable[[LoadedModel], tuple[list, tuple]],
                  tta: bool) -> list[Prediction]:
    """Each model's prediction of its own pictures (`pictures(model)`: the images and their digests, found in the
    model's thread), the models asked side by side, each from a thread of this run."""
    context = get_script_run_ctx()

    def ask(model: LoadedModel) -> Prediction:
        add_script_run_ctx(threading.current_thread(), context)  # the run's own cache, as if asked in it
        images, digests = pictures(model)
        return _prediction(str(model.run.path), model_stamp(model.run), model.temperature, digests, tta,
                           model.backend, model, images)
    if len(loaded) < 2:
        return [ask(model) for model in loaded]
    with ThreadPoolExecutor(len(loaded), thread_name_prefix="har-ask") as pool:
        return list(pool.map(ask, loaded))


@st.cache_resource(show_spinner=False, max_entries=128)
def _class_maps(path: str, stamp: tuple, temperature: float, digest: str, method: str, classes: tuple | None,
                _loaded: LoadedModel, _image) -> ClassMaps:
    from har_core.explain.cam import class_maps
    return class_maps(_loaded, _image, method, classes=None if classes is None else list(classes))


def explanation(loaded: LoadedModel, image, digest: str, method: str, target: int | None) -> Explanation:
    """A model's map of `target` (None: the predicted class) for the image. A fast method computes every class
    from one forward pass the first time, so moving the opacity or switching the class only picks and blends;
    a method that costs a pass per class (ScoreCAM: a forward per channel) computes the class asked for."""
    from har_core.explain.cam import PASS_PER_CLASS
    classes = (target,) if method in PASS_PER_CLASS else None
    return _class_maps(str(loaded.run.path), model_stamp(loaded.run), loaded.temperature, digest, method, classes,
                       loaded, image).explanation(target)


@st.cache_resource(show_spinner=False, max_entries=64)
def _seen(digest: str, edit: str, resize: str, _image, _edit: whatif.Edit, _transform):
    from har_core.explain import whatif
    return whatif.as_model_sees(_image, _edit, _transform)


def as_model_sees(loaded: LoadedModel, image, digest: str, edit: whatif.Edit):
    """The picture `loaded` meets after a What-if edit (whatif.as_model_sees: its own resize, then the edit), once
    per picture content, edit and resize: models that resize alike share it, and moving a slider back costs
    nothing (the edited picture's predictions are cached by its content)."""
    from har_core.explain import whatif
    return _seen(digest, repr(edit), repr(whatif.own_resize(loaded.transform)), image, edit, loaded.transform)


@timed("What-if edits and forwards")  # in the asking threads: their own spans are not the run's
def predict_edited(loaded: list[LoadedModel], image, digest: str, edit: whatif.Edit, tta: bool) -> list[Prediction]:
    """Every model's prediction of the picture after the edit, each edited at its own size: a slider gives a model
    the same answer whichever other models are chosen, and an edit that changes no pixel gives its prediction
    of the picture as given. Each model is edited and asked in its own thread, side by side as `predict` asks:
    one after another, six models' torch edits took ~0.7 s under load (each of torch's two threads waiting for
    the other on a busy machine), side by side ~0.2 s, and their forwards ~0.26 s against ~0.18 s."""
    if edit.unchanged:  # the very answers above the panel (whatif.as_model_sees: the same tensor), no forward
        return predict(loaded, [image], tta)

    def edited(model: LoadedModel) -> tuple[list, tuple]:
        picture = as_model_sees(model, image, digest, edit)
        return [picture], (image_digest(picture),)
    return _side_by_side(loaded, edited, tta)


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
def _sample_files(manifest_path: str, stamp: float, data_root: str, limit: int) -> dict[str, str]:
    manifest = read_manifest(Path(manifest_path))
    test = manifest[manifest["split"] == "test"].head(limit).sort_values(["label", "filename"], kind="stable")
    root = Path(data_root)
    return {f: label for f, label in zip(test["filename"], test["label"])
            if (path := inside_or_none(root, f)) is not None and path.is_file()}


def sample_files(selection: Selection, limit: int = 200) -> dict[str, str]:
    """Test-split images of the first run (when the image folder is known) to pick as samples, each with its
    class, grouped by class; the folder is checked at most once a minute, not on every rerun."""
    if selection.data_root is None or not selection.runs or not selection.runs[0].has(artifacts.MANIFEST):
        return {}
    run = selection.runs[0]
    return _sample_files(str(run.path / artifacts.MANIFEST), file_stamp(run, artifacts.MANIFEST),
                         str(selection.data_root), limit)


def numbered(j: int, names: list[str]) -> str:
    """Picture j's name as a visitor tells it from the others: "2. image.jpg" (phones give every photo one name)."""
    return f"{j + 1}. {picture_name(names[j])}"


def newest_picture(images: list, names: list[str], key: str) -> int:
    """Which of the images came last: uploads, the camera's shot and a sample are listed in that order whenever
    they came, so the newest is the last one the page did not list before, kept until another comes. A photo is
    its name and content, counted: the same photo added again is new too."""
    counted, occurrences = Counter(), []  # each image as (name, content, its how-many-th such)
    for photo in zip(names, map(image_digest, images)):
        counted[photo] += 1
        occurrences.append((*photo, counted[photo]))
    seen = st.session_state.setdefault(f"{key}_pictures_seen", {"before": Counter(), "newest": None})
    if arrived := [o for o in occurrences if o[2] > seen["before"][o[:2]]]:
        seen["newest"] = arrived[-1]
    seen["before"] = counted
    return occurrences.index(seen["newest"]) if seen["newest"] in occurrences else max(len(images) - 1, 0)


def invite_to_give_a_picture(key: str, text: str) -> None:
    """The page's invitation (`text`) while no picture was given under `key` (image_source's); none after a refused
    one: its warning says why, and the invitation read as if the file had been lost (#41 walk)."""
    if not (st.session_state.get(f"{key}_upload") or st.session_state.get(f"{key}_camera")):
        st.info(text)


def image_source(selection: Selection, key: str, multiple: bool = True) -> tuple[list, list[str]]:
    """Upload, camera or a sample from the image folder: the images and their names."""
    tabs = st.tabs(["📁 Upload", "📷 Camera", "🖼️ Sample"], key=f"{key}_source")  # keyed: the tab opened stays
    with tabs[0]:
        # the browser refuses other types itself, with a red chip: this says where a clip goes (#41 walk)
        files = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=multiple, key=f"{key}_upload",
                                 help="Photos only; a video clip goes to the 🎬 Video page.")
        files = files if isinstance(files, list) else [files] if files else []
    with tabs[1]:
        shot = st.camera_input("Take a photo", key=f"{key}_camera") if st.toggle("Use the camera", key=f"{key}_cam_on") else None
    with tabs[2]:
        samples = sample_files(selection)
        follow_link("sample", f"{key}_sample", list(samples))
        # no thumbnail beside it: the page shows the picture picked (#41 walk: the sample was shown twice)
        picked = st.selectbox(
            "Sample from the test split", ["—"] + list(samples), key=f"{key}_sample", disabled=not samples,
            format_func=lambda f: f"{spoken(samples[f])} · {f.rsplit('/', 1)[-1]}" if f in samples else f,
            help="Grouped by true class." if samples else "Set an image folder in the sidebar.")
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

