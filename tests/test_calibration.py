"""How sure: temperature scaling, conformal prediction sets, abstaining, and where they show (#27)."""
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta, binom

from conftest import ROOT, SPORTS15
from har_core.models.artifacts import find_runs, open_run
from har_core.evaluation.calibration import (calibrate_run, coverage_figures, run_calibration_pictures,
                                             split_probabilities)
from har_core.models.temperature import run_temperature
from har_core.models.calibration_maths import (DEFAULT_TARGET_ACCURACY, CalibrationError, PredictionSets,
                                               abstain_threshold, check_coverage,
                                               expected_calibration_error, fit_temperature, nll, reliability,
                                               risk_coverage, set_names, set_phrase, temper)
from har_core.evaluation.ensemble import ensemble_calibration_pictures

BUNDLE = ROOT / "assets" / "runs"


def softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def calibrated_world(n: int, classes: int, seed: int):
    """Pictures whose labels are drawn from the model's own probabilities: a perfectly calibrated model, on
    exchangeable data. Some pictures are easy (one class dominates), some hard (flat)."""
    rng = np.random.default_rng(seed)
    sharpness = rng.choice([0.5, 4.0], size=(n, 1))
    probs = softmax(rng.normal(size=(n, classes)) * sharpness)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


def test_the_nll_is_scikit_learns_log_loss_also_where_a_true_class_got_zero():
    """`nll` is written out (importing scikit-learn for it held up the first answer): scikit-learn's log_loss, the
    independent path, gives the same number, also for a picture whose true class got probability 0 (clipped)."""
    from sklearn.metrics import log_loss
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(15, 0.3), size=400)
    labels = rng.integers(0, 15, size=400)
    probs[0] = np.eye(15)[(labels[0] + 1) % 15]  # certain, and wrong
    expected = log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=range(15))
    assert nll(probs, labels) == pytest.approx(expected, rel=1e-12)
    assert nll(probs, labels) > 27.6 / 400  # the wrong certain answer alone adds -log(1e-12) / 400
    assert nll(probs.astype(np.float32), labels) == pytest.approx(expected, rel=1e-6)  # float32 in: the same loss


def test_temperature_scaling_fitted_on_val_lowers_the_nll_of_an_over_confident_model_on_test():
    probs, labels = calibrated_world(6000, 8, seed=1)
    over_confident = temper(probs, 0.4)  # the same ranking, sounding far surer than it is
    val, test = slice(0, 3000), slice(3000, None)
    temperature = fit_temperature(over_confident[val], labels[val])
    assert 2.2 < temperature < 2.8  # undoes the 0.4 (1 / 0.4 = 2.5)
    after = temper(over_confident[test], temperature)
    assert nll(after, labels[test]) < nll(over_confident[test], labels[test]) - 0.1
    assert expected_calibration_error(after, labels[test]) < 0.03 < expected_calibration_error(
        over_confident[test], labels[test])
    assert (after.argmax(1) == over_confident[test].argmax(1)).all()  # the answers never change


def test_conformal_sets_cover_exchangeable_pictures_within_binomial_bounds_of_the_target():
    probs, labels = calibrated_world(7000, 10, seed=2)
    cal, test = slice(0, 2000), slice(2000, None)
    for coverage in (0.8, 0.9):
        members = PredictionSets.fit(probs[cal], labels[cal], coverage).predict(probs[test])
        covered = members[np.arange(5000), labels[test]].mean()
        # the coverage given the calibration pictures is Beta(n + 1 - l, l) (l = floor((n + 1) α)), measured on
        # 5000 test pictures (binomial): both at 99.9 %
        n, l = 2000, int(np.floor(2001 * (1 - coverage)))
        low = binom.ppf(0.0005, 5000, beta.ppf(0.0005, n + 1 - l, l)) / 5000
        high = binom.ppf(0.9995, 5000, beta.ppf(0.9995, n + 1 - l, l)) / 5000
        assert low <= covered <= high, (coverage, covered, low, high)
        sizes = members.sum(1)
        hard = probs[test].max(1) < 0.3
        assert sizes[hard].mean() > 2 * sizes[~hard].mean()  # adaptive: hard pictures get larger sets
        assert sizes.min() >= 1  # never empty


