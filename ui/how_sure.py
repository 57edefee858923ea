"""Evaluate's "How sure" section: each run's calibration, prediction sets and abstaining on a split."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from har_core.models.artifacts import Run
from har_core.evaluation.calibration import calibration_table, fitted_on_line
from har_core.models.calibration_maths import DEFAULT_TARGET_ACCURACY
from har_core.data.labels import spoken
from har_core.evaluation.plots import coverage_heatmap, coverage_shortfalls, reliability_figure, risk_coverage_figure
from ui.common import figure
from ui.sureness import calibration_report, never_reached, sureness_on


def how_sure(runs: list[Run], split: str) -> None:
    """The section: the calibration table and reliability diagrams, then prediction sets and the abstain threshold
    at the coverage and target accuracy the visitor chooses, measured on `split` (val or test)."""
    st.subheader("🎯 How sure: calibration, prediction sets, abstaining")
    if split == "train":
        st.info("Calibration is fitted on val pictures and measured on val and test: choose one of them above.")
        return
    calibration(runs, split)
    left, right = st.columns(2)
    coverage = left.slider("Set coverage", 0.5, 0.99, 0.9, 0.01, format="%.2f", key="eval_coverage",
                           help="Each picture's prediction set should hold its true class this often (split conformal "
                                "prediction, calibrated on the calibration pictures of val).")
    target = right.slider("Target accuracy", 0.5, 0.99, DEFAULT_TARGET_ACCURACY, 0.01, format="%.2f",
                          key="eval_target",
                          help="Answer only above the confidence threshold whose answers on calibration pictures "
                               "reach this accuracy; Predict says \"not sure\" and Video \"no known action\" below it "
                               "(at 90 %).")
    sets_and_abstaining(runs, split, coverage, target)


def calibration(runs: list[Run], split: str) -> None:
    """Each run's temperature, its ECE, NLL and Brier score before and after, and its reliability diagram."""
    found = {r.name: calibration_report(r) for r in runs}
    for problem in [report for report in found.values() if isinstance(report, str)]:
        st.caption(f"⚠️ {problem}")
    reports = {name: report for name, report in found.items() if isinstance(report, dict) and split in report["splits"]}
    missing = [name for name, report in found.items() if name not in reports and not isinstance(report, str)]
    if missing:
        st.caption(f"⚠️ No calibration report for {', '.join(missing)}: `python -m train.calibrate RUN` "
                   "(their probabilities are shown raw).")
    if not reports:
        return
    st.markdown("**Calibration.** One temperature per run, fitted on val pictures, makes its confidence honest: "
                "on the diagonal a model is right as often as it is sure; below it, over-confident.")
    st.caption(fitted_on_line(reports) + (" The val figures below include the pictures the fit used, so they "
                                          "flatter it; the test split is the honest check." if split == "val" else ""))
    st.dataframe(calibration_table(reports, split).style.format("{:.3f}").highlight_min(
        subset=["ECE after", "NLL after", "Brier after"], color="#bbf7d0"), width="stretch")
    st.plotly_chart(figure(reliability_figure, {name: {stage: pd.DataFrame(report["splits"][split][f"reliability_{stage}"])
                                            for stage in ("before", "after")} for name, report in reports.items()}),
                    width="stretch", key="reliability_chart")


def sets_and_abstaining(runs: list[Run], split: str, coverage: float, target: float) -> None:
    """Each run's prediction sets at `coverage` and its abstain threshold for `target`, measured on `split`: the
    table, coverage per class and the risk–coverage curves with each run's threshold starred."""
    rows, curves, chosen, per_class = {}, {}, {}, {}
    for run in runs:
        measured = sureness_on(run, split, coverage, target)  # cached: other widgets recompute none of it
        if isinstance(measured, str):
            continue
        curves[run.name] = measured["curve"]
        if measured["threshold"] is not None:  # a threshold never reached keeps nothing: no star to draw
            chosen[run.name] = (measured["kept"], measured["kept_accuracy"])
        rows[run.name] = {"threshold (val)": measured["threshold"], "answered": measured["kept"],
                          "accuracy answered": measured["kept_accuracy"]}
        if measured["sets"] is not None:
            report = measured["sets"]
            rows[run.name] |= {"set coverage": report["coverage"], "mean set size": report["mean_size"],
                               # one column for the worst class and its coverage: two cut the table at 1280 px
                               "worst class (coverage)": f"{spoken(report['worst_class'])} "
                                                         f"({report['worst_class_coverage']:.1%})"}
            per_class[run.name] = {c: v["coverage"] for c, v in report["per_class"].items()}
    if not rows:
        st.info(f"No run has val predictions to calibrate sets and thresholds on ({split} shown).")
        return
    st.markdown(f"**Prediction sets and abstaining on {split}.** A set holds the classes the model cannot rule "
                f"out at {coverage:.0%} coverage; the threshold (found on the calibration pictures) keeps the "
                f"answers it is sure of — \"{never_reached(target)}\" when no confidence kept {target:.0%} of them "
                "right, so it answers nothing.")
    percent = lambda digits, empty="—": lambda v: empty if pd.isna(v) else f"{v:.{digits}%}"  # noqa: E731
    st.dataframe(pd.DataFrame.from_dict(rows, orient="index").style.format(
        {"threshold (val)": percent(0, never_reached(target)), "answered": percent(0), "accuracy answered": percent(1),
         "set coverage": percent(1), "mean set size": "{:.2f}"}), width="stretch",
        column_config={name: st.column_config.Column(label) for name, label in (  # short: every column whole at 1280 px
            ("threshold (val)", "threshold"), ("accuracy answered", "acc. answered"), ("set coverage", "coverage"),
            ("mean set size", "set size"))})
    if per_class:
        table = pd.DataFrame(per_class).T
        missed = coverage_shortfalls(table, coverage)
        st.caption("Coverage per true class: the guarantee holds on average, not for every class — red marks the "
                   "classes it fails (hover a cell for its figure). "
                   + (f"Below {coverage:.0%}: {'; '.join(missed)}." if missed else
                      f"Every class reaches {coverage:.0%} here."))
        st.plotly_chart(figure(coverage_heatmap, table, coverage), width="stretch", key="coverage_chart")
    st.caption(f"Answering only when sure: the accuracy of the answers kept (up) against the share of pictures "
               f"answered (right), as the confidence threshold rises; a star marks each run's threshold for "
               f"{target:.0%}, found on its calibration pictures, on these {split} pictures.")
    st.plotly_chart(figure(risk_coverage_figure, curves, chosen, target), width="stretch", key="risk_chart")
