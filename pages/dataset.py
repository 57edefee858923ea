import streamlit as st

import ui
from har_core.data import DataError
from har_core.plots import class_distribution, size_scatter

selection = ui.sidebar()
st.title("🗂️ Dataset")
if selection.data_root is None:
    st.info("Set the image folder in the sidebar (Kaggle layout or one folder per class).")
    st.stop()


try:
    summary = ui.dataset(selection.data_root)
except DataError as error:
    st.error(str(error))
    st.stop()
counts = summary["counts"]
a, b, c = st.columns(3)
a.metric("Images", int(counts.sum()))
b.metric("Classes", len(summary["classes"]))
c.metric("Unreadable or skipped", len(summary["problems"]))
a.caption(f"{summary['copies']['picture'].nunique() if len(summary['copies']) else 0} picture(s) stored twice or more")
st.subheader("Class distribution")
st.plotly_chart(class_distribution(counts), width="stretch")
st.subheader("Image sizes")
st.plotly_chart(size_scatter(summary["sizes"]), width="stretch")
st.subheader("Samples per class")
per_class = st.slider("Images per class", 2, 10, 6, key="dataset_per_class")
sizes = summary["sizes"]
for label in summary["classes"]:
    files = sizes.loc[sizes["label"] == label, "filename"].head(per_class).tolist()
    st.markdown(f"**{label}** · {int(counts[label])} images")
    row = st.columns(per_class)
    for column, name in zip(row, files):
        image = ui.thumb(selection, name, 140)
        if image is not None:
            column.image(image)
if len(summary["copies"]):
    st.subheader("Copies of one picture")
    st.caption("Identical files under different names (by content hash). A split keeps each picture's copies "
               "together, so none is tested on a picture it trained on.")
    st.dataframe(summary["copies"], hide_index=True, width="stretch")
if len(summary["problems"]):
    st.subheader("Unreadable or skipped files")
    st.dataframe(summary["problems"], hide_index=True, width="stretch")
