"""Plotly figures (and light HTML) for the app, built here so they can be tested without a browser."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from har_core.evaluation.analysis import disagreement_matrix
from har_core.data.labels import spoken
from har_core.data.spans import timed

FONT = dict(size=16)  # readable at projector size
# 15 colours told apart at a glance (a data set of 15 classes, HAR's, gets one each): matplotlib's blue, orange,
# green and red, then each next colour the farthest (CIEDE2000) from those before it, none near-black or near-white;
# Dark24's first fifteen held three pinks and three purples
DISTINCT = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#F29CE7", "#851BA6", "#625117", "#4DCACE", "#C6BC38",
            "#025F3E", "#9DB8F8", "#F82387", "#F7A39A", "#843953", "#9D6CDB"]
# one palette for every figure: a class (or a run) keeps its colour on every page and filter; beyond 15 names,
# plotly's 47 (Dark24's near-black left out: it reads as black on a projector, not as a class's colour)
PALETTE = DISTINCT + [colour for colour in px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
                      if colour != "#222A2A" and colour not in DISTINCT]


# the look of a figure drawn outside the app (the report): plotly's white template, named here because the process
# default is not: importing streamlit makes "streamlit" the default, whose colours are placeholders (#000001…) and
# whose axes keep no room for their labels; only Streamlit's front end knows how to draw it
STANDALONE_TEMPLATE = pio.templates["plotly_white"]  # white as the app's charts, not plotly's grey


def standalone(figure: go.Figure) -> go.Figure:
    """The figure with its own template: drawn the same in any page, whichever process built it."""
    return figure.update_layout(template=STANDALONE_TEMPLATE)


def enlarged(figure: go.Figure, scale: float) -> go.Figure:
    """The figure `scale` times larger (presentation mode): its font, the ticks and titles of its axes and legend,
    its subplots' titles (each set here: a theme's own sizes would win over the figure's font), the text and markers of its traces
    where they have their own size, and its height and width where it fixes them (a confusion matrix's cells)."""
    base = figure.layout.font.size or 12
    figure.update_layout(font_size=round(base * scale), legend_font_size=round(base * scale))
    for axis in [*figure.select_xaxes(), *figure.select_yaxes()]:
        axis.tickfont.size = round((axis.tickfont.size or base) * scale)
        axis.title.font.size = round((axis.title.font.size or base) * scale)
    for annotation in figure.layout.annotations:  # subplot titles (make_subplots fixes them at 16 px)
        annotation.font.size = round((annotation.font.size or base) * scale)
    for trace in figure.data:
        for part in ("textfont", "marker"):
            if isinstance(getattr(getattr(trace, part, None), "size", None), (int, float)):
                getattr(trace, part).size = round(getattr(trace, part).size * scale)
    for side in ("width", "height"):
        if figure.layout[side]:
            figure.layout[side] = round(figure.layout[side] * scale)
    return figure


def colours_of(names: list[str]) -> dict[str, str]:
    """Each name's colour: its position in the full list (a data set's classes, the runs shown), never in a
    filtered subset, so hiding some keeps the others' colours."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


COUNT_TEXT = "#0f172a"  # every count in one dark colour: plotly fades the text of unselected points to one colour
# Blues up to a middle blue (not its near-black end), so dark counts read on every cell, on a projector too
CONFUSION_SCALE = [[0.0, "#f7fbff"], [0.5, "#c6dbef"], [1.0, "#6baed6"]]


def confusion_figure(metrics: dict, normalize: bool = False, title: str = "", width: int | None = None,
                     selected: tuple[str, str] | None = None) -> go.Figure:
    """Confusion matrix drawn as a grid of square markers, so that clicking a cell selects it. Normalised, each
    row shows the percentage of its true class. Every class is labelled on both axes; the `selected` cell
    (true, predicted) is drawn amber by the figure itself (normalised or not), and the others keep their colours
    and counts (plotly would fade them). `width` (pixels) sizes the cells to fit a figure that wide (the report);
    else they fit a page column."""
    classes = metrics["classes"]
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    rows = counts.sum(1, keepdims=True)
    shown = 100 * np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    true, predicted = np.meshgrid(np.arange(len(classes)), np.arange(len(classes)), indexing="ij")
    true, predicted = true.ravel(), predicted.ravel()
    values = shown[true, predicted]
    top = 100 if normalize else max(1, counts.max())
    labels = [(f"{v:.0f}" if normalize else f"{int(v)}") if counts[t, p] else ""
              for v, t, p in zip(values, true, predicted)]
    words = [spoken(c) for c in classes]
    hover = [f"true: {words[t]}<br>predicted: {words[p]}<br>{int(counts[t, p])} image{'' if counts[t, p] == 1 else 's'}"
             f" ({counts[t, p] / max(rows[t, 0], 1):.0%} of {words[t]})" for t, p in zip(true, predicted)]
    marked = [i for i, (t, p) in enumerate(zip(true, predicted)) if selected == (classes[t], classes[p])]
    label_px = 9 * max(len(c) for c in classes)  # the y tick labels, at the figure's font size
    cell = max(14, min(70, (width - label_px - 120) // len(classes) if width else 560 // len(classes)))
    own_width = width or cell * len(classes) + label_px + 150  # square cells: never stretched to a wide page
    figure = go.Figure(go.Scatter(
        x=[classes[p] for p in predicted], y=[classes[t] for t in true], mode="markers+text", text=labels,
        hovertext=hover, hoverinfo="text",
        textfont=dict(size=max(9, min(16, cell * 2 // 5)), color=COUNT_TEXT),  # "100" fills two thirds of a cell
        marker=dict(symbol="square", size=cell, color=values, colorscale=CONFUSION_SCALE, showscale=True, cmin=0,
                    cmax=top, colorbar=dict(title="% of row" if normalize else "images"),
                    line=dict(width=1, color="#e2e8f0")),
        selectedpoints=marked or None,
        selected=dict(marker=dict(color="#f59e0b", opacity=1), textfont=dict(color=COUNT_TEXT)),
        unselected=dict(marker=dict(opacity=1), textfont=dict(color=COUNT_TEXT))))
    # the points keep the data set's names (a click returns them); the axes say them in words
    # no grid: under the report's white template its lines showed between and above the cells (#41 walk)
    ticks = dict(categoryorder="array", categoryarray=classes, tickmode="array", tickvals=classes, ticktext=words,
                 showgrid=False, zeroline=False)
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", font=FONT, plot_bgcolor="white",
                         height=cell * len(classes) + 220 + (8 * max(len(c) for c in classes) if width else 0),
                         margin=dict(l=10, r=10, t=50, b=10), yaxis=dict(autorange="reversed", **ticks),
                         xaxis=dict(tickangle=-45, **ticks), clickmode="event+select", width=own_width)
    if width:  # the report, read on a projector: its large cells take larger counts and class names
        figure.update_traces(textfont_size=max(9, min(20, cell * 2 // 5)))
        figure.update_xaxes(tickfont=dict(size=15), tickangle=-60)
        figure.update_yaxes(tickfont=dict(size=15))
    return figure


BAR_LABELS = {"test accuracy": "{:.1%}", "test macro-F1": "{:.3f}"}  # as the Overview's model cards say them


def accuracy_bars(table: pd.DataFrame) -> go.Figure:
    """Each run's test accuracy and macro-F1, each bar labelled as the model cards say it: at two decimals,
    81.4 % and 80.5 % both read 0.81."""
    long = table.melt(id_vars="run", value_vars=["test accuracy", "test macro-F1"], var_name="metric")
    figure = px.bar(long, x="run", y="value", color="metric", barmode="group", range_y=[0, 1],
                    color_discrete_sequence=PALETTE)  # the template's colours would be baked into the bars
    figure.for_each_trace(lambda bars: bars.update(text=["" if pd.isna(value) else BAR_LABELS[bars.name].format(value)
                                                         for value in bars.y]))
    # the legend above the bars: beside them it left each bar too narrow for "81.4%" at 1280 px (turned on its side)
    figure.update_layout(font=FONT, height=420, yaxis_title="", xaxis_title="", legend_title="",
                         legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))
    # no value axis: every bar says its number, and a 0–1 axis read wrong under "81.4%" (#41 walk)
    figure.update_yaxes(showticklabels=False, showgrid=False, zeroline=True)
    return figure


def f1_heatmap(table: pd.DataFrame) -> go.Figure:
    """Runs × classes F1 (class names in words, tilted so every one is whole; three colour-bar ticks that never
    overlap, even in presentation mode's large type)."""
    figure = px.imshow(table.rename(columns=spoken), zmin=0, zmax=1, color_continuous_scale="RdYlGn",
                       text_auto=".2f", aspect="auto")
    figure.update_layout(font=FONT, height=230 + 45 * len(table), xaxis_title="", yaxis_title="",
                         margin=dict(l=10, r=10, t=20, b=10),
                         coloraxis_colorbar=dict(title="F1", tickvals=[0, 0.5, 1], len=1.0, thickness=16,
                                                 lenmode="fraction"))
    figure.update_xaxes(tickangle=-45)
    return figure


def robustness_heatmap(table: pd.DataFrame, strength: int) -> go.Figure:
    """Models × (clean, corruptions): accuracy at one corruption strength (har_core.explain.robustness.heatmap_table)."""
    figure = px.imshow(table, zmin=0, zmax=1, color_continuous_scale="RdYlGn", text_auto=".2f", aspect="auto",
                       title=f"accuracy on clean pictures and under each corruption at strength {strength} of 3")
    figure.update_layout(font=FONT, height=max(260, 170 + 45 * len(table)), xaxis_title="", yaxis_title="",
                         xaxis_side="top", margin=dict(t=110), coloraxis_colorbar=dict(title="", thickness=14))
    return figure


def disagreement_heatmap(predictions: dict[str, pd.DataFrame]) -> go.Figure:
    """The share of pictures each two models label differently (har_core.evaluation.analysis.disagreement_matrix)."""
    matrix = disagreement_matrix(predictions)
    figure = px.imshow(matrix, zmin=0, zmax=1, color_continuous_scale="Oranges", text_auto=".2f",
                       title="share of images two models label differently")
    label_px = 10 * max(len(name) for name in matrix.index)  # whole run names on both axes
    cells = 90 * len(matrix)  # cells big enough to read their share, at its own size (never a 65 px thumbnail)
    figure.update_layout(font=FONT, width=cells + label_px + 160, height=cells + label_px + 90,
                         margin=dict(l=10, r=10, t=50, b=10), coloraxis_colorbar=dict(title="", tickvals=[0, 0.5, 1]))
    figure.update_xaxes(tickangle=-45)
    return figure


@timed("card bars")
def probability_bars(probs: np.ndarray, classes: list[str], k: int = 5) -> str:
    """The k most likely classes as plain HTML bars: a page shows seven of these at once, and seven plotly
    charts took nine tenths of the Predict page's time to draw (README, "Instant answers")."""
    rows = []
    for i in np.argsort(probs)[::-1][:k]:
        share = float(probs[i])
        rows.append(
            f'<div style="display:flex;align-items:center;gap:.5em;margin:.15em 0">'
            f'<span style="flex:0 0 42%;text-align:right;line-height:1.15;overflow-wrap:anywhere">'
            f'{html.escape(spoken(classes[i]))}</span>'
            f'<span style="flex:1;background:#e2e8f0;border-radius:3px;height:1.1em">'
            f'<span style="display:block;width:{share:.1%};height:100%;background:#636efa;border-radius:3px"></span>'
            f'</span><span style="flex:0 0 3.2em;font-variant-numeric:tabular-nums">{share:.0%}</span></div>')
    return f'<div class="har-bars">{"".join(rows)}</div>'


def answer_card(model: str, probs: np.ndarray, classes: list[str], not_sure: bool) -> str:
    """Predict's card of a model, as one HTML block: its name, its answer, how sure in words and its most likely
    classes' bars. One element, not four: each element costs the browser a few milliseconds to draw, times six
    cards, times a room of thirty tabs drawing at once on the server's cores (#41)."""
    answer = spoken(classes[int(probs.argmax())])
    return (f'<div class="har-card"><p><strong>{html.escape(model)}</strong></p><h3>{html.escape(answer)}</h3>'
            f'<p><strong>{probs.max():.0%} sure</strong>{" · 🤔 not sure" if not_sure else ""}</p>'
            f'{probability_bars(probs, classes)}</div>')


def heat_scale_html(covering: bool = False) -> str:
    """The heatmaps' colour scale (OpenCV's jet, as pytorch-grad-cam draws them) as a light HTML bar, in the words
    of the map's kind: a class activation map (what raises the class) or an occlusion map (`covering`: where
    covering the picture lowers it)."""
    jet = "#00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00, #ff7f00, #ff0000, #7f0000"
    low, high = (("covering it changes nothing", "covering it lowers the class most") if covering
                 else ("does not raise the class", "raises it most"))
    return ('<div style="display:flex;align-items:center;gap:.6em;font-size:.9rem">'
            f'<span>low: {low}</span>'
            f'<span style="flex:1;height:.9em;border-radius:3px;background:linear-gradient(to right, {jet})"></span>'
            f'<span>high: {high}</span></div>')


def thumbnail_uri(image, size: int = 96) -> str:
    """A small JPEG of a picture as a data: URI, for a table's image column."""
    import base64
    import io
    picture = image.convert("RGB")
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def smooth(values: pd.Series, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled
    towards zero. 0 keeps the values; 0.9 averages over about the last ten epochs."""
    values = np.asarray(values, dtype=float)
    if weight <= 0:
        return values
    average, out = 0.0, np.empty_like(values)
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average / (1 - weight ** (i + 1))
    return out


def learning_curves(histories: dict[str, list[dict]], smoothing: float = 0.0,
                    names: list[str] | None = None) -> go.Figure:
    """Loss, accuracy, val macro-F1 and learning rate per epoch of every run (solid: train, dashed: val),
    smoothed as TensorBoard does; a star marks each run's best val epoch (unsmoothed). A run keeps its colour
    from `names` (every run that could be shown), so hiding one recolours none."""
    panels = [("train_loss", "val_loss", "loss"), ("train_accuracy", "val_accuracy", "accuracy"),
              ("val_macro_f1", None, "val macro-F1"), ("lr", None, "learning rate")]
    figure = make_subplots(rows=2, cols=2, subplot_titles=[p[2] for p in panels], vertical_spacing=0.2)
    colours = colours_of(names or list(histories))
    for name, history in histories.items():
        frame = pd.DataFrame(history)
        if frame.empty:
            continue
        color = colours[name]
        best = frame.loc[frame["val_accuracy"].idxmax()]
        for p, (first, second, _) in enumerate(panels):
            row, col = p // 2 + 1, p % 2 + 1
            weight = 0.0 if first == "lr" else smoothing
            figure.add_scatter(x=frame["epoch"], y=smooth(frame[first], weight), mode="lines+markers", name=name,
                               legendgroup=name, showlegend=p == 0, line=dict(color=color), row=row, col=col)
            if second:
                figure.add_scatter(x=frame["epoch"], y=smooth(frame[second], weight), mode="lines",
                                   name=f"{name} (val)", legendgroup=name, showlegend=False,
                                   line=dict(color=color, dash="dash"), row=row, col=col)
            if first in ("train_accuracy", "val_macro_f1"):
                y = best["val_accuracy"] if first == "train_accuracy" else best["val_macro_f1"]
                figure.add_scatter(x=[best["epoch"]], y=[y], mode="markers", marker=dict(symbol="star", size=16,
                                   color=color), name=f"{name} best", legendgroup=name, showlegend=False,
                                   hovertext=f"{name}: best epoch {int(best['epoch'])}", row=row, col=col)
    longest = max((len(h) for h in histories.values()), default=1)
    figure.update_xaxes(tick0=1, dtick=max(1, longest // 10), title_text="epoch")
    rates = [step["lr"] for history in histories.values() for step in history if step.get("lr")]
    decades = dict(dtick=1) if rates and max(rates) >= 10 * min(rates) else {}  # a tick per power of ten, when it spans
    figure.update_yaxes(type="log", exponentformat="power", row=2, col=2, **decades)  # 10⁻⁴, not "100µ"
    figure.update_layout(font=FONT, height=760, legend=dict(orientation="h", y=-0.12), margin=dict(b=10))
    return figure


def class_distribution(counts: pd.Series) -> go.Figure:
    """Images per class, each bar in its class's colour (the one it has on every page), names in words."""
    colours = colours_of(list(counts.index))
    figure = go.Figure(go.Bar(x=[spoken(c) for c in counts.index], y=counts.values, text=counts.values,
                              marker_color=[colours[c] for c in counts.index], texttemplate="%{text:,}"))
    figure.update_layout(font=FONT, height=420, yaxis_title="images", plot_bgcolor="white",
                         margin=dict(l=10, r=10, t=20, b=10))
    figure.update_xaxes(tickangle=-45)
    figure.update_yaxes(gridcolor="#e2e8f0")
    return figure


def size_scatter(sizes: pd.DataFrame, classes: list[str] | None = None) -> go.Figure:
    """Width × height of every picture, one colour per class (the palette of every page), legend in words."""
    classes = classes or sorted(sizes["label"].unique())
    colours = colours_of(classes)
    figure = go.Figure([go.Scattergl(x=part["width"], y=part["height"], mode="markers", name=spoken(label),
                                     text=part["filename"], hovertemplate="%{text}: %{x}×%{y} px<extra></extra>",
                                     marker=dict(color=colours[label], opacity=0.6, size=6))
                        for label in classes if len(part := sizes[sizes["label"] == label])])
    figure.update_layout(font=FONT, height=480, xaxis_title="width (px)", yaxis_title="height (px)",
                         plot_bgcolor="white", legend=dict(itemsizing="constant"), margin=dict(l=10, r=10, t=20, b=10))
    figure.update_xaxes(gridcolor="#e2e8f0")
    figure.update_yaxes(gridcolor="#e2e8f0")
    return figure


MAP_COLOURS = {"true class": "label", "predicted class": "predicted", "correct / wrong": "outcome", "split": "split"}


def embedding_scatter(table: pd.DataFrame, colour: str = "true class", height: int = 640,
                      classes: list[str] | None = None) -> go.Figure:
    """The embedding map: one WebGL point per image (fast at tens of thousands), one trace per colour
    category; each point's customdata is its row in `table`, so a selection maps back to the images. Classes
    take their colour from `classes` (the run's class list), so a filter never recolours them."""
    column = MAP_COLOURS[colour]
    table = table.assign(outcome=np.where(table["correct"], "correct", "wrong"))
    fixed = {"correct": "#16a34a", "wrong": "#dc2626", "train": "#94a3b8", "val": "#2563eb", "test": "#f97316"}
    fixed |= colours_of(classes or sorted(set(table["label"]) | set(table["predicted"])))
    figure = go.Figure()
    for value, part in table.groupby(column, sort=True):
        figure.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", customdata=part.index.to_numpy(),
            name=spoken(str(value)) if column in ("label", "predicted") else str(value),
            marker=dict(size=6 if len(table) < 3000 else 4, color=fixed[str(value)],
                        opacity=0.8, line=dict(width=0)),
            text=part["filename"] + "<br>true: " + part["label"].map(spoken) + "<br>predicted: "
            + part["predicted"].map(spoken)
            + " (" + (part["confidence"] * 100).round().astype(int).astype(str) + "%)<br>split: " + part["split"],
            hovertemplate="%{text}<extra></extra>"))
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), font=FONT, plot_bgcolor="white",
                         legend=dict(itemsizing="constant"), dragmode="select",
                         xaxis=dict(showticklabels=False, title=None, showgrid=False, zeroline=False),
                         yaxis=dict(showticklabels=False, title=None, showgrid=False, zeroline=False))
    return figure


