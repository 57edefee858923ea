import pandas as pd
import streamlit as st

from har_core.models.calibration_maths import DEFAULT_TARGET_ACCURACY
from har_core.explain.cam import explain, overlay_on_picture
from har_core.evaluation.ensemble import default_members, describe_classes
from har_core.data.imaging import safe_name
from har_core.data.labels import spoken
from har_core.evaluation.plots import action_timeline
from har_core.explain.timeline import NO_ACTION
from har_core.data.video import VIDEO_SUFFIXES
from ui.choices import sidebar
from ui.clips import clip_or_say, content_digest, folder_clip, no_action_thresholds, timeline_of, video_files
from ui.common import figure, folded_when_presenting, friendly, models, need_runs, presenting

SEGMENT_WORDS = {"label": "action", "start_s": "from (seconds)", "end_s": "to (seconds)"}

selection = sidebar()
st.title("🎬 Video")
st.caption("An action timeline for a clip: frames sampled a few times a second, every model's answer per frame "
           "(a clip model's: its 16-frame window centred on that moment), smoothed over time and cut into segments.")
need_runs(selection)
# presenting, the timeline comes first on a projector's screen: the models and settings fold away, as Predict's do
options = folded_when_presenting("Models and options")
with options:
    st.caption(f"These runs know {describe_classes(selection.runs[0].classes)}: a clip of anything else is \"no "
               "known action\" at best. The sample clips are sports scenes: the sports runs know them (choose them in "
               "the sidebar's runs folder). The HAR runs know everyday actions — calling, eating, texting, using a "
               "laptop: they suit your own clip of people doing those.")
    chosen = st.multiselect("Models", selection.names(), default=default_members(selection.runs), key="video_models",
                            help="Default: the ensemble's default members. Every model adds a forward per frame.")
with options if presenting() else st.expander("Sampling and segments"):  # an expander holds no other expander
    settings = st.columns(4)
    fps = settings[0].slider("Frames per second", 0.5, 5.0, 2.0, 0.5, key="video_fps")
    window = settings[1].slider("Smoothing window (s)", 0.0, 5.0, 1.0, 0.5, key="video_window")
    min_duration = settings[2].slider("Shortest segment (s)", 0.0, 5.0, 1.0, 0.5, key="video_min")
    one_threshold = settings[3].toggle(  # short: whole in a quarter of a projector's page
        "One threshold", key="video_one_threshold",
        help=f"One threshold for every row. Off: each row is \"no known action\" below its own model's threshold, the confidence above which "
             f"its answers on calibration pictures were {DEFAULT_TARGET_ACCURACY:.0%} right (the ensemble's: its "
             "members' together).")
    threshold = settings[3].slider("Below this: no known action", 0.0, 1.0, 0.5, 0.01, key="video_threshold",
                                   disabled=not one_threshold)
tabs = st.tabs(["📁 Upload", "🎞️ From the image folder"], key="video_source")  # keyed: stays on the tab opened
with tabs[0]:
    upload = st.file_uploader("Clip", type=[s[1:] for s in VIDEO_SUFFIXES], key="video_upload")
with tabs[1]:
    clips = video_files(selection)
    picked = st.selectbox("Clip", ["—"] + clips, key="video_pick", disabled=not clips,
                          help=None if clips else "No clips in the image folder.")
name, data = (safe_name(upload.name), upload.getvalue()) if upload is not None else (None, None)
if data is None and picked != "—":
    name, data = picked, folder_clip(selection, picked)
if data == b"":  # an empty file is the visitor's to replace: said like any other unusable clip (ui.clips)
    st.warning(f"{name} cannot be used: the file is empty.", icon="🎞️")
    st.stop()
if not data:
    st.info("Upload a clip (mp4, webm, mov, avi, mkv) or pick one from the image folder.")
    st.stop()
if not chosen:
    st.info("Choose at least one model above.")
    st.stop()

loaded = models([selection.run(n) for n in chosen])
if not loaded:
    st.stop()
digest = content_digest(data)
clip = clip_or_say(name, digest, data, fps)
if clip is None:
    st.stop()