def test_sets_are_named_most_likely_first_and_said_in_words():
    probs = np.array([[0.1, 0.6, 0.3]])
    assert set_names(np.array([[True, True, True]]), probs, ["a", "b", "c"]) == [["b", "c", "a"]]
    assert set_phrase(["texting"]) == "texting"
    assert set_phrase(["texting", "calling"]) == "texting or calling"
    assert set_phrase(["texting", "calling", "listening_to_music"]) == "texting, calling or listening to music"


@pytest.mark.parametrize("coverage", [0.3, 0.9999])
def test_coverage_outside_half_to_999_in_1000_is_refused_with_the_reason(coverage, tmp_path):
    with pytest.raises(CalibrationError, match="refused"):
        check_coverage(coverage)
    from train import calibrate
    run = shutil.copytree(BUNDLE / "custom_cnn", tmp_path / "custom_cnn")
    with pytest.raises(SystemExit, match="refused"):
        calibrate.main([str(run), "--coverage", str(coverage)])


def test_sets_need_enough_held_out_pictures_to_leave_a_class_out():
    """With n calibration pictures the smallest p-value is 1/(n + 1): at α = 0.1 nine pictures put every class in
    every set, ten can leave one out."""
    probs, labels = calibrated_world(200, 5, seed=6)
    with pytest.raises(CalibrationError, match="need at least 10"):
        PredictionSets.fit(probs[:9], labels[:9], 0.9)
    with pytest.raises(CalibrationError, match="need at least 4"):
        PredictionSets.fit(probs[:3], labels[:3], 0.75)
    sets = PredictionSets.fit(probs[:10], labels[:10], 0.9).predict(probs[10:])
    assert sets.sum(1).min() < 5  # some set leaves a class out


def test_the_abstain_threshold_keeps_the_chosen_accuracy_on_the_pictures_it_was_found_on():
    probs, labels = calibrated_world(4000, 6, seed=3)
    threshold = abstain_threshold(probs, labels, 0.9)
    kept = probs.max(1) >= threshold
    assert 0.9 <= (probs[kept].argmax(1) == labels[kept]).mean() < 0.92
    # ties: a threshold keeps every picture that sure, so it never sits inside a group of equal confidences
    tied = np.array([[0.6, 0.4]] * 40 + [[0.9, 0.1]] * 40)
    tied_labels = np.array([0] * 20 + [1] * 20 + [0] * 40)  # the 0.6 group is half right
    assert abstain_threshold(tied, tied_labels, 0.9) == 0.9
    # one lucky picture is no threshold: at least MIN_PICTURES must be kept, else answer nothing
    lucky = np.array([[0.95, 0.05]] + [[0.6, 0.4]] * 50)
    assert abstain_threshold(lucky, np.array([0] + [1] * 50), 0.9) is None  # #39.6: not 1.0, "below 100 %"
    assert 0.05 < kept.mean() < 0.95  # neither everything nor nothing
    curve = risk_coverage(probs, labels)
    assert curve["accuracy"].iloc[0] >= curve["accuracy"].iloc[-1]  # the surest answers are the most accurate
    assert curve["coverage"].iloc[-1] == 1.0


@pytest.fixture
def bundled_copy(tmp_path):
    target = tmp_path / "runs"
    for name in ("efficientnet_lite2", "mobilenet_v2"):
        shutil.copytree(BUNDLE / name, target / name)
    return target


