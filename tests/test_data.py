import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import CLASSES, SPORTS15, synthetic_image, write_folder_dataset, write_kaggle_dataset
from har_core.data.datasets import (DataError, detect_layout, leaks, make_split, read_manifest, scan, unlabelled_images,
                                    write_manifest)


def test_kaggle_layout_reports_broken_missing_and_unknown_files(kaggle_data):
    assert detect_layout(kaggle_data) == "kaggle"
    index = scan(kaggle_data, progress=False)
    assert index.classes == CLASSES
    assert len(index.samples) == 36
    reasons = dict(index.problems)
    assert "damaged" in reasons["train/Image_broken.jpg"] or "not a supported" in reasons["train/Image_broken.jpg"]
    assert reasons["train/Image_missing.jpg"] == "file not found: Image_missing.jpg"
    restricted = scan(kaggle_data, classes=["cycling", "sleeping"], progress=False)
    assert {label for _, label in restricted.samples} == {"cycling", "sleeping"}
    # the 12 dancing images and the listed-but-missing dancing row
    assert sum("unknown label 'dancing'" in reason for _, reason in restricted.problems) == 13


def test_class_folder_layout(folder_data):
    assert detect_layout(folder_data) == "folders"
    index = scan(folder_data, progress=False)
    assert index.classes == CLASSES and len(index.samples) == 15 and not index.problems
    assert index.samples[0] == ("cycling/img_1.png", "cycling")


def test_missing_or_wrong_data_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        scan(tmp_path / "nowhere")
    with pytest.raises(DataError, match="neither the Kaggle layout"):
        scan(tmp_path)
    (tmp_path / "Training_set.csv").write_text("image,class\nImage_1.jpg,running\n")
    with pytest.raises(DataError, match="needs the columns filename, label"):
        scan(tmp_path)


def test_testing_set_csv_lists_the_unlabelled_images(kaggle_data):
    root, files, problems = unlabelled_images(kaggle_data / "Testing_set.csv")
    assert root == kaggle_data and files[0] == "test/Image_1.jpg" and len(files) == 6 and not problems


def test_split_is_stratified_disjoint_seeded_and_round_trips(kaggle_data, tmp_path):
    index = scan(kaggle_data, progress=False)
    split = make_split(index, seed=3)
    assert set(split["split"]) == {"train", "val", "test"}
    assert not split["filename"].duplicated().any()
    assert len(split) == len(index.samples)
    counts = split.groupby(["split", "label"]).size().unstack()
    assert (counts.loc["test"] >= 1).all() and (counts.loc["val"] >= 1).all()  # every class in every split
    assert split.equals(make_split(index, seed=3))
    assert not split.equals(make_split(index, seed=4))
    write_manifest(split, tmp_path / "split.csv")
    assert read_manifest(tmp_path / "split.csv").equals(split)


def test_too_few_images_for_a_split_is_a_clear_error(tmp_path):
    index = scan(write_kaggle_dataset(tmp_path, per_class=2, extras=False), progress=False)
    with pytest.raises(DataError, match=r"6 images in 3 classes are too few .*smallest class: \w+, 2 images"):
        make_split(index)


def test_manifest_listing_an_image_twice_is_rejected(tmp_path):
    (tmp_path / "split.csv").write_text("filename,label,split\na.jpg,x,train\na.jpg,x,test\n")
    with pytest.raises(DataError, match="twice"):
        read_manifest(tmp_path / "split.csv")


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="../shared/data/sports15 not present")
def test_sports15_is_read_in_the_kaggle_layout():
    index = scan(SPORTS15, progress=False)
    assert index.layout == "kaggle" and len(index.classes) == 15 and len(index.samples) == 1154
    split = make_split(index)
    assert split["split"].value_counts().to_dict() == {"train": 807, "val": 173, "test": 174}


