"""What every page shares, by concern: pages import `ui` and call these by name.

Pages are layout and widgets; the computations are in har_core. This package only wires har_core to
Streamlit's caches and turns failures into one-line messages:

- `ui.common`   settings, loaded models and their engines, cached run files, thumbnails, friendly errors
- `ui.choices`  the sidebar (runs, image folder, class list), deep links, presentation mode
- `ui.answers`  predictions and explanations of pictures, cached by content; uploads and samples
- `ui.what_if`  Predict's What-if panel: edits of the picture and every model's answer to them
- `ui.similar`  embeddings, similar images, the map, the data audit
- `ui.clips`    video clips and their timelines
- `ui.teaching` Teach: a linear head on a run's embeddings
- `ui.sureness` calibrated val predictions, prediction sets and abstain thresholds of runs and ensembles
- `ui.how_sure` Evaluate's How sure section: calibration, prediction sets and abstaining per run
- `ui.sharing`  the report to share
- `ui.inside`   each stage's output for a picture, the first layer's filters, each channel's top pictures
- `ui.quiz`     the quiz's rooms, each session's vote token, the answers and pictures of a reveal
"""
from har_core import server  # noqa: F401 - pages read ui.server's settings types
from ui.common import (  # noqa: F401
    ROOT, IMAGE_TYPES, config, Selection, model, warm_up, env_backend, backend, models, metrics, predictions, robustness,
    temperature, calibration_note, figure, data_file, thumb, thumbnail_grid, folder_stamp, dataset, PRESENTATION_CSS, presenting, model_columns,
    need_runs, image_models, friendly, GLOSSARY, glossary)
from ui.choices import (  # noqa: F401
    sidebar, one_class_list, follow_link, share_view, ensemble_members)
from ui.answers import (  # noqa: F401
    predict, explanation, as_model_sees, predict_edited, read_uploads, sample_files, image_source)
from ui.what_if import what_if  # noqa: F401
from ui.how_sure import how_sure  # noqa: F401
from ui.similar import (  # noqa: F401
    embeddings, search_index, retrieval, embeddings_or_offer, offer_to_compute, compute_embeddings, has_embeddings,
    embedding_map_of, neighbour_grid, same_picture, similar_images, nearest_training_images, top_votes,
    data_audit)
from ui.clips import (  # noqa: F401
    video_files, folder_clip, content_digest, clip_of, clip_or_say, timeline_of, no_action_thresholds)
from ui.teaching import (  # noqa: F401
    teach_base, teach_pictures, teach_head, taught_probabilities, runs_folder_writable, save_taught, taught_zip)
from ui.sureness import (  # noqa: F401
    calibration_pictures, prediction_sets, ensemble_temperature, calibration_report, sureness, Sureness, sureness_on,
    abstain_threshold_of, never_reached)
from ui.sharing import (  # noqa: F401
    report)
from ui.inside import (  # noqa: F401
    stages, trained_filters, imagenet_filters, channel_tops, channel_tops_or_offer, channel_regions_of)
from ui.quiz import (  # noqa: F401
    QUIZ_CSS, POLL_SECONDS, quiz_rooms, voter, host_key, keep_host_key, contest, room_runs, picture, reveal_table,
    best_cam, similar_training_pictures)