def test_calibrating_a_run_stores_the_temperature_with_its_manifest_and_the_report(bundled_copy):
    run = open_run(bundled_copy / "mobilenet_v2")
    report = calibrate_run(run)
    card = json.loads((run.path / "card.json").read_text())
    assert card["calibration"]["fitted_on"] == "val" and card["calibration"]["temperature"] == report["temperature"]
    assert run_temperature(open_run(run.path)) == (report["temperature"], "")
    test = report["splits"]["test"]
    assert test["after"]["ece"] < test["before"]["ece"]  # fitted on val, better on test
    assert test["after"]["accuracy"] == test["before"]["accuracy"]
    assert sum(report["splits"]["val"]["reliability_after"]["count"]) == report["splits"]["val"]["after"]["n"]
    # a temperature fitted on another split manifest is not applied: raw, and one line says why
    split = run.path / "split.csv"
    split.write_text(split.read_text().replace(",val,", ",train,", 1))
    temperature, note = run_temperature(open_run(run.path))
    assert temperature == 1.0 and "another split manifest" in note


def test_a_run_without_val_predictions_says_so_and_keeps_raw_probabilities(bundled_copy):
    run = open_run(bundled_copy / "mobilenet_v2")
    assert run_temperature(run)[0] != 1.0 and (run.path / "calibration.json").is_file()
    (run.path / "predictions_val.csv").unlink()
    assert "val predictions changed" in run_temperature(open_run(run.path))[1]  # the card's T no longer holds
    with pytest.raises(CalibrationError, match="no val predictions"):
        calibrate_run(open_run(run.path))
    temperature, note = run_temperature(open_run(run.path))  # the failed refit took the old temperature away
    assert temperature == 1.0 and "not calibrated" in note and not (run.path / "calibration.json").exists()
    with pytest.raises(CalibrationError, match="no val predictions"):
        ensemble_calibration_pictures([open_run(bundled_copy / "efficientnet_lite2"), open_run(run.path)])


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="../shared/data/sports15 not present")
def test_the_sets_csv_of_train_predict_matches_the_predict_page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    test = pd.read_csv(BUNDLE / "mobilenet_v2" / "predictions_test.csv")
    picked = test.sort_values("confidence").head(4)["filename"].tolist()  # the least sure: sets of several
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in picked:
        shutil.copy(SPORTS15 / name, photos / name.split("/")[-1])
    out = tmp_path / "sets.csv"
    subprocess.run([sys.executable, "-m", "train.predict", str(BUNDLE / "mobilenet_v2"), str(photos), "--out",
                    str(out), "--probs", "--sets", "0.97", "--quiet"], check=True, cwd=ROOT)
    written = pd.read_csv(out).set_index("filename")
    assert written["set"].str.contains("|", regex=False).any()  # some pictures get more than one class
    columns = [c for c in written if c.startswith("prob_")]
    assert np.allclose(written[columns].sum(1), 1, atol=1e-4)
    from train import predict
    raw = predict.main([str(BUNDLE / "mobilenet_v2"), str(photos), "--out", str(tmp_path / "raw.csv"), "--probs",
                        "--raw", "--quiet"]).set_index("filename").loc[written.index, columns].to_numpy()
    temperature = run_temperature(open_run(BUNDLE / "mobilenet_v2"))[0]
    assert np.allclose(temper(raw, temperature), written[columns].to_numpy(), atol=1e-5)  # --raw: the network's own
    assert not np.allclose(raw, written[columns].to_numpy(), atol=1e-3)

    monkeypatch.setenv("HAR_RUNS", str(BUNDLE))
    monkeypatch.setenv("HAR_DATA", str(SPORTS15))
    monkeypatch.chdir(ROOT)
    import streamlit as st
    downloads = {}  # the page's CSV, as its download button is given it (the sets are in the CSV only)
    real_download = st.download_button
    monkeypatch.setattr(st, "download_button", lambda label, data, file_name=None, *args, **kwargs: (
        downloads.__setitem__(file_name, data), real_download(label, data, file_name, *args, **kwargs))[1])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.sidebar.multiselect(key="chosen_runs").set_value(["mobilenet_v2"]).run()
    at.switch_page("views/predict.py").run()
    at.slider(key="predict_coverage").set_value(0.97).run()
    uploader = at.file_uploader(key="predict_upload")
    for path in sorted(photos.iterdir()):
        uploader.upload(path.name, path.read_bytes(), "image/jpeg")
    at.run()
    assert not at.exception
    table = pd.read_csv(io.StringIO(downloads["predictions.csv"])).set_index("photo")
    shown = table["ensemble's 97% set"].str.split(" | ", regex=False).map(set)
    expected = written["set"].str.split("|", regex=False).map(set)  # the data set's names, as train.predict's
    assert shown.to_dict() == expected.to_dict()
    # each answer in columns of its own: the class and the calibrated confidence train.predict wrote
    probs = written.loc[table.index, columns]
    assert table["mobilenet_v2 answer"].tolist() == [c.removeprefix("prob_") for c in probs.idxmax(axis=1)]
    assert np.allclose(table["mobilenet_v2 confidence"], probs.max(axis=1), atol=1e-4)
    # sure: at or above the confidence that kept 90 % of its calibration pictures right (some of these are not)
    threshold = run_calibration_pictures(open_run(BUNDLE / "mobilenet_v2")).threshold(DEFAULT_TARGET_ACCURACY)
    assert table["mobilenet_v2 sure"].tolist() == (probs.max(axis=1) >= threshold).tolist()
    assert 0 < table["mobilenet_v2 sure"].sum() < len(table)
    assert table["ensemble answer"].equals(table["mobilenet_v2 answer"])  # an ensemble of one
    # both in the TTA mode mobilenet_v2 was calibrated in (#39.5); switched off, the page says what that costs
    assert at.toggle(key="predict_tta").value is True and not [c for c in at.caption if "flip TTA" in c.value]
    at.toggle(key="predict_tta").set_value(False).run()
    assert [c for c in at.caption if "mobilenet_v2 was calibrated with flip TTA" in c.value]


