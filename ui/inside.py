"""Inside the network: each stage's output for a picture and the first layer's filters, cached per model."""
from __future__ import annotations

import numpy as np
import streamlit as st

from har_core import inside
from har_core.inference import LoadedModel
from ui.common import model_stamp


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