FRAMES_ROW = "frames ▸ click"


def action_timeline(rows: dict[str, list], classes: list[str], seconds: float, times: list[float] | None = None,
                    shown: float | None = None) -> go.Figure:
    """One row per model (and the ensemble): each segment a bar coloured by its class, hover with confidence.
    `rows`: name -> segments (har_core.explain.timeline.Segment), drawn top to bottom in the given order. `times`: a
    top row with a dot per sampled frame (its customdata the frame's index), to click; `shown`: a line at the
    frame shown below the timeline."""
    colour = colours_of(classes)
    figure, legend = go.Figure(), set()
    if times is not None:
        figure.add_trace(go.Scatter(
            x=list(times), y=[FRAMES_ROW] * len(times), mode="markers", customdata=list(range(len(times))),
            marker=dict(size=11, color="#475569", symbol="circle"), showlegend=False,
            hovertemplate="frame %{customdata} at %{x:.1f} s: click to show it<extra></extra>"))
    for name, segments in rows.items():
        for segment in segments:
            unknown = segment.label not in colour
            figure.add_trace(go.Bar(
                y=[name], x=[segment.end - segment.start], base=[segment.start], orientation="h",
                name=segment.label, legendgroup=segment.label, showlegend=segment.label not in legend,
                marker=dict(color="#e2e8f0" if unknown else colour[segment.label], line=dict(width=0.5, color="white")),
                hovertemplate=f"{name}<br><b>{segment.label}</b><br>{segment.start:.1f}–{segment.end:.1f} s<br>"
                              f"confidence {segment.confidence:.0%}<extra></extra>"))
            legend.add(segment.label)
    if shown is not None:
        figure.add_vline(x=shown, line=dict(color="#0f172a", width=2, dash="dot"), annotation_text="shown frame",
                         annotation_position="top")
    figure.update_layout(barmode="overlay", height=110 + 48 * (len(rows) + (times is not None)), font=FONT,
                         plot_bgcolor="white", margin=dict(l=10, r=10, t=40, b=40),
                         xaxis=dict(title="seconds", range=[0, seconds]), yaxis=dict(autorange="reversed"),
                         legend=dict(orientation="h", y=-0.35), clickmode="event+select")
    return figure


