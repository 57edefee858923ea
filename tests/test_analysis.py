"""The computations behind the app's pages, tested without Streamlit."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from conftest import CLASSES, ROOT, set_temperature, synthetic_image
from har_core.evaluation import analysis, plots
from har_core.models.artifacts import find_runs, load_weights, open_run
from har_core.models.temperature import run_temperature
from har_core.models.calibration_maths import temper
from har_core.evaluation.ensemble import default_members, stored_headline, stored_metrics
from har_core.evaluation.metrics import headline
from har_core.evaluation.evaluate import default_workers, evaluate_split
from har_core.models.inference import build_for_card, forward_probs, load_run, predict_all


@pytest.fixture(scope="module")
def runs(tiny_runs):
    found, failures = find_runs(tiny_runs)
    assert not failures
    return found


def frames():
    a = pd.DataFrame({"filename": ["1", "2", "3", "4"], "true": ["x", "x", "y", "y"],
                      "predicted": ["x", "y", "x", "y"], "confidence": [0.9, 0.8, 0.6, 0.7]})
    b = a.assign(predicted=["y", "y", "y", "y"], confidence=[0.5, 0.95, 0.55, 0.9])
    return {"a": a, "b": b}


def test_mistakes_filters_and_order():
    table = analysis.mistakes(frames())
    assert list(table["confidence"]) == sorted(table["confidence"], reverse=True)
    assert len(table) == 2 + 2  # a errs on 2 and 3, b on 1 and 2
    assert set(analysis.mistakes(frames(), only="all wrong")["filename"]) == {"2"}
    assert set(analysis.mistakes(frames(), only="disagree")["filename"]) == {"1", "3"}
    assert set(analysis.mistakes(frames(), true_class="y")["filename"]) == {"3"}
    assert set(analysis.mistakes(frames(), predicted_class="y", models=["a"])["filename"]) == {"2"}
    assert len(analysis.mistakes(frames(), confidence=(0.9, 1.0))) == 1


def test_the_ensemble_defaults_to_pretrained_runs_when_two_or_more(runs):
    from dataclasses import replace
    assert default_members(runs) == ["custom_cnn", "mobilenet_v2"]  # none pretrained: all of them
    one = [replace(runs[0], card={**runs[0].card, "pretrained": "offline x"}), runs[1]]
    assert default_members(one) == ["custom_cnn", "mobilenet_v2"]  # one pretrained run is no ensemble
    two = [replace(r, card={**r.card, "pretrained": "offline x"}) for r in runs] + \
        [replace(runs[0], card={**runs[0].card, "name": "scratch"})]
    assert default_members(two) == ["custom_cnn", "mobilenet_v2"]
    assert stored_metrics(runs[:1]) is None


def test_disagreement_and_agreement():
    matrix = analysis.disagreement_matrix(frames())
    assert matrix.loc["a", "b"] == 0.5 and matrix.loc["a", "a"] == 0
    assert analysis.agreement(["x", "y", "x"]) == ("x", pytest.approx(2 / 3))
    assert analysis.agreement(["x", "y"], prefer="y") == ("y", 0.5)  # a tie names the ensemble's answer


def test_tables_from_run_folders(runs):
    overview = analysis.overview_table(runs)
    assert list(overview["run"]) == ["custom_cnn", "mobilenet_v2"]
    assert list(overview["test accuracy"]) == [r.metrics("test")["accuracy"] for r in runs]
    table = analysis.metrics_table(runs, "test")
    assert list(table.index) == ["custom_cnn", "mobilenet_v2"]
    for run in runs:  # the table holds each run's own numbers, recomputed here from its predictions
        frame = run.predictions("test")
        assert table.loc[run.name, "accuracy"] == pytest.approx(float((frame["true"] == frame["predicted"]).mean()))
    f1 = analysis.per_class_f1_table(runs, "test")
    assert list(f1.columns) == CLASSES
    assert f1.loc["custom_cnn", CLASSES[1]] == runs[0].metrics("test")["per_class"][CLASSES[1]]["f1-score"]
    predictions = runs[0].predictions("test")
    cell = analysis.cell_samples(predictions, CLASSES[0], CLASSES[0])
    assert (cell["true"] == CLASSES[0]).all() and (cell["predicted"] == CLASSES[0]).all()
    matrix = np.array(runs[0].metrics("test")["confusion_matrix"])
    assert len(cell) == matrix[0, 0]


def test_ensemble_is_the_mean_of_stored_probabilities(runs, copy_of):
    """The mean of the members' calibrated probabilities (each at its run's temperature)."""
    runs = [open_run(set_temperature(copy_of(run.path), temperature)) for run, temperature in zip(runs, (4.0, 0.05))]
    # stored probabilities whose raw mean says class 0 and whose calibrated mean says class 1 (A softened, B sharpened)
    for run, probs in zip(runs, ([0.7, 0.2, 0.1], [0.3, 0.4, 0.3])):
        frame = run.predictions("test")
        frame[[f"prob_{c}" for c in CLASSES]] = probs
        frame.to_csv(run.path / "predictions_test.csv", index=False)
    ensemble = stored_metrics(runs)
    raw = [r.predictions("test")[[f"prob_{c}" for c in CLASSES]].to_numpy() for r in runs]
    calibrated = [temper(p, run_temperature(r)[0]) for p, r in zip(raw, runs)]
    assert [run_temperature(r)[0] for r in runs] == [4.0, 0.05]  # custom_cnn softened, mobilenet_v2 sharpened
    truth = runs[0].predictions("test")["true"].map(CLASSES.index).to_numpy()
    expected = np.mean(calibrated, 0).argmax(1)
    assert ensemble["accuracy"] == pytest.approx(float((expected == truth).mean()))
    assert ensemble["confusion_matrix"] == confusion_matrix(truth, expected, labels=range(3)).tolist()
    assert (expected == 1).all() and (np.mean(raw, 0).argmax(1) == 0).all()  # the raw mean would answer otherwise


def test_the_first_pages_headline_figures_are_scikit_learns():
    # by hand: classes 2 and 3 are nobody's truth and nobody's answer, and still count (F1 0) in the mean
    assert headline([0, 0, 1], [0, 1, 1], 4) == pytest.approx({"accuracy": 2 / 3, "macro_f1": (2 / 3 + 2 / 3) / 4})
    with pytest.raises(ValueError, match="class numbers"):
        headline([0, 1], [0, 4], 4)
    rng = np.random.default_rng(0)
    for n_classes, n in ((15, 300), (4, 7), (9, 6)):
        truth, guess = rng.integers(0, n_classes, n), rng.integers(0, n_classes - 1, n)
        figures = headline(truth, guess, n_classes)
        assert figures["accuracy"] == pytest.approx(accuracy_score(truth, guess))
        assert figures["macro_f1"] == pytest.approx(f1_score(truth, guess, labels=range(n_classes), average="macro",
                                                             zero_division=0))


def test_the_overviews_ensemble_line_equals_the_full_metrics():
    runs = find_runs(ROOT / "assets" / "runs_har")[0]  # the HAR bundle's stored test predictions: real mistakes
    full, line = stored_metrics(runs), stored_headline(runs)
    assert line["runs"] == full["runs"] and 0.5 < line["accuracy"] < 0.95 and line["macro_f1"] != line["accuracy"]
    assert (line["accuracy"], line["macro_f1"]) == pytest.approx((full["accuracy"], full["macro_f1"]))


def test_confusion_figure_has_one_clickable_point_per_cell(runs):
    metrics = runs[0].metrics("test")
    figure = plots.confusion_figure(metrics)
    trace = figure.data[0]
    assert len(trace.x) == len(CLASSES) ** 2
    counts = np.array(metrics["confusion_matrix"])
    assert sum(int(t) for t in trace.text if t) == counts.sum()
    normalized = plots.confusion_figure(metrics, normalize=True).data[0]
    rows = counts.sum(1, keepdims=True)
    assert np.allclose(np.reshape(normalized.marker.color, counts.shape), 100 * counts / rows)  # % of each row
    assert list(figure.layout.xaxis.tickvals) == CLASSES == list(figure.layout.yaxis.tickvals)  # every class named
    assert trace.unselected.marker.opacity == 1  # a click marks its cell and fades none


def test_learning_curves_mark_the_best_epoch(runs):
    figure = plots.learning_curves({r.name: r.history() for r in runs})
    assert any("best" in (t.name or "") for t in figure.data)
    rate = figure.layout.yaxis4  # the learning rate in powers of ten (the walk read "100µ" and stray minor ticks)
    assert (rate.type, rate.exponentformat) == ("log", "power")
    rates = [step["lr"] for r in runs for step in r.history()]
    assert rate.dtick == (1 if max(rates) >= 10 * min(rates) else None)  # within one decade: plotly's own ticks


def test_dataset_summary(kaggle_data):
    summary = analysis.dataset_summary(kaggle_data)
    assert summary["counts"].to_dict() == {c: 12 for c in CLASSES}
    assert len(summary["problems"]) == 2 and set(summary["sizes"]["width"]) == {40}


def test_fast_paths_match_the_plain_ones(tiny_runs):
    """channels_last models, shared preprocessing and batched flip-TTA give the same numbers as a plain
    (contiguous) copy of each model, one image and one view at a time."""
    models = [load_run(tiny_runs / name, calibrated=False) for name in ("custom_cnn", "mobilenet_v2")]
    plain_models = []
    for loaded in models:
        plain_model = build_for_card(loaded.run.card, loaded.name)
        load_weights(loaded.run.weights_path(), plain_model, loaded.name)
        plain_models.append(plain_model.eval())
    assert all(m.model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last) for m in models[1:])
    images = [synthetic_image(i % 3, seed=90 + i) for i in range(3)]
    for tta in (False, True):
        fast = predict_all(models, images, tta=tta)
        for model, plain_model, prediction in zip(models, plain_models, fast):
            for i, image in enumerate(images):
                batch = model.transform(image)[None]
                with torch.no_grad():
                    plain = plain_model(batch).softmax(1)
                    if tta:
                        plain = (plain + plain_model(batch.flip(-1)).softmax(1)) / 2
                assert np.allclose(prediction.probs[i], plain[0].numpy(), atol=1e-5)
    single = forward_probs(models[0].model, models[0].preprocess(images[:1]))
    assert np.allclose(single.numpy(), predict_all(models[:1], images[:1])[0].probs, atol=1e-6)


def test_evaluation_decoding_inline_equals_decoding_in_worker_processes(tiny_runs, kaggle_data):
    """On CPU, evaluation decodes inline by default (a worker would compete with the forward); both
    paths must give the same predictions."""
    loaded = load_run(tiny_runs / "mobilenet_v2")
    run = loaded.run
    inline_metrics, inline = evaluate_split(loaded.model, run.card, kaggle_data, run.manifest(), "test",
                                            progress=False)
    _, in_workers = evaluate_split(loaded.model, run.card, kaggle_data, run.manifest(), "test", workers=2,
                                   batch_size=3, progress=False)
    assert default_workers("cpu") == 0 and inline_metrics["n"] == len(inline) > 3
    pd.testing.assert_frame_equal(inline, in_workers, check_exact=False, atol=1e-6)


def test_the_overview_table_puts_the_best_run_first_and_runs_without_metrics_last(tiny_runs, tmp_path):
    import shutil
    from har_core.evaluation.analysis import overview_table
    from har_core.models.artifacts import find_runs
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    found = find_runs(runs)[0]
    found[1].card["metrics"]["test"]["accuracy"] = 0.9
    found[0].card["metrics"].pop("test")
    table = overview_table(found + [found[1]])
    assert table["test accuracy"].tolist()[:2] == [0.9, 0.9] and table["run"].tolist()[-1] == found[0].name


def test_jargon_gets_plain_words():
    from ui.common import glossary
    assert "average of the weights" in glossary("EMA decay 0.98; flip TTA")
    assert "mirrored" in glossary("EMA decay 0.98; flip TTA")
    assert glossary("from scratch, 128 px") is None


def test_probability_bars_show_whole_class_names_in_words():
    """#25: on Predict's cards at 1280 px "listening_to_music" was cut to "listening t…"."""
    har = ["calling", "listening_to_music", "using_laptop"]
    bars = plots.probability_bars(np.array([0.1, 0.7, 0.2]), har)
    assert bars.index("listening to music") < bars.index("using laptop") < bars.index("calling")
    assert "_" not in bars and "ellipsis" not in bars and "nowrap" not in bars


