"""Plotly figures (and light HTML) for the app, built here so they can be tested without a browser."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

FONT = dict(size=16)  # readable at projector size


def confusion_figure(metrics: dict, normalize: bool = False, title: str = "") -> go.Figure:
    """Confusion matrix drawn as a grid of square markers, so that clicking a cell selects it."""
    classes = metrics["classes"]
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    rows = counts.sum(1, keepdims=True)
    shown = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    true, predicted = np.meshgrid(np.arange(len(classes)), np.arange(len(classes)), indexing="ij")
    true, predicted = true.ravel(), predicted.ravel()
    values = shown[true, predicted]
    labels = [(f"{v:.2f}" if normalize else f"{int(v)}") if counts[t, p] else "" for v, t, p in zip(values, true, predicted)]
    hover = [f"true: {classes[t]}<br>predicted: {classes[p]}<br>{int(counts[t, p])} images "
             f"({counts[t, p] / max(rows[t, 0], 1):.0%} of {classes[t]})" for t, p in zip(true, predicted)]
    cell = max(14, min(70, 560 // len(classes)))
    figure = go.Figure(go.Scatter(
        x=[classes[p] for p in predicted], y=[classes[t] for t in true], mode="markers+text", text=labels,
        hovertext=hover, hoverinfo="text", textfont=dict(size=max(9, min(16, cell // 3))),
        marker=dict(symbol="square", size=cell, color=values, colorscale="Blues", showscale=True,
                    cmin=0, cmax=1 if normalize else max(1, counts.max()), line=dict(width=1, color="#e2e8f0"))))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", font=FONT, plot_bgcolor="white",
                         height=cell * len(classes) + 220, margin=dict(l=10, r=10, t=50, b=10),
                         yaxis=dict(autorange="reversed", categoryorder="array", categoryarray=classes),
                         xaxis=dict(categoryorder="array", categoryarray=classes, tickangle=-45), clickmode="event+select")
    return figure


def accuracy_bars(table: pd.DataFrame) -> go.Figure:
    long = table.melt(id_vars="run", value_vars=["test accuracy", "test macro-F1"], var_name="metric")
    figure = px.bar(long, x="run", y="value", color="metric", barmode="group", range_y=[0, 1], text_auto=".2f")
    figure.update_layout(font=FONT, height=420, yaxis_title="", xaxis_title="", legend_title="")
    return figure


def f1_heatmap(table: pd.DataFrame) -> go.Figure:
    figure = px.imshow(table, zmin=0, zmax=1, color_continuous_scale="RdYlGn", text_auto=".2f", aspect="auto")
    figure.update_layout(font=FONT, height=120 + 45 * len(table), xaxis_title="", yaxis_title="")
    return figure


def matrix_heatmap(matrix: pd.DataFrame, title: str) -> go.Figure:
    figure = px.imshow(matrix, zmin=0, zmax=1, color_continuous_scale="Oranges", text_auto=".2f", title=title)
    figure.update_layout(font=FONT, height=150 + 45 * len(matrix))
    return figure


def probability_bars(probs: np.ndarray, classes: list[str], k: int = 5) -> str:
    """The k most likely classes as plain HTML bars: a page shows seven of these at once, and seven plotly
    charts took nine tenths of the Predict page's time to draw (README, "Instant answers")."""
    rows = []
    for i in np.argsort(probs)[::-1][:k]:
        share = float(probs[i])
        rows.append(
            f'<div style="display:flex;align-items:center;gap:.5em;margin:.15em 0">'
            f'<span style="flex:0 0 42%;text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">'
            f'{html.escape(classes[i].replace("_", " "))}</span>'
            f'<span style="flex:1;background:#e2e8f0;border-radius:3px;height:1.1em">'
            f'<span style="display:block;width:{share:.1%};height:100%;background:#636efa;border-radius:3px"></span>'
            f'</span><span style="flex:0 0 3.2em;font-variant-numeric:tabular-nums">{share:.0%}</span></div>')
    return f'<div class="har-bars">{"".join(rows)}</div>'


