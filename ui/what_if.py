"""Predict's What-if panel: sliders that edit the picture, and every model's answer on the edited picture."""
from __future__ import annotations

import numpy as np
import streamlit as st

from har_core.data import spans
from har_core.explain import whatif
from har_core.data.imaging import image_digest, resize_side
from har_core.models.inference import LoadedModel, Prediction, ensemble
from har_core.data.labels import breakable, spoken
from ui.answers import as_model_sees, predict_edited
from ui.common import grid
from ui.sureness import ensemble_temperature

CARDS_A_ROW = 4  # the cards on the edited picture: the ensemble's and six runs' in two rows
# the edited picture at most about as tall as the sliders beside it: a tall one pushed the cards below a projector's
# screen (the picture keeps its shape inside the column's width)
SHORT_PICTURE = """<style>.st-key-edited_picture img { max-height: 10rem; object-fit: contain; }</style>"""


def edit_controls() -> whatif.Edit:
    """The panel's sliders, as one edit: four a row, the box's two ranges in the second row's free places and the
    switches under them, so the panel is as tall with the box as without it. Presenting at 1280×720, three a row and
    the box's row below them filled the projector's screen, the cards they redraw under it (#41 walk)."""
    a, b, c, d = st.columns(4)
    brightness = a.slider("Brightness", 0.1, 2.0, 1.0, 0.05, key="whatif_brightness")
    contrast = b.slider("Contrast", 0.1, 2.0, 1.0, 0.05, key="whatif_contrast")
    # short labels: on one line in a quarter of the panel, presenting (a second line set its slider lower)
    blur = c.slider("Blur (%)", 0.0, 5.0, 0.0, 0.25, key="whatif_blur", help="How far it spreads: % of the picture.")
    noise = d.slider("Noise", 0.0, 0.4, 0.0, 0.02, key="whatif_noise")
    a, b, box_x, box_y = st.columns(4)
    rotation = a.slider("Rotation (°)", -90, 90, 0, 5, key="whatif_rotation")
    zoom = b.slider("Zoom (×)", 1.0, 3.0, 1.0, 0.1, key="whatif_zoom", help="Into the picture's centre.")
    a, c = st.columns(2)  # a half each: whole labels; the right half under the places the box's ranges take
    flip = a.toggle("Mirror left–right", key="whatif_flip")
    cover = None
    if c.toggle("Cover a box", key="whatif_cover"):
        (left, right), (top, bottom) = (box_x.slider("Box left–right (%)", 0, 100, (30, 70), key="whatif_box_x"),
                                        box_y.slider("Box top–bottom (%)", 0, 100, (30, 70), key="whatif_box_y"))
        cover = (left / 100, top / 100, right / 100, bottom / 100)
    return whatif.Edit(brightness=brightness, contrast=contrast, blur=blur / 100, noise=noise,
                       rotation=float(rotation), zoom=zoom, flip=flip, cover=cover)


def forget_edits() -> None:
    """The sliders' values dropped while no picture is shown: the panel is not drawn then, and Streamlit keeps the
    values of a fragment's widgets it did not draw, so the next picture met the old edit (turned 90°) under sliders
    the browser drew at their defaults (#41 walk). The panel's open or closed state stays."""
    for key in [key for key in st.session_state if key.startswith("whatif_") and key != "whatif_open"]:
        del st.session_state[key]


@st.fragment(key="what_if")
@spans.fragment_run("What-if panel")
def what_if(image, loaded: list[LoadedModel], predictions: list[Prediction], members: list[str], member_runs: list,
            classes: list[str], tta: bool) -> None:
    """The What-if panel under Predict's cards: each model meets the edited picture at its own size
    (ui.predict_edited), and its card says its answer now and how far its confidence in its first answer moved;
    the ensemble's card is the ensemble (its own temperature) of the members' edited answers. A fragment: opening
    it or moving a slider reruns the panel alone, and the page's cards above stay as they are (the whole page rerun
    and redrawn cost a slider move ~0.1 s more on the server and ~0.2 s more in the browser)."""
    panel = st.expander("🎛️ **What if…** darken, blur, turn or cover the picture", key="whatif_open",
                        on_change="rerun")
    if panel.open:  # built when opened: a room of thirty draws no sliders that few move (#41)
        with panel:
            _panel(image, loaded, predictions, members, member_runs, classes, tta)


def _panel(image, loaded: list[LoadedModel], predictions: list[Prediction], members: list[str], member_runs: list,
           classes: list[str], tta: bool) -> None:
    st.caption("Watch every model's answer change as you edit the picture (each model's at its own size). Each card: "
               "its answer now (⚠️ when it changed), and how far its confidence in its first answer moved.")
    shown, controls = st.columns([1, 3])
    with controls:
        edit = edit_controls()
    digest = image_digest(image)
    with st.spinner("Every model on the edited picture…"):
        after = predict_edited(loaded, image, digest, edit, tta)  # each model edited in its own thread, side by side
    largest = max(loaded, key=lambda m: resize_side(m.run.card["input_size"], m.run.card["crop_pct"]))
    side = resize_side(largest.run.card["input_size"], largest.run.card["crop_pct"])
    shown.html(SHORT_PICTURE)
    shown.container(key="edited_picture").image(
        as_model_sees(largest, image, digest, edit), width="stretch",  # edited above: from the cache
        caption="move a slider: the picture as given" if edit.unchanged else
        f"the edited picture as {largest.name} sees it ({side} px)")
    temperature = ensemble_temperature(member_runs)
    cards = [("Ensemble", ensemble(predictions, members, temperature)[0], ensemble(after, members, temperature)[0])]
    cards += [(p.model, p.probs[0], q.probs[0]) for p, q in zip(predictions, after)]
    # a row at a time, each card as tall as its row: a name that wraps ("efficientnet_" / "lite2") left the
    # columns' cards at different heights (#41 walk)
    for i, (cell, (name, before, now)) in enumerate(zip(grid(len(cards), CARDS_A_ROW), cards)):
        cell.container(border=True, height="stretch", key=f"edited_card_{i}").markdown(
            card_words(name, before, now, classes))


def card_words(name: str, before: np.ndarray, now: np.ndarray, classes: list[str]) -> str:
    """A What-if card: the answer now (⚠️ when it changed) and the move of the confidence in the first answer."""
    was, answer = int(before.argmax()), int(now.argmax())
    moved = (now[was] - before[was]) * 100
    first = spoken(classes[was])
    # in words: "= 0.0 pts" read as a formula; a move under 0.05 points rounds to nothing
    move = f":red[▼ {-moved:.1f} points less sure of {first}]" if moved < -0.05 else \
        f":green[▲ {moved:.1f} points more sure of {first}]" if moved > 0.05 else f":gray[no change for {first}]"
    # "now 44% sure" of the answer now, said: under a changed answer it read as of the first
    return (f"**{breakable(name)}**\n\n#### {'⚠️ ' if answer != was else ''}{spoken(classes[answer])}\n\n"
            f"{move} · now {now.max():.0%} sure of {spoken(classes[answer])}")
