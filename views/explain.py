import io
import time

import streamlit as st

from har_core.explain.cam import (CLASS_AGNOSTIC, EXPLANATIONS, OCCLUSION, SLOW_METHODS, occlusion_window,
                                  overlay_on_picture)
from har_core.data.labels import picture_name, spoken
from har_core.evaluation.plots import heat_scale_html
from har_core.data.imaging import image_digest
from ui.answers import explanation, image_source, invite_to_give_a_picture
from ui.choices import follow_link, share_view, sidebar
from ui.common import folded_when_presenting, friendly, image_models, model_columns, models, need_runs

selection = sidebar()
st.title("🔥 Explain (Grad-CAM)")
st.caption("Where does each model look? Warm colours mark the parts of the picture that count most for the chosen "
           "class.")
need_runs(selection)
selection = image_models(selection)
classes = selection.runs[0].classes

follow_link("models", "cam_models", selection.names(), many=True)
follow_link("method", "cam_method", list(EXPLANATIONS))
follow_link("cls", "cam_class", classes)
# presenting, the maps come first on a projector's screen: the models and the method fold away, as on Predict
with folded_when_presenting("Models and method"):
    # the models the whole width: beside Method, six runs' chips ran past the picker's edge, cut or out of sight
    chosen = st.multiselect("Models", selection.names(), default=selection.names(), key="cam_models")
    method = st.columns([1, 2])[0].selectbox("Method", list(EXPLANATIONS), key="cam_method")
if method == OCCLUSION:
    st.warning("Occlusion covers one patch of the picture at a time with a grey square and runs the model again "
               "for each (about 170 forward passes a model): it needs no layer or gradient, so it works for any "
               "model, but expect a wait on CPU. The server computes one at a time for all visitors.")
elif method in SLOW_METHODS:
    st.warning(f"{method} runs one forward pass per channel of the target layer: expect a long wait on CPU. "
               "The server computes one at a time for all visitors.")
if method in CLASS_AGNOSTIC:
    st.info(f"{method} does not depend on the class: it shows the main component of the target layer's "
            "activations, the same map whichever class is chosen.")
images, names = image_source(selection, key="cam", multiple=False)
share_view(models=chosen, method=method)
if not images:
    invite_to_give_a_picture("cam", "Upload a photo, take one with the camera, or pick a sample.")
    st.stop()
loaded = models([selection.run(n) for n in chosen])
digest = image_digest(images[0])

UNLIKELY = 0.05  # a class given less than this: its map answers "what would raise it", say so


def stop_slow_method():
    """The Stop button: Streamlit ends the running computation on the click's rerun, which then shows Continue."""
    st.session_state["cam_stopped"] = st.session_state["cam_task"]


@st.fragment
def maps():
    """Class and opacity rerun only this part: the maps of every class are cached, so it only blends."""
    original, controls = st.columns([1, 3])
    original.image(images[0], caption=f"{picture_name(names[0])} (as given)", width="stretch")
    left, right = controls.columns([1, 2])
    target = left.selectbox("Class", ["predicted class"] + classes, key="cam_class")
    opacity = right.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="cam_opacity")
    if target != "predicted class":
        share_view(cls=target)
    elif "cls" in st.query_params:
        del st.query_params["cls"]
    with controls:
        st.html(heat_scale_html(covering=method == OCCLUSION))
        st.caption("Each map covers the whole picture: the outlined square is what the model saw (its centre "
                   "crop); it never saw the dimmed rest. Maps explain one look at the picture as given, so the "
                   "percentages here are that look's: Predict's flip TTA averages it with its mirror image.")
    task = (digest, method, target)
    slow = method in SLOW_METHODS
    if slow and st.session_state.get("cam_stopped") == task:
        st.info(f"{method} stopped. The maps already computed are kept: continuing computes only the others.")
        st.button("▶ Continue", key="cam_continue", on_click=lambda: st.session_state.pop("cam_stopped", None))
        return
    if slow:  # a forward per channel: say how far it is, draw each map as it is done, and let it be stopped
        st.session_state["cam_task"] = task  # the computation a Stop click stops
        bar_column, stop_column = st.columns([4, 1])
        bar_slot, stop_slot = bar_column.empty(), stop_column.empty()
        progress = bar_slot.progress(0.0, text=f"{method}: starting…")
        stop_slot.button("⏹ Stop", key="cam_stop", on_click=stop_slow_method,
                         help="Stops after the model being computed (the server finishes its forward passes).")
    started, drawn = time.perf_counter(), 0
    cells = model_columns(len(loaded))
    for i, model in enumerate(loaded):
        with cells[i].container(border=True, height="stretch"), friendly(f"{method} for {model.name}"):
            if target != "predicted class" and target not in model.classes:
                st.caption(f"**{model.name}** has no class '{target}': it was trained on other classes.")
                continue
            index = None if target == "predicted class" else model.classes.index(target)
            if slow:
                progress.progress(i / len(loaded), text=f"{method}: {model.name} ({i + 1} of {len(loaded)}) · "
                                                        f"{time.perf_counter() - started:.0f} s so far")
            with st.spinner(f"{method} for {model.name}…"):
                began = time.perf_counter()
                result = explanation(model, images[0], digest, method, index)
                took = time.perf_counter() - began
            if result.empty:  # a blank map would read as an answer: say there is none
                st.caption(f"⚠️ {method} marks no part of this picture for {spoken(model.classes[result.target])}: "
                           "its map is empty.")
                picture = None
            else:
                picture = overlay_on_picture(result, images[0], model.run.card["input_size"],
                                             model.run.card["crop_pct"], opacity)
                st.image(picture, width="stretch")
            drawn += 1
            predicted = spoken(model.classes[int(result.probs.argmax())])
            if method in CLASS_AGNOSTIC:
                st.markdown(f"**{model.name}** · {method} (class-agnostic) · predicted **{predicted}** "
                            f"({result.probs.max():.0%})")
            else:
                st.markdown(f"**{model.name}** · explains **{spoken(model.classes[result.target])}** "
                            f"({result.probs[result.target]:.0%}) · predicted {predicted}")
                if result.probs[result.target] < UNLIKELY:
                    st.caption(f"⚠️ {model.name} gives {spoken(model.classes[result.target])} only "
                               f"{result.probs[result.target]:.0%}: the map shows what would raise that class, not "
                               "what the model sees in the picture.")
            if slow:
                size = model.run.card["input_size"]
                how = (f"a {occlusion_window(size)[0]}-px patch moved {occlusion_window(size)[1]} px at a time"
                       if method == OCCLUSION else "a forward per channel")
                st.caption(f"⏱ {took:.1f} s ({how})" if took > 0.05 else f"⏱ computed before ({how}): kept")
            if model.calibration_note:
                st.caption(f"⚠️ {model.calibration_note}")
            if picture is not None:
                buffer = io.BytesIO()
                picture.save(buffer, format="PNG")
                st.download_button("⬇️ PNG", buffer.getvalue(), f"{model.name}_{method}.png", "image/png",
                                   key=f"cam_download_{model.name}")
    if slow:  # done: the bar and the Stop button give way to one line
        bar_slot.caption(f"✅ {method}: {drawn} map{'s' * (drawn != 1)} in {time.perf_counter() - started:.0f} s")
        stop_slot.empty()


maps()