def test_a_class_keeps_its_colour_on_the_map_whatever_the_filter():
    """#25.12: colours come from the run's class list, not from the classes left after a filter."""
    classes = [f"class_{i}" for i in range(15)]
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=60), "y": rng.normal(size=60), "label": np.repeat(classes, 4),
                          "predicted": np.repeat(classes, 4), "confidence": 0.9, "correct": True,
                          "split": "test", "filename": [f"f{i}.jpg" for i in range(60)]})
    colour = lambda figure: {t.name: t.marker.color for t in figure.data}  # noqa: E731
    every = colour(plots.embedding_scatter(table, classes=classes))
    some = colour(plots.embedding_scatter(table[table["label"].isin(classes[5:])], classes=classes))
    assert len(set(every.values())) == 15  # 15 distinct colours
    assert all(some[name] == every[name] for name in some) and len(some) == 10


def test_the_overview_table_puts_the_answer_beside_the_name_and_says_where_each_run_started(tiny_runs, tmp_path):
    """#25.6: at 1280 px macro-F1 was cut off behind `architecture` and `pretrained`, which repeated the run's name."""
    import shutil
    from har_core.evaluation.analysis import overview_table, starts_from
    from har_core.models.artifacts import find_runs
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    found = find_runs(runs)[0]
    table = overview_table(found)
    assert list(table.columns[:3]) == ["run", "test accuracy", "test macro-F1"]
    assert "architecture" not in table and "pretrained" not in table  # each run is named after its architecture
    found[0].card["model"] = found[0].name[:-2]  # a name that begins with its architecture says it
    assert "architecture" not in overview_table(found)
    found[0].card["model"] = "resnet50"  # a name that does not say it: the architecture is shown
    shown = overview_table(found)
    assert dict(zip(shown["run"], shown["architecture"])) == {r.name: r.card["model"] for r in found}
    assert "data" not in table and table.columns[-1] == "starts from"  # one data folder: said once, in the caption
    found[0].card["data"]["root"] = "/elsewhere/sports15"
    assert dict(zip(overview_table(found)["run"], overview_table(found)["data"]))[found[0].name] == "sports15"
    assert starts_from({"pretrained": "none (random initialisation)"}) == "random start"
    assert starts_from({"pretrained": "offline vgg16_keras (x.onnx)"}) == "ImageNet"
    assert starts_from({"pretrained": "file best.pth"}) == "weights of best.pth"
    assert starts_from({"pretrained": "none", "distillation": {"teachers": ["a", "b"]}}) == \
        "random start, taught by a, b"
    assert starts_from({"pretrained": "hub", "distillation": {"teachers": ["a"]}}) == "ImageNet, taught by a"
    assert starts_from({"pretrained": "none", "distillation": {"teachers": ["a", "b"]}}, teachers="counted") == \
        "random start, taught by 2 runs"  # the table's short form: the cards name them
    assert starts_from({"pretrained": "hub", "distillation": {"teachers": ["a"]}}, teachers="counted") == \
        "ImageNet, taught by a"  # one name fits
    assert starts_from({"pretrained": "none", "distillation": {"teachers": ["a", "b"]}}, teachers="left out") == \
        "random start"  # the Overview's card names them on their own line
    assert starts_from({"pretrained": "timm", "taught": {"base": "vgg16"}}) == "taught head on vgg16"


