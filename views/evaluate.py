import streamlit as st

import ui
from har_core.analysis import cell_samples, disagreement_matrix, metrics_table, per_class_f1_table
from har_core.data import SPLITS
from har_core.plots import confusion_figure, f1_heatmap, matrix_heatmap

selection = ui.sidebar()
st.title("📊 Evaluate")
ui.need_runs(selection)

ui.follow_link("split", "eval_split", SPLITS)
split = st.radio("Split", SPLITS, index=2, horizontal=True, key="eval_split")
ui.share_view(split=split)
with ui.friendly("Reading metrics"):
    table = metrics_table(selection.runs, split)
if table.empty:
    st.info(f"No run has metrics for the {split} split yet: `python -m train.evaluate RUN --split {split}`.")
    st.stop()
st.dataframe(table.style.format("{:.3f}").highlight_max(axis=0, color="#bbf7d0"), width="stretch")

st.subheader("F1 per class")
st.plotly_chart(f1_heatmap(per_class_f1_table(selection.runs, split)), width="stretch")

st.subheader("Confusion matrix")
left, right = st.columns([2, 1])
ui.follow_link("model", "eval_model", list(table.index))
best = int(table["accuracy"].to_numpy().argmax()) if "accuracy" in table else 0  # open on the best run
run_name = left.selectbox("Model", list(table.index), index=best, key="eval_model")
ui.share_view(model=run_name)
normalized = right.toggle("Row-normalised", key="eval_normalized")
run = selection.run(run_name)
metrics = ui.metrics(run, split)
event = st.plotly_chart(confusion_figure(metrics, normalized), width="stretch", on_select="rerun",
                        selection_mode="points", key=f"confusion_{run_name}_{split}")
points = (event or {}).get("selection", {}).get("points", []) if event else []
classes = metrics["classes"]
st.caption("Click a cell to list its images, or pick the cell here:")
cell_left, cell_right = st.columns(2)
default_true = points[0]["y"] if points else classes[0]
default_pred = points[0]["x"] if points else classes[0]
true = cell_left.selectbox("True class", classes, index=classes.index(default_true), key=f"cell_true_{bool(points) and default_true}")
predicted = cell_right.selectbox("Predicted class", classes, index=classes.index(default_pred),
                                 key=f"cell_pred_{bool(points) and default_pred}")
predictions = ui.predictions(run, split)
if predictions is not None:
    samples = cell_samples(predictions, true, predicted)
    st.markdown(f"**{len(samples)} image(s)** with true **{true}** predicted as **{predicted}** by {run_name}")
    ui.thumbnail_grid(selection, [(row.filename, f"{row.filename.split('/')[-1]} · {row.confidence:.0%}")
                                  for row in samples.head(24).itertuples()])
    st.dataframe(samples, hide_index=True, width="stretch")

if len(selection.runs) > 1:
    st.subheader("Model vs model disagreement")
    frames = {r.name: p for r in selection.runs if (p := ui.predictions(r, split)) is not None}
    if len(frames) > 1:
        st.plotly_chart(matrix_heatmap(disagreement_matrix(frames), "share of images two models label differently"),
                        width="stretch")