def reliability_figure(bins: dict[str, dict[str, pd.DataFrame]], columns: int = 4) -> go.Figure:
    """Reliability diagrams, one small panel per run: the accuracy of each confidence bin against its mean
    confidence, before (grey, dotted) and after (the run's colour) temperature scaling. On the diagonal a model
    is right as often as it is sure; below it, over-confident. Marker area follows the pictures in the bin."""
    names = list(bins)
    columns = max(1, min(columns, len(names)))
    rows = -(-len(names) // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=names, horizontal_spacing=0.05,
                           vertical_spacing=0.12 if rows > 1 else 0.1, shared_xaxes=True, shared_yaxes=True)
    colours = colours_of(names)
    for i, name in enumerate(names):
        row, col = i // columns + 1, i % columns + 1
        figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", legendgroup="diagonal",
                           showlegend=i == 0, line=dict(color="#94a3b8", dash="dash", width=1.5), hoverinfo="skip",
                           row=row, col=col)
        for stage, frame in bins[name].items():
            frame = frame[frame["count"] > 0]
            after = stage == "after"
            colour = colours[name] if after else "#64748b"
            size = 5 + 14 * np.sqrt(frame["count"] / max(1, frame["count"].max()))
            figure.add_scatter(
                x=frame["confidence"], y=frame["accuracy"], mode="lines+markers",
                name="after temperature scaling" if after else "before (raw)", legendgroup=stage,
                showlegend=i == 0, line=dict(color=colour, width=3 if after else 1.5, dash=None if after else "dot"),
                marker=dict(size=size, color=colour if after else "white", line=dict(color=colour, width=1.5)),
                hovertext=[f"{name} {stage}: {int(c)} pictures sure {m:.0%}, right {a:.0%}"
                           for c, m, a in zip(frame["count"], frame["confidence"], frame["accuracy"])],
                hoverinfo="text", row=row, col=col)
    figure.update_xaxes(range=[0, 1.02], tickformat=".0%", gridcolor="#e2e8f0", dtick=0.25)
    # the y labels kept clear of the x axis's: both "0%" met at the corner
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%", gridcolor="#e2e8f0", dtick=0.25, ticklabelstandoff=12)
    for col in range(1, columns + 1):
        figure.update_xaxes(title_text="confidence", row=rows, col=col)
    for row in range(1, rows + 1):
        figure.update_yaxes(title_text="accuracy", row=row, col=1)
    figure.update_layout(font=FONT, height=120 + 300 * rows, plot_bgcolor="white", margin=dict(l=10, r=10, t=40, b=10),
                         legend=dict(orientation="h", y=1.02 + 0.06 / rows, yanchor="bottom", x=0))
    return figure