def test_class_names_read_in_words_on_every_class_axis_and_a_class_keeps_its_colour():
    """#25: "listening_to_music" on Evaluate's F1 heatmap, the confusion matrix and Dataset's bars and legend."""
    har = ["calling", "listening_to_music", "using_laptop"]
    f1 = plots.f1_heatmap(pd.DataFrame([[0.5, 0.6, 0.7]], index=["run_a"], columns=har))
    assert list(f1.data[0].x) == ["calling", "listening to music", "using laptop"]
    assert list(f1.layout.coloraxis.colorbar.tickvals) == [0, 0.5, 1]  # three ticks: none overlap in large type
    metrics = {"classes": har, "confusion_matrix": [[3, 1, 0], [0, 2, 1], [1, 0, 4]]}
    confusion = plots.confusion_figure(metrics)
    assert list(confusion.layout.xaxis.ticktext) == ["calling", "listening to music", "using laptop"]
    assert set(confusion.data[0].x) == set(har)  # a click still returns the data set's own names
    cells = confusion.data[0].marker.size * len(har)  # square cells at its own width, never stretched wide
    assert cells < confusion.layout.width < cells + 9 * len("listening_to_music") + 200
    bars = plots.class_distribution(pd.Series([740, 12, 740], index=har))
    assert list(bars.data[0].x) == ["calling", "listening to music", "using laptop"]
    assert bars.data[0].texttemplate == "%{text:,}"  # 11,100 reads with its thousands separator
    sizes = pd.DataFrame({"width": [10, 20, 30], "height": [5, 6, 7], "label": har, "filename": ["a", "b", "c"]})
    every = {t.name: t.marker.color for t in plots.size_scatter(sizes, har).data}
    some = {t.name: t.marker.color for t in plots.size_scatter(sizes.iloc[1:], har).data}
    assert list(every) == ["calling", "listening to music", "using laptop"] and len(set(every.values())) == 3
    assert all(some[name] == every[name] for name in some) and len(some) == 2
    assert every["calling"] == bars.data[0].marker.color[0]  # one colour per class on both charts


