"""The data audit: near-duplicates, likely label errors, outliers; on generated data and, where present, sports15."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, SPORTS15
from har_core.retrieval.audit import PIXEL_MATCH, audit, label_issues, near_duplicates, outliers, pixel_match
from test_embeddings import clustered, fake_embeddings
from train import audit as audit_cli


def test_near_duplicates_put_pairs_across_train_and_test_first():
    vectors, labels = clustered(n_per=20, clusters=3, dim=64, noise=1.0)
    vectors[59] = vectors[3] + 0.01  # a test image that is a training image's twin
    vectors[40] = vectors[41] + 0.01  # two training images alike
    splits = ["train"] * 50 + ["test"] * 10
    found = near_duplicates(fake_embeddings(vectors, labels, splits), threshold=0.99)
    assert len(found) == 2
    first = found.iloc[0]
    assert (first.file_a, first.split_a, first.file_b, first.split_b) == ("img_3.jpg", "train", "img_59.jpg", "test")
    assert first.across_splits and not found.iloc[1].across_splits
    assert {found.iloc[1].file_a, found.iloc[1].file_b} == {"img_40.jpg", "img_41.jpg"}


def smooth_picture(seed: int, size=(120, 90)) -> Image.Image:
    """A photo-like picture: random colours at 8×6, smoothly enlarged."""
    cells = (np.random.default_rng(seed).random((6, 8, 3)) * 255).astype(np.uint8)
    return Image.fromarray(cells).resize(size, Image.BICUBIC)


def test_near_duplicates_are_kept_only_where_the_pixels_agree(tmp_path):
    """A fine-tuned network puts look-alikes as close as copies: the pixels tell them apart."""
    original = smooth_picture(0)
    original.save(tmp_path / "original.jpg", quality=95)
    # a copy re-encoded smaller with a thin edge cropped, and another photo altogether
    original.resize((100, 75)).crop((0, 0, 100, 73)).save(tmp_path / "copy.jpg", quality=60)
    smooth_picture(1).save(tmp_path / "other.jpg", quality=95)
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    vectors, labels = clustered(n_per=10, clusters=2, dim=32, noise=1.0)
    files = ["original.jpg", "copy.jpg", "other.jpg", "broken.jpg"]
    for i in range(1, 4):
        vectors[i] = vectors[0] + 0.01 * i  # the network sees all four as the same picture
    embeddings = fake_embeddings(vectors, labels, ["train"] * 20)
    embeddings.files[:4] = files
    candidates = near_duplicates(embeddings, threshold=0.99)
    assert len(candidates) == 6  # every pair of the four
    scored = pixel_match(candidates, tmp_path)
    score = {frozenset((a, b)): p for a, b, p in zip(scored.file_a, scored.file_b, scored.pixels)}
    assert score[frozenset(("original.jpg", "copy.jpg"))] >= PIXEL_MATCH
    assert score[frozenset(("original.jpg", "other.jpg"))] < 0.5
    assert np.isnan(score[frozenset(("original.jpg", "broken.jpg"))])
    checked = audit(embeddings, threshold=0.99, root=tmp_path)
    kept = {frozenset((a, b)) for a, b in zip(checked.duplicates.file_a, checked.duplicates.file_b)}
    assert kept == {frozenset(("original.jpg", "copy.jpg"))} | {frozenset((f, "broken.jpg")) for f in files[:3]}
    assert checked.candidates == 6 and checked.summary().startswith("4 near-duplicate pair(s) (the same pixels, of 6 close")
    assert audit(embeddings, threshold=0.99).summary().startswith("6 near-duplicate pair(s), ")


def test_flipped_labels_rank_first_among_label_issues():
    vectors, labels = clustered(n_per=30, clusters=3, dim=16, noise=0.4)
    given = labels.copy()
    flipped = [5, 37, 70]  # training images whose label says another cluster
    for i in flipped:
        given[i] = (labels[i] + 1) % 3
    splits = ["train"] * 80 + ["test"] * 10
    probs = np.eye(3)[labels] * 0.8 + 0.2 / 3  # the model knows the truth on the test images
    found = label_issues(fake_embeddings(vectors, given, splits, probs=probs))
    assert set(found["filename"].head(3)) == {f"img_{i}.jpg" for i in flipped}
    assert (found.head(3)["source"] == "probe").all() and found.head(3)["confident"].all()
    assert found.iloc[0]["suggested"] == f"c{labels[int(found.iloc[0]['filename'][4:-4])]}"


def test_an_image_far_from_every_other_is_an_outlier_and_only_it():
    vectors, labels = clustered(n_per=40, clusters=3, dim=16, noise=0.2)
    vectors[7] = np.random.default_rng(1).standard_normal(16) * 5  # nothing like the rest
    found = outliers(fake_embeddings(vectors, labels, ["train"] * 120))
    assert list(found["filename"]) == ["img_7.jpg"]


def test_the_audit_command_writes_three_csv_files(tiny_runs, kaggle_data, copy_of, tmp_path, capsys):
    data = copy_of(kaggle_data)
    split = pd.read_csv(tiny_runs / "custom_cnn" / "split.csv")
    train_file = split.loc[split["split"] == "train", "filename"].iloc[0]
    test_file = split.loc[split["split"] == "test", "filename"].iloc[0]
    shutil.copy(data / train_file, data / test_file)  # a test image replaced by a training image
    listing = pd.read_csv(data / "Training_set.csv")
    label_of = dict(zip("train/" + listing["filename"], listing["label"]))
    listing.loc["train/" + listing["filename"] == test_file, "label"] = label_of[train_file]
    listing.to_csv(data / "Training_set.csv", index=False)
    result = audit_cli.main([str(data), "--run", str(tiny_runs / "custom_cnn"), "--out", str(tmp_path / "out"),
                             "--quiet", "--threshold", "0.999"])
    assert "near-duplicate pair(s)" in capsys.readouterr().out
    duplicates = pd.read_csv(tmp_path / "out" / "duplicates.csv")
    assert (duplicates.iloc[0]["file_a"], duplicates.iloc[0]["file_b"]) == (train_file, test_file)
    assert list(pd.read_csv(tmp_path / "out" / "label_issues.csv").columns) == list(result.label_issues.columns)
    assert (tmp_path / "out" / "outliers.csv").is_file()
    with pytest.raises(SystemExit, match="run folder not found"):
        audit_cli.main([str(data), "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--quiet"])


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="needs ../shared/data/sports15")
def test_planted_label_flips_and_split_duplicates_are_found_in_sports15(tmp_path):
    from bench.label_audit import run_experiment
    figures = run_experiment(ROOT / "assets" / "runs" / "efficientnet_lite2", SPORTS15, tmp_path)
    print(figures)
    assert figures["flips_in_top"] >= 0.8
    assert figures["duplicates_found"] >= 9  # of 10: one re-encoded copy scores below the threshold (README)


FORKS = []  # at-fork hooks cannot be unregistered: one hook, one list, read before and after
os.register_at_fork(before=lambda: FORKS.append(os.getpid()))


def test_the_audit_never_forks_a_process(monkeypatch):
    """#40.1: cleanlab forks workers (a multiprocessing pool) unless told otherwise; forked inside the app's
    threaded server the copies wait forever and the audit never finishes. Nothing in the audit may fork."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # the default pool cleanlab picks on a multi-core machine
    vectors, labels = clustered(n_per=30, clusters=3, dim=16, noise=0.4)
    splits = ["train"] * 60 + ["val"] * 15 + ["test"] * 15
    before = len(FORKS)
    found = audit(fake_embeddings(vectors, labels, splits))
    assert len(FORKS) == before, "the audit forked a process"
    assert found.summary()  # it ran to the end
