import streamlit as st

import ui
from har_core.analysis import mistakes
from har_core.cam import overlay
from har_core.data import SPLITS
from har_core.imaging import image_digest, load_image
from har_core.video import VIDEO_SUFFIXES

selection = ui.sidebar()
st.title("🧐 Mistakes")
st.caption("Misclassified images, the most confident mistakes first (calibrated confidence: each run's "
           "temperature, fitted on val).")
ui.need_runs(selection)

ui.follow_link("split", "mistakes_split", SPLITS)
split = st.radio("Split", SPLITS, index=2, horizontal=True, key="mistakes_split")
ui.share_view(split=split)
frames = {r.name: p for r in selection.runs if (p := ui.predictions(r, split)) is not None}
if not frames:
    st.info(f"No predictions for the {split} split.")
    st.stop()
for note in [note for r in selection.runs if r.name in frames and (note := ui.temperature(r)[1])]:
    st.caption(f"⚠️ {note}")
classes = selection.runs[0].classes
filters = st.columns([2, 1, 1, 1, 1])
models = filters[0].multiselect("Models", list(frames), default=list(frames), key="mistakes_models")
true_class = filters[1].selectbox("True class", ["(any)"] + classes, key="mistakes_true")
predicted_class = filters[2].selectbox("Predicted class", ["(any)"] + classes, key="mistakes_pred")
low, high = filters[3].slider("Confidence", 0.0, 1.0, (0.0, 1.0), 0.05, key="mistakes_conf")
only = filters[4].radio("Show", ["any", "all wrong", "disagree"], key="mistakes_only",
                        help="all wrong: every shown model errs; disagree: the models predict different classes")
table = mistakes(frames, models or None, None if true_class == "(any)" else true_class,
                 None if predicted_class == "(any)" else predicted_class, (low, high), only)
st.markdown(f"**{len(table)} mistakes** ({table['filename'].nunique() if len(table) else 0} images)")
st.download_button("⬇️ Export as CSV", table.to_csv(index=False), f"mistakes_{split}.csv", "text/csv")

if selection.data_root is not None and len(table):
    ui.thumbnail_grid(selection, [(row.filename, f"{row.run}: {row.true} → {row.predicted} ({row.confidence:.0%})")
                                  for row in table.head(30).itertuples()])
else:
    st.caption("Set the image folder in the sidebar to see thumbnails.")
st.dataframe(table, hide_index=True, width="stretch")

if len(table):
    st.subheader("Detail")
    chosen = st.selectbox("Image", table["filename"].unique().tolist(), key="mistakes_detail")
    rows = [{"run": name, **f.set_index("filename").loc[chosen, ["predicted", "confidence"]].to_dict()}
            for name, f in frames.items() if chosen in set(f["filename"])]
    st.markdown(f"True class: **{table.loc[table['filename'] == chosen, 'true'].iloc[0]}**")
    st.dataframe(rows, hide_index=True, width="stretch")
    if st.toggle("Nearest training images, per model", value=True, key="mistakes_neighbours",
                 help="The training pictures each model finds most like this one: often the ones that pulled "
                 "it to the wrong class."):
        for name in frames:
            with ui.friendly(f"Nearest training images for {name}"):
                ui.nearest_training_images(selection, selection.run(name), chosen)
    path = ui.data_file(selection, chosen)
    if path is not None and path.suffix.lower() in VIDEO_SUFFIXES:  # a clip model's mistake: play the clip
        with ui.friendly(f"Reading {chosen}"):
            st.video(ui.folder_clip(selection, chosen))
    elif path is not None and st.toggle("Show Grad-CAM for every model", key="mistakes_cam"):
        loaded = ui.models([selection.run(n) for n in frames])
        with ui.friendly(f"Reading {chosen}"):
            image = load_image(path)
            columns = ui.model_columns(len(loaded))
            for i, model in enumerate(loaded):
                with ui.friendly(f"Grad-CAM for {model.name}"), st.spinner(f"Grad-CAM for {model.name}…"):
                    result = ui.explanation(model, image, image_digest(image), "Grad-CAM", None)
                    columns[i % len(columns)].image(overlay(result), caption=f"{model.name}: "
                                                    f"{model.classes[result.target]}", width="stretch")
