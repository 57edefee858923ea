"""Every page of the app, driven headlessly with Streamlit's AppTest on tiny trained runs."""
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT


@pytest.fixture
def app(tiny_runs, kaggle_data, monkeypatch):
    monkeypatch.setenv("HAR_RUNS", str(tiny_runs))
    monkeypatch.setenv("HAR_DATA", str(kaggle_data))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    return at


def open_page(at, page):
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(at) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(str(c.value) for c in at.caption)


def test_overview_lists_every_run_and_follows_the_run_selection(app):
    table = app.dataframe[0].value
    assert sorted(table["run"]) == ["custom_cnn", "mobilenet_v2"]
    app.sidebar.multiselect(key="chosen_runs").set_value(["custom_cnn"]).run()
    assert list(app.dataframe[0].value["run"]) == ["custom_cnn"]


def test_a_broken_run_is_named_and_the_others_still_load(tiny_runs, kaggle_data, monkeypatch, tmp_path):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    (runs / "mobilenet_v2" / "card.json").write_text("{ not json")
    monkeypatch.setenv("HAR_RUNS", str(runs))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert not at.exception
    assert any("mobilenet_v2" in e.value and "not valid JSON" in e.value for e in at.sidebar.error)
    assert list(at.dataframe[0].value["run"]) == ["custom_cnn"]


def test_predict_page_predicts_a_sample_with_every_model(app):
    at = open_page(app, "predict")
    assert any("Upload one or more photos" in i.value for i in at.info)
    sample = at.selectbox(key="predict_sample")
    at = sample.set_value(sample.options[1]).run()
    assert not at.exception
    shown = texts(at)
    assert "**custom_cnn**" in shown and "**mobilenet_v2**" in shown
    assert [m.label for m in at.metric][:2] == ["Ensemble", "Agreement"]
    at.multiselect(key="predict_models").set_value(["mobilenet_v2"]).run()
    shown = texts(at)
    assert "**mobilenet_v2**" in shown and "**custom_cnn**" not in shown
    at.toggle(key="predict_tta").set_value(True).run()
    assert not at.exception


def test_explain_page_renders_heatmaps_and_the_method_changes_them(app):
    at = open_page(app, "explain")
    sample = at.selectbox(key="cam_sample")
    at = sample.set_value(sample.options[1]).run()
    assert not at.exception and not at.error
    assert len(at.image) >= 2
    assert sum("explains" in m.value for m in at.markdown) == 2
    for method in ("Grad-CAM++", "EigenCAM", "ScoreCAM"):
        at.selectbox(key="cam_method").set_value(method).run()
        assert not at.exception and not at.error, method
    at.selectbox(key="cam_class").set_value("sleeping").run()
    assert all("explains **sleeping**" in m.value for m in at.markdown if "explains" in m.value)


def test_evaluate_page_split_and_confusion_cell(app):
    at = open_page(app, "evaluate")
    assert len(at.dataframe[0].value) == 2
    cell = [m.value for m in at.markdown if "image(s)** with true" in m.value][0]
    at.selectbox(key="cell_pred_False").set_value("dancing").run()
    changed = [m.value for m in at.markdown if "image(s)** with true" in m.value][0]
    assert changed != cell and "predicted as **dancing**" in changed
    at.radio(key="eval_split").set_value("val").run()
    assert not at.exception and len(at.dataframe[0].value) == 2


def test_mistakes_page_filters(app):
    at = open_page(app, "mistakes")
    count = lambda: int([m.value for m in at.markdown if "mistakes**" in m.value][0].split("**")[1].split()[0])  # noqa: E731
    total = count()
    at.selectbox(key="mistakes_true").set_value("cycling").run()
    assert count() <= total
    at.radio(key="mistakes_only").set_value("all wrong").run()
    assert not at.exception and count() <= total


def test_training_and_dataset_pages_render(app):
    at = open_page(app, "training")
    assert len(at.dataframe[0].value) == 2
    at = open_page(at, "dataset")
    assert [m.value for m in at.metric][:2] == ["36", "3"]
    assert at.metric[2].value == "2"  # the broken and the missing file
