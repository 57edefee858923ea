"""Inside the network: each stage's output for a picture, the first layer's filters and each channel's top
training pictures, cached per model."""
from __future__ import annotations

import numpy as np
import streamlit as st

from har_core.explain import inside
from har_core.models.artifacts import Run, open_run
from har_core.explain.channels import (CHANNELS, ChannelError, ChannelTops, channel_regions, compute_channel_tops,
                                       load_channel_tops)
from har_core.data.imaging import ImageError, load_image
from har_core.models.inference import LoadedModel
from ui.common import Selection, file_stamp, data_file, model, model_stamp
from ui.similar import offer_to_compute


@st.cache_resource(show_spinner="One forward through every stage…", max_entries=16)
def _stages(path: str, stamp: tuple, digest: str, _loaded: LoadedModel, _image) -> list[inside.Stage]:
    return inside.stage_activations(_loaded, _image)


def stages(loaded: LoadedModel, image, digest: str) -> list[inside.Stage]:
    """Every stage's output for the picture, once per model and picture content."""
    return _stages(str(loaded.run.path), model_stamp(loaded.run), digest, loaded, image)


@st.cache_resource(show_spinner=False, max_entries=32)
def _trained_filters(path: str, stamp: tuple, _loaded: LoadedModel) -> np.ndarray:
    return inside.filter_tiles(inside.first_conv(_loaded.model))


def trained_filters(loaded: LoadedModel) -> np.ndarray:
    return _trained_filters(str(loaded.run.path), model_stamp(loaded.run), loaded)


@st.cache_resource(show_spinner="Reading the ImageNet weights…", max_entries=16)
def imagenet_filters(architecture: str) -> np.ndarray | None:
    return inside.imagenet_filters(architecture)


@st.cache_resource(show_spinner="Reading the channel tops…", max_entries=16)
def _channel_tops(path: str, stamp: float, weights: str) -> ChannelTops:
    return load_channel_tops(open_run(path))  # checks that `weights` made them


@st.cache_resource
def _computed_tops() -> dict:
    return {}  # run folder -> channel tops computed in this process for a read-only runs folder


def channel_tops(run: Run) -> ChannelTops:
    """The run's stored channel tops (ChannelError when it has none or they are another network's)."""
    weights = run.weights_sha256()
    computed = _computed_tops().get(str(run.path))
    if computed is not None and computed.weights == weights:
        return computed
    return _channel_tops(str(run.path), file_stamp(run, CHANNELS), weights)


def channel_tops_or_offer(selection: Selection, run: Run) -> ChannelTops | None:
    """The run's channel tops; when it has none, says why and offers to compute them with a progress bar."""
    try:
        return channel_tops(run)
    except ChannelError as error:
        offer_to_compute(selection, run, str(error), f"Rank the training pictures for every channel of {run.name}",
                         f"inside_tops_{run.name}", lambda index, on_batch: _compute_tops(run, index, on_batch))
        return None


def _compute_tops(run: Run, index, on_batch) -> None:
    tops = compute_channel_tops(model(run), index, progress=False, on_batch=on_batch)
    try:
        tops.save(run.path / CHANNELS)
    except OSError as error:
        st.toast(f"The runs folder is read-only ({error}): the channel tops are kept for this server process.")
        _computed_tops()[str(run.path)] = tops


@st.cache_resource(show_spinner="Where the channel fires in its top pictures…", max_entries=32)
def _regions(path: str, stamp: tuple, module: str, channel: int, root: str, files: tuple[str, ...],
             _loaded: LoadedModel, _pictures: list) -> list:
    return channel_regions(_loaded, _pictures, module, channel)


def channel_regions_of(selection: Selection, loaded: LoadedModel, tops: ChannelTops, module: str, channel: int,
                       count: int = 6) -> list[tuple[object, str]]:
    """The channel's best `count` top training pictures that the image folder holds and can decode, each with
    where the channel fires in it and its strongest response: (picture, caption), best first."""
    found = []
    for name, score in tops.top(module, channel):
        path = data_file(selection, name)
        if path is None or not path.is_file():
            continue
        try:
            found.append((name, score, load_image(path)))
        except ImageError:
            continue
        if len(found) == count:
            break
    if not found:
        return []
    shown = _regions(str(loaded.run.path), model_stamp(loaded.run), module, channel, str(selection.data_root),
                     tuple(name for name, _, _ in found), loaded, [picture for _, _, picture in found])
    return [(picture, f"{name.split('/')[-1]} · {score:.2f}") for picture, (name, score, _) in zip(shown, found)]
