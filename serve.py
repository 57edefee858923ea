"""HAR Studio's server, as `make run` starts it: `streamlit run serve.py` serves app.py through Streamlit's ASGI
App, whose start warms the app up (ui.warm_up.at_server_start): while a first visitor's browser loads the page, the
server imports what the pages use and loads the default runs' exported models, stepping aside whenever a page's
script runs. The app itself is app.py (`streamlit run app.py` serves the same app; its warm-up then starts only
once the first page is drawn).
"""
from contextlib import asynccontextmanager

import streamlit as st


@asynccontextmanager
async def warmed_up(_app):
    from har_core.data.imports import install_import_lock
    install_import_lock()  # as app.py does first: the warm-up's thread imports PyTorch and SciPy beside the pages'
    from ui.warm_up import at_server_start
    at_server_start()  # the pages' modules here, before the port opens; the models in a thread of its own
    yield


app = st.App("app.py", lifespan=warmed_up)
