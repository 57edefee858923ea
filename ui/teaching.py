"""Teach: a linear head on a run's embeddings (har_core.training.teach), one per visitor."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from har_core.models import artifacts
from har_core.models.artifacts import Run, RunError, run_zip
from har_core.data.datasets import scan_cached
from har_core.data.imaging import load_image
from har_core.data.labels import spoken
from har_core.training.teach import TaughtHead, TeachError, embed, save_head, teach
from ui.answers import read_uploads
from ui.common import IMAGE_TYPES, Selection, best_run, config, first_scan, folder_stamp, friendly, model


@st.cache_resource(show_spinner="Scanning the image folder…", max_entries=8)
def _folder_index(root: str, max_images: int, stamp: str, _index=None):
    return _index if _index is not None else scan_cached(root, confine=True, max_images=max_images, stamp=stamp)


def folder_index(root: Path):
    """The image folder's index, once per folder content: its first scan shows a progress bar where it is asked
    (`first_scan`) and is kept here, so a scan store that cannot be written is not scanned again for a class card."""
    return _folder_index(str(root), config().max_scan_images, folder_stamp(str(root)), _index=first_scan(root))


def teach_pictures(selection: Selection, i: int) -> list:
    """One class's pictures: uploads, a folder, camera shots (each new shot is added) or pictures of a class
    of the chosen image folder. Undecodable files are named and left out."""
    # keyed: the tab a visitor opened stays open when the page above it changes (the first scan's bar, gone on the
    # next run, moved an unkeyed card's tabs, and picking a class jumped back to Upload: #41 walk)
    tabs = st.tabs(["📁 Upload", "🗂️ Folder", "📷 Camera", "🖼️ Data set"], key=f"teach_tabs_{i}")
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
                index = folder_index(selection.data_root)
                left, right = st.columns([2, 1])
                label = left.selectbox("Class of the data set", ["—"] + index.classes, key=f"teach_data_{i}",
                                      format_func=lambda name: name if name == "—" else spoken(name))
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


def teach_sureness(metrics: dict) -> str:
    """One line on how sure the head is and why: its C, chosen so that it is as sure as it is right."""
    line = f"How strongly the head is held back (C = {metrics['C']:.3g}) was chosen so it is as sure as it is right"
    checked = metrics.get("cross_validated")
    if checked:
        line += (f": tried on each taught picture while learning from the others, it was right on "
                 f"{checked['accuracy']:.0%} and {checked['confidence']:.0%} sure on average")
    return line + (f". On the pictures kept aside: right on {metrics['accuracy']:.0%}, "
                   f"{metrics['held_out_confidence']:.0%} sure on average.")


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



def teach_base(selection: Selection, where) -> Run:
    """The run whose embeddings a head learns on: preselected, the best val accuracy (the best features make
    the best head); `where` is the column the choice is drawn in."""
    best = selection.names().index(best_run(selection.runs).name)
    name = where.selectbox("Learn on the embeddings of", selection.names(), index=best, key="teach_base",
                           help="Preselected: the run with the best val accuracy.")
    return selection.run(name)
