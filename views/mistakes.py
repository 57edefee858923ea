import streamlit as st

from har_core.evaluation.analysis import mistakes, picture_cards
from har_core.explain.cam import overlay_on_picture
from har_core.evaluation.ensemble import default_members
from har_core.models.artifacts import predictions_file
from har_core.data.imaging import image_digest, load_image
from har_core.data.labels import picture_name, spoken
from har_core.data.video import VIDEO_SUFFIXES
from ui.answers import explanation
from ui.choices import follow_link, share_view, sidebar
from ui.clips import folder_clip
from ui.common import (calibration_note, controls_at_the_foot, data_file, friendly, grid, model_columns,
                       models as loaded_models, need_runs, predictions, splits_with, thumb)
from ui.similar import nearest_training_images

selection = sidebar()
st.title("🧐 Mistakes")
st.caption("Misclassified images, the most confident mistakes first (calibrated confidence: each run's "
           "temperature, fitted on val).")
need_runs(selection)

splits = splits_with(selection.runs, predictions_file) or ["test"]  # only splits with stored predictions
follow_link("split", "mistakes_split", splits)
split = st.radio("Split", splits, index=splits.index("test") if "test" in splits else len(splits) - 1,
                 horizontal=True, key="mistakes_split")
share_view(split=split)
frames = {r.name: p for r in selection.runs if (p := predictions(r, split)) is not None}
if not frames:
    st.info(f"No predictions for the {split} split.")
    st.stop()
for note in [note for r in selection.runs if r.name in frames and (note := calibration_note(r))]:
    st.caption(f"⚠️ {note}")
classes = selection.runs[0].classes
studied = [name for name in default_members(selection.runs) if name in frames] or list(frames)
# a row of its own: in a fifth of the page at 1280 px the chosen models were hidden
models = st.multiselect("Models", list(frames), default=studied, key="mistakes_models",
                        help="Default: the ensemble's default members (the runs that started from ImageNet "
                             "weights, when two or more): near-chance runs err everywhere.")
filters = st.columns(4)
true_class = filters[0].selectbox("True class", ["(any)"] + classes, key="mistakes_true", format_func=spoken)
predicted_class = filters[1].selectbox("Predicted class", ["(any)"] + classes, key="mistakes_pred", format_func=spoken)
low, high = filters[2].slider("Confidence", 0.0, 1.0, (0.0, 1.0), 0.05, key="mistakes_conf",
                              help="A picture is listed when a chosen model's wrong answer has a confidence in this "
                                   "range; its card still shows every chosen model's answer.")
SHOW_WORDS = {"any": "(any)", "all wrong": "every model wrong", "disagree": "models disagree"}
only = filters[3].selectbox("Show", list(SHOW_WORDS), key="mistakes_only", format_func=SHOW_WORDS.get,
                            help="every model wrong: each chosen model errs on the picture; models disagree: they "
                                 "predict different classes")  # a list like its neighbours: as a radio it wrapped
table = mistakes(frames, models or None, None if true_class == "(any)" else true_class,
                 None if predicted_class == "(any)" else predicted_class, (low, high), only)
st.markdown(f"**{len(table)} mistakes** ({table['filename'].nunique() if len(table) else 0} images)")
st.download_button("⬇️ Export as CSV", table.to_csv(index=False), f"mistakes_{split}.csv", "text/csv")

shown_frames = {name: frames[name] for name in (models or list(frames))}
if selection.data_root is None:
    st.caption("Set the image folder in the sidebar to see the pictures.")


def open_detail(filename: str) -> None:
    st.session_state["mistakes_detail"] = filename
    st.session_state["mistakes_opened"] = True  # shown in a window over the cards, where the click was


