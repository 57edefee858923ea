"""The report to share (har_core.report), with the server's models and limits, one at a time."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from har_core.models import artifacts
from har_core.evaluation.calibration import REPORT
from ui.common import Selection, file_stamp, config, model


@st.cache_resource
def _report_lock() -> threading.Lock:
    return threading.Lock()


@st.cache_data(show_spinner=False, max_entries=4)
def _report(paths: tuple[str, ...], stamps: tuple, data_root: str | None, quiz_answers: str = "", _quiz=None) -> str:
    from har_core.report import build_report  # with its Grad-CAMs: torch, never on the first page's way (#41)
    runs = [artifacts.open_run(path) for path in paths]
    return build_report(runs, Path(data_root) if data_root else None, load=model, max_images=config().max_scan_images,
                        quiz=_quiz)


QUIZ_ROUND = "quiz_summary"  # session state: the last quiz round this session played to its end (views/quiz.py)


def report_maker(selection: Selection) -> Callable[[], str]:
    """What Overview's download button calls for the report. Streamlit calls it in a worker thread, outside the
    session, so this session's quiz round is read now, while the page is drawn."""
    quiz = st.session_state.get(QUIZ_ROUND)
    return lambda: report(selection, quiz)


def report(selection: Selection, quiz=None) -> str:
    """The selected runs' report, built once per runs (and their metrics), image folder and quiz round (a
    har_core.quiz.Summary: the report's last section), with the server's shared models and scan limit."""
    stamps = tuple((file_stamp(run, artifacts.metrics_file("test")), file_stamp(run, artifacts.CARD),
                    file_stamp(run, REPORT)) for run in selection.runs)
    # one report at a time, server-wide: the others wait for it. No toast says so: this runs outside the visitor's
    # session, where st.toast draws nothing (#41 walk); the download button's help says it instead.
    lock = _report_lock()
    lock.acquire()
    try:
        return _report(tuple(str(run.path) for run in selection.runs), stamps,
                       str(selection.data_root) if selection.data_root else None,
                       quiz.answers.to_csv() if quiz is not None else "", quiz)
    finally:
        lock.release()