def test_the_coverage_heatmap_is_red_exactly_where_a_class_misses_the_target():
    """#25 walk: at a 90 % target, classes at 0.85–0.89 were drawn green-yellow under a caption saying red marks them."""
    from plotly.colors import sample_colorscale
    figure = plots.coverage_heatmap(pd.DataFrame([[0.89, 0.90, 0.99]], index=["run"], columns=["a", "b", "c"]), 0.9)
    axis = figure.layout.coloraxis
    colour = lambda value: sample_colorscale(  # noqa: E731
        [[s[0], s[1]] for s in axis.colorscale], (value - axis.cmin) / (axis.cmax - axis.cmin), colortype="rgb")[0]
    red = lambda rgb: (lambda r, g, b: r > g and r > b)(*map(int, rgb[4:-1].split(",")))  # noqa: E731
    assert red(colour(0.89)) and red(colour(0.65)) and not red(colour(0.90)) and not red(colour(0.99))


def test_the_disagreement_matrix_is_drawn_big_enough_to_read_with_whole_names():
    names = ["efficientnet_lite1", "efficientnet_lite2", "vgg16"]
    frame = pd.DataFrame({"filename": ["a", "b"], "true": ["x", "y"], "predicted": ["x", "y"], "confidence": 0.9})
    figure = plots.disagreement_heatmap({name: frame for name in names})
    assert list(figure.data[0].x) == names and figure.layout.width >= 90 * 3 + 10 * len(names[0])
    assert figure.layout.height >= 90 * 3  # 65 px for three runs in presentation mode before


