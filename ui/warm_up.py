"""The warm-up: once a page is drawn, a background thread prepares what the first answer reads (#41).

First each image run's model as the app's default backend serves it, and one forward (the first visitor's forwards
find their kernels ready); then what Predict's first answer computes once per server from the runs' files: each
run's calibration pictures, prediction sets and "not sure" threshold, and the default ensemble's temperature and
sets (they bring SciPy and scikit-learn). Everything goes through the pages' own cached functions, so the pages find
it there. Not the similar images' embeddings and search indexes: the first answer does not read them (a card's
More details builds them when opened), and preparing them would take the cores from the first visitor. Once per
server process and set of runs; torch only when PyTorch answers a run.
"""
from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np

from har_core.models import artifacts
from har_core.models.artifacts import Run
from har_core.models.backend import app_backend
from har_core.models.calibration_maths import DEFAULT_COVERAGE
from ui.common import model_stamp, served_model

WARM_UPS_KEPT = 32  # beyond this many run sets, finished warm-ups are forgotten (those still loading are kept)
_warm_ups: dict[tuple, threading.Thread] = {}  # once per server process and set of runs (no Streamlit cache:
_warm_ups_lock = threading.Lock()             # app.py asks for it after st.stop() too, where no st call may run)


def _warm_up(paths: tuple[str, ...], stamps: tuple[tuple[float, ...], ...]) -> threading.Thread:
    with _warm_ups_lock:
        if (paths, stamps) not in _warm_ups:
            if len(_warm_ups) >= WARM_UPS_KEPT:  # visitors choosing many run sets: forget the finished ones (their
                for key in [key for key, thread in _warm_ups.items() if not thread.is_alive()]:  # models stay cached)
                    del _warm_ups[key]
            _warm_ups[paths, stamps] = _start_loading(paths, stamps)
        return _warm_ups[paths, stamps]


def _load_models(paths: tuple[str, ...]) -> list[Run]:
    """Each run's model as the app's default backend serves it, with one forward; the runs that loaded."""
    from PIL import Image
    try:
        chosen = app_backend()
    except ValueError:  # a wrong HAR_BACKEND: the sidebar names it; the models still load
        chosen = "pytorch"
    runs = []
    for path in paths:
        try:
            run = artifacts.open_run(path)
            one = served_model(run, chosen)
            one.forward(one.pixels([Image.new("RGB", (64, 64))]), tta=one.tta, embed=True)
            runs.append(run)
        except Exception as error:  # noqa: BLE001 - the page that needs the model names the failure
            print(f"HAR Studio: could not preload {Path(path).name}: {error}", flush=True)
    return runs


def _prepare_answers(runs: list[Run]) -> None:
    """What Predict's first answer computes from the runs' files, through its own cached functions, in the order
    the page needs it: what comes before its cards (each run's and the ensemble's "not sure" threshold, the
    ensemble's temperature), then the prediction sets it shows after them (importing crepes and SciPy's
    statistics, the warm-up's slowest step)."""
    from har_core.evaluation.ensemble import default_members
    from ui.sureness import doubts, sureness  # here: it imports what the first page needs not

    uniform = {run.name: np.full((1, len(run.classes)), 1 / len(run.classes), np.float32) for run in runs}
    members = [run for run in runs if run.name in default_members(runs)]
    groups = [(run.name, [run]) for run in runs] + ([("the ensemble", members)] if members else [])
    # the ensemble's threshold comes from its calibration pictures, at the temperature fitted on them: the one the
    # page's `ensemble_temperature` reads from the same cache
    steps = [(f"{name}'s threshold", lambda group=group: doubts(group, uniform[group[0].name]))
             for name, group in groups]
    steps += [(f"{name}'s prediction sets", lambda group=group: sureness(group, uniform[group[0].name],
                                                                         group[0].classes, DEFAULT_COVERAGE))
              for name, group in groups]
    for name, step in steps:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - the page computes it again and says what is wrong
            print(f"HAR Studio: the warm-up could not prepare {name}: {error}", flush=True)


def set_the_loaded_heap_aside() -> None:
    """What the server has imported and loaded by now is left out of the garbage collector's full passes
    (gc.freeze): Streamlit collects after every script run (runner.postScriptGC), and walking this heap (pandas,
    SciPy, scikit-learn, plotly, ONNX Runtime's Python side) took 0.1 s of the server's CPU a run, twice for each
    visitor who opens Predict and uploads (#41). What pages make from now on is collected as before, so a page's
    namespace and the pictures it holds still go after its run."""
    gc.collect()  # today's garbage first: set aside, it would stay
    gc.freeze()


def _start_loading(paths: tuple[str, ...], stamps: tuple[tuple[float, ...], ...]) -> threading.Thread:
    def load_all():
        _prepare_answers(_load_models(paths))
        set_the_loaded_heap_aside()
        # not the Inside page's receptive fields: measuring them imports torch and builds every architecture,
        # seconds of both cores that competed with the first visitor's answer; Inside measures them itself
    thread = threading.Thread(target=load_all, name="har-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up(runs: list[Run]) -> None:
    """Prepare the image runs' first answer in the background, once per server process and set of runs: the
    first page appears at once, and by the time a photo is uploaded its models and files are usually ready."""
    runs = [run for run in runs if not run.takes_clips]
    _warm_up(tuple(str(run.path) for run in runs), tuple(model_stamp(run) for run in runs))
