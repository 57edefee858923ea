import pandas as pd
import streamlit as st

import ui
from har_core.analysis import agreement
from har_core.inference import ensemble, predict_all
from har_core.plots import top_probabilities

selection = ui.sidebar()
st.title("🔮 Predict & compare")
ui.need_runs(selection)
selection = ui.image_models(selection)

chosen = st.multiselect("Models", selection.names(), default=selection.names(), key="predict_models")
chosen_runs = [selection.run(n) for n in chosen]
members = ui.ensemble_members(chosen_runs, key="predict_ensemble")
options = st.columns(3)
tta = options[0].toggle("Flip TTA (average with the mirrored image)", key="predict_tta")
similar = options[1].toggle("Similar training images", value=True, key="predict_similar",
                            help="Under each model, the training images it finds most alike (its embedding).")
k = options[2].slider("How many", 3, 12, 6, key="predict_k", disabled=not similar)
images, names = ui.image_source(selection, key="predict")
if not images:
    st.info("Upload one or more photos, take one with the camera, or pick a sample.")
    st.stop()
loaded = ui.models(chosen_runs)
if not loaded:
    st.stop()
classes = loaded[0].classes
loaded = [m for m in loaded if m.classes == classes] or loaded
with st.spinner(f"{len(loaded)} models predicting {len(images)} image(s)…"):
    predictions = predict_all(loaded, images, tta=tta, embed=similar and len(images) == 1)
members = [p.model for p in predictions if p.model in members] or [p.model for p in predictions]
mean = ensemble(predictions, members)

if len(images) == 1:
    left, right = st.columns([1, 3])
    left.image(images[0], caption=names[0], width="stretch")
    winners = [classes[int(p.probs[0].argmax())] for p in predictions]
    label, share = agreement(winners)
    with right:
        a, b, c = st.columns(3)
        a.metric("Ensemble", classes[int(mean[0].argmax())].replace("_", " "), f"{mean[0].max():.0%} confidence",
                 delta_color="off", help=f"mean probability of {', '.join(members)}")
        b.metric("Agreement", f"{share:.0%}", f"{sum(w == label for w in winners)}/{len(winners)} say {label}",
                 delta_color="off")
        c.metric("Total time", f"{sum(p.seconds for p in predictions) * 1000:.0f} ms")
    st.caption(f"Ensemble of {len(members)}: {', '.join(members)}")
    columns = st.columns(min(3, len(predictions)))
    for i, prediction in enumerate(predictions):
        probs = prediction.probs[0]
        with columns[i % len(columns)].container(border=True, key=f"card_{prediction.model}"):
            st.markdown(f"**{prediction.model}**")
            st.markdown(f"### {classes[int(probs.argmax())].replace('_', ' ')}")
            st.caption(f"{probs.max():.1%} confidence · {prediction.seconds * 1000:.0f} ms")
            st.plotly_chart(top_probabilities(probs, classes), width="stretch",
                            key=f"bars_{prediction.model}", config={"displayModeBar": False})
            if similar:
                with ui.friendly(f"Similar images for {prediction.model}"):
                    ui.similar_images(selection, selection.run(prediction.model), prediction.embeddings, probs, k)
else:
    rows = []
    for j, name in enumerate(names):
        row = {"image": name}
        for prediction in predictions:
            probs = prediction.probs[j]
            row[prediction.model] = f"{classes[int(probs.argmax())]} ({probs.max():.0%})"
        row["ensemble"] = f"{classes[int(mean[j].argmax())]} ({mean[j].max():.0%})"
        rows.append(row)
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button("⬇️ Download as CSV", table.to_csv(index=False), "predictions.csv", "text/csv")
    st.image(images, caption=names, width=160)
