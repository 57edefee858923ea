"""Hostile or corrupt run files (#39): each loader reads its whole file inside its own check and raises its own
error type with one line naming the run and the file, never a KeyError, TypeError or IndexError from further in
(and never a wrong picture or number shown without a word). One test per case; the bundled sports15 runs give
the files that are then broken."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import safetensors
import safetensors.numpy

from conftest import ROOT
from har_core.models.artifacts import open_run
from har_core.evaluation.calibration import REPORT, report_of
from har_core.models.calibration_maths import CalibrationError
from har_core.explain.channels import CHANNELS, ChannelError, load_channel_tops
from har_core.retrieval.embeddings import EMBEDDINGS, EmbeddingError, load_embeddings
from har_core.explain.robustness import ROBUSTNESS, RobustnessError, read_robustness

BUNDLE = ROOT / "assets" / "runs"


@pytest.fixture
def run_copy(tmp_path):
    def copy(name: str):
        return shutil.copytree(BUNDLE / name, tmp_path / name)
    return copy


def rewrite_safetensors(path, change):
    """The file written again after `change(tensors, metadata)` edits its arrays and its "har" metadata (parsed)."""
    with safetensors.safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta = json.loads(metadata["har"])
    meta = change(tensors, meta) or meta
    path.write_bytes(safetensors.numpy.save(tensors, metadata | {"har": json.dumps(meta)}))


# ---- channels.safetensors

def without_model(tensors, meta):
    del meta["model"]


def metadata_a_list(tensors, meta):
    return [meta]


def rows_without_scores(tensors, meta):
    del tensors[next(key for key in tensors if key.startswith("scores/"))]


def row_past_the_files(tensors, meta):
    key = next(key for key in tensors if key.startswith("rows/"))
    tensors[key] = tensors[key].copy()
    tensors[key][0, 0] = len(meta["files"]) + 5


def row_of_minus_one(tensors, meta):
    key = next(key for key in tensors if key.startswith("rows/"))
    tensors[key] = tensors[key].copy()
    tensors[key][0, 0] = -1  # numpy would read it as the last training picture


@pytest.mark.parametrize("change", [without_model, metadata_a_list, rows_without_scores, row_past_the_files,
                                    row_of_minus_one], ids=lambda change: change.__name__)
def test_hostile_channel_tops_are_one_channel_error(run_copy, change):
    run_dir = run_copy("custom_cnn")
    assert load_channel_tops(open_run(run_dir)).top(next(iter(load_channel_tops(open_run(run_dir)).rows)), 0)
    rewrite_safetensors(run_dir / CHANNELS, change)
    with pytest.raises(ChannelError, match=f"custom_cnn: {CHANNELS} "):
        load_channel_tops(open_run(run_dir))


# ---- calibration.json

def edit_report(run_dir, change):
    path = run_dir / REPORT
    text = path.read_text()
    path.write_text(change(text))


@pytest.mark.parametrize("change", [
    pytest.param(lambda text: text[:len(text) // 2], id="truncated"),
    pytest.param(lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "splits"}),
                 id="without splits"),
    pytest.param(lambda text: json.dumps(json.loads(text) | {"temperature": str(json.loads(text)["temperature"])}),
                 id="a string temperature"),
    pytest.param(lambda text: json.dumps(json.loads(text) | {"splits": {"test": {"before": {}}}}),
                 id="a split without its figures"),
])
def test_a_hostile_calibration_report_is_one_calibration_error(run_copy, change):
    run_dir = run_copy("mobilenet_v2")
    assert report_of(open_run(run_dir))["splits"]["test"]
    edit_report(run_dir, change)
    with pytest.raises(CalibrationError, match=f"mobilenet_v2: {REPORT} is unreadable"):
        report_of(open_run(run_dir))


def test_evaluate_says_a_hostile_calibration_report_in_one_line_and_shows_the_rest(run_copy, monkeypatch):
    """A string temperature took everything below "How sure" off Evaluate: now one line names the file, and the
    other runs' table, the sets and the robustness heatmap are still there."""
    from streamlit.testing.v1 import AppTest
    for name in ("mobilenet_v2", "efficientnet_lite2"):
        run_copy(name)
    runs = run_copy("custom_cnn").parent
    edit_report(runs / "mobilenet_v2",
                lambda text: json.dumps(json.loads(text) | {"temperature": str(json.loads(text)["temperature"])}))
    monkeypatch.setenv("HAR_RUNS", str(runs))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("views/evaluate.py").run()
    assert not at.exception
    said = [c.value for c in at.caption if f"{REPORT} is unreadable" in c.value]
    assert len(said) == 1 and said[0].count("\n") == 0 and "mobilenet_v2" in said[0]
    tables = [frame.value for frame in at.dataframe]
    calibration = next(t for t in tables if "ECE after" in t.columns)
    assert sorted(calibration.index) == ["custom_cnn", "efficientnet_lite2"]
    assert any("set coverage" in t.columns for t in tables)  # the sets and abstaining below it are still shown
    assert any("robust" in str(chart.proto.spec) or "clean" in str(chart.proto.spec) for chart in at.get("plotly_chart"))


# ---- embeddings.safetensors

def without_files(tensors, meta):
    del meta["files"]


def five_digests(tensors, meta):
    meta["digests"] = meta["digests"][:5]


@pytest.mark.parametrize("change", [without_files, five_digests], ids=lambda change: change.__name__)
def test_hostile_embeddings_are_one_embedding_error(run_copy, change):
    run_dir = run_copy("efficientnet_lite2")
    assert len(load_embeddings(run_dir / EMBEDDINGS, "efficientnet_lite2")) > 1000
    rewrite_safetensors(run_dir / EMBEDDINGS, change)
    with pytest.raises(EmbeddingError, match=f"efficientnet_lite2: {EMBEDDINGS} "):
        load_embeddings(run_dir / EMBEDDINGS, "efficientnet_lite2")


# ---- robustness.csv

@pytest.mark.parametrize("change", [
    pytest.param(lambda table: table[table["strength"] != 0], id="without strength-0 rows"),
    pytest.param(lambda table: table.assign(accuracy="high"), id="accuracy not a number"),
    pytest.param(lambda table: table.assign(strength=table["strength"] + 10), id="strengths it never measures"),
])
def test_a_hostile_robustness_table_is_one_robustness_error(run_copy, change):
    run_dir = run_copy("custom_cnn")
    table, _ = read_robustness(open_run(run_dir))
    assert (table["strength"] == 0).any()
    change(pd.read_csv(run_dir / ROBUSTNESS)).to_csv(run_dir / ROBUSTNESS, index=False)
    with pytest.raises(RobustnessError, match=f"custom_cnn: {ROBUSTNESS} "):
        read_robustness(open_run(run_dir))


def test_the_report_says_a_hostile_robustness_table_in_one_line(run_copy):
    """The shared report's robustness section raised IndexError on a table without its clean rows."""
    from har_core.report import robustness_html
    run_dir = run_copy("custom_cnn")
    table = pd.read_csv(run_dir / ROBUSTNESS)
    table[table["strength"] != 0].to_csv(run_dir / ROBUSTNESS, index=False)
    page = robustness_html([open_run(run_dir)])
    assert f"custom_cnn: {ROBUSTNESS} " in page and np.isfinite(len(page))
