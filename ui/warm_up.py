"""The warm-up: once a page is drawn, a background thread prepares what the first answer reads (#41).

First each image run's model as the app's default backend serves it, and one forward (the first visitor's forwards
find their kernels ready); then what Predict's first answer computes once per server from the runs' files: each
run's calibration pictures, prediction sets and "not sure" threshold, and the default ensemble's temperature and
sets (they bring SciPy and scikit-learn). Everything goes through the pages' own cached functions, so the pages find
it there. Not the similar images' embeddings and search indexes: the first answer does not read them (a card's
More details builds them when opened), and preparing them would take the cores from the first visitor. Once per
server process and set of runs; torch only when PyTorch answers a run.

`make run` (serve.py) starts part of it with the server (`at_server_start`): the pages' modules and the models of
the runs a first visitor is shown, while that visitor's browser loads the page (a second or more, when the server
would otherwise sit idle). Every step waits while a page's script runs (`page_running`),
so a visitor's page goes first. A link that opens other runs (`?runs=`) is warmed up after its first page.
"""
from __future__ import annotations

import importlib
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from har_core.models import artifacts
from har_core.models.artifacts import Run
from har_core.models.backend import AUTO, BACKENDS, app_backend, exported_backends, record_mismatch
from har_core.evaluation.ensemble import class_groups
from har_core.models.calibration_maths import DEFAULT_COVERAGE
from ui.common import config, model_stamp, served_model

WARM_UPS_KEPT = 32  # beyond this many run sets, finished warm-ups are forgotten (those still loading are kept)
_warm_ups: dict[tuple, threading.Thread] = {}  # once per server process and set of runs (no Streamlit cache:
_warm_ups_lock = threading.Lock()             # app.py asks for it after st.stop() too, where no st call may run)


# what the pages import beyond app.py's own imports: imported before the first visitor's page asks for them
PAGE_MODULES = ("ui.answers", "ui.sharing", "ui.similar", "ui.sureness", "ui.what_if", "har_core.evaluation.analysis",
                "har_core.evaluation.plots", "har_core.evaluation.metrics")
STEP_ASIDE_S = 2.0  # at most this long a step waits for pages' scripts: a busy room never starves the warm-up

_pages = threading.Condition()
_pages_running = 0


@contextmanager
def page_running():
    """A page's script runs: the warm-up waits before its next step (`_step_aside`). app.py runs every page in it."""
    global _pages_running
    with _pages:
        _pages_running += 1
    try:
        yield
    finally:
        with _pages:
            _pages_running -= 1
            _pages.notify_all()


def _step_aside() -> None:
    """Wait until no page's script runs, at most STEP_ASIDE_S: a visitor's page gets the cores (and Python's lock)
    first. The warm-up never holds a cache's lock while it waits, so a page that needs what it prepares computes it
    itself."""
    deadline = time.monotonic() + STEP_ASIDE_S
    with _pages:
        while _pages_running and (left := deadline - time.monotonic()) > 0:
            _pages.wait(left)


def default_runs() -> list[Run]:
    """The runs a first visitor is shown: the operator's first runs folder, its largest group of one class list
    (as the sidebar shows them before any choice)."""
    settings = config()
    if not settings.runs:
        return []
    found, _ = artifacts.find_runs(settings.runs[0], confine=not settings.free_paths)
    groups = class_groups(found)
    return groups[0] if groups else []


def at_server_start() -> threading.Thread:
    """As the server starts, before any visitor, in a thread: the pages' modules, then the default runs' models that
    answer through their checked ONNX exports (one forward each). A first visitor's script importing the same
    modules meanwhile takes turns with it module by module (har_core and ui import each other without a circle:
    tests/test_imports.py). Left to the warm-up after the first page: the prediction sets, whose SciPy and
    scikit-learn imports hold Python's lock for 0.7 s (done here too, they slowed the first page by 0.3 s), and
    PyTorch's models (importing torch takes seconds). A failure is printed, never raised: the pages load what
    they need themselves."""
    def prepare():
        try:
            for name in PAGE_MODULES:
                _step_aside()
                importlib.import_module(name)
            _load_models(tuple(str(run.path) for run in default_runs() if _answers_without_torch(run)))
        except Exception as error:  # noqa: BLE001 - the server serves on; a page names what is wrong
            print(f"HAR Studio: no warm-up at start: {error}", flush=True)
    thread = threading.Thread(target=prepare, name="har-warm-up-at-start", daemon=True)
    thread.start()
    return thread


def _answers_without_torch(run: Run) -> bool:
    """The app's default backend serves this image run through a checked export (ONNX Runtime, no torch): for
    AUTO any export whose file is the one its card records, for a named backend that one."""
    try:
        chosen = app_backend()
    except ValueError:  # a wrong HAR_BACKEND: the pages fall back to PyTorch
        return False
    exported = exported_backends(run)
    candidates = exported if chosen == AUTO else [chosen] if chosen in exported else []
    return not run.takes_clips and any(record_mismatch(run, BACKENDS[name]) is None for name in candidates)


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
        _step_aside()
        try:
            run = artifacts.open_run(path)
            one = served_model(run, chosen)
            one.forward(one.pixels([Image.new("RGB", (64, 64))]), tta=one.tta, embed=True)
            runs.append(run)
        except Exception as error:  # noqa: BLE001 - the page that needs the model names the failure
            print(f"HAR Studio: could not preload {Path(path).name}: {error}", flush=True)
    return runs


def _prepare_answers(runs: list[Run]) -> None:
    """What Predict's first answer computes from the runs' files, through its own cached functions."""
    from har_core.evaluation.ensemble import default_members
    from ui.sureness import ensemble_temperature, sureness  # here: it imports what the first page needs not

    uniform = {run.name: np.full((1, len(run.classes)), 1 / len(run.classes), np.float32) for run in runs}
    members = [run for run in runs if run.name in default_members(runs)]
    steps = [(f"{run.name}'s prediction sets", lambda run=run: sureness([run], uniform[run.name], run.classes,
                                                                         DEFAULT_COVERAGE)) for run in runs]
    if members:
        steps.append(("the ensemble's temperature and sets", lambda: (
            ensemble_temperature(members),
            sureness(members, uniform[members[0].name], members[0].classes, DEFAULT_COVERAGE))))
    for name, step in steps:
        _step_aside()
        try:
            step()
        except Exception as error:  # noqa: BLE001 - the page computes it again and says what is wrong
            print(f"HAR Studio: the warm-up could not prepare {name}: {error}", flush=True)


def _start_loading(paths: tuple[str, ...], stamps: tuple[tuple[float, ...], ...]) -> threading.Thread:
    def load_all():
        _prepare_answers(_load_models(paths))
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
