import pandas as pd
import streamlit as st

from har_core.retrieval.audit import DUPLICATE_THRESHOLD, PIXEL_MATCH
from har_core.data.datasets import DataError
from har_core.data.labels import picture_name, spoken, spoken_columns
from har_core.evaluation.plots import class_distribution, size_scatter
from ui.choices import sidebar
from ui.common import best_run, dataset, figure, friendly, image_grid, scored_table, thumb, thumbnail_grid
from ui.similar import data_audit, embeddings_or_offer, has_embeddings

# the tables' columns as a newcomer reads them; the CSV downloads keep the names a script reads
# (the copies table's "picture" numbers the copies' groups)
HEADERS = {"file_a": "file", "file_b": "look-alike", "pixels": "pixels alike", "filename": "file", "given": "labelled as", "suggested": "the model says",
           "label_quality": "label quality", "confident": "model sure", "source": "scored by", "label": "class",
           "picture": "picture #"}
PICTURE_COLUMNS = ("file_a", "file_b", "filename", "file")


def shown_table(table, *class_columns: str):
    """A table as the page shows it: classes in words, headers in words, and each picture named as every page names
    it (picture_name: on the Kaggle layout "train/Image_2471.jpg" beside "train · test" read as a training picture),
    unless two of the table's pictures would then share a name (walking/001.jpg and running/001.jpg)."""
    files = [column for column in PICTURE_COLUMNS if column in table]
    paths = pd.unique(table[files].to_numpy().ravel()) if files else []
    if len({picture_name(str(path)) for path in paths}) == len(paths):
        table = table.assign(**{column: table[column].map(picture_name) for column in files})
    return spoken_columns(table, *class_columns).rename(columns=HEADERS)


def shown_pairs(pairs):
    """The near-duplicates with both pictures' classes in one column ("sleeping · sleeping") and their splits in
    another ("train · test"): nine columns ran past the page at 1440 px ("pix…"), seven past a projector's page
    ("similarit"); pairs across splits come first, as the audit sorts them."""
    both = lambda a, b, say=str: (pairs[a].map(say) + " · " + pairs[b].map(say)).to_numpy()  # noqa: E731
    shown = shown_table(pairs.drop(columns=["label_a", "label_b", "split_a", "split_b", "across_splits"]))
    shown.insert(shown.columns.get_loc("look-alike") + 1, "classes", both("label_a", "label_b", spoken))
    shown.insert(shown.columns.get_loc("classes") + 1, "splits", both("split_a", "split_b"))
    return shown


selection = sidebar()
st.title("🗂️ Dataset")
if selection.data_root is None:
    st.info("Set the image folder in the sidebar (Kaggle layout or one folder per class).")
    st.stop()


try:
    summary = dataset(selection.data_root)
except DataError as error:
    st.error(str(error))
    st.stop()
counts = summary["counts"].fillna(0).astype(int)  # a class folder with no readable picture counts 0
a, b, c = st.columns(3)
a.metric("Images", f"{int(counts.sum()):,}")
b.metric("Classes", len(summary["classes"]))
c.metric("Unreadable or skipped", f"{len(summary['problems']):,}")
a.caption(f"{summary['copies']['picture'].nunique() if len(summary['copies']) else 0:,} picture(s) stored twice or more")
st.subheader("Class distribution")
st.plotly_chart(figure(class_distribution, counts), width="stretch")
st.subheader("Image sizes")
st.plotly_chart(figure(size_scatter, summary["sizes"], summary["classes"]), width="stretch")
st.subheader("Samples per class")
per_class = st.slider("Images per class", 2, 10, 6, key="dataset_per_class")
sizes = summary["sizes"]
for label in summary["classes"]:
    files = sizes.loc[sizes["label"] == label, "filename"].head(per_class).tolist()
    st.markdown(f"**{spoken(label)}** · {int(counts[label])} images")
    row = st.columns(per_class)
    for column, name in zip(row, files):
        image = thumb(selection, name, 140)
        if image is not None:
            column.image(image)
if len(summary["copies"]):
    st.subheader("Copies of one picture")
    st.caption("Identical files under different names (by content hash). A split keeps each picture's copies "
               "together, so none is tested on a picture it trained on.")
    st.dataframe(shown_table(summary["copies"], "label"), hide_index=True, width="stretch",
                 column_config={"picture #": st.column_config.NumberColumn(width="small")})