def risk_coverage_figure(curves: dict[str, pd.DataFrame], chosen: dict[str, tuple[float, float]],
                         target: float) -> go.Figure:
    """Accuracy of the answers kept against the share kept, as the confidence threshold rises (right to left);
    a star marks each run's threshold (found on val) where it lands on these pictures."""
    figure = go.Figure()
    colours = colours_of(list(curves))
    for name, curve in curves.items():
        step = max(1, len(curve) // 400)  # a few hundred points draw the same line
        shown = curve.iloc[::step]
        figure.add_scatter(x=shown["coverage"], y=shown["accuracy"], mode="lines", name=name, legendgroup=name,
                           line=dict(color=colours[name], width=3),
                           hovertext=[f"{name}: threshold {t:.0%} keeps {c:.0%}, {a:.1%} right"
                                      for t, c, a in zip(shown["threshold"], shown["coverage"], shown["accuracy"])],
                           hoverinfo="text")
        if name in chosen:
            kept, accuracy = chosen[name]
            figure.add_scatter(x=[kept], y=[accuracy], mode="markers", legendgroup=name, showlegend=False,
                               marker=dict(symbol="star", size=20, color=colours[name],
                                           line=dict(color="black", width=1)),
                               hovertext=f"{name}: its threshold keeps {kept:.0%}, {accuracy:.1%} right",
                               hoverinfo="text")
    figure.add_hline(y=target, line=dict(color="#94a3b8", dash="dash"), annotation_text=f"target {target:.0%}",
                     annotation_position="bottom left")
    figure.update_layout(font=FONT, height=480, xaxis_title="share of pictures answered",
                         yaxis_title="accuracy of those",
                         xaxis=dict(range=[0, 1.02], tickformat=".0%"), yaxis=dict(tickformat=".0%"),
                         legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=30, b=10),
                         plot_bgcolor="white")
    figure.update_xaxes(gridcolor="#e2e8f0")
    figure.update_yaxes(gridcolor="#e2e8f0")
    return figure


