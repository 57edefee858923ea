"""Calibrate runs: fit each run's temperature on the val pictures kept for calibration and measure what it changes.

    python -m train.calibrate RUN [RUN ...] [--coverage 0.9]
    python -m train.calibrate assets/runs_har          # every run in the folder, then their default ensemble

For every run (a run folder, or a folder of runs): the temperature that minimises the NLL of its stored val
predictions of the calibration half of val its split.csv marks (all of val, said, when it marks none; never
test), then its conformal prediction sets fitted on the same pictures; ECE (15 bins), NLL and Brier score on all
of val and on test before and after, the reliability diagrams, and the sets' coverage and mean size on test.
Writes calibration.json into the run and the temperature (with the split manifest's digest and the flip TTA mode
of the predictions it scales) on its card, which every page, train.predict and deploy/predict.py then apply.
train.train does this at the end of every run. For a folder of runs, the figures of its default ensemble
(har_core.evaluation.ensemble) follow: its own temperature, fitted on the pictures that calibrate all its members.
"""
from __future__ import annotations

import argparse

from har_core.models.artifacts import RunError, find_runs
from har_core.evaluation.calibration import calibrate_run, coverage_figures
from har_core.models.calibration_maths import CalibrationError, check_coverage
from har_core.evaluation.ensemble import default_members, ensemble_figures


def line(row: dict, coverage: float) -> str:
    return (f"{row['run']}: T {row['temperature']:.3f} · test accuracy {row['accuracy']:.3f} · ECE "
            f"{row['ece_before']:.3f} → {row['ece_after']:.3f} · NLL {row['nll_before']:.3f} → "
            f"{row['nll_after']:.3f}"
            f" · {coverage:.0%} sets: coverage {row['coverage']:.3f}, mean size {row['mean_set_size']:.2f}, worst "
            f"class {row['worst_class']} {row['worst_class_coverage']:.3f} · fitted on {row['calibrated_on']}")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders, or folders of runs")
    parser.add_argument("--coverage", type=float, default=0.9, help="target coverage of the prediction sets")
    args = parser.parse_args(argv)
    try:
        check_coverage(args.coverage)
    except CalibrationError as error:
        raise SystemExit(f"error: {error}")
    figures, failed = [], 0
    for folder in args.runs:
        runs, failures = find_runs(folder)
        for name, reason in failures:
            print(f"skipped {name}: {reason}")
            failed += 1
        for run in runs:
            if run.takes_clips and run.predictions("val") is None:
                print(f"skipped {run.name}: a clip model without val predictions")
                continue
            try:
                report = calibrate_run(run, args.coverage)
            except (CalibrationError, RunError) as error:
                print(f"not calibrated {run.name}: {error}")
                failed += 1
                continue
            fitted_on = report["calibrated_on"]
            if "note" in fitted_on:
                print(f"note: {run.name}: {fitted_on['note']}")
            try:
                figures.append(coverage_figures(run))
                print(line(figures[-1], args.coverage))
            except CalibrationError as error:  # the temperature holds; the test figures are what is missing
                print(f"{run.name}: temperature {report['temperature']:.3f} (fitted on {fitted_on['pictures']} "
                      f"pictures, {fitted_on['part']}); {error}")
        members = [run for run in runs if run.name in default_members(runs) and not run.takes_clips]
        if len(members) >= 2:
            try:
                figures.append(ensemble_figures(members, args.coverage))
                print(line(figures[-1], args.coverage))
            except CalibrationError as error:
                print(f"ensemble not calibrated: {error}")
    if failed and not figures:
        raise SystemExit("error: no run could be calibrated")
    return figures


if __name__ == "__main__":
    main()
