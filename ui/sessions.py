"""Closed tabs' photos, let go (#41: the server's memory flat, no leak per visitor).

Streamlit keeps a closed tab's session for `server.disconnectedSessionTTL` in case the tab comes back. Once that
time is up, Streamlit 1.67 drops the session from its storage without shutting it down, so what its visitor
uploaded and the pictures its last run showed stay in the server's upload and media stores for good: every
visitor's photos, never freed. After each page run (and each rerun of Predict's answers alone, `tidy_after`: a
room that only uploads reruns no page), at most once a minute, the server forgets the uploads and media of every
session it no longer holds (neither open nor waiting to reconnect).
"""
from __future__ import annotations

import threading
import time
from functools import wraps

from streamlit.runtime import Runtime

SWEEP_EVERY_S = 60.0
_swept_at = [float("-inf")]
_sweeping = threading.Lock()


def _held(runtime: Runtime) -> set[str]:
    """The ids of the sessions Streamlit holds, open or waiting to reconnect. Streamlit keeps no public list of
    them: its session manager's. That list reads the open sessions, then the waiting ones, and a reconnecting tab
    moves from the second to the first: read twice, a tab caught between them in one read is in the other."""
    return {info.session.id for _ in range(2) for info in runtime._session_mgr.list_sessions()}


def forget_closed_sessions(runtime: Runtime) -> set[str]:
    """Let go the uploaded files and media references of every session the runtime no longer holds; their ids.
    The stores are read before the sessions held: a session that has put anything there was connected by then,
    so a visitor arriving meanwhile is never taken for a closed one. The media files themselves go at Streamlit's
    own clean-up after a run (a download button's file one run later, as Streamlit keeps it)."""
    uploads, media = runtime.uploaded_file_mgr, runtime.media_file_mgr
    stored = set(uploads.file_storage) | set(media._files_by_session_and_coord)  # another Streamlit: AttributeError
    closed = stored - _held(runtime)
    for session_id in closed:
        uploads.remove_session_files(session_id)
        media.clear_session_refs(session_id)
    return closed


def tidy_closed_sessions() -> None:
    """`forget_closed_sessions` of the running server, at most every SWEEP_EVERY_S (any page run may ask)."""
    with _sweeping:
        if time.monotonic() - _swept_at[0] < SWEEP_EVERY_S or not Runtime.exists():
            return
        _swept_at[0] = time.monotonic()
    try:
        forget_closed_sessions(Runtime.instance())
    except (AttributeError, RuntimeError) as error:  # another Streamlit's internals: say so once a minute, serve on
        print(f"HAR Studio: could not let closed sessions' files go: {error}", flush=True)


def tidy_after(function):
    """`function` (a fragment that reruns alone: Predict's answers on each upload), then `tidy_closed_sessions`, as
    app.py sweeps after each page run, which such a rerun skips."""
    @wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            tidy_closed_sessions()
    return wrapper