def coverage_heatmap(table: pd.DataFrame, target: float) -> go.Figure:
    """Per-class coverage of each run's prediction sets (rows: runs): red where the guarantee fails a class (below
    the target coverage, the further the redder), green where it holds."""
    low = max(0.0, target - 0.3)
    edge = (target - low) / (1 - low)  # where the target sits on the colour scale
    scale = [[0, "#b91c1c"], [max(0.0, edge - 1e-6), "#fca5a5"], [edge, "#bbf7d0"], [1, "#15803d"]]
    # no numbers in the cells: 15 classes × a few runs left them about 6 px high; the hover gives each cell's
    # figure and `coverage_shortfalls` the classes that miss, in words
    figure = px.imshow(table.rename(columns=spoken), zmin=low, zmax=1, color_continuous_scale=scale, aspect="auto")
    figure.update_traces(hovertemplate="%{y} · %{x}: the set holds the true class %{z:.1%} of the time"
                                       "<extra></extra>")
    figure.update_layout(font=FONT, height=300 + 45 * len(table), xaxis_title="", yaxis_title="",
                         coloraxis_colorbar=dict(title="coverage", len=1.0, thickness=18, tickformat=".0%"))
    figure.update_xaxes(tickangle=-45)
    return figure


def coverage_shortfalls(table: pd.DataFrame, target: float) -> list[str]:
    """The classes whose coverage misses `target`, per run (rows: runs), in words: "run: class 85.0 %"."""
    return [f"{run}: {spoken(cls)} {100 * value:.1f} %" for run, row in table.iterrows()
            for cls, value in row.items() if value < target]


