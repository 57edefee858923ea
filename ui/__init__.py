"""The helpers pages call, by concern; a page imports each name from the module that defines it
(`from ui.common import need_runs`), so a reader finds it at once.

Pages are layout and widgets; the computations are in har_core. This package only wires har_core to
Streamlit's caches and turns failures into one-line messages:

- `ui.common`   settings, loaded models and their engines, cached run files, thumbnails, friendly errors
- `ui.choices`  the sidebar (runs, image folder, class list), deep links, presentation mode
- `ui.answers`  predictions and explanations of pictures, cached by content; uploads and samples
- `ui.what_if`  Predict's What-if panel: edits of the picture and every model's answer to them
- `ui.similar`  embeddings, similar images, the map, the data audit
- `ui.clips`    video clips and their timelines
- `ui.teaching` Teach: a linear head on a run's embeddings
- `ui.sureness` calibrated predictions of the calibration pictures, prediction sets and abstain thresholds of runs
                and ensembles
- `ui.how_sure` Evaluate's How sure section: calibration, prediction sets and abstaining per run
- `ui.sharing`  the report to share
- `ui.inside`   each stage's output for a picture, the first layer's filters, each channel's top pictures
- `ui.quiz`     the quiz's rooms, each session's vote token, the answers and pictures of a reveal
"""
