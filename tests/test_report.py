"""The report to share: one HTML file with everything embedded (python -m train.report)."""
import re

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from har_core.models.artifacts import find_runs
from conftest import ROOT
from har_core.evaluation.calibration import report_of
from har_core.report import SECTIONS, calibration_html
from train import report


@pytest.fixture(scope="module")
def written(tiny_runs, kaggle_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    report.main([str(tiny_runs), "--data", str(kaggle_data), "--mistakes", "2", "--out", str(out), "--quiet"])
    return out


def test_the_report_embeds_everything_and_fetches_nothing(written, tiny_runs):
    page = written.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    assert page.count("<script>") >= 1 and "<script src" not in page and "<link" not in page
    assert page.count(get_plotlyjs()) == 1  # the library once, however many figures
    # each chart on white as the app draws it (plotly's own template paints its plots grey, #41 walk)
    assert '"plot_bgcolor":"white"' in page and '"plot_bgcolor":"#E5ECF6"' not in page
    ours = page.replace(get_plotlyjs(), "")  # (plotly.js itself names map-tile servers it never calls here)
    assert re.findall(r"https?://[^\"' )<]+", ours) == []
    runs = find_runs(tiny_runs)[0]
    wrong = {run.name: int((run.predictions("test")["true"] != run.predictions("test")["predicted"]).sum())
             for run in runs}
    pictures = sum(min(2, n) for n in wrong.values())
    empty = page.count("its map is empty")  # a tiny model's map can be zero everywhere: said in words, not drawn
    assert page.count('src="data:image/jpeg;base64,') == 2 * pictures - empty  # each mistake and its Grad-CAM
    assert page.count("Grad-CAM of ") == pictures
    for run in runs:
        assert f">{run.name}<" in page
    calibration = page.split("<h2>Calibration</h2>")[1].split("</section>")[0]
    assert "No model's confidences were calibrated on the test pictures" in calibration  # 6 val pictures each: too few for a temperature


def test_the_reports_calibration_section_tables_and_draws_every_calibrated_run():
    runs = find_runs(ROOT / "assets" / "runs")[0]
    section = calibration_html(runs, "test")
    assert "ECE after" in section and "perfectly calibrated" in section  # the table and the diagrams
    for run in runs:
        assert f">{run.name}<" in section  # a row each
        assert f"{report_of(run)['splits']['test']['after']['ece']:.3f}" in section
    manifest = pd.read_csv(ROOT / "assets" / "runs" / "split.csv", dtype=str, keep_default_na=False)
    half = (manifest["calibrate"] == "1").sum()
    assert f"fitted on the calibration half of val: {half} pictures" in section  # which pictures calibrated (#39.4)


def test_without_runs_or_with_a_missing_image_folder_it_says_why(tiny_runs, tmp_path):
    with pytest.raises(SystemExit, match="no usable runs"):
        report.main([str(tmp_path), "--out", str(tmp_path / "r.html"), "--quiet"])
    with pytest.raises(SystemExit, match="image folder .* not found"):
        report.main([str(tiny_runs), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html"), "--quiet"])
    assert not (tmp_path / "r.html").exists()
    out = report.main([str(tiny_runs), "--out", str(tmp_path / "plain.html"), "--quiet"])  # no --data: the card's folder
    assert "data:image/jpeg" in out.read_text()  # the image folder on the first run's card


def test_the_in_app_report_uses_the_servers_models_and_scan_limit_one_at_a_time(tiny_runs, kaggle_data,
                                                                                monkeypatch):
    """Finding 9: the app's report scanned without max_scan_images and loaded a second copy of every model."""
    import threading
    import time
    import ui.sharing
    from har_core import report as report_module
    from har_core.server import ServerConfig
    from ui.common import Selection
    from har_core.models.inference import load_run
    monkeypatch.setattr(report_module, "load_run", lambda run: pytest.fail("a second copy of a model was loaded"))
    shared = {}
    monkeypatch.setattr(ui.sharing, "model", lambda run: shared.setdefault(run.name, load_run(run)))
    monkeypatch.setenv("HAR_DATA", str(kaggle_data))
    monkeypatch.setattr(ui.sharing, "config", lambda: ServerConfig(runs=(tiny_runs,), data=(kaggle_data,), max_scan_images=5))
    building, overlaps = [], []
    real_build = report_module.build_report

    def build(*args, **kwargs):
        overlaps.append(len(building))
        building.append(1)
        time.sleep(0.3)
        try:
            return real_build(*args, **kwargs)
        finally:
            building.pop()
    monkeypatch.setattr(report_module, "build_report", build)  # ui.sharing imports it when a report is asked for
    runs = find_runs(tiny_runs)[0]
    pages = []
    selections = [Selection(runs=runs, data_root=kaggle_data), Selection(runs=runs[:1], data_root=kaggle_data)]
    threads = [threading.Thread(target=lambda s=s: pages.append(ui.sharing.report(s))) for s in selections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [0, 0] and len(pages) == 2  # the second waited for the first
    wrong = [run.name for run in runs if (run.predictions("test")["true"] != run.predictions("test")["predicted"]).any()]
    assert wrong and sorted(shared) == sorted(wrong)  # the mistakes' Grad-CAMs used the shared models
    assert all("more than this server scans (5)" in page for page in pages)


def test_the_reports_robustness_section_tables_each_measured_run_and_names_the_others(tiny_runs, copy_of):
    import pandas as pd
    from har_core.models.artifacts import open_run
    from har_core.report import robustness_html
    from har_core.explain.robustness import write_robustness
    from har_core.explain.whatif import CORRUPTIONS
    assert "Not measured for these models" in robustness_html(find_runs(tiny_runs)[0])
    run = open_run(copy_of(tiny_runs / "custom_cnn"))
    table = pd.DataFrame([("custom_cnn", name, s, 0.8 - 0.1 * s) for name in CORRUPTIONS for s in range(4)],
                         columns=["run", "corruption", "strength", "accuracy"])
    write_robustness(run, table, {"split": "test", "pictures": 6, "data": "x"})
    section = robustness_html([run, open_run(tiny_runs / "mobilenet_v2")])
    assert "6 test pictures" in section and ">20.0<" in section  # 0.8 clean, 0.6 on average after: 20 points
    assert "Not measured: mobilenet_v2" in section and "at strength 2 of 3" in section


def test_the_reports_mistakes_can_be_explained_by_occlusion_with_its_time(tiny_runs, kaggle_data):
    from har_core.report import mistakes_html
    runs = find_runs(tiny_runs)[0]
    section = mistakes_html(runs, kaggle_data, "test", 1, lambda step: None, method="Occlusion")
    captions = re.findall(r"Occlusion of (\w+) (?:for \w+|marks no part of this picture for \w+: its map is empty) "
                          r"\((\d+\.\d) s\)", section)
    wrong = [r.name for r in runs if (r.predictions("test")["true"] != r.predictions("test")["predicted"]).any()]
    assert wrong and sorted(name for name, _ in captions) == sorted(wrong) and "Grad-CAM of" not in section


def test_the_reports_comparison_names_a_distilled_runs_teachers_where_the_overview_counts_them(tiny_runs, copy_of):
    from har_core.evaluation.analysis import overview_table
    from har_core.models.artifacts import open_run
    from har_core.report import build_report
    runs = find_runs(tiny_runs)[0]
    taught = open_run(copy_of(tiny_runs / "custom_cnn"))
    taught.card["distillation"] = {"teachers": ["teacher_one", "teacher_two"]}
    assert overview_table([taught])["starts from"].item() == "random start, taught by 2 runs"
    page = build_report([taught, runs[1]], per_model=0)
    assert "random start, taught by teacher_one, teacher_two" in page and "taught by 2 runs" not in page


def test_the_reports_comparison_gives_the_default_ensembles_test_figures_as_the_overview_does(tiny_runs, copy_of):
    """#38 walk: the Overview said the ensemble's 83.4 %, the report had no ensemble at all."""
    import numpy as np
    from sklearn.metrics import f1_score
    from conftest import set_temperature
    from har_core.models.artifacts import open_run
    from har_core.report import build_report
    # temperatures far from 1, on the cards as train.calibrate puts them: here they change the ensemble's answers
    temperatures = {"custom_cnn": 20.0, "mobilenet_v2": 0.05}
    runs = [open_run(set_temperature(copy_of(tiny_runs / name), t)) for name, t in temperatures.items()]
    page = build_report(runs, per_model=0)
    # by hand: each member's test probabilities scaled by its temperature, averaged, argmax against the truth
    frames = [run.predictions("test").set_index("filename").sort_index() for run in runs]
    assert len(frames) == 2 and all(len(f) == len(frames[0]) for f in frames)
    columns = [f"prob_{c}" for c in runs[0].classes]

    def tempered(frame, t):
        logits = np.log(np.clip(frame[columns].to_numpy(float), 1e-12, None)) / t
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    truth = frames[0]["true"].map(runs[0].classes.index).to_numpy()
    predicted = (sum(tempered(f, t) for f, t in zip(frames, temperatures.values())) / len(frames)).argmax(1)
    raw = sum(f[columns].to_numpy(float) for f in frames).argmax(1)
    accuracy = float((predicted == truth).mean())
    assert accuracy != float((raw == truth).mean())  # a report that ignored the temperatures would say otherwise
    macro_f1 = f1_score(truth, predicted, labels=range(len(columns)), average="macro", zero_division=0)
    assert f"test accuracy <b>{accuracy:.1%}</b>, macro-F1 <b>{macro_f1:.3f}</b>" in page
    assert "Ensemble</b> of custom_cnn, mobilenet_v2" in page


def test_the_reports_comparison_table_says_accuracy_in_percent_as_its_bars_do(tiny_runs):
    """#41 walk: the report's table read 0.814 above bars (and the app's Overview) reading 81.4%."""
    from har_core.report import build_report
    runs = find_runs(tiny_runs)[0]
    comparison = build_report(runs, per_model=0).split("<h2>Comparison</h2>", 1)[1].split("</table>", 1)[0]
    header = re.findall(r"<th>(.*?)</th>", comparison.split("</thead>", 1)[0])
    for run in runs:
        cells = re.findall(r"<td>(.*?)</td>", comparison.split(f"<th>{run.name}</th>", 1)[1].split("</tr>", 1)[0])
        row = dict(zip(header[-len(cells):], cells))
        test = run.metrics("test")
        assert row["accuracy"] == f"{test['accuracy']:.1%}"
        assert row["macro F1"] == f"{test['macro_f1']:.3f}"  # three decimals, as before