st.subheader("Data quality")
with_classes = [run for run in selection.runs if run.classes == summary["classes"]]
if not with_classes:
    st.caption("Select a run trained on these classes in the sidebar: its embeddings find near-duplicates, likely "
               "label errors and outliers.")
else:
    left, right = st.columns([2, 1])
    ready = [r for r in with_classes if has_embeddings(r)]  # open on the best run that has them
    run = selection.run(left.selectbox("Embeddings of", [r.name for r in with_classes], key="dataset_audit_run",
                                       index=with_classes.index(best_run(ready or with_classes))))
    threshold = right.slider("Near-duplicate from similarity", 0.80, 1.0, DUPLICATE_THRESHOLD, 0.01,
                             key="dataset_threshold")
    found = embeddings_or_offer(selection, run, key="dataset")
    if found is not None:
        with friendly("The data audit"):
            described = found.fingerprint == summary["fingerprint"]  # these very pictures: compare their pixels
            report = data_audit(found, threshold, selection.data_root if described else None)
            st.caption(f"{report.summary()} — with {run.name}'s embeddings of {len(found)} images.")
            if found.reduction is not None:
                st.caption(f"ℹ️ {run.name} ships its embeddings reduced ({found.dimensions}): all three lists come "
                           "from them, and their similarities run higher than the full vectors', so more pairs "
                           "pass the cosine threshold. `python -m train.audit DATA --run RUN --out DIR` audits on "
                           "the full vectors.")
            tabs = st.tabs([f"Near-duplicates ({len(report.duplicates)})",  # keyed: stays on the tab opened
                            f"Likely label errors ({len(report.label_issues)})", f"Outliers ({len(report.outliers)})"],
                           key="audit_tabs")
            with tabs[0]:
                st.caption("Pairs the model sees as (almost) the same picture"
                           + (" that also look the same on their pixels (small grey thumbnails correlate ≥ "
                              f"{PIXEL_MATCH}: copies re-encoded, re-cropped or watermarked)" if described else "")
                           + "; pairs split across train and test first: a test image whose twin was trained on "
                           "inflates test accuracy.")
                pairs = []  # three pairs a row, each picture named as the table names it (a pair a row left the
                for pair in report.duplicates.head(8).itertuples():  # page's right two thirds empty, #41 walk)
                    a, b = thumb(selection, pair.file_a, 140), thumb(selection, pair.file_b, 140)
                    if a is not None and b is not None:  # a pair stays side by side
                        pairs += [(a, f"{picture_name(pair.file_a)} · {pair.split_a} · {spoken(pair.label_a)}"),
                                  (b, f"{picture_name(pair.file_b)} · {pair.split_b} · {spoken(pair.label_b)} · "
                                      f"{pair.similarity:.3f}")]
                image_grid(pairs, 6)
                scored_table(shown_pairs(report.duplicates))
                st.download_button("⬇️ duplicates.csv", report.duplicates.to_csv(index=False), "duplicates.csv",
                                   "text/csv", key="dl_duplicates")
            with tabs[1]:
                st.caption("Ranked by cleanlab. Val and test pictures: the model's own probabilities, out-of-sample. "
                           "Training pictures: a cross-validated linear probe on embeddings of a network trained on "
                           "these same labels — a weaker signal, since a wrong label it memorised can hide.")
                thumbnail_grid(selection, [(row.filename, f"{spoken(row.given)} → {spoken(row.suggested)}?")
                                              for row in report.label_issues.head(12).itertuples()], columns=6, size=140)
                scored_table(shown_table(report.label_issues, "given", "suggested"))
                st.download_button("⬇️ label_issues.csv", report.label_issues.to_csv(index=False),
                                   "label_issues.csv", "text/csv", key="dl_label_issues")
            with tabs[2]:
                st.caption("Images far from every other image in the embedding (cleanlab's typicality; low = atypical).")
                thumbnail_grid(selection, [(row.filename, f"{spoken(row.label)} · {row.typicality:.3f}")
                                              for row in report.outliers.head(12).itertuples()], columns=6, size=140)
                scored_table(shown_table(report.outliers, "label"))
                st.download_button("⬇️ outliers.csv", report.outliers.to_csv(index=False), "outliers.csv",
                                   "text/csv", key="dl_outliers")
if len(summary["problems"]):
    st.subheader("Unreadable or skipped files")
    st.dataframe(summary["problems"], hide_index=True, width="stretch")
