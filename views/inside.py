import numpy as np
import pandas as pd
import streamlit as st

from har_core.data.imaging import image_digest
from har_core.explain.inside import tile_mosaic
from har_core.evaluation.plots import feature_map_grid
from har_core.models.registry import REGISTRY
from ui.answers import image_source
from ui.choices import follow_link, share_view, sidebar
from ui.common import best_run, figure, friendly, image_models, model, need_runs
from ui.inside import (channel_regions_of, channel_tops_or_offer, imagenet_filters, stages as picture_stages,
                       trained_filters)

selection = sidebar()
st.title("🔬 Inside the network")
st.caption("What each stage of a model makes of one picture: the size of its output, how much of the picture one "
           "of its units sees, and the channels this picture lights up most.")
need_runs(selection)
selection = image_models(selection)

follow_link("model", "inside_model", selection.names())
left, right = st.columns([2, 1])
run_name = left.selectbox("Model", selection.names(), index=selection.names().index(best_run(selection.runs).name),
                          key="inside_model", help="Opens on the run with the best val accuracy, as every page.")
count = right.slider("Channels shown", 4, 32, 16, 4, key="inside_channels")
share_view(model=run_name)
run = selection.run(run_name)
with friendly(f"Loading {run_name}"):
    loaded = model(run)
images, names = image_source(selection, key="inside", multiple=False)

if images:
    with friendly(f"Running {run_name} on {names[0]}"):
        stages = picture_stages(loaded, images[0], image_digest(images[0]))
    size = run.card["input_size"]
    st.subheader(f"{len(stages)} stages, from the picture to what the head pools")
    st.dataframe(pd.DataFrame({
        "stage": [s.label for s in stages],
        "output (channels × height × width)": ["{} × {} × {}".format(*s.shape) for s in stages],
        "one unit sees (px of the input)": [f"{s.receptive_field} × {s.receptive_field}"
                                            if s.receptive_field < size else f"the whole {size}-px input"
                                            for s in stages],
        "most active channel": [f"#{s.top_channels(1)[0]}" for s in stages]}),
        hide_index=True, width="stretch")
    follow_link("stage", "inside_stage", [s.label for s in stages])
    label = st.radio("Stage", [s.label for s in stages], horizontal=True, key="inside_stage")
    share_view(stage=label)
    stage = next(s for s in stages if s.label == label)
    top = [int(c) for c in stage.top_channels(count)]
    picture, maps = st.columns([1, 4])
    picture.image(images[0], caption=f"{names[0]} (as given)", width="stretch")
    picture.caption(f"{run_name} sees it at {size} × {size} px. Each map is one channel of **{label}**, scaled "
                    "to its own range (bright: strong); hover for the channel and its value.")
    event = maps.plotly_chart(figure(feature_map_grid, stage.activations[top], top,
                                        title=f"{label}: the {len(top)} channels most active on this picture"),
                              width="stretch", key=f"inside_maps_{label}_{count}", on_select="rerun",
                              selection_mode="points")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    picked = points[0].get("curve_number", -1) // 2 if points else -1  # each map: its heatmap, its click points
    clicked = top[picked] if 0 <= picked < len(top) else None

    st.subheader("What a channel likes")
    st.caption("Click a map above, or pick a channel: the training pictures that excite it most, and where.")
    channels = list(range(stage.shape[0]))
    channel = st.selectbox(f"Channel of {label}", channels, index=clicked if clicked is not None else top[0],
                           key=f"inside_channel_{label}_{clicked}",
                           format_func=lambda c: f"#{c}" + (" (most active on this picture)" if c == top[0] else ""))
    tops = channel_tops_or_offer(selection, run)
    if tops is not None:
        shown = []
        with friendly(f"Showing channel {channel}'s top pictures"):
            shown = channel_regions_of(selection, loaded, tops, stage.module, channel)
        if shown:
            st.markdown(f"**Channel #{channel} of {label}** fires most on these {len(shown)} training pictures "
                        "(the number: its strongest response; red: where, on one scale for all of them):")
            grid = st.columns(len(shown))
            for column, (picture, caption) in zip(grid, shown):
                column.image(picture, caption=caption, width="stretch")
            if len({round(score, 2) for _, score in tops.top(stage.module, channel)}) == 1:  # e.g. all at ReLU6's 6
                st.caption(f"All of this channel's top training pictures reach the same strongest response "
                           f"({tops.top(stage.module, channel)[0][1]:.2f}): they tie, so these are the first in file "
                           "order, not the strongest of them.")
        else:
            st.info("None of this channel's top training pictures can be read from the chosen image folder: choose "
                    f"the folder {run_name} was trained on in the sidebar.")
else:
    st.info("Upload a photo, take one with the camera, or pick a sample to see what each stage makes of it.")

st.subheader("What the first layer looks for")
trained = trained_filters(loaded)
start = imagenet_filters(run.card["model"]) if str(run.card.get("pretrained", "")).startswith("offline") else None
columns = st.columns(2 if start is not None else 1)
columns[0].image(tile_mosaic(trained), caption=f"{run_name}'s {len(trained)} first-layer filters, as trained "
                 "(grey: 0, colour: the colour a filter responds to; each filter scaled to its own strongest weight)")
if start is None and str(run.card.get("pretrained", "none")).startswith("none"):
    published = getattr(REGISTRY.get(run.card["model"]), "hub", None)  # the custom CNN never had any to miss
    st.caption(f"{run_name} started from random weights" + (" (no ImageNet weights for it here)" if published else "")
               + ", so its first filters began as noise: the less trained, the noisier they still look.")
if start is not None:
    unchanged = start.shape == trained.shape and np.allclose(start, trained, atol=1e-3)
    columns[1].image(tile_mosaic(start), caption="the same filters at the start of training: the offline ImageNet "
                     "weights" + (" — unchanged: the first layers stayed frozen while the last ones trained"
                                  if unchanged else ""))