def detail(chosen: str) -> None:
    """One picture: the picture itself, every model's answer, the training pictures each model finds most like
    it, and (on request) each model's Grad-CAM."""
    answers = {name: f.set_index("filename").loc[chosen] for name, f in shown_frames.items()
               if chosen in set(f["filename"])}
    rows = [{"run": name, "predicted": spoken(row["predicted"]), "confidence": f"{row['confidence']:.0%}"}
            for name, row in answers.items()]
    left, right = st.columns([1, 2])
    path = data_file(selection, chosen)
    if path is not None and path.suffix.lower() not in VIDEO_SUFFIXES:
        with friendly(f"Reading {chosen}"):
            left.image(load_image(path), caption=picture_name(chosen), width="stretch")  # the picture, always
    right.markdown(f"True class: **{spoken(table.loc[table['filename'] == chosen, 'true'].iloc[0])}**")
    right.dataframe(rows, hide_index=True, width="stretch")
    if st.toggle("Nearest training images, per model", value=True, key="mistakes_neighbours",
                 help="The training pictures each model finds most like this one: often the ones that pulled "
                 "it to the wrong class."):
        for name in shown_frames:
            with friendly(f"Nearest training images for {name}"):
                nearest_training_images(selection, selection.run(name), chosen)
    if path is not None and path.suffix.lower() in VIDEO_SUFFIXES:  # a clip model's mistake: play the clip
        with friendly(f"Reading {chosen}"):
            st.video(folder_clip(selection, chosen))
    elif path is not None and st.toggle("Show Grad-CAM for every model", key="mistakes_cam"):
        loaded = loaded_models([selection.run(n) for n in shown_frames])
        with friendly(f"Reading {chosen}"):
            image = load_image(path)
            cells = model_columns(len(loaded))
            for i, model in enumerate(loaded):
                with friendly(f"Grad-CAM for {model.name}"), st.spinner(f"Grad-CAM for {model.name}…"):
                    result = explanation(model, image, image_digest(image), "Grad-CAM", None)
                    if result.empty:  # a blank map would read as an answer
                        cells[i].caption(f"⚠️ {model.name}: Grad-CAM marks no part of this "
                                           f"picture for {spoken(model.classes[result.target])}: its "
                                           "map is empty.")
                        continue
                    cells[i].image(
                        overlay_on_picture(result, image, model.run.card["input_size"], model.run.card["crop_pct"]),
                        caption=f"{model.name}: {spoken(model.classes[result.target])}", width="stretch")


cards = picture_cards(shown_frames, table)
cells = grid(len(cards), 4)
controls_at_the_foot("mistake_card")
for i, card in enumerate(cards):  # one card per picture, every model's answer
    with cells[i].container(border=True, key=f"mistake_card_{i}", height="stretch"):
        picture = thumb(selection, card["filename"], 240)
        if picture is not None:
            st.image(picture, width="stretch")
        st.markdown(f"**{spoken(card['true'])}** · {card['wrong']}/{len(card['answers'])} wrong")
        # the card's content, in the text's own colour: a caption's grey was the faintest line on a projector
        st.markdown("  \n".join(f"{'✅' if right else '❌'} {name}: {spoken(predicted)} {confidence:.0%}"
                                for name, predicted, confidence, right in card["answers"]))
        st.button("Open ▸", key=f"open_mistake_{i}", on_click=open_detail, args=(card["filename"],),
                  width="stretch")
with st.expander("All mistakes as a table (one row per picture and model)"):
    st.dataframe(table.assign(filename=table["filename"].map(picture_name)).rename(columns={"filename": "picture"}),
                 hide_index=True, width="stretch")

if len(table):
    st.subheader("Detail")
    files = table["filename"].unique().tolist()
    if st.session_state.get("mistakes_detail") not in files:  # a filter left it out: the first one, said to the
        st.session_state["mistakes_detail"] = files[0]  # browser too (dropped, the box kept showing the old name)
    chosen = st.selectbox("Image", files, key="mistakes_detail", format_func=picture_name,
                          help="Or click Open on a card above.")
    if st.session_state.pop("mistakes_opened", False):  # a card's Open: the detail comes to the visitor
        st.dialog(f"{spoken(table.loc[table['filename'] == chosen, 'true'].iloc[0])} · {picture_name(chosen)}",
                  width="large", on_dismiss="rerun")(detail)(chosen)  # closed: the detail is drawn below
        st.caption("Shown in the window over the cards; close it to see it here.")
    else:
        detail(chosen)
