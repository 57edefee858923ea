import streamlit as st

from har_core.evaluation.calibration import tta_words
from har_core.models.temperature import evaluated_with_tta
from har_core.data.labels import spoken
from har_core.evaluation.plots import MAP_COLOURS, embedding_scatter
from ui.choices import sidebar
from ui.common import best_run, figure, friendly, need_runs, thumbnail_grid
from ui.similar import embedding_map_of, embeddings_or_offer, has_embeddings, nearest_training_images

selection = sidebar()
st.title("🗺️ Embeddings")
st.caption("Every image of a run's data set placed by what the model sees in it (its classifier head's input, "
           "laid out in 2-D by UMAP). Pictures the model finds alike sit together. Draw a box or lasso around "
           "points to see those images.")
need_runs(selection)

ready = [run for run in selection.runs if has_embeddings(run)]  # open on the best run that has them
opened = selection.names().index(best_run(ready or selection.runs).name)
run = selection.run(st.selectbox("Run", selection.names(), index=opened, key="map_run",
                                 format_func=lambda name: name if name in selection.names() and
                                 has_embeddings(selection.run(name))
                                 else f"{name} (no embeddings yet)"))
found = embeddings_or_offer(selection, run, key="map")
if found is None:
    st.stop()
if found.collapsed:
    st.warning(f"{run.name} gives every image the same embedding (an untrained or collapsed model): the map and "
               "similar images cannot tell its images apart.")
with friendly("The embedding map"):
    table = embedding_map_of(run, found)
controls = st.columns([2, 2, 1])
colour = controls[0].selectbox("Colour by", list(MAP_COLOURS), key="map_colour")
available = sorted(table["split"].unique())
held_out = [s for s in available if s in ("val", "test")]  # training points make clusters look perfect
splits = controls[1].multiselect("Splits", available, default=held_out or available, key="map_splits",
                                 help="Default: val and test, the pictures the model never trained on; add train "
                                 "to see everything.")
mistakes_only = controls[2].toggle("Mistakes only", key="map_mistakes")
in_splits = table[table["split"].isin(splits)]
shown = in_splits[~in_splits["correct"]] if mistakes_only else in_splits
wrong = int((~in_splits["correct"]).sum())  # of the chosen splits' pictures, not of every split
st.caption(f"{len(shown):,} of {len(table):,} images shown · {wrong:,} of the {len(in_splits):,} in "
           f"{' + '.join(splits) or 'no split'} the model gets wrong · {found.dimensions} embeddings of {found.model}")
st.caption(f"Answers on val and test pictures are the ones Predict, Mistakes and Evaluate give (calibrated, "
           f"{tta_words(evaluated_with_tta(run))}); on training pictures, the embedding pass's (calibrated, without "
           "TTA).")
if shown.empty:
    st.info("No images match these filters.")
    st.stop()
event = st.plotly_chart(figure(embedding_scatter, shown, colour, classes=run.classes), width="stretch", key="map_chart",
                        on_select="rerun",
                        selection_mode=("points", "box", "lasso"), config={"displaylogo": False})
points = ((event or {}).get("selection") or {}).get("points") or []  # the chart's state: a dict, read as one
picked = sorted({int(point["customdata"]) for point in points if "customdata" in point})
if not picked:
    st.caption("Hover a point for its file and labels; draw a box or lasso around points to see the images "
               "(around one point: also the training images the model finds most like it).")
    st.stop()
chosen = table.loc[picked]
st.subheader(f"{len(chosen)} selected image(s)")
thumbnail_grid(selection, [(row.filename, f"{spoken(row.label)} → {spoken(row.predicted)} ({row.confidence:.0%}) · {row.split}")
                              for row in chosen.head(48).itertuples()], columns=8, size=120)
if len(chosen) > 48:
    st.caption(f"The first 48 of {len(chosen)} are shown; the table lists them all.")
if len(chosen) == 1:  # one selected point: the training images the model finds most like it
    nearest_training_images(selection, run, chosen.iloc[0]["filename"])
st.dataframe(chosen.drop(columns=["x", "y"]), hide_index=True, width="stretch")
st.download_button("⬇️ Selection as CSV", chosen.to_csv(index=False), "selection.csv", "text/csv")
