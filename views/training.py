import pandas as pd
import streamlit as st

import ui
from har_core.plots import learning_curves

selection = ui.sidebar()
st.title("📈 Training")
st.caption("Learning curves per epoch (solid: train, dashed: validation); ★ marks each run's best epoch.")
ui.need_runs(selection)

histories = {}
for run in selection.runs:
    with ui.friendly(f"Reading the history of {run.name}"):
        histories[run.name] = run.history()
histories = {name: h for name, h in histories.items() if h}
if not histories:
    st.info("No training history in the selected runs.")
    st.stop()
st.plotly_chart(learning_curves(histories), width="stretch")
rows = []
for name, history in histories.items():
    frame = pd.DataFrame(history)
    best = frame.loc[frame["val_accuracy"].idxmax()]
    rows.append({"run": name, "epochs": len(frame), "best epoch": int(best["epoch"]),
                 "best val accuracy": best["val_accuracy"], "val macro-F1 there": best["val_macro_f1"],
                 "minutes": round(frame.get("seconds", pd.Series([0])).sum() / 60, 1)})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
