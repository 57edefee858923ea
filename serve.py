"""HAR Studio's server, as `make run` starts it: `streamlit run serve.py` serves app.py through Streamlit's ASGI
App, whose start warms the app up (ui.warm_up.at_server_start): while a first visitor's browser loads the page, the
server imports what the pages use and loads the default runs' exported models, stepping aside whenever a page's
script runs. The app itself is app.py (`streamlit run app.py` serves the same app; its warm-up then starts only
once the first page is drawn).
"""
import threading
from contextlib import asynccontextmanager

import streamlit as st


def warm_up() -> None:
    from har_core.data.imports import install_import_lock
    install_import_lock()  # as app.py does first: the warm-up imports packages beside the pages' threads
    from ui.warm_up import at_server_start
    at_server_start()


@asynccontextmanager
async def warmed_up(_app):
    # in a thread: importing ui.warm_up (pandas, plotly) here would open the port a second later
    threading.Thread(target=warm_up, name="har-warm-up-imports", daemon=True).start()
    yield


app = st.App("app.py", lifespan=warmed_up)