# ---- inside the network (har_core.explain.inside) ------------------------------------------------------------------

MAP_CELLS = 48  # a feature map is drawn at most this many cells a side (block-averaged): light enough for a browser
HOVER_CELLS = 8  # and hovered (and clicked) on at most this many a side


def _shrunk(feature_map: np.ndarray, cells: int = MAP_CELLS) -> np.ndarray:
    step = max(1, -(-max(feature_map.shape) // cells))
    if step == 1:
        return feature_map
    height, width = (feature_map.shape[0] // step) * step, (feature_map.shape[1] // step) * step
    return feature_map[:height, :width].reshape(height // step, step, width // step, step).mean(axis=(1, 3))


def feature_map_grid(maps: np.ndarray, channels: list[int], columns: int = 8, title: str = "") -> go.Figure:
    """Feature maps (channels, H, W) side by side, each scaled to its own range (dark: low, bright: high).
    Plotly cannot select a heatmap's cells, so each map carries an invisible grid of points (traces 2i + 1, map i:
    a click on a map selects one of them, and `curve_number // 2` is the map) whose hover names the channel and its
    mean activation there."""
    rows = -(-len(channels) // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"#{c}" for c in channels],
                           horizontal_spacing=0.01, vertical_spacing=0.06 if rows > 1 else 0.1)
    for i, (channel, feature_map) in enumerate(zip(channels, maps)):
        raw = _shrunk(feature_map)
        low, high = float(raw.min()), float(raw.max())
        where = dict(row=i // columns + 1, col=i % columns + 1)
        figure.add_trace(go.Heatmap(z=(raw - low) / (high - low) if high > low else np.zeros_like(raw), zmin=0,
                                    zmax=1, colorscale="Viridis", showscale=False, hoverinfo="skip"), **where)
        coarse = _shrunk(raw, HOVER_CELLS)
        scale_y, scale_x = raw.shape[0] / coarse.shape[0], raw.shape[1] / coarse.shape[1]
        ys, xs = np.mgrid[:coarse.shape[0], :coarse.shape[1]]
        figure.add_trace(go.Scatter(
            x=((xs + 0.5) * scale_x - 0.5).ravel(), y=((ys + 0.5) * scale_y - 0.5).ravel(), mode="markers",
            customdata=coarse.ravel(), marker=dict(size=12, opacity=0), showlegend=False,
            selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
            hovertemplate=f"channel {channel}<br>activation here %{{customdata:.3f}}<br>click: the training pictures "
                          "it likes<extra></extra>"), **where)
    height, width = _shrunk(maps[0]).shape  # the ranges of the maps themselves (points would pad an autorange)
    figure.update_xaxes(visible=False, constrain="domain", range=[-0.5, width - 0.5])
    figure.update_yaxes(visible=False, constrain="domain", range=[height - 0.5, -0.5])  # row 0 on top
    for i in range(len(channels)):  # every map keeps its own proportions
        figure.layout[f"yaxis{i + 1 if i else ''}"].scaleanchor = f"x{i + 1 if i else ''}"
    figure.update_layout(font=FONT, title=title, height=120 + 150 * rows, margin=dict(l=10, r=10, t=90, b=10),
                         clickmode="event+select")  # a click picks that channel (the Inside page)
    figure.update_annotations(font_size=14)
    return figure
