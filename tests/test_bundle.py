"""The demo runs shipped in assets/runs: they load, their cards validate, their numbers reproduce."""
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, SPORTS15
from har_core.models.artifacts import find_runs
from har_core.models.inference import load_run
from train import evaluate
from train.demo_models import BUNDLE_BUDGET

BUNDLE = ROOT / "assets" / "runs"
GROUP_SLOTS = {"custom_cnn", "inception_v3", "resnet50", "vgg16"}  # plus an EfficientNet


def bundled():
    runs, failures = find_runs(BUNDLE)
    assert not failures, failures
    return runs


def test_every_bundled_run_loads_with_a_valid_card():
    runs = bundled()
    assert len(runs) >= 5
    models = {run.card["model"] for run in runs}
    assert GROUP_SLOTS <= models and any(m.startswith("efficientnet") for m in models)
    for run in runs:
        load_run(run)
        assert run.card["metrics"]["test"]["accuracy"] > 1 / len(run.classes)  # better than chance
        assert run.manifest() is not None and run.predictions("test") is not None
        if run.card["pretrained"].startswith("none"):  # honestly labelled
            assert "scratch" in run.card["notes"].lower()
    manifests = {run.manifest()["filename"].str.cat(sep=",") for run in runs}
    assert len(manifests) == 1, "all demo runs share one split (same test images)"


def test_gpu_trained_runs_are_the_ones_demo_models_trains_on_a_gpu():
    from train.demo_models import GPU_RUNS
    for run in bundled():
        on_gpu = run.card["device"] != "cpu"
        assert on_gpu == (run.name in GPU_RUNS), run.name
        if on_gpu:
            assert run.card["recipe"]["trainable"] == "all" and run.card["recipe"]["cached_views"] == 0


def test_bundle_fits_the_size_budget():
    tracked = subprocess.run(["git", "ls-files", "-z", "assets/runs"], cwd=ROOT, capture_output=True, text=True).stdout
    files = [ROOT / f for f in tracked.split("\0") if f] or [p for p in BUNDLE.rglob("*") if p.is_file()
                                                            and "checkpoint" not in p.parts]
    assert sum(f.stat().st_size for f in files) <= BUNDLE_BUDGET


def test_the_best_bundled_run_ships_embeddings_that_describe_its_data_and_reproduce_its_retrieval_figures():
    from har_core.retrieval.embeddings import run_embeddings
    from har_core.retrieval.similarity import retrieval_report
    with_embeddings = [run for run in bundled() if (run.path / "embeddings.safetensors").is_file()]
    best = max(bundled(), key=lambda r: r.card["metrics"]["test"]["accuracy"])
    assert [run.name for run in with_embeddings] == [best.name]
    found = run_embeddings(best)
    assert found.fingerprint == best.card["data"]["fingerprint"] and len(found) == best.card["data"]["images"]
    assert sorted(found.files) == sorted(best.manifest()["filename"])
    assert retrieval_report(best, found) == json.loads((best.path / "retrieval.json").read_text())


def test_embeddings_are_shipped_for_the_best_runs_while_the_bundle_fits(tiny_runs, tmp_path):
    from train.demo_models import bundle_bytes, keep_embeddings_within_budget
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    embeddings = {name: (runs / name / "embeddings.safetensors").stat().st_size for name in ("custom_cnn", "mobilenet_v2")}
    budget = bundle_bytes(runs) - min(embeddings.values())  # room for one run's embeddings, not both
    best = max(bundled_runs := find_runs(runs)[0], key=lambda r: r.card["metrics"]["test"]["accuracy"]).name
    assert keep_embeddings_within_budget(runs, budget) == [best] and len(bundled_runs) == 2
    assert [p.parent.name for p in runs.glob("*/embeddings.safetensors")] == [best]
    assert bundle_bytes(runs) <= budget


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="../shared/data/sports15 not present")
def test_re_evaluating_a_bundled_model_reproduces_its_stored_accuracy(tmp_path):
    run_dir = tmp_path / "mobilenet_v2"
    shutil.copytree(BUNDLE / "mobilenet_v2", run_dir, ignore=shutil.ignore_patterns("checkpoint"))
    stored = json.loads((run_dir / "metrics_test.json").read_text())
    flags = ["--tta"] if stored["tta"] else []
    again = evaluate.main([str(run_dir), "--split", "test", "--data", str(SPORTS15), "--quiet", *flags])
    assert again["accuracy"] == stored["accuracy"]
    assert again["confusion_matrix"] == stored["confusion_matrix"]


