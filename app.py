"""HAR Studio: compare, explain and evaluate human-action-recognition models in the browser.

    streamlit run app.py        (or: make run)
"""
import streamlit as st

st.set_page_config(page_title="HAR Studio", page_icon="🏃", layout="wide")
pages = [
    st.Page("pages/overview.py", title="Overview", icon="📋", default=True),
    st.Page("pages/predict.py", title="Predict & compare", icon="🔮"),
    st.Page("pages/explain.py", title="Explain (Grad-CAM)", icon="🔥"),
    st.Page("pages/evaluate.py", title="Evaluate", icon="📊"),
    st.Page("pages/mistakes.py", title="Mistakes", icon="🧐"),
    st.Page("pages/embeddings.py", title="Embeddings", icon="🗺️"),
    st.Page("pages/training.py", title="Training", icon="📈"),
    st.Page("pages/dataset.py", title="Dataset", icon="🗂️"),
]
st.navigation(pages).run()