def test_the_confusion_matrix_opens_on_its_biggest_mix_up_and_keeps_every_count_readable():
    """#40: after a click the other counts went pale grey (unreadable on a projector), row-normalised lost the
    highlight, a hover read "1 images", and the first cell shown was a correct one, not the biggest mix-up."""
    from har_core.evaluation.analysis import biggest_mix_up
    classes = ["calling", "clapping", "cycling"]
    metrics = {"classes": classes, "confusion_matrix": [[3, 1, 0], [0, 2, 5], [1, 0, 4]]}
    assert biggest_mix_up(metrics) == ("clapping", "cycling")  # 5 clapping pictures taken for cycling
    assert biggest_mix_up({"classes": classes, "confusion_matrix": np.diag([2, 3, 4]).tolist()}) == ("calling",
                                                                                                      "calling")
    for normalize in (False, True):
        trace = plots.confusion_figure(metrics, normalize=normalize, selected=("clapping", "cycling")).data[0]
        marked = [i for i, (x, y) in enumerate(zip(trace.x, trace.y)) if (y, x) == ("clapping", "cycling")]
        assert list(trace.selectedpoints) == marked  # drawn highlighted by the figure itself, normalised too
        assert trace.unselected.textfont.color == trace.textfont.color  # the other counts keep their colour
        assert trace.unselected.marker.opacity == 1
    hover = dict(zip(zip(trace.y, trace.x), trace.hovertext))
    assert "1 image (" in hover[("calling", "clapping")] and "5 images (" in hover[("clapping", "cycling")]