def learning_curves(histories: dict[str, list[dict]]) -> go.Figure:
    panels = [("train_loss", "val_loss", "loss"), ("train_accuracy", "val_accuracy", "accuracy"),
              ("val_macro_f1", None, "val macro-F1"), ("lr", None, "learning rate")]
    figure = make_subplots(rows=2, cols=2, subplot_titles=[p[2] for p in panels])
    palette = px.colors.qualitative.Plotly
    for i, (name, history) in enumerate(histories.items()):
        frame = pd.DataFrame(history)
        if frame.empty:
            continue
        color = palette[i % len(palette)]
        best = frame.loc[frame["val_accuracy"].idxmax()]
        for p, (first, second, _) in enumerate(panels):
            row, col = p // 2 + 1, p % 2 + 1
            figure.add_scatter(x=frame["epoch"], y=frame[first], mode="lines+markers", name=name,
                               legendgroup=name, showlegend=p == 0, line=dict(color=color), row=row, col=col)
            if second:
                figure.add_scatter(x=frame["epoch"], y=frame[second], mode="lines", name=f"{name} (val)",
                                   legendgroup=name, showlegend=False, line=dict(color=color, dash="dash"),
                                   row=row, col=col)
            if first in ("train_accuracy", "val_macro_f1"):
                y = best["val_accuracy"] if first == "train_accuracy" else best["val_macro_f1"]
                figure.add_scatter(x=[best["epoch"]], y=[y], mode="markers", marker=dict(symbol="star", size=16,
                                   color=color), name=f"{name} best", legendgroup=name, showlegend=False,
                                   hovertext=f"{name}: best epoch {int(best['epoch'])}", row=row, col=col)
    longest = max((len(h) for h in histories.values()), default=1)
    figure.update_xaxes(tick0=1, dtick=max(1, longest // 10), title_text="epoch")
    figure.update_yaxes(type="log", row=2, col=2)
    figure.update_layout(font=FONT, height=720, legend=dict(orientation="h", y=-0.08))
    return figure


def class_distribution(counts: pd.Series) -> go.Figure:
    figure = px.bar(x=counts.index, y=counts.values, labels={"x": "", "y": "images"}, text_auto=True)
    figure.update_layout(font=FONT, height=420)
    return figure


def size_scatter(sizes: pd.DataFrame) -> go.Figure:
    figure = px.scatter(sizes, x="width", y="height", color="label", hover_name="filename", opacity=0.6)
    figure.update_layout(font=FONT, height=480)
    return figure


MAP_COLOURS = {"true class": "label", "predicted class": "predicted", "correct / wrong": "outcome", "split": "split"}


def embedding_scatter(table: pd.DataFrame, colour: str = "true class", height: int = 640) -> go.Figure:
    """The embedding map: one WebGL point per image (fast at tens of thousands), one trace per colour
    category; each point's customdata is its row in `table`, so a selection maps back to the images."""
    column = MAP_COLOURS[colour]
    table = table.assign(outcome=np.where(table["correct"], "correct", "wrong"))
    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    fixed = {"correct": "#16a34a", "wrong": "#dc2626", "train": "#94a3b8", "val": "#2563eb", "test": "#f97316"}
    figure = go.Figure()
    for i, (value, part) in enumerate(table.groupby(column, sort=True)):
        figure.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=str(value), customdata=part.index.to_numpy(),
            marker=dict(size=6 if len(table) < 3000 else 4, color=fixed.get(str(value), palette[i % len(palette)]),
                        opacity=0.8, line=dict(width=0)),
            text=part["filename"] + "<br>true: " + part["label"] + "<br>predicted: " + part["predicted"]
            + " (" + (part["confidence"] * 100).round().astype(int).astype(str) + "%)<br>split: " + part["split"],
            hovertemplate="%{text}<extra></extra>"))
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), font=FONT, plot_bgcolor="white",
                         legend=dict(itemsizing="constant"), dragmode="select",
                         xaxis=dict(showticklabels=False, title=None, showgrid=False, zeroline=False),
                         yaxis=dict(showticklabels=False, title=None, showgrid=False, zeroline=False))
    return figure


