"""A report to share: one self-contained HTML file that opens offline.

plotly.js is inlined once and every figure refers to it; pictures are embedded as small JPEG thumbnails.
Sections: comparison table and bar chart, F1 per class, every model's confusion matrix, training curves,
the most confident mistakes with Grad-CAMs, and the data set's summary.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import re
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from PIL import Image

from har_core.evaluation.analysis import (HEADLINE, dataset_summary, metrics_table, mistakes, overview_table,
                                          per_class_f1_table, starts_from)
from har_core.models.artifacts import Run
from har_core.evaluation.ensemble import default_members, stored_headline
from har_core.evaluation.calibration import calibrated_frame, calibration_table, fitted_on_line, report_of
from har_core.models.calibration_maths import CalibrationError
from har_core.data.datasets import DataError
from har_core.explain.cam import SLOW_METHODS, explain, overlay_on_picture
from har_core.data.fileio import is_inside
from har_core.data.imaging import ImageError, load_image
from har_core.data.labels import spoken, spoken_columns
from har_core.quiz import answers_in_words, mark_colour
from har_core.models.inference import LoadedModel, load_run
from har_core.models.temperature import run_temperature
from har_core.explain.robustness import RobustnessError, clean_accuracy, heatmap_table, mean_drop, read_robustness
from har_core.evaluation.plots import (accuracy_bars, class_distribution, confusion_figure, f1_heatmap, learning_curves,
                                       reliability_figure, robustness_heatmap, standalone)

SECTIONS = ("Comparison", "F1 per class", "Confusion matrices", "Calibration", "Robustness", "Training curves",
            "Most confident mistakes", "Data set")
PAGE_WIDTH = 1200  # px: the report's column (its body's max-width), which a confusion matrix fills
STYLE = f"body{{max-width:{PAGE_WIDTH}px}}" + """body{font-family:system-ui,sans-serif;margin:2rem auto;color:#0f172a;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #e2e8f0;padding-bottom:.3rem;margin-top:2.5rem}
.table{overflow-x:auto;max-width:100%} table{border-collapse:collapse;font-size:.9rem}
td,th{border:1px solid #e2e8f0;padding:.3rem .6rem;text-align:right}
th{background:#f1f5f9} td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.grid.wide{grid-template-columns:repeat(auto-fill,minmax(min(840px,100%),1fr))}.grid.wide>div{overflow-x:auto}
figure{margin:0;border:1px solid #e2e8f0;border-radius:6px;padding:.5rem} figure img{width:100%;border-radius:4px}
figcaption{font-size:.85rem;margin-top:.3rem} .muted{color:#64748b}"""


def figure_html(figure: go.Figure) -> str:
    return standalone(figure).to_html(full_html=False, include_plotlyjs=False, config={"displayModeBar": False})


def picture_html(image: Image.Image, caption: str, size: int = 320) -> str:
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<figure><img src="data:image/jpeg;base64,{data}" alt=""><figcaption>{caption}</figcaption></figure>'


# a cell that says a number: 0.814, 81.4%, 224 px, 4.8 M, 12 s, or none (–)
NUMBER = re.compile(r"^[-–]?[\d.,]*\d[\d.,]*\s*(%|px|M|s)?$|^[-–]$")


def table_html(frame: pd.DataFrame) -> str:
    """A table that scrolls sideways inside the page rather than running off it. Numbers read from the right (their
    digits line up), a column of words from the left, as the first column (the runs' names) does: "ImageNet
    weights" right-aligned under its heading read as a number's column (#41 walk)."""
    words = [place for place, column in enumerate(frame.columns, start=2)  # the index is the first column
             if not frame[column].map(lambda value: pd.isna(value) or isinstance(value, (int, float))
                                      or bool(NUMBER.match(str(value)))).all()]
    name = "words-" + "-".join(map(str, words))
    left = ",".join(f".{name} :is(td,th):nth-child({place})" for place in words)
    style = f"<style>{left}{{text-align:left}}</style>" if words else ""
    return (f'{style}<div class="table {name}">' + frame.to_html(float_format=lambda v: f"{v:.3f}", na_rep="–",
                                                                   border=0, escape=True) + "</div>")


def mistakes_html(runs: list[Run], data_root: Path | None, split: str, per_model: int,
                  on_step: Callable[[str], None], load: Callable[[Run], LoadedModel] = load_run,
                  method: str = "Grad-CAM") -> str:
    """Each model's most confident mistakes, each picture with that model's explanation (`method`) beside it,
    and, for a slow method, the seconds it took."""
    if data_root is None:
        return '<p class="muted">No image folder given (--data): pictures and Grad-CAMs are left out.</p>'
    parts = []
    for run in runs:
        predictions = run.predictions(split)
        if predictions is None or run.takes_clips:
            continue
        predictions = calibrated_frame(predictions, run.classes, run_temperature(run)[0])
        worst = mistakes({run.name: predictions}).head(per_model)
        if worst.empty:
            parts.append(f"<h3>{html.escape(run.name)}</h3><p>No mistakes on the {split} split.</p>")
            continue
        loaded = load(run)
        cells = []
        for row in worst.itertuples():
            on_step(f"{method} of {run.name} on {row.filename}")
            path = Path(data_root) / row.filename
            try:
                if not is_inside(Path(data_root), path):
                    raise ImageError("outside the image folder")
                image = load_image(path)
            except ImageError as error:
                cells.append(f"<figure><figcaption>{html.escape(row.filename)}: {html.escape(str(error))}"
                             "</figcaption></figure>")
                continue
            true, predicted = html.escape(spoken(row.true)), html.escape(spoken(row.predicted))  # words, as the pages
            caption = (f"{html.escape(Path(row.filename).name)}<br>true <b>{true}</b> · "
                       f"predicted <b>{predicted}</b> ({row.confidence:.0%})")
            cells.append(picture_html(image, caption))
            started = time.perf_counter()
            explanation = explain(loaded, image, method)
            took = f" ({time.perf_counter() - started:.1f} s)" if method in SLOW_METHODS else ""
            if explanation.empty:  # a blank map would read as an answer
                cells.append(f"<figure><figcaption>{method} of {html.escape(run.name)} marks no part of this "
                             f"picture for {predicted}: its map is empty{took}.</figcaption></figure>")
                continue
            heatmap = overlay_on_picture(explanation, image, run.card["input_size"],
                                         run.card["crop_pct"])  # the whole picture, the model's crop outlined
            cells.append(picture_html(heatmap, f"{method} of {html.escape(run.name)} for "
                                               f"{predicted}{took}"))
        parts.append(f"<h3>{html.escape(run.name)}</h3><div class=\"grid\">{''.join(cells)}</div>")
    return "".join(parts) or f"<p>No predictions on the {split} split.</p>"


def calibration_html(runs: list[Run], split: str) -> str:
    """How sure: each run's temperature, ECE/NLL/Brier before and after, and the reliability diagrams."""
    found, unreadable = read_each(runs, report_of, CalibrationError)
    reports = {name: report for name, report in found.items() if split in report["splits"]}
    if not reports:
        return f"<p>No model's confidences were calibrated on the {split} pictures.</p>" + unreadable
    missing = [run.name for run in runs if run.name not in reports]
    bins = {name: {stage: pd.DataFrame(report["splits"][split][f"reliability_{stage}"])
                   for stage in ("before", "after")}
            for name, report in reports.items()}
    return ('<p class="muted">One temperature per run, fitted on val pictures: below the diagonal a model is '
            "over-confident. The confidences in this report are calibrated, except for the runs listed as raw "
            f"below. {html.escape(fitted_on_line(reports))}</p>"
            + table_html(calibration_table(reports, split).round(3)) + figure_html(reliability_figure(bins))
            + (f'<p class="muted">Not calibrated (raw): {html.escape(", ".join(missing))}</p>' if missing else "")
            + unreadable)


def read_each(runs: list[Run], read: Callable, error_type: type) -> tuple[dict, str]:
    """`read(run)` of every run that has the file (None: it has none), and one muted line per run whose file
    could not be read."""
    found, problems = {}, []
    for run in runs:
        try:
            if (stored := read(run)) is not None:
                found[run.name] = stored
        except error_type as error:
            problems.append(f'<p class="muted">{html.escape(str(error))}</p>')
    return found, "".join(problems)


def robustness_html(runs: list[Run]) -> str:
    """Each run's accuracy under the corruptions (train.robustness), at the middle strength, and its mean loss."""
    found, unreadable = read_each(runs, read_robustness, RobustnessError)
    if not found:
        return ("<p>Not measured for these models: how their answers hold up when a picture is darkened, blurred "
                "or noisy.</p>" + unreadable)
    tables = [table for table, _ in found.values()]
    summary = pd.DataFrame({"measured on": [f"{info['pictures']} {info['split']} pictures" for _, info in found.values()],
                            "clean accuracy": [f"{clean_accuracy(t):.3f}" for t in tables],
                            "mean points lost": [f"{100 * mean_drop(t):.1f}" for t in tables]}, index=list(found))
    missing = [run.name for run in runs if run.name not in found]
    return (table_html(summary) + figure_html(robustness_heatmap(heatmap_table(tables, 2), 2))
            + (f'<p class="muted">Not measured: {html.escape(", ".join(missing))}</p>' if missing else "")
            + unreadable)


def dataset_html(data_root: Path | None, max_images: int = 0) -> str:
    if data_root is None:
        return '<p class="muted">No image folder given (--data).</p>'
    try:
        summary = dataset_summary(data_root, confine=True, max_images=max_images)
    except DataError as error:
        return f'<p class="muted">{html.escape(str(error))}</p>'
    counts = summary["counts"].fillna(0).astype(int)
    facts = (f"<p>{html.escape(Path(data_root).name)}: <b>{int(counts.sum()):,}</b> labelled pictures in "
             f"<b>{len(counts)}</b> classes ({summary['layout']} layout); {len(summary['problems'])} unusable "
             f"file(s), {summary['copies']['picture'].nunique()} picture(s) stored more than once.</p>")
    return facts + figure_html(class_distribution(counts))


def quiz_html(round_played) -> str:
    """A quiz round's end (har_core.quiz.Summary): the score, who did better on each action, every answer."""
    score = " · ".join(f"{html.escape(who)} <b>{right}</b> of {of}"
                       for who, right, of in round_played.score.itertuples(index=False))
    shares = [c for c in round_played.actions if c.endswith(" right")]
    actions = spoken_columns(round_played.actions, "action").assign(
        **{c: round_played.actions[c].map("{:.0%}".format) for c in shares})
    # as the quiz page shows them: actions in words, every answer a column per picture; the index's name dropped,
    # or it drew a second, empty header row
    return (f"<p>The class against the models: {score}</p><p>{html.escape(round_played.sentence())}</p>"
            + table_html(actions.set_index("action").rename_axis(None))
            + "<h3>Every answer</h3>" + marked(table_html(answers_in_words(round_played.answers))))


def marked(table: str) -> str:
    """The Every answer table's ✓ and ✗ in the quiz page's colours (`mark_colour`), row by row."""
    rows = table.split("<tr>")
    for i, row in enumerate(rows[1:], start=1):
        name = re.match(r"\s*<th>([^<]*)</th>", row)
        if name is None:  # the header row
            continue
        for cell in re.findall(r"<td>([^<]*)</td>", row):
            if colour := mark_colour(html.unescape(name.group(1)), html.unescape(cell)):
                rows[i] = rows[i].replace(f"<td>{cell}</td>", f'<td style="{colour}">{cell}</td>', 1)
    return "<tr>".join(rows)


def ensemble_html(runs: list[Run], split: str) -> str:
    """The line the Overview shows under its table: the default ensemble's stored figures on `split` ("" when the
    runs make no ensemble)."""
    members = [run for run in runs if run.name in default_members(runs)]
    figures = stored_headline(members, split) if len(members) >= 2 else None
    if figures is None:
        return ""
    return (f"<p><b>Ensemble</b> of {html.escape(', '.join(figures['runs']))} (the Overview's default members: mean "
            f"calibrated probability): {split} accuracy <b>{figures['accuracy']:.1%}</b>, macro-F1 "
            f"<b>{figures['macro_f1']:.3f}</b></p>")


def build_report(runs: list[Run], data_root: Path | None = None, split: str = "test", per_model: int = 3,
                 on_step: Callable[[str], None] = lambda step: None,
                 load: Callable[[Run], LoadedModel] = load_run, max_images: int = 0, method: str = "Grad-CAM",
                 quiz=None) -> str:
    """The report of `runs` (metrics of `split`) as one HTML page with everything embedded. A server passes its
    shared models (`load`) and its scan limit (`max_images`), so a report costs no second copy of any model.
    `quiz`: the summary of a quiz round played (har_core.quiz.Summary), the report's last section."""
    if not runs:
        raise ValueError("no runs to report on")
    sections = {}
    on_step("Comparison")
    table = metrics_table(runs, split)
    runs_table = overview_table(runs)
    overview = runs_table.set_index("run")
    overview = overview[[c for c in ("architecture", "starts from", "input size", "parameters (M)") if c in overview]]
    overview = overview.assign(**{  # in words: "4.800" read as four thousand eight hundred
        "starts from": overview.index.map({run.name: starts_from(run.card) for run in runs}),  # room for teachers
        "input size": overview["input size"].map("{} px".format),
        "parameters (M)": overview["parameters (M)"].map("{:.1f} M".format)}).rename(
        columns={"parameters (M)": "parameters"})
    headline = [c for c in HEADLINE if c in table]
    # accuracies in percent, as the bars below and the app's Overview say them; precision, recall, F1 as 0.814
    scores = table[headline].assign(**{column: table[column].map(lambda v: "–" if pd.isna(v) else f"{v:.1%}")
                                       for column in ("accuracy", "top-3 accuracy") if column in headline})
    comparison = (overview.join(scores, how="left") if not table.empty else overview).rename_axis(None)
    bars = runs_table.dropna(subset=["test accuracy"])
    sections["Comparison"] = table_html(comparison) + ensemble_html(runs, split) + (
        figure_html(accuracy_bars(bars)) if len(bars) else "")
    f1 = per_class_f1_table(runs, split)
    sections["F1 per class"] = figure_html(f1_heatmap(f1)) if not f1.empty else f"<p>No {split} metrics.</p>"
    # the page's width: one matrix a row, cells large enough that every count reads on a projector (at 860 px
    # the 15 HAR classes' cells took half the page)
    matrices = [figure_html(confusion_figure(m, normalize=True, title=run.name, width=PAGE_WIDTH))
                for run in runs if (m := run.metrics(split)) is not None]
    sections["Confusion matrices"] = f'<div class="grid wide">{"".join(matrices)}</div>' if matrices \
        else f"<p>No {split} metrics.</p>"
    sections["Calibration"] = calibration_html(runs, split)
    sections["Robustness"] = robustness_html(runs)
    histories = {run.name: run.history() for run in runs if run.history()}
    sections["Training curves"] = figure_html(learning_curves(histories)) if histories else "<p>No histories.</p>"
    sections["Most confident mistakes"] = mistakes_html(runs, data_root, split, per_model, on_step, load, method)
    on_step("Data set")
    sections["Data set"] = dataset_html(data_root, max_images)
    if quiz is not None:
        sections["Quiz"] = quiz_html(quiz)
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "".join(f'<section id="{name.lower().replace(" ", "-")}"><h2>{name}</h2>{content}</section>'
                   for name, content in sections.items())
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>HAR Studio report</title>"
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>HAR Studio report</h1><p class=\"muted\">{len(runs)} models: "
            f"{html.escape(', '.join(run.name for run in runs))} · {split} split · made {made}</p>{body}</body></html>")
