import streamlit as st

from har_core.data.labels import spoken
from har_core.evaluation.plots import confusion_figure, probability_bars
from har_core.training.teach import FEW_HELD_OUT, MAX_CLASSES, MIN_CLASSES
from ui.answers import read_uploads
from ui.choices import sidebar
from ui.common import IMAGE_TYPES, figure, friendly, grid, image_models, need_runs, remembered
from ui.teaching import (folder_index, runs_folder_writable, save_taught, taught_probabilities, taught_zip,
                         teach_base, teach_head, teach_pictures, teach_sureness)

selection = sidebar()
st.title("🎓 Teach a new action")
st.caption("Name a few actions, give each some pictures, and a model you trained learns them in seconds: a "
           "linear head (logistic regression) on its frozen embeddings.")
need_runs(selection)
selection = image_models(selection)
if selection.data_root is not None:  # its first scan here, in view, not in a card's closed "Data set" tab (#41 walk)
    with friendly("Reading the image folder"):
        folder_index(selection.data_root)

top = st.columns([2, 1])
base_run = teach_base(selection, top[0])
count = top[1].number_input("Classes", MIN_CLASSES, MAX_CLASSES, 3, key="teach_count",
                            help=f"From {MIN_CLASSES} to {MAX_CLASSES}: a card for each.")

names, pictures = [], []
cells = grid(count, 2)  # two a row: a third of the page hid the fourth way to add pictures
for i in range(count):
    with cells[i].container(border=True, height="stretch"):
        # remembered: fewer classes, then more again, brings a card back with the name typed in it (#41 walk)
        names.append(remembered(st.text_input, "Class name", f"teach_name_{i}", "", placeholder="e.g. waving"))
        pictures.append(teach_pictures(selection, i))
        st.caption(f"{len(pictures[-1])} picture{'s' if len(pictures[-1]) != 1 else ''}")
        if pictures[-1]:
            st.image(pictures[-1][:8], width=56)

if st.button("🎓 Train", type="primary", key="teach_train"):
    teach_head(base_run, names, pictures)

head = st.session_state.get("teach_head")
if head is None:
    st.info(f"Type {MIN_CLASSES}–{MAX_CLASSES} class names, give each at least two pictures (one is kept aside "
            "to test), then press Train.")
    st.stop()

st.subheader("How well it learned")
metrics = head.metrics
held_out = int((head.split["split"] == "test").sum())
a, b, c = st.columns(3)
low, high = metrics["accuracy_interval"]
a.metric("Held-out accuracy", f"{metrics['accuracy']:.0%}",
         help="The interval (Wilson) is where the true accuracy on pictures like these likely lies: with few "
         "held-out pictures it is wide.")
a.caption(f"{held_out} pictures kept aside · 95% interval {low:.0%}–{high:.0%}")  # a caption wraps, a delta is cut
b.metric("Learned from", f"{len(head.split) - held_out} pictures")
b.caption(f"{len(head.classes)} classes")
c.metric("Time", f"{sum(head.seconds.values()):.1f} s")
c.caption(f"embed {head.seconds['embed']:.1f} s · fit {head.seconds['fit']:.2f} s")
if held_out < FEW_HELD_OUT:
    st.warning(f"Only {held_out} pictures were kept aside to test: the accuracy above is a rough guess "
               f"(anywhere from {low:.0%} to {high:.0%}). Add pictures — at least {FEW_HELD_OUT} held out — "
               "before trusting it.")
st.caption(teach_sureness(metrics))
st.plotly_chart(figure(confusion_figure, metrics, title="Held-out pictures"), width="stretch", key="teach_confusion")

st.subheader("Try it")
shot = st.camera_input("A new picture", key="teach_try_camera") if st.toggle("Use the camera", key="teach_try_cam") \
    else st.file_uploader("A new picture", type=IMAGE_TYPES, key="teach_try_upload")
if shot is not None:
    images, _ = read_uploads([shot])
    if images:
        probs = taught_probabilities(head, images[0])
        left, right = st.columns([1, 2])
        left.image(images[0], width="stretch")
        with right:
            st.markdown(f"### {spoken(head.classes[int(probs.argmax())])}")
            st.html(probability_bars(probs, head.classes, k=len(head.classes)))

st.subheader("Keep it")
name = st.text_input("Run name", f"taught_{head.base.name}", key="teach_run_name")
left, right = st.columns(2)
if left.button("💾 Save to the runs folder", key="teach_save", disabled=not runs_folder_writable(selection),
               help="The sidebar's runs folder; read-only folders offer the download only."):
    with friendly("Saving"):
        saved = save_taught(selection, head, name)
        st.success(f"Saved as {saved.name}. Every page shows it once its class list is picked in the sidebar "
                   "(**Class list**), beside any other run of these classes.")
right.download_button("⬇️ Download the run (zip)", lambda: taught_zip(head, name), f"{name}.zip",
                      "application/zip", key="teach_zip")
