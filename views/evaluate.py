import streamlit as st

from har_core.evaluation.analysis import HEADLINE, biggest_mix_up, cell_samples, metrics_table, per_class_f1_table
from har_core.data.labels import picture_name, spoken
from har_core.evaluation.plots import confusion_figure, disagreement_heatmap, f1_heatmap, robustness_heatmap
from har_core.explain.robustness import heatmap_table
from ui.choices import follow_link, share_view, sidebar
from ui.common import (best_run, figure, friendly, metrics as run_metrics, need_runs, predictions as run_predictions,
                       robustness, scored_table, splits_with, thumbnail_grid)
from ui.how_sure import how_sure

selection = sidebar()
st.title("📊 Evaluate")
need_runs(selection)

splits = splits_with(selection.runs)  # only splits some run was measured on: none leads to an empty page
if not splits:
    st.info("These runs have no stored metrics: `python -m train.evaluate RUN` measures one.")
    st.stop()
follow_link("split", "eval_split", splits)
split = st.radio("Split", splits, index=splits.index("test") if "test" in splits else len(splits) - 1,
                 horizontal=True, key="eval_split")
share_view(split=split)
with friendly("Reading metrics"):
    table = metrics_table(selection.runs, split)
headline = [c for c in HEADLINE if c in table]
st.dataframe(table[headline].style.format("{:.3f}").highlight_max(axis=0, color="#bbf7d0"), width="stretch")
st.caption("The most accurate run first; green marks each column's best.")
if len(headline) < len(table.columns):
    with st.expander("Every metric (top-5, weighted means)"):
        st.dataframe(table.style.format("{:.3f}").highlight_max(axis=0, color="#bbf7d0"), width="stretch")

st.subheader("F1 per class")
st.plotly_chart(figure(f1_heatmap, per_class_f1_table(selection.runs, split).loc[list(table.index)]),
                width="stretch")

st.subheader("Confusion matrix")
left, right = st.columns([2, 1])
follow_link("model", "eval_model", list(table.index))
best = list(table.index).index(best_run([selection.run(name) for name in table.index]).name)  # as every page
run_name = left.selectbox("Model", list(table.index), index=best, key="eval_model")
share_view(model=run_name)
normalized = right.toggle("Row-normalised", key="eval_normalized")
run = selection.run(run_name)
metrics = run_metrics(run, split)
chart_key = f"confusion_{run_name}_{split}"
points = ((st.session_state.get(chart_key) or {}).get("selection") or {}).get("points", [])  # the last click
classes = metrics["classes"]
chart = st.container()  # drawn below, once the cell it highlights is known
st.caption("Click a cell to list its images, or pick the cell here:")
cell_left, cell_right = st.columns(2)
default_true, default_pred = (points[0]["y"], points[0]["x"]) if points else biggest_mix_up(metrics)
true = cell_left.selectbox("True class", classes, index=classes.index(default_true), format_func=spoken,
                           key=f"cell_true_{bool(points) and default_true}")
predicted = cell_right.selectbox("Predicted class", classes, index=classes.index(default_pred), format_func=spoken,
                                 key=f"cell_pred_{bool(points) and default_pred}")
with chart:
    st.plotly_chart(figure(confusion_figure, metrics, normalized, selected=(true, predicted)), width="content",
                    on_select="rerun", selection_mode="points", key=chart_key)
predictions = run_predictions(run, split)
if predictions is not None:
    samples = cell_samples(predictions, true, predicted)
    st.markdown(f"**{len(samples)} image(s)** with true **{spoken(true)}** predicted as **{spoken(predicted)}** by "
                f"{run_name} ({split} pictures)")
    thumbnail_grid(selection, [(row.filename, f"{picture_name(row.filename)} · {row.confidence:.0%}")
                                  for row in samples.head(24).itertuples()])
    scored_table(samples.assign(filename=samples["filename"].map(picture_name)).rename(columns={"filename": "picture"}))

if len(selection.runs) > 1:
    st.subheader("Model vs model disagreement")
    frames = {r.name: p for r in selection.runs if (p := run_predictions(r, split)) is not None}
    if len(frames) > 1:
        st.plotly_chart(figure(disagreement_heatmap, frames), width="content")

how_sure(selection.runs, split)

stored = {run.name: robustness(run) for run in selection.runs}
measured = {name: found for name, found in stored.items() if isinstance(found, tuple)}
if measured or any(isinstance(found, str) for found in stored.values()):  # nothing measured: no empty section
    st.subheader("Robustness")
for problem in [found for found in stored.values() if isinstance(found, str)]:
    st.caption(f"⚠️ {problem}")
if measured:
    strength = st.segmented_control("Corruption strength", [1, 2, 3], default=2, key="robust_strength",
                                    format_func=lambda s: ["mild", "clearly visible", "hard"][s - 1]) or 2
    pictures = {f"{info['pictures']} {info['split']} pictures" for _, info in measured.values()}
    st.caption(f"Accuracy on the pictures as given (clean) and darkened, with less contrast, blurred, noisy, "
               f"turned, zoomed or with the centre covered ({', '.join(sorted(pictures))}; python -m "
               "train.robustness; every row without flip TTA, so a TTA run's clean figure can differ from its "
               "accuracy above). Try any of these on one picture with Predict's What-if panel.")
    tables = [table for table, _ in measured.values()]
    with friendly("Drawing the robustness heatmap"):
        st.plotly_chart(figure(robustness_heatmap, heatmap_table(tables, strength), strength), width="stretch",
                        key="robust_chart")
    missing = [name for name, found in stored.items() if found is None]
    if missing:
        st.caption(f"Not measured yet: {', '.join(missing)}.")