def with_repeats_and_copies(source: Path, target: Path, rows: int, repeated: int, copied: int) -> Path:
    """The first `rows` images of a Kaggle-layout set, plus `repeated` rows listed again and `copied` pictures
    stored a second time under new names."""
    listing = pd.read_csv(source / "Training_set.csv").head(rows)
    (target / "train").mkdir(parents=True)
    for name in listing["filename"]:
        shutil.copy(source / "train" / name, target / "train" / name)
    copies = listing.iloc[::max(1, rows // copied)].head(copied)
    for i, row in enumerate(copies.itertuples()):
        shutil.copy(source / "train" / row.filename, target / "train" / f"Copy_{i}.jpg")
    extra = pd.DataFrame({"filename": [f"Copy_{i}.jpg" for i in range(len(copies))], "label": list(copies["label"])})
    pd.concat([listing, listing.iloc[1::max(1, rows // repeated)].head(repeated), extra]).to_csv(
        target / "Training_set.csv", index=False)
    return target


def pictures_in_two_splits(split: pd.DataFrame, index) -> int:
    return len(leaks(split, index))


def test_repeated_rows_and_copies_are_reported_and_never_split_apart(kaggle_data, tmp_path):
    data = with_repeats_and_copies(kaggle_data, tmp_path / "d", rows=36, repeated=6, copied=6)
    index = scan(data, progress=False)
    assert len(index.repeated_rows) == 6 and all("listed twice" in reason for _, reason in index.repeated_rows)
    assert len(index.samples) == 42 and len(index.copies()) == 6  # each row once; 6 pictures with two names
    assert all(len(group) == 2 and group[1].startswith("train/Copy_") for group in index.copies())
    for seed in range(5):
        split = make_split(index, seed=seed)
        assert len(split) == 42 and pictures_in_two_splits(split, index) == 0
        where = dict(zip(split["filename"], split["split"]))
        assert all(where[a] == where[b] for a, b in index.copies())


def test_a_row_listed_twice_with_two_labels_is_named(tmp_path):
    data = write_kaggle_dataset(tmp_path, per_class=4, extras=False)
    with open(data / "Training_set.csv", "a") as listing:
        listing.write("Image_1.jpg,sleeping\n")
    index = scan(data, progress=False)
    assert index.repeated_rows == [("train/Image_1.jpg", "listed twice with different labels (cycling, sleeping)")]
    assert dict(index.samples)["train/Image_1.jpg"] == "cycling"


def test_the_fingerprint_follows_contents_not_sizes(tmp_path):
    """BMP files of one size have one byte length: a changed picture must change the fingerprint anyway."""
    data = write_folder_dataset(tmp_path / "bmp", per_class=3)
    for png in data.rglob("*.png"):
        synthetic_image(0, seed=1).save(png.with_suffix(".bmp"))
        png.unlink()
    before = scan(data, progress=False).fingerprint()
    victim = next(data.rglob("*.bmp"))
    size = victim.stat().st_size
    synthetic_image(2, seed=9).save(victim)
    assert victim.stat().st_size == size
    assert scan(data, progress=False).fingerprint() != before


def test_files_outside_a_confined_folder_and_oversized_folders_are_refused(kaggle_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(kaggle_data, data)
    outside = tmp_path / "secret.jpg"
    synthetic_image(0, seed=1).save(outside)
    (data / "train" / "Image_1.jpg").unlink()
    (data / "train" / "Image_1.jpg").symlink_to(outside)
    reasons = dict(scan(data, progress=False, confine=True).problems)
    assert reasons["train/Image_1.jpg"] == "outside the data folder"
    assert "train/Image_1.jpg" in dict(scan(data, progress=False).samples)  # the CLI may follow links
    with pytest.raises(DataError, match="lists 38 images, more than this server scans \\(20\\)"):
        scan(data, progress=False, max_images=20)


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="../shared/data/sports15 not present")
def test_sports15_with_repeated_rows_and_copies_keeps_every_picture_on_one_side(tmp_path):
    """The issue's measurement: 300 sports15 rows + 15 repeated rows + 15 copies under new names put 14
    pictures in two splits before; now none."""
    data = with_repeats_and_copies(SPORTS15, tmp_path / "s", rows=300, repeated=15, copied=15)
    index = scan(data, progress=False)
    assert len(index.repeated_rows) == 15 and len(index.copies()) == 15 and len(index.samples) == 315
    assert pictures_in_two_splits(make_split(index), index) == 0


def test_stored_scans_are_reused_until_the_folder_listing_changes(kaggle_data, copy_of, monkeypatch, tmp_path):
    """Finding 10: folder scans were cached with no stamp, so relabelling or adding pictures was never seen."""
    from har_core.data import datasets as data_module
    monkeypatch.setenv("HAR_CACHE", str(tmp_path / "cache"))
    folder = copy_of(kaggle_data)
    calls = []
    real_scan = data_module.scan
    monkeypatch.setattr(data_module, "scan", lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    first = data_module.scan_cached(folder)
    again = data_module.scan_cached(folder)
    assert len(calls) == 1 and again.samples == first.samples and again.digests == first.digests
    assert again.fingerprint() == first.fingerprint()
    csv = folder / "Training_set.csv"
    csv.write_text(csv.read_text().replace("Image_2.jpg,cycling", "Image_2.jpg,dancing"))  # a relabelling
    relabelled = data_module.scan_cached(folder)
    assert len(calls) == 2 and dict(relabelled.samples)["train/Image_2.jpg"] == "dancing"
    synthetic_image(1, seed=4242).save(folder / "train" / "Image_1.jpg", quality=90)  # a picture replaced
    assert data_module.scan_cached(folder).fingerprint() != relabelled.fingerprint() and len(calls) == 3


def test_a_first_scan_tells_its_progress_and_is_then_stored(kaggle_data, copy_of, monkeypatch, tmp_path):
    """#41 walk: the Dataset page's first open of HAR took 15 s behind a spinner. The scan now says how far it is
    (every hundred files, over the listing's rows), and says whether a folder's scan is stored."""
    from har_core.data import datasets as data_module
    monkeypatch.setenv("HAR_CACHE", str(tmp_path / "cache"))
    folder = copy_of(kaggle_data)
    rows = len((folder / "Training_set.csv").read_text().strip().splitlines()) - 1  # the listing, read here
    told = []
    assert not data_module.scan_is_stored(folder, confine=True)
    index = data_module.scan_cached(folder, confine=True, on_progress=lambda done, total: told.append((done, total)))
    assert told == [(done, rows) for done in range(0, rows, 100)] and len(index.samples) <= rows
    assert data_module.scan_is_stored(folder, confine=True) and not data_module.scan_is_stored(folder, confine=False)
    data_module.scan_cached(folder, confine=True, on_progress=lambda *a: told.append(a))
    assert len(told) == len(range(0, rows, 100))  # read from the store: nothing to tell


def test_half_of_each_classs_val_pictures_calibrate_and_the_checkpoint_choice_never_sees_them(kaggle_data, tmp_path):
    from har_core.data.datasets import CALIBRATE, calibration_files, choice_part, write_manifest
    index = scan(kaggle_data, progress=False)
    manifest = make_split(index, seed=0)
    val = manifest[manifest["split"] == "val"]
    calibrating = val[val[CALIBRATE] == "1"]
    # half of each class's val pictures, counted by hand
    for label, rows in val.groupby("label"):
        assert abs(int((rows[CALIBRATE] == "1").sum()) - len(rows) / 2) <= 0.5 + 1, label
    assert set(manifest.loc[manifest["split"] != "val", CALIBRATE]) == {""}
    chooser = choice_part(manifest)
    assert not set(chooser["filename"]) & set(calibrating["filename"])
    assert len(chooser) + len(calibrating) == len(manifest)
    write_manifest(manifest, tmp_path / "split.csv")
    back = read_manifest(tmp_path / "split.csv")
    assert calibration_files(back) == set(calibrating["filename"])
    # a three-column manifest keeps no half apart: all of val chooses and calibrates
    (tmp_path / "old.csv").write_text(manifest[["filename", "label", "split"]].to_csv(index=False))
    old = read_manifest(tmp_path / "old.csv")
    assert calibration_files(old) is None and len(choice_part(old)) == len(old)


def test_training_validates_on_the_choice_half_of_val_only(tmp_path, kaggle_data, capsys):
    from conftest import TINY_FLAGS
    from har_core.data.datasets import CALIBRATE
    from train.train import main
    run = main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path), *TINY_FLAGS,
                "--embed", "false"])
    manifest = read_manifest(run / "split.csv")
    val = manifest["split"] == "val"
    choosing = int((val & (manifest[CALIBRATE] != "1")).sum())
    assert 0 < choosing < int(val.sum())
    assert f"/ {choosing} val images" in capsys.readouterr().out
    import json
    assert json.loads((run / "card.json").read_text())["split"]["checkpoint_chosen_on"] == "the other half of val"
