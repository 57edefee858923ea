"""HAR Studio: compare, explain and evaluate human-action-recognition models in the browser.

    streamlit run app.py        (or: make run)
"""
from har_core.data.imports import install_import_lock

install_import_lock()  # before the app's own imports: PyTorch and SciPy imported by one thread at a time from here on

import streamlit as st

from har_core.data import spans
from ui.choices import warm_up_after_page
from ui.common import presenting
from ui.sessions import tidy_closed_sessions

st.set_page_config(page_title="HAR Studio", page_icon="🏃", layout="wide",
                   initial_sidebar_state="collapsed" if presenting() else "auto")
# the pages live in views/, not pages/: a pages/ folder makes Streamlit serve a deep link's script on its own
# (without this file's navigation and layout) when it is the first request a fresh server gets
pages = [
    st.Page("views/overview.py", title="Overview", icon="📋", default=True),
    st.Page("views/predict.py", title="Predict & compare", icon="🔮"),
    st.Page("views/explain.py", title="Explain (Grad-CAM)", icon="🔥"),
    st.Page("views/inside.py", title="Inside the network", icon="🔬"),
    st.Page("views/evaluate.py", title="Evaluate", icon="📊"),
    st.Page("views/mistakes.py", title="Mistakes", icon="🧐"),
    st.Page("views/embeddings.py", title="Embeddings", icon="🗺️"),
    st.Page("views/video.py", title="Video", icon="🎬"),
    st.Page("views/training.py", title="Training", icon="📈"),
    st.Page("views/dataset.py", title="Dataset", icon="🗂️"),
    st.Page("views/teach.py", title="Teach", icon="🎓"),
    st.Page("views/quiz.py", title="Quiz", icon="🎯"),
]
page = st.navigation(pages)
try:
    with spans.logged(page.title):  # HAR_SPANS=1: where this run's time went, one line in the server's log
        page.run()
finally:  # the page is drawn (or stopped early, e.g. Predict before a photo): now the models load, for the first upload
    warm_up_after_page()
    tidy_closed_sessions()  # closed tabs' photos, once Streamlit has dropped their sessions (ui/sessions.py)