def action_timeline(rows: dict[str, list], classes: list[str], seconds: float) -> go.Figure:
    """One row per model (and the ensemble): each segment a bar coloured by its class, hover with confidence.
    `rows`: name -> segments (har_core.timeline.Segment), drawn top to bottom in the given order."""
    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    colour = {c: palette[i % len(palette)] for i, c in enumerate(classes)}
    figure, legend = go.Figure(), set()
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
    figure.update_layout(barmode="overlay", height=90 + 48 * len(rows), font=FONT, plot_bgcolor="white",
                         margin=dict(l=10, r=10, t=30, b=40), xaxis=dict(title="seconds", range=[0, seconds]),
                         yaxis=dict(autorange="reversed"), legend=dict(orientation="h", y=-0.35))
    return figure


def _run_colours(names: list[str]) -> dict[str, str]:
    palette = px.colors.qualitative.Plotly
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def reliability_figure(bins: dict[str, dict[str, pd.DataFrame]]) -> go.Figure:
    """Reliability diagrams overlaid: for each run (one colour) the accuracy of each confidence bin against its
    mean confidence, before (dotted, hollow) and after (solid) temperature scaling. On the diagonal a model is as
    right as it is sure; below it, over-confident. Marker area follows the pictures in the bin."""
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                       line=dict(color="#94a3b8", dash="dash", width=2), hoverinfo="skip")
    colours = _run_colours(list(bins))
    for name, stages in bins.items():
        for stage, frame in stages.items():
            frame = frame[frame["count"] > 0]
            after = stage == "after"
            size = 6 + 18 * np.sqrt(frame["count"] / max(1, frame["count"].max()))
            figure.add_scatter(
                x=frame["confidence"], y=frame["accuracy"], mode="lines+markers", name=f"{name} · {stage}",
                legendgroup=name, line=dict(color=colours[name], width=3 if after else 2, dash=None if after else "dot"),
                marker=dict(size=size, color=colours[name] if after else "white",
                            line=dict(color=colours[name], width=2)),
                hovertext=[f"{name} {stage}: {int(c)} pictures sure {m:.0%}, right {a:.0%}"
                           for c, m, a in zip(frame["count"], frame["confidence"], frame["accuracy"])], hoverinfo="text")
    figure.update_layout(font=FONT, height=560, xaxis_title="confidence (mean of the bin)", yaxis_title="accuracy",
                         xaxis=dict(range=[0, 1.02], tickformat=".0%"), yaxis=dict(range=[0, 1.02], tickformat=".0%"),
                         legend=dict(orientation="h", y=-0.18), margin=dict(l=10, r=10, t=30, b=10),
                         plot_bgcolor="white")
    figure.update_xaxes(gridcolor="#e2e8f0")
    figure.update_yaxes(gridcolor="#e2e8f0")
    return figure


def risk_coverage_figure(curves: dict[str, pd.DataFrame], chosen: dict[str, tuple[float, float]],
                         target: float) -> go.Figure:
    """Accuracy of the answers kept against the share kept, as the confidence threshold rises (right to left);
    a star marks each run's threshold (found on val) where it lands on these pictures."""
    figure = go.Figure()
    colours = _run_colours(list(curves))
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
                               marker=dict(symbol="star", size=20, color=colours[name], line=dict(color="black", width=1)),
                               hovertext=f"{name}: its threshold keeps {kept:.0%}, {accuracy:.1%} right", hoverinfo="text")
    figure.add_hline(y=target, line=dict(color="#94a3b8", dash="dash"), annotation_text=f"target {target:.0%}",
                     annotation_position="bottom left")
    figure.update_layout(font=FONT, height=480, xaxis_title="share of pictures answered", yaxis_title="accuracy of those",
                         xaxis=dict(range=[0, 1.02], tickformat=".0%"), yaxis=dict(tickformat=".0%"),
                         legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white")
    figure.update_xaxes(gridcolor="#e2e8f0")
    figure.update_yaxes(gridcolor="#e2e8f0")
    return figure


def coverage_heatmap(table: pd.DataFrame, target: float) -> go.Figure:
    """Per-class coverage of each run's prediction sets (rows: runs): red where the guarantee fails a class."""
    figure = px.imshow(table, zmin=max(0.0, target - 0.3), zmax=1, color_continuous_scale="RdYlGn", text_auto=".2f",
                       aspect="auto")
    figure.update_layout(font=FONT, height=300 + 45 * len(table), xaxis_title="", yaxis_title="",
                         coloraxis_colorbar=dict(title="coverage", len=1.0, thickness=18))
    figure.update_xaxes(tickangle=-45)
    return figure
