"""Teach: a logistic-regression head on a run's embeddings, saved as an ordinary run folder."""
import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SPORTS15, synthetic_image
from har_core.models.artifacts import open_run, run_zip
from har_core.data.imaging import load_image
from har_core.models.inference import load_run
from har_core.training.teach import TeachError, class_names, embed, run_name, save_head, teach

BUNDLED = ROOT / "assets" / "runs"
needs_sports15 = pytest.mark.skipif(not (SPORTS15 / "Training_set.csv").is_file() or not BUNDLED.is_dir(),
                                    reason="needs ../shared/data/sports15 and the bundled runs")


@needs_sports15
def test_ten_pictures_of_five_sports15_classes_teach_mobilenet_and_the_saved_run_predicts_the_same(tmp_path):
    """Pictures the base run never trained on (its val and test splits), 14 per class: 10 to learn, 4 held out."""
    base = load_run(BUNDLED / "mobilenet_v2")
    manifest = pd.read_csv(BUNDLED / "split.csv")
    unseen = manifest[manifest["split"] != "train"]
    names = ["archery", "boxing", "golf", "judo", "pole_vault"]
    pictures = [[load_image(SPORTS15 / f) for f in unseen.loc[unseen["label"] == n, "filename"][:14]] for n in names]
    head = teach(base, [n.replace("_", " ") for n in names], pictures, holdout=4 / 14)
    held_out = head.split[head.split["split"] == "test"]
    assert len(held_out) == 20 and (held_out["label"].value_counts() == 4).all()
    accuracy = head.metrics["accuracy"]
    print(f"\nteach on mobilenet_v2 embeddings, 5 sports15 classes × 10 pictures: held-out accuracy {accuracy:.3f} "
          f"(20 pictures); embed {head.seconds['embed']:.2f} s, fit {head.seconds['fit']:.3f} s")
    assert accuracy >= 0.8
    assert head.classes == names  # "pole vault" typed with a space becomes the data set's pole_vault

    run = save_head(head, tmp_path, "taught sports")
    card = open_run(run).card
    assert run.name == "taught_sports" and card["classes"] == names
    assert card["notes"] == "linear head on mobilenet_v2's embeddings, 14 pictures per class"
    assert card["metrics"]["test"]["accuracy"] == pytest.approx(accuracy)
    reloaded = load_run(run)  # an ordinary run: the registry's network with the head folded into its last layer
    images = [pictures[i][j] for i in range(5) for j in (10, 13)]
    assert np.abs(reloaded.predict(images) - head.predict(embed(base, images))).max() < 1e-4
    assert len(list((run / "pictures").rglob("*.jpg"))) == 70
    with zipfile.ZipFile(__import__("io").BytesIO(run_zip(run))) as archive:
        assert "taught_sports/model.safetensors" in archive.namelist()
    with pytest.raises(TeachError, match="already exists"):
        save_head(head, tmp_path, "taught_sports")


def test_two_classes_fold_into_the_run_exactly(tiny_runs, tmp_path):
    """scikit-learn keeps one row of weights for two classes; the saved two-logit layer gives the same softmax."""
    base = load_run(tiny_runs / "custom_cnn")
    pictures = [[synthetic_image(0, seed=s) for s in range(6)], [synthetic_image(2, seed=10 + s) for s in range(6)]]
    head = teach(base, ["left", "right"], pictures)
    reloaded = load_run(save_head(head, tmp_path, "two"))
    images = [synthetic_image(c, seed=90 + c) for c in (0, 2)]
    assert np.abs(reloaded.predict(images) - head.predict(embed(base, images))).max() < 1e-5
    assert reloaded.classes == ["left", "right"]


@pytest.mark.parametrize("names, counts, message", [
    (["only"], [3], "1 class"),
    (["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"], [2] * 11, "11 class"),
    (["wave", " "], [3, 3], "has no name"),
    (["wave", "Wave "], [3, 3], "two classes are called 'wave' and 'Wave'"),
    (["wave", "clap/../x"], [3, 3], "letters, digits"),
    (["wave", "clap"], [3, 0], "no pictures for clap"),
    (["wave", "clap"], [1, 1], "one picture is too few"),
])
def test_bad_classes_and_pictures_are_refused_with_the_reason(tiny_runs, names, counts, message):
    base = load_run(tiny_runs / "custom_cnn")
    pictures = [[synthetic_image(i % 3, seed=j) for j in range(n)] for i, n in enumerate(counts)]
    with pytest.raises(TeachError, match=message):
        teach(base, names, pictures)


