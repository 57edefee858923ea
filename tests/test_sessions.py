"""Closed tabs' photos are let go once Streamlit has dropped their sessions (#41 review: Streamlit 1.67 drops a
session whose reconnect time is up without shutting it down, so its uploads and pictures stayed for good)."""
from types import SimpleNamespace

import pytest
import streamlit.runtime.media_file_manager as media_module
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.media_file_storage import MediaFileStorageError
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from ui.sessions import forget_closed_sessions


def test_the_uploads_and_pictures_of_sessions_streamlit_dropped_are_let_go_and_no_others(monkeypatch):
    uploads, storage = MemoryUploadedFileManager("/upload"), MemoryMediaFileStorage("/media")
    media = MediaFileManager(storage)
    held = {"open": "a tab still open", "waiting": "a closed tab that may reconnect"}  # what Streamlit holds
    pictures = {}
    for session in [*held, "dropped-1", "dropped-2"]:  # two closed tabs whose reconnect time is up
        uploads.add_file(session, UploadedFileRec(file_id=f"photo-{session}", name="image.jpg", type="image/jpeg",
                                                  data=session.encode() * 1000))
        monkeypatch.setattr(media_module, "_get_session_id", lambda session=session: session)
        pictures[session] = media.add(f"the picture {session}'s page showed".encode(), "image/jpeg", "1.2.3")
    sessions = SimpleNamespace(list_sessions=lambda: [SimpleNamespace(session=SimpleNamespace(id=s)) for s in held])
    runtime = SimpleNamespace(uploaded_file_mgr=uploads, media_file_mgr=media, _session_mgr=sessions)

    assert forget_closed_sessions(runtime) == {"dropped-1", "dropped-2"}
    assert {s for s, files in uploads.file_storage.items() if files} == set(held)
    assert [f.file_id for f in uploads.get_files("open", ["photo-open"])] == ["photo-open"]
    for session, url in pictures.items():
        name = url.rsplit("/", 1)[-1]
        if session in held:
            assert storage.get_file(name).content == f"the picture {session}'s page showed".encode()
        else:
            with pytest.raises(MediaFileStorageError):
                storage.get_file(name)
    assert forget_closed_sessions(runtime) == set()  # nothing left to forget