def test_the_app_opens_on_the_har_bundle_and_each_runs_folder_brings_its_own_data_set(monkeypatch):
    """The HAR runs are what the app opens on (with HAR's pictures when ../shared holds them); switching to the
    sports15 demo runs switches the image folder to sports15 too (#25: it kept HAR's, so HAR photos showed under
    sports labels)."""
    from streamlit.testing.v1 import AppTest
    for name in ("HAR_RUNS", "HAR_DATA", "HAR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    har_runs = find_runs(ROOT / "assets" / "runs_har")[0]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert not at.exception
    assert at.selectbox(key="runs_dir").value == str(ROOT / "assets" / "runs_har")
    assert list(at.dataframe[0].value["run"]) == [r.name for r in sorted(
        har_runs, key=lambda r: -r.card["metrics"]["test"]["accuracy"])]  # the answer first: the best run on top
    assert any("Ensemble" in s.value for s in at.success)
    cards = [m.value.removeprefix("##### ") for m in at.markdown if m.value.startswith("##### ")]
    table = list(at.dataframe[0].value["run"])
    assert cards == table  # the cards in the table's order, the best first: rows of up to three, each its own
    # columns, so the page's tree lists them in reading order (ui.common.grid)
    if SPORTS15.parent.joinpath("har").is_dir():
        assert Path(at.selectbox(key="data_dir").value).name == "har"
    at.switch_page("views/evaluate.py").run()
    at.selectbox(key="eval_model").set_value("vgg16").run()  # a name both folders have
    at.selectbox(key="runs_dir").set_value(str(BUNDLE)).run()
    best = max(bundled(), key=lambda run: run.metrics("test")["accuracy"]).name
    assert not at.exception and at.selectbox(key="eval_model").value == best  # the page's default, not the old name
    at.switch_page("views/overview.py").run()
    assert not at.exception and len(at.dataframe[0].value) == len(bundled())
    from har_core.evaluation.ensemble import default_members  # the new folder's ensemble, not the names the old one shared
    assert at.multiselect(key="overview_ensemble").value == default_members(bundled()) != ["efficientnet_lite1",
                                                                                             "efficientnet_lite2", "vgg16"]
    if SPORTS15.is_dir():
        assert Path(at.selectbox(key="data_dir").value).name == "sports15"
        assert not [w for w in at.sidebar.warning if "did not learn from" in w.value]
        assert (at.query_params["runs"], at.query_params["data"]) == ("runs", "sports15")  # the link names both
        # a link made on the demo runs opens the demo runs, not the HAR runs with sports15 pictures
        linked = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        linked.query_params.update(runs="runs", data="sports15")
        linked.run()
        assert linked.selectbox(key="runs_dir").value == str(BUNDLE) and not linked.sidebar.warning
        linked.selectbox(key="runs_dir").set_value(str(ROOT / "assets" / "runs_har")).run()  # HAR's runs: har
        assert Path(linked.selectbox(key="data_dir").value).name == "har" or not SPORTS15.parent.joinpath("har").is_dir()
        linked.selectbox(key="data_dir").set_value(str(SPORTS15.resolve())).run()  # not what they learned from
        assert [w for w in linked.sidebar.warning if "did not learn from **sports15**" in w.value]
    # every card says where it was trained (the GPU-trained runs must not pass for CPU rebuilds)
    shown = Counter(m.value.split("**trained on:** ")[1].split("  \n")[0] for m in at.markdown
                    if "**trained on:** " in m.value)
    assert shown == Counter(run.card["device"].upper() for run in bundled())
    # and a distilled run names its teachers
    distilled = [run for run in bundled() if run.card.get("distillation")]
    assert distilled and all(any(f"**distilled from:** {', '.join(run.card['distillation']['teachers'])}" in m.value
                                 for m in at.markdown) for run in distilled)
    assert shown["CPU"] >= 4 and sum(shown.values()) > shown["CPU"]


def test_every_har_run_ships_reduced_embeddings_of_its_data_that_reproduce_its_retrieval_figures():
    """#26: no page on the HAR bundle says "compute first": each run carries 128-d embeddings of all its pictures."""
    from har_core.retrieval.embeddings import run_embeddings
    from har_core.retrieval.similarity import retrieval_report
    runs, failures = find_runs(ROOT / "assets" / "runs_har")
    assert runs and not failures
    for run in runs:
        found = run_embeddings(run)  # the run's own weights and classes, or it raises
        assert found.vectors.shape[1] == 128 and found.reduction.components.shape[0] == 128
        assert found.fingerprint == run.card["data"]["fingerprint"] and len(found) == 11100
        stored = json.loads((run.path / "retrieval.json").read_text())
        assert retrieval_report(run, found) == {k: v for k, v in stored.items() if k != "reduction"}
        assert stored["reduction"]["retrieval_full"]["test"]["n"] == stored["test"]["n"]


@pytest.mark.skipif(not (SPORTS15.parent / "har").is_dir(), reason="the HAR data set (../shared/data/har) is not here")
@pytest.mark.parametrize("name", ["efficientnet_lite2", "efficientnet_lite1", "inception_v3", "resnet50", "vgg16"])
def test_the_best_har_runs_ship_channel_tops_whose_pictures_and_responses_reproduce(name):
    """Inside on the HAR bundle said "no channel tops yet": the two best HAR runs ship them, ranked over their
    7,771 training pictures; a stored top picture is a training picture and its response is the stored score."""
    import numpy as np
    from har_core.explain.channels import channel_maps, load_channel_tops
    from har_core.data.imaging import load_image
    run = next(r for r in find_runs(ROOT / "assets" / "runs_har")[0] if r.name == name)
    tops = load_channel_tops(run)  # the run's own weights, or it raises
    manifest = run.manifest()
    assert tops.files == list(manifest.loc[manifest["split"] == "train", "filename"]) and len(tops.files) == 7771
    loaded = load_run(run.path)
    for module in list(tops.rows)[::4]:  # every fourth stage, its channel 3: the top picture's strongest response
        (filename, score), *_ = tops.top(module, 3)
        response = channel_maps(loaded, [load_image(SPORTS15.parent / "har" / filename)], module, 3)[0].max()
        assert float(response) == pytest.approx(score, rel=2e-3, abs=2e-3)  # stored as float16
    # #39: the stored pictures are the top ones: 40 other training pictures, drawn at random, respond on no channel
    # of any stage more strongly than the weakest picture stored for that channel
    from har_core.explain.inside import stage_activations
    drawn = np.random.default_rng(0).choice(len(tops.files), 40, replace=False)
    responses = {module: [] for module in tops.rows}
    for row in drawn:
        for stage in stage_activations(loaded, load_image(SPORTS15.parent / "har" / tops.files[row])):
            responses[stage.module].append(stage.activations.max(axis=(1, 2)))
    for module, stored in tops.rows.items():
        strongest = np.stack(responses[module])  # (40 pictures, channels)
        weakest_kept = tops.scores[module][:, -1]  # per channel, the last of its stored top pictures
        assert (np.diff(tops.scores[module], axis=1) <= 0).all(), module  # stored best first
        outside = ~(drawn[:, None, None] == stored[None]).any(-1)  # (40, channels): not among that channel's tops
        beaten = outside & (strongest > weakest_kept * (1 + 2e-3) + 2e-3)
        assert not beaten.any(), (module, np.argwhere(beaten)[:5])


HAR_RUNS = ["efficientnet_lite2", "efficientnet_lite1", "custom_cnn_taught", "resnet50", "inception_v3", "vgg16"]


def test_the_har_bundle_holds_the_five_group_architectures():
    runs, failures = find_runs(ROOT / "assets" / "runs_har")
    assert not failures and {run.card["model"] for run in runs} >= GROUP_SLOTS | {"efficientnet_lite2"}
    assert sorted(run.name for run in runs) == sorted(HAR_RUNS)


@pytest.mark.parametrize("name", HAR_RUNS)
def test_every_har_run_ships_robustness_on_its_test_pictures_measured_by_its_shipped_weights(name):
    """#38.5: every HAR run carries what the pages use; Evaluate's robustness section needs no computing."""
    import hashlib
    import pandas as pd
    from har_core.explain.whatif import CORRUPTIONS
    run = next(r for r in find_runs(ROOT / "assets" / "runs_har")[0] if r.name == name)
    info = json.loads((run.path / "robustness.json").read_text())
    assert info["split"] == "test" and info["per_class"] == 40 and info["pictures"] == 600
    assert info["weights"] == hashlib.sha256((run.path / "model.safetensors").read_bytes()).hexdigest()
    table = pd.read_csv(run.path / "robustness.csv")
    assert set(table["run"]) == {run.name} and not table.duplicated(["corruption", "strength"]).any()
    assert set(table["corruption"]) == set(CORRUPTIONS) and set(table["strength"]) == {0, 1, 2, 3}
    assert (table["accuracy"] * 600).sub((table["accuracy"] * 600).round()).abs().max() < 1e-6  # k of 600
    # the clean pictures are the first 40 of each class in the manifest: there, the stored test predictions
    # (flip TTA) and the clean measurement (no TTA) differ by a few near-ties, never by 12 pictures in 600
    test = run.manifest().query("split == 'test'")
    first = set(test.groupby("label", sort=False).head(40)["filename"])
    stored = run.predictions("test").query("filename in @first")
    clean = table.loc[table["strength"] == 0, "accuracy"].unique()
    assert len(stored) == 600 and len(clean) == 1
    assert abs(clean[0] - (stored["true"] == stored["predicted"]).mean()) <= 12 / 600


def test_the_har_bundle_stays_under_200_mb():
    """#38.5: every HAR run with all its artefacts, float16 weights, under 200 MB (the tracked files)."""
    tracked = subprocess.run(["git", "ls-files", "-z", "assets/runs_har"], cwd=ROOT, capture_output=True,
                             text=True).stdout
    files = [ROOT / f for f in tracked.split("\0") if f]
    assert len(files) > 50 and sum(f.stat().st_size for f in files) <= 200 * 2 ** 20