def test_run_names_never_become_paths():
    assert run_name("../../etc") == "etc" and run_name("my run!") == "my_run"
    with pytest.raises(TeachError, match="type a name"):
        run_name("../")
    assert class_names(["riding  a bike", "x-ray"]) == ["riding_a_bike", "x-ray"]


def test_the_head_is_regularised_by_cross_validation_and_its_accuracy_has_an_interval(tiny_runs):
    """#25 item 15: 'held-out accuracy 100 %' on 4 pictures, and 100 % sure of wrong answers on new photos."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from har_core.training.teach import STRENGTHS, regularisation
    # 30 pictures' worth of 256-d embeddings whose labels carry no signal: separable by chance, as a few real
    # pictures in a high-dimensional embedding are
    rng = np.random.default_rng(0)
    vectors, labels, strangers = rng.normal(size=(30, 256)), np.repeat([0, 1, 2], 10), rng.normal(size=(20, 256))
    unregularised = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(vectors, labels)
    assert unregularised.predict_proba(strangers).max(1).mean() > 0.55  # confident, knowing nothing
    chosen = regularisation(vectors, labels)
    assert chosen == min(STRENGTHS)  # cross-validation finds nothing to learn: the strongest regularisation
    cross_validated = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=chosen)).fit(vectors, labels)
    assert cross_validated.predict_proba(strangers).max(1).mean() < 0.4  # about a third each: unsure
    base = load_run(tiny_runs / "custom_cnn")
    pictures = [[synthetic_image(c, seed=100 * c + s) for s in range(8)] for c in (0, 1, 2)]
    head = teach(base, ["a", "b", "c"], pictures)
    assert head.metrics["C"] in STRENGTHS and head.metrics["held_out"] == 6
    low, high = head.metrics["accuracy_interval"]
    assert low <= head.metrics["accuracy"] <= high <= 1.0 and high - low > 0.3  # 6 pictures: a wide interval


HAR_BUNDLE = ROOT / "assets" / "runs_har"


@pytest.mark.skipif(not (SPORTS15 / "Training_set.csv").is_file() or not (HAR_BUNDLE / "efficientnet_lite2").is_dir(),
                    reason="needs ../shared/data/sports15 and the HAR bundle")
def test_two_clearly_different_classes_give_a_confident_answer_as_sure_as_it_is_right():
    """#40.4: 10 archery + 10 fencing photos taught on the HAR bundle's best run answered a clear archery photo
    'fencing 51 % / archery 49 %' (C = 0.001). Measured on 60 photos of the two classes it was not taught: how
    sure it is on average must match how often it is right there, and its right answers must be confident."""
    base = load_run(HAR_BUNDLE / "efficientnet_lite2")  # the bundle's best val accuracy: Teach's default
    listing = pd.read_csv(SPORTS15 / "Training_set.csv")
    names = ["archery", "fencing"]
    files = [listing.loc[listing["label"] == name, "filename"].tolist() for name in names]
    taught = [[load_image(SPORTS15 / "train" / f) for f in group[:10]] for group in files]
    head = teach(base, names, taught)
    new = [load_image(SPORTS15 / "train" / f) for group in files for f in group[10:40]]
    truth = np.repeat([0, 1], 30)
    probs = head.predict(embed(base, new))
    right = probs.argmax(1) == truth
    sure = probs.max(1)
    print(f"\nC = {head.metrics['C']:.3g}: right on {right.mean():.0%} of 60 new photos, {sure.mean():.0%} sure on "
          f"average, {np.median(sure[right]):.0%} (median) when right")
    assert right.mean() >= 0.8
    assert abs(sure.mean() - right.mean()) <= 0.1  # calibrated: as sure as it is right
    assert np.median(sure[right]) >= 0.8  # a clear photo gets a clear answer, not a coin's