def lab(colour: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB hex colour, by the textbook formulas."""
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    xyz = ((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b,
           (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883)
    fx, fy, fz = [t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116 for t in xyz]
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(first: str, second: str) -> float:
    """The CIEDE2000 colour difference (Sharma, Wu and Dalal's formulation): about 2 is just noticeable, about 20
    reads as another colour at a glance."""
    from math import atan2, cos, degrees, exp, hypot, radians, sin, sqrt
    (l1, a1, b1), (l2, a2, b2) = lab(first), lab(second)
    mean_c = (hypot(a1, b1) + hypot(a2, b2)) / 2
    g = 0.5 * (1 - sqrt(mean_c ** 7 / (mean_c ** 7 + 25 ** 7)))
    c1, c2 = hypot((1 + g) * a1, b1), hypot((1 + g) * a2, b2)
    h1, h2 = degrees(atan2(b1, (1 + g) * a1)) % 360, degrees(atan2(b2, (1 + g) * a2)) % 360
    dh = 0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    big_dh = 2 * sqrt(c1 * c2) * sin(radians(dh / 2))
    mean_l, mean_c2 = (l1 + l2) / 2, (c1 + c2) / 2
    mean_h = h1 + h2 if c1 * c2 == 0 else ((h1 + h2) / 2 if abs(h1 - h2) <= 180 else
                                            (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2)
    t = (1 - 0.17 * cos(radians(mean_h - 30)) + 0.24 * cos(radians(2 * mean_h)) + 0.32 * cos(radians(3 * mean_h + 6))
         - 0.20 * cos(radians(4 * mean_h - 63)))
    s_l = 1 + 0.015 * (mean_l - 50) ** 2 / sqrt(20 + (mean_l - 50) ** 2)
    s_c, s_h = 1 + 0.045 * mean_c2, 1 + 0.015 * mean_c2 * t
    r_t = -sin(radians(60 * exp(-(((mean_h - 275) / 25) ** 2)))) * 2 * sqrt(mean_c2 ** 7 / (mean_c2 ** 7 + 25 ** 7))
    dl, dc, dhh = (l2 - l1) / s_l, (c2 - c1) / s_c, big_dh / s_h
    return sqrt(dl ** 2 + dc ** 2 + dhh ** 2 + r_t * dc * dhh)


def test_the_ciede2000_here_gives_the_standards_end_points():
    """Black against white is 100 on the standard's scale; a colour against itself 0."""
    assert abs(ciede2000("#000000", "#FFFFFF") - 100.0) < 0.5
    assert ciede2000("#1F77B4", "#1F77B4") == 0


def test_the_fifteen_classes_of_har_get_colours_told_apart_at_a_glance():
    """#40 walk: among the first 15 colours (HAR's classes) were three pinks and three purples (CIEDE2000 8.7 between
    two of them); every pair now differs by 20 or more, and none is near-white or near-black on a white page."""
    colours = list(plots.colours_of([f"class_{i}" for i in range(15)]).values())
    closest = min((ciede2000(a, b), a, b) for i, a in enumerate(colours) for b in colours[i + 1:])
    assert closest[0] >= 20, closest
    assert all(30 <= lab(colour)[0] <= 80 for colour in colours)


def test_the_coverage_heatmap_reads_by_hover_and_a_caption_not_by_tiny_cell_numbers():
    """#40 walk: the cell numbers of the coverage heatmap were drawn about 6 px high (15 classes × 3 runs at
    1280 px); the heatmap now has no cell text, each cell's hover names the run, the class in words and its
    coverage, and `coverage_shortfalls` says in words which classes miss the target."""
    table = pd.DataFrame([[0.85, 0.95, 0.99], [0.90, 0.70, 0.99]], index=["run_a", "run_b"],
                         columns=["calling", "listening_to_music", "using_laptop"])
    trace = plots.coverage_heatmap(table, 0.9).data[0]
    assert not trace.texttemplate and trace.text is None
    hover = trace.hovertemplate.replace("%{y}", "run_b").replace("%{x}", "listening to music")
    assert "run_b" in hover and "listening to music" in hover and "%{z:.1%}" in hover
    assert plots.coverage_shortfalls(table, 0.9) == [
        "run_a: calling 85.0 %", "run_b: listening to music 70.0 %"]  # 0.90 meets a 90 % target
    assert plots.coverage_shortfalls(table, 0.6) == []


def test_a_cards_recipe_reads_as_one_plain_line():
    from har_core.evaluation.analysis import training_in_words
    card = {"input_size": 128, "epochs_trained": 12,
            "recipe": {"epochs": 12, "optimizer": "adamw", "lr": 0.002, "scheduler": "cosine", "batch_size": 32,
                       "augment": "rrc,flip,randaugment", "precision": "bf16"}}
    assert training_in_words(card) == ("12 epochs · AdamW at learning rate 0.002 (cosine) · batches of 32 · 128 px "
                                       "pictures · with random crops, mirroring, two random photo edits (RandAugment)"
                                       " · bfloat16 arithmetic.")
    card["recipe"] |= {"freeze_epochs": 3, "augment": "", "precision": "auto"}
    assert training_in_words(card) == ("12 epochs, the first 3 on the head alone · AdamW at learning rate 0.002 "
                                       "(cosine) · batches of 32 · 128 px pictures.")
    assert training_in_words(card | {"device": "NVIDIA A100"}).endswith("128 px pictures · bfloat16 arithmetic.")
    assert training_in_words({"recipe": card["recipe"], "taught": {"base": "x"}, "input_size": 1}) == ""


def test_the_reports_confusion_counts_are_large_enough_for_a_projector_and_fit_their_cells():
    har = ["calling", "clapping", "cycling", "dancing", "drinking", "eating", "fighting", "hugging", "laughing",
           "listening_to_music", "running", "sitting", "sleeping", "texting", "using_laptop"]
    metrics = {"classes": har, "confusion_matrix": (np.eye(15, dtype=int) * 100).tolist()}
    for width in (860, None):  # the report's matrices, and a page column's
        trace = plots.confusion_figure(metrics, normalize=True, width=width).data[0]
        cell, size = trace.marker.size, trace.textfont.size
        assert size >= 14, (width, size)  # 12 px counts were hard to read from the back of a room
        assert 3 * 0.6 * size <= cell, (width, size, cell)  # "100" at about 0.6 em a digit stays inside its square


def test_presentation_mode_enlarges_subplot_titles_too():
    """#38 walk: Training's "loss" / "accuracy" titles stayed 16 px in presentation mode."""
    from plotly.subplots import make_subplots
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    figure.update_layout(font=dict(size=16))
    sizes = [a.font.size for a in plots.enlarged(figure, 1.3).layout.annotations]
    assert [a.text for a in figure.layout.annotations] == ["loss", "accuracy"] and sizes == [21, 21]


def test_the_overview_names_a_shared_data_folder_only_when_the_runs_say_where_they_trained(tiny_runs):
    """A card without a `data` field (validate_card does not require it) made the Overview's caption read
    'test split of **?**' as if '?' were a folder."""
    from pathlib import Path
    from har_core.evaluation.analysis import data_folder, overview_table
    found = find_runs(tiny_runs)[0]
    assert data_folder(found) == Path(found[0].card["data"]["root"]).name
    for run in found:
        run.card.pop("data")
    assert data_folder(found) is None and data_folder(found[:1]) is None
    found[0].card["data"] = {"root": "/elsewhere/sports15"}
    assert data_folder(found) is None  # one known, one unknown: not said to be shared
    assert dict(zip(overview_table(found)["run"], overview_table(found)["data"])) == {
        found[0].name: "sports15", found[1].name: "?"}  # the table still says which one it does not know


def test_the_overviews_bars_tell_two_close_accuracies_apart_as_its_cards_say_them():
    """A new user's walk (#41 helpers): efficientnet_lite2 (81.37 %) and inception_v3 (80.53 %) were both labelled
    0.81 on the Overview's bars. Each bar says its number as the model cards below do: accuracy in percent with
    one decimal, macro-F1 with three."""
    table = pd.DataFrame({"run": ["efficientnet_lite2", "inception_v3"], "test accuracy": [0.813702, 0.805288],
                          "test macro-F1": [0.814131, 0.805680]})
    bars = {trace.name: list(trace.text) for trace in plots.accuracy_bars(table).data}
    assert bars == {"test accuracy": ["81.4%", "80.5%"], "test macro-F1": ["0.814", "0.806"]}
    # and no 0–1 axis under percent labels: the bars carry the numbers (#41 walk)
    assert plots.accuracy_bars(table).layout.yaxis.showticklabels is False