left, right = st.columns([2, 3])
left.video(data)
left.caption(f"{name} · {clip.seconds:.1f} s · {clip.width}×{clip.height} · {len(clip.frames)} frames sampled"
             + (f" · turned {clip.rotation}° upright" if clip.rotation else ""))
line = timeline_of(digest, data, fps, loaded)  # clip models read their windows from `data`
thresholds = {n: (threshold, f"{threshold:.0%}") for n in line.probs} if one_threshold else no_action_thresholds(
    {n: [m.run for m in loaded] if n == "ensemble" else [selection.run(n)] for n in line.probs})
rows = {n: line.segments(n, window, min_duration, thresholds[n][0]) for n in line.probs}
clicked = ((st.session_state.get("video_timeline") or {}).get("selection") or {}).get("points") or []
clicked = [p["customdata"] for p in clicked if isinstance(p.get("customdata"), int)]
if clicked and clicked[0] != st.session_state.get("_video_clicked"):  # a new click on a frame dot: show it
    st.session_state["_video_clicked"] = st.session_state["video_frame"] = min(clicked[0], len(clip.frames) - 1)
shown = min(st.session_state.get("video_frame", 0), len(clip.frames) - 1)
right.plotly_chart(figure(action_timeline, rows, line.classes, clip.seconds, times=line.times, shown=line.times[shown]),
                   width="stretch", key="video_timeline", on_select="rerun", selection_mode="points",
                   config={"displayModeBar": False})  # a click picks a frame; the toolbar covered "shown frame"
right.caption(("No known action below one threshold for every row: " if one_threshold else
               "No known action below each row's own threshold, the confidence above which its answers on "
               f"calibration pictures were {DEFAULT_TARGET_ACCURACY:.0%} right: ")
              + " · ".join(f"{n} {words}" for n, (_, words) in thresholds.items()))
summary_row = "ensemble" if "ensemble" in rows else loaded[0].name
segments = pd.DataFrame([s.as_dict() for s in rows[summary_row]]).rename(columns=SEGMENT_WORDS)
right.markdown(f"**Segments** ({summary_row})")
right.dataframe(segments.assign(action=segments["action"].map(spoken), confidence=segments["confidence"].map(
    "{:.0%}".format)), hide_index=True, width="stretch")
right.download_button("⬇️ Segments as CSV", segments.to_csv(index=False), "segments.csv", "text/csv")
unknown = sum(label == NO_ACTION for label in line.labels(summary_row, window, thresholds[summary_row][0]))
right.caption(f"{unknown} of {len(line.times)} frames of the {summary_row} row are '{NO_ACTION}'.")

st.subheader("A frame and where a model looks")
controls = st.columns([3, 1])
# set by a click on the timeline, or by the slider; kept within this clip's frames
st.session_state["video_frame"] = min(st.session_state.get("video_frame", 0), max(1, len(clip.frames) - 1))
index = controls[0].slider("Frame", 0, max(1, len(clip.frames) - 1), key="video_frame",
                           help="The sampled frames, in order; or click a dot on the timeline's top row.",
                           disabled=len(clip.frames) < 2)
index = min(index, len(clip.frames) - 1)
explainable = [m for m in loaded if not m.run.takes_clips]  # Grad-CAM of one frame: image models
if not explainable:
    st.caption("Grad-CAM of a single frame needs an image model; the chosen models are clip models.")
    st.stop()
cam_name = controls[1].selectbox("Model", [m.name for m in explainable], key="video_cam_model")
model = next(m for m in explainable if m.name == cam_name)
picture, heat = st.columns(2)
picture.image(clip.frames[index], caption=f"{line.times[index]:.1f} s", width="stretch")
with friendly(f"Grad-CAM for {model.name}"), st.spinner(f"Grad-CAM for {model.name}…"):
    result = explain(model, clip.frames[index])
    heat.image(overlay_on_picture(result, clip.frames[index], model.run.card["input_size"], model.run.card["crop_pct"]),
               caption=f"{model.name}: {spoken(model.classes[result.target])} ({result.probs[result.target]:.0%}); the "
                       "outlined square is what it saw", width="stretch")
