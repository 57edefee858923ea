import pandas as pd
import streamlit as st

from har_core.evaluation.plots import learning_curves
from ui.choices import sidebar
from ui.common import figure, friendly, metrics, need_runs

selection = sidebar()
st.title("📈 Training")
st.caption("Learning curves per epoch (solid: train, dashed: validation); ★ marks each run's best epoch.")
need_runs(selection)

histories = {}
for run in selection.runs:
    with friendly(f"Reading the history of {run.name}"):
        histories[run.name] = run.history()
histories = {name: h for name, h in histories.items() if h}
if not histories:
    st.info("No training history in the selected runs.")
    st.stop()
left, right = st.columns([3, 1])
# wrap=True: in a column Streamlit keeps pills on one scrolled row, which cut the last runs at 1280 px
shown = left.pills("Runs", list(histories), selection_mode="multi", default=list(histories), key="training_runs",
                   wrap=True, help="Click a run to hide or show its curves; every run keeps its colour.")
smoothing = right.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="training_smoothing",
                         help="TensorBoard's: an exponential moving average of each curve (0: the epochs as they "
                              "were). The stars and the table stay unsmoothed.")
if not shown:
    st.info("Choose at least one run above.")
    st.stop()
st.plotly_chart(figure(learning_curves, {n: histories[n] for n in shown}, smoothing, names=list(histories)),
                width="stretch", key="training_curves")
rows = []
for name in shown:
    run, frame = selection.run(name), pd.DataFrame(histories[name])
    best = frame.loc[frame["val_accuracy"].idxmax()]
    ema = run.card.get("recipe", {}).get("ema_decay", 0) or 0
    val, test = metrics(run, "val"), metrics(run, "test")
    rows.append({"run": name, "epochs": len(frame), "best epoch": int(best["epoch"]),
                 "val acc (training)": best["val_accuracy"],
                 "val acc (kept)": val["accuracy"] if val else None,
                 "test acc (kept)": test["accuracy"] if test else None,
                 "weights": f"EMA {ema:g}" if ema else "as trained",
                 "TTA": "flip" if (test or val or {}).get("tta") else "none",
                 "minutes": round(frame.get("seconds", pd.Series([0])).sum() / 60, 1)})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
    "best epoch": st.column_config.NumberColumn("best"),  # short headers: every column in sight at 1280 px
    "val acc (training)": st.column_config.NumberColumn(
        "val (curve)", format="%.3f", help="Measured at the end of the best epoch during training: no TTA, on the "
                                           "weights validated then (the EMA weights when the recipe keeps an EMA)."),
    "val acc (kept)": st.column_config.NumberColumn(
        "val (kept)", format="%.3f", help="metrics_val.json: the kept (best-epoch) weights evaluated after training, "
                                          "with flip TTA when the recipe uses it — so it can differ from the column "
                                          "before."),
    "test acc (kept)": st.column_config.NumberColumn("test (kept)", format="%.3f", help="metrics_test.json, as above."),
    "TTA": st.column_config.TextColumn(help="Test-time augmentation in the metrics files' numbers.")})
st.caption("Two val accuracies per run, on purpose: the curve's is measured while training (no TTA); the metrics "
           "files' is the kept weights evaluated once training ended (flip TTA where the recipe uses it).")
