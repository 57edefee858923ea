"""Where a page's time goes: named wall-clock spans of the running thread (one page run is one thread), each
counted without the spans inside it. With HAR_SPANS=1 the app logs one line per page run (`logged`), which
bench.classroom reads to split a warm upload's time."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from functools import wraps

_local = threading.local()


def _now() -> dict:
    if not hasattr(_local, "spent"):
        _local.spent, _local.inner, _local.start = {}, [0.0], 0.0  # a page run (`logged`) sets its start
    return vars(_local)


@contextmanager
def span(name: str):
    """Time the block under `name`: its seconds (without the spans inside it) and when it last ended."""
    state = _now()
    state["inner"].append(0.0)  # the spans inside this one
    start = time.perf_counter()
    try:
        yield
    finally:
        end = time.perf_counter()
        own = end - start - state["inner"].pop()
        state["inner"][-1] += end - start
        seconds, _ = state["spent"].get(name, (0.0, 0.0))
        state["spent"][name] = (seconds + own, end - state["start"])


def timed(name: str):
    """A function's every call as a span named `name`."""
    def decorate(function):
        @wraps(function)
        def wrapper(*args, **kwargs):
            with span(name):
                return function(*args, **kwargs)
        return wrapper
    return decorate


@contextmanager
def logged(page: str):
    """A page run: its spans from the start, the rest of its time as "the page's other work", logged as one line
    `HAR Studio spans {...}` (seconds, and seconds from the start to the span's last end; the start's wall-clock
    time) when HAR_SPANS=1."""
    state = _now()
    state.update(spent={}, inner=[0.0], start=time.perf_counter(), logging=True)
    started_at = time.time()  # the wall clock a browser on this machine shares: upload sent → this run's start
    try:
        with span("the page's other work"):
            yield
    finally:
        state["logging"] = False
        if os.environ.get("HAR_SPANS") == "1":
            line = json.dumps({"page": page, "started_at": round(started_at, 4), "spans": {
                name: {"s": round(seconds, 4), "ended_at_s": round(ended, 4)}
                for name, (seconds, ended) in state["spent"].items()}})
            # one write: print's parts from thirty visitors' threads at once interleaved into broken lines
            sys.stdout.write(f"HAR Studio spans {line}\n")
            sys.stdout.flush()


def fragment_run(name: str):
    """A fragment's every call timed: a span `name` of the logged run that draws it (the page's, or an outer
    fragment's), or on the fragment's own rerun, which no page run logs, a logged run of its own named `name`."""
    def decorate(function):
        @wraps(function)
        def wrapper(*args, **kwargs):
            with span(name) if _now().get("logging") else logged(name):
                return function(*args, **kwargs)
        return wrapper
    return decorate
