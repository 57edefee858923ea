import pytest

from conftest import CLASSES, SPORTS15, write_kaggle_dataset
from har_core.data import (DataError, detect_layout, make_split, read_manifest, scan, unlabelled_images,
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
