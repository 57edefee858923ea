"""Video: clips decoded and timelines computed once per clip content, settings, weights and engine."""
from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from har_core.models.artifacts import Run
from har_core.models.calibration_maths import DEFAULT_TARGET_ACCURACY
from har_core.models.inference import LoadedModel
from har_core.explain.timeline import Timeline, timeline
from har_core.data.video import VIDEO_SUFFIXES, Clip, VideoError, read_clip, read_video_file
from ui.common import Selection, data_file, friendly
from ui.sureness import abstain_threshold_of, ensemble_temperature, never_reached


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


def clip_or_say(name: str, digest: str, data: bytes, fps: float) -> Clip | None:
    """The clip's sampled frames, or None after one plain line saying why the file cannot be used (a bad file is
    the visitor's, not the app's failure: no red box)."""
    try:
        return clip_of(digest, data, fps)
    except VideoError as error:
        st.warning(f"{name} cannot be used: {error}.", icon="🎞️")
        return None


@st.cache_resource
def _timelines() -> dict:
    return {}


def timeline_of(digest: str, data: bytes, fps: float, loaded: list[LoadedModel]) -> Timeline:
    """Every model's per-frame calibrated probabilities (and their ensemble at its own temperature), computed once
    per clip, rate and set of
    models with a progress bar (kept in a plain dict: a cached function could not draw the bar)."""
    temperature = ensemble_temperature([m.run for m in loaded])
    key = (digest, fps, temperature, tuple((str(m.run.path), m.weights, m.backend, m.temperature, m.tta)
                                           for m in loaded))  # each model in its calibrated TTA mode
    store = _timelines()
    if key not in store:
        bar = st.progress(0.0, text="Predicting the frames…")
        store[key] = timeline(loaded, clip_of(digest, data, fps), on_batch=lambda done, total: bar.progress(
            done / total, text=f"Predicting the frames: {done}/{total}"), source=data, ensemble_temperature=temperature)
        bar.empty()
        while len(store) > 8:  # the oldest first
            store.pop(next(iter(store)))
    return store[key]


UNCALIBRATED_THRESHOLD = 0.5  # a row that cannot be calibrated: "no known action" below an even chance


def no_action_thresholds(rows: dict[str, list[Run]]) -> dict[str, tuple[float, str]]:
    """Each timeline row's own "no known action" threshold, and how the page says it: the confidence above which
    the answers of its run (the ensemble's row: of its members together) on their calibration pictures were
    DEFAULT_TARGET_ACCURACY right. When no confidence reaches that, every frame is below (1.0, "never reached
    90 %"); when the row cannot be calibrated, UNCALIBRATED_THRESHOLD and the reason."""
    thresholds = {}
    for name, runs in rows.items():
        found = abstain_threshold_of(runs)
        if isinstance(found, str):
            thresholds[name] = (UNCALIBRATED_THRESHOLD, f"{UNCALIBRATED_THRESHOLD:.0%} (cannot be calibrated: {found})")
        elif found is None:
            thresholds[name] = (1.0, never_reached(DEFAULT_TARGET_ACCURACY))
        else:
            thresholds[name] = (found, f"{found:.0%}")
    return thresholds