def test_evaluate_shows_each_runs_calibration_sets_and_abstaining_as_computed_here(monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("HAR_RUNS", str(BUNDLE))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("views/evaluate.py").run()
    assert not at.exception
    tables = {tuple(frame.value.columns): frame.value for frame in at.dataframe}
    calibration = next(v for k, v in tables.items() if "ECE after" in k)
    sets = next(v for k, v in tables.items() if "set coverage" in k)
    for run in find_runs(BUNDLE)[0]:
        figures = coverage_figures(run)  # from calibration.json: 90 % sets on test, as the page's defaults
        assert calibration.loc[run.name, "ECE after"] == pytest.approx(figures["ece_after"])
        assert sets.loc[run.name, "set coverage"] == pytest.approx(figures["coverage"])
        assert sets.loc[run.name, "mean set size"] == pytest.approx(figures["mean_set_size"])
        found, shown = run_calibration_pictures(run).threshold(0.9), sets.loc[run.name, "threshold (val)"]
        assert pd.isna(shown) if found is None else shown == pytest.approx(found)  # None: "never reached 90%"
    # the worst class in words with its coverage, in one column (two cut the table at 1280 px)
    assert sets["worst class (coverage)"].str.fullmatch(r"[a-z ]+ \(\d+\.\d%\)").all()
    # which pictures calibrated, counted here from the manifest (#39.4)
    manifest = pd.read_csv(BUNDLE / "split.csv", dtype=str, keep_default_na=False)
    half = int((manifest["calibrate"] == "1").sum())
    assert any(f"fitted on the calibration half of val: {half} pictures ({', '.join(sorted(calibration.index))})"
               in caption.value for caption in at.caption), [c.value for c in at.caption]
    assert not any("flatter it" in caption.value for caption in at.caption)  # test: no pictures of the fit
    # every bundled run chose its checkpoint on all of val before it was split: said (review of #39)
    assert any("chose their checkpoint on all of val" in caption.value for caption in at.caption)
    charts = " ".join(str(chart.proto.spec) for chart in at.get("plotly_chart"))
    assert "perfectly calibrated" in charts and "share of pictures answered" in charts
    at.slider(key="eval_coverage").set_value(0.6).run()  # smaller sets, lower coverage: computed anew
    smaller = next(f.value for f in at.dataframe if "set coverage" in f.value.columns)
    assert (smaller["mean set size"] <= sets["mean set size"]).all()
    assert smaller["set coverage"].mean() < sets["set coverage"].mean()
    at.radio(key="eval_split").set_value("val").run()  # val holds the calibration pictures: said (review of #39)
    assert any("flatter it" in caption.value for caption in at.caption)


def test_a_temperature_is_refused_on_too_few_val_pictures_or_on_answers_all_certain():
    probs, labels = calibrated_world(40, 4, seed=5)
    with pytest.raises(CalibrationError, match="too few"):
        fit_temperature(probs[:10], labels[:10])
    always_right = 0.9 * np.eye(4)[labels] + 0.025  # the NLL falls without end as T shrinks
    with pytest.raises(CalibrationError, match="answered right"):
        fit_temperature(always_right, labels)
    confident_liar = 0.9 * np.eye(4)[(labels + 1) % 4] + 0.025  # all wrong: the best T is the search's bound
    confident_liar[0] = 0.9 * np.eye(4)[labels[0]] + 0.025
    with pytest.raises(CalibrationError, match="the bound"):
        fit_temperature(confident_liar, labels)


def test_the_ensemble_gets_its_own_temperature_on_the_mean_of_its_calibrated_members(bundled_copy):
    """The ensemble's temperature is the one that minimises the NLL of its mean of calibrated members on the
    pictures that calibrate both, each picture found by its file name (#39: this test re-implemented the fit and
    paired two CSVs row by row)."""
    import json
    from har_core.data.fileio import file_sha256
    members = [open_run(bundled_copy / name) for name in ("efficientnet_lite2", "mobilenet_v2")]
    found = ensemble_calibration_pictures(members)
    # the pictures that calibrate both, from the manifests; each member's calibrated answers looked up by file name
    halves = [set(run.manifest().query("calibrate == '1'")["filename"]) for run in members]
    files = sorted(set.intersection(*halves))
    assert len(found.labels) == len(files) >= 30
    answers = []
    for run in members:
        stored = run.predictions("val").set_index("filename").loc[files]
        raw = stored[[f"prob_{c}" for c in run.classes]].to_numpy()
        answers.append(temper(raw / raw.sum(1, keepdims=True), run_temperature(run)[0]))
    mean = (answers[0] + answers[1]) / 2
    labels = np.array([members[0].classes.index(t) for t in stored["true"]])
    by_row = lambda probs: probs[np.lexsort(probs.T[::-1])]  # noqa: E731 - the same pictures in any order
    assert np.allclose(by_row(found.probs), by_row(temper(mean, found.temperature)), atol=1e-5)
    best = nll(temper(mean, found.temperature), labels)
    assert abs(np.log(found.temperature)) > 0.05  # a temperature that does something: the test can tell
    for other in (found.temperature * 1.05, found.temperature / 1.05):
        assert best < nll(temper(mean, other), labels), other  # the minimum of the NLL, seen from both sides
    assert nll(found.probs, found.labels) < nll(mean, labels)
    # the same answers in another row order (the card names the new file, as a re-calibration would)
    path = bundled_copy / "mobilenet_v2" / "predictions_val.csv"
    pd.read_csv(path).sample(frac=1, random_state=0).to_csv(path, index=False)
    card = json.loads((path.parent / "card.json").read_text())
    card["calibration"]["val_predictions_sha256"] = file_sha256(path)
    (path.parent / "card.json").write_text(json.dumps(card))
    shuffled = ensemble_calibration_pictures([members[0], open_run(path.parent)])
    assert shuffled.temperature == pytest.approx(found.temperature, rel=1e-6)
    assert np.allclose(by_row(shuffled.probs), by_row(found.probs), atol=1e-6)


def test_ece_is_the_reliability_tables_own_weighted_gap_even_for_a_confidence_of_exactly_one():
    """#39: ECE came from torchmetrics, which puts a confidence of exactly 1.0 into a 16th bin of its own while the
    reliability table keeps it in its 15th, [14/15, 1]. Both must be one table."""
    probs = np.array([[1.0, 0.0]] * 10 + [[0.97, 0.03]] * 10)  # all 20 in the last bin
    labels = np.array([0] * 5 + [1] * 5 + [0] * 10)  # half of the 1.0 answers right, every 0.97 answer right
    # by hand: one bin of 20 pictures, mean confidence (10 · 1.0 + 10 · 0.97) / 20 = 0.985, accuracy 15 / 20
    assert expected_calibration_error(probs, labels) == pytest.approx(abs(0.985 - 0.75))
    table = reliability(probs, labels)
    assert table["count"].iloc[-1] == 20 and table["count"].sum() == 20


def give_calibration_half(run_dir):
    """The run's split.csv with half of each class's val pictures marked for calibration; returns those files
    and the other val pictures, read back from the file."""
    from har_core.data.datasets import read_manifest, with_calibration_half, write_manifest
    write_manifest(with_calibration_half(read_manifest(run_dir / "split.csv"), seed=0), run_dir / "split.csv")
    rows = pd.read_csv(run_dir / "split.csv", dtype=str, keep_default_na=False)
    val = rows[rows["split"] == "val"]
    return set(val.loc[val["calibrate"] == "1", "filename"]), set(val.loc[val["calibrate"] != "1", "filename"])


def scramble_val_predictions(run_dir, files):
    """Every picture of `files` answered wrongly with full confidence in its val predictions."""
    frame = pd.read_csv(run_dir / "predictions_val.csv", keep_default_na=False)
    classes = [c.removeprefix("prob_") for c in frame.columns if c.startswith("prob_")]
    chosen = frame["filename"].isin(files)
    wrong = [classes[(classes.index(t) + 1) % len(classes)] for t in frame.loc[chosen, "true"]]
    for c in classes:
        frame.loc[chosen, f"prob_{c}"] = [1.0 if w == c else 0.0 for w in wrong]
    frame.loc[chosen, "predicted"], frame.loc[chosen, "confidence"] = wrong, 1.0
    frame.to_csv(run_dir / "predictions_val.csv", index=False)


def test_only_the_calibration_half_of_val_calibrates_and_the_report_says_which_pictures(bundled_copy):
    """#39.4: the val pictures that chose the checkpoint also fitted the temperature, the sets and the threshold.
    With a calibration half in the manifest, what the model says about the other half moves none of them."""
    run_dir = bundled_copy / "mobilenet_v2"
    calibrating, choosing = give_calibration_half(run_dir)
    assert calibrating and choosing and not calibrating & choosing
    first = calibrate_run(open_run(run_dir))
    fitted = run_calibration_pictures(open_run(run_dir))
    test_probs = temper(split_probabilities(open_run(run_dir), "test")[0], first["temperature"])
    scramble_val_predictions(run_dir, choosing)  # the choice half now says nonsense, fully sure
    again = calibrate_run(open_run(run_dir))
    refitted = run_calibration_pictures(open_run(run_dir))
    assert again["temperature"] == first["temperature"]
    assert refitted.threshold(0.9) == fitted.threshold(0.9) and len(refitted.labels) == len(calibrating)
    assert (refitted.sets(0.9).predict(test_probs) == fitted.sets(0.9).predict(test_probs)).all()
    evaluated_with = json.loads((run_dir / "metrics_val.json").read_text())["tta"]  # the val predictions' own mode
    assert again["calibrated_on"] == {"part": "calibration half of val", "pictures": len(calibrating),
                                      "tta": evaluated_with}
    card = json.loads((run_dir / "card.json").read_text())["calibration"]
    assert (card["part"], card["n"]) == ("calibration half of val", len(calibrating))
    # the calibration half does move them: it is what they are fitted on
    scramble_val_predictions(run_dir, set(list(calibrating)[:10]))
    assert calibrate_run(open_run(run_dir))["temperature"] != first["temperature"]


def test_a_manifest_without_a_calibration_half_calibrates_on_all_of_val_and_says_so(bundled_copy):
    run_dir = bundled_copy / "mobilenet_v2"
    manifest = pd.read_csv(run_dir / "split.csv", dtype=str, keep_default_na=False)
    manifest.drop(columns="calibrate").to_csv(run_dir / "split.csv", index=False)  # a manifest from before #39
    val = pd.read_csv(run_dir / "predictions_val.csv")
    report = calibrate_run(open_run(run_dir))
    assert report["calibrated_on"]["part"] == "all of val" and report["calibrated_on"]["pictures"] == len(val)
    assert "chose the checkpoint" in report["calibrated_on"]["note"]
    assert run_calibration_pictures(open_run(run_dir)).part == "all of val"


def test_the_ensemble_is_calibrated_on_the_half_its_members_share(bundled_copy):
    members = [bundled_copy / name for name in ("efficientnet_lite2", "mobilenet_v2")]
    halves = [give_calibration_half(run_dir) for run_dir in members]
    assert halves[0] == halves[1]  # one manifest, one half
    for run_dir in members:
        calibrate_run(open_run(run_dir))
    first = ensemble_calibration_pictures([open_run(run_dir) for run_dir in members])
    for run_dir in members:
        scramble_val_predictions(run_dir, halves[0][1])
        calibrate_run(open_run(run_dir))
    again = ensemble_calibration_pictures([open_run(run_dir) for run_dir in members])
    assert again.temperature == pytest.approx(first.temperature) and len(again.labels) == len(halves[0][0])
    assert again.part == "calibration half of val"


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="../shared/data/sports15 not present")
def test_train_predict_defaults_to_the_tta_mode_the_run_was_calibrated_in_and_says_when_told_otherwise(
        tmp_path, capsys):
    """#39.5: every bundled TTA run's temperature is fitted on flip-TTA probabilities; train.predict answered
    without TTA unless told, so its calibrated numbers scaled other probabilities than the temperature's."""
    from har_core.data.imaging import load_image
    from har_core.models.inference import load_run
    from train import predict
    run_dir = BUNDLE / "mobilenet_v2"
    assert json.loads((run_dir / "card.json").read_text())["calibration"]["tta"] is True
    test = pd.read_csv(run_dir / "predictions_test.csv")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in test["filename"].head(3):
        shutil.copy(SPORTS15 / name, photos / name.split("/")[-1])
    names = sorted(p.name for p in photos.iterdir())
    loaded = load_run(run_dir, backend="pytorch")
    columns = [f"prob_{c}" for c in loaded.classes]
    for flags, tta in (([], True), (["--no-tta"], False)):
        written = predict.main([str(run_dir), str(photos), "--out", str(tmp_path / "out.csv"), "--probs", "--quiet",
                                "--backend", "pytorch", *flags]).set_index("filename").loc[names, columns]
        expected = loaded.predict([load_image(photos / n) for n in names], tta=tta)  # the model's own, that mode
        assert np.abs(written.to_numpy() - expected).max() < 1e-5
        assert ("calibrated with flip TTA" in capsys.readouterr().err) == (not tta)


def test_a_run_calibrated_on_the_half_but_whose_checkpoint_all_of_val_chose_is_said_to_be_so():
    from har_core.evaluation.calibration import ALL_OF_VAL, CALIBRATION_HALF, fitted_on_line
    half = {"part": CALIBRATION_HALF, "pictures": 838}
    old = fitted_on_line({"vgg16": {"calibrated_on": half, "splits": {}}})  # trained before val was split
    new = fitted_on_line({"resnet50": {"calibrated_on": half, "splits": {},
                                       "checkpoint_chosen_on": "the other half of val"}})
    assert "vgg16 chose its checkpoint on all of val" in old and "less than promised" in old
    assert "chose" not in new and "less than promised" not in new
    both = fitted_on_line({"a": {"calibrated_on": half, "splits": {}, "checkpoint_chosen_on": ALL_OF_VAL},
                           "b": {"calibrated_on": half, "splits": {}}})
    assert "a, b chose their checkpoint" in both
