"""Fixed augmented views made once, with the teachers' logits on exactly those views (har_core.training.view_cache)."""
import json
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
from torch.utils.data import DataLoader

from conftest import train_tiny
from har_core.training import view_cache
from har_core.data.datasets import dataset_for, read_manifest, scan, train_transform
from har_core.training.distill import Teachers
from har_core.models.inference import load_run
from har_core.models.registry import REGISTRY

STUDENT = REGISTRY["custom_cnn"].data_config(24)  # a 24-px student: views are made at the teacher's 32 px


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory, kaggle_data):
    """Two teachers: the second has other weights (another seed) but the same split."""
    out = tmp_path_factory.mktemp("teachers")
    first = train_tiny(kaggle_data, out, "first", extra=["--embed", "false"])
    second = train_tiny(kaggle_data, out, "second", extra=["--embed", "false", "--seed", "1", "--split",
                                                           str(first / "split.csv")])
    return first, second


def views_of(kaggle_data, manifest, seed, count=2, batch_size=4, workers=0, size=32):
    rows = manifest[manifest["split"] == "train"]
    classes = sorted(set(manifest["label"]))
    spec = view_cache.ViewSpec(data="test", files=view_cache.digest(rows["filename"].tolist()), augment="rrc,flip",
                               view_size=size, student={"input_size": [3, 24, 24]}, count=count, seed=seed)
    transform = train_transform(STUDENT | {"input_size": (3, size, size)}, "rrc,flip")
    dataset = dataset_for(kaggle_data, rows["filename"].tolist(), [classes.index(l) for l in rows["label"]],
                          transform)

    def loader_for(view):
        return DataLoader(view_cache.SeededViews(dataset, view_cache.view_seed(seed, view)), batch_size=batch_size,
                          num_workers=workers)
    return spec, loader_for, dataset


class Counting(Teachers):
    """Teachers that count the pictures they label."""
    labelled = 0

    def logits(self, images):
        Counting.labelled += len(images)
        return super().logits(images)


def test_the_teachers_logits_are_kept_by_their_weights_and_the_views_seed(teacher_runs, kaggle_data, tmp_path):
    first, second = teacher_runs
    manifest = read_manifest(first / "split.csv")
    classes = load_run(first).classes
    n = int((manifest["split"] == "train").sum())
    keep = lambda images: view_cache.pixels_of(images, STUDENT)  # noqa: E731

    def build(teacher, seed):
        spec, loader_for, _ = views_of(kaggle_data, manifest, seed)
        before = Counting.labelled
        views, logits = view_cache.build(spec, loader_for, keep, Counting([teacher], classes, STUDENT),
                                         progress=False, root=tmp_path)
        return np.array(views), np.array(logits), Counting.labelled - before

    views, logits, labelled = build(first, seed=0)
    assert labelled == 2 * n and views.shape == (2, n, 3, 24, 24) and views.dtype == np.uint8
    again_views, again, labelled = build(first, seed=0)  # the same teacher on the same views: read back
    assert labelled == 0 and np.array_equal(again, logits) and np.array_equal(again_views, views)
    _, other, labelled = build(second, seed=0)  # another teacher: computed again, on the same views
    assert labelled == 2 * n and not np.allclose(other, logits)
    other_views, _, labelled = build(first, seed=1)  # another seed: other views, labelled again
    assert labelled == 2 * n and not np.array_equal(other_views, views)


def test_a_stored_logit_is_the_teachers_own_answer_on_that_very_view(teacher_runs, kaggle_data, tmp_path):
    first, _ = teacher_runs
    manifest = read_manifest(first / "split.csv")
    loaded = load_run(first, calibrated=False)
    spec, loader_for, dataset = views_of(kaggle_data, manifest, seed=3)
    views, logits = view_cache.build(spec, loader_for, lambda x: view_cache.pixels_of(x, STUDENT),
                                     Teachers([first], loaded.classes, STUDENT), progress=False, root=tmp_path)
    for view, picture in ((0, 0), (1, 5)):
        # the view made again by hand, from its own seed, as a 32-px tensor in the student's normalisation
        torch.manual_seed(view_cache.view_seed(3, view) * 1_000_003 + picture)
        image = dataset[picture][0][None]
        mean, std = torch.tensor(STUDENT["mean"]).view(1, 3, 1, 1), torch.tensor(STUDENT["std"]).view(1, 3, 1, 1)
        card = loaded.run.card
        teacher_input = (image * std + mean - torch.tensor(card["mean"]).view(1, 3, 1, 1)) / torch.tensor(
            card["std"]).view(1, 3, 1, 1)
        with torch.no_grad():
            expected = loaded.model(teacher_input).numpy()[0]
        assert np.allclose(logits[view, picture, 0], expected, atol=1e-3)
        pixels = torch.nn.functional.interpolate(image * std + mean, size=(24, 24), mode="bilinear",
                                                 antialias=True, align_corners=False)
        assert np.abs(views[view, picture].astype(int) - (pixels[0].clamp(0, 1) * 255).round().numpy()).max() <= 1


def test_views_do_not_depend_on_the_batch_size_or_the_loader_processes(kaggle_data, tmp_path):
    from har_core.data.datasets import make_split
    manifest = make_split(scan(kaggle_data, progress=False))
    keep = lambda images: view_cache.pixels_of(images, STUDENT)  # noqa: E731
    spec, small, _ = views_of(kaggle_data, manifest, seed=0, count=1, batch_size=3, workers=0)
    one, _ = view_cache.build(spec, small, keep, progress=False, root=tmp_path / "a")
    spec, large, _ = views_of(kaggle_data, manifest, seed=0, count=1, batch_size=16, workers=2)
    two, _ = view_cache.build(spec, large, keep, progress=False, root=tmp_path / "b")
    assert np.array_equal(np.array(one), np.array(two))


def test_a_student_on_cached_views_and_teachers_resumes_exactly_and_its_card_says_its_start(
        teacher_runs, kaggle_data, tmp_path):
    """N epochs straight equal N/2, a stop, and --resume: the cached views and logits are read back from disk."""
    first, second = teacher_runs
    flags = ["--model", "resnet50", "--cached-views", "2", "--teacher", f"{first},{second}", "--image-size", "32",
             "--mixup-alpha", "0", "--embed", "false", "--lr", "1e-3", "--augment", "rrc,flip",
             "--split", str(first / "split.csv")]
    straight = train_tiny(kaggle_data, tmp_path, "straight", model="resnet50", extra=[*flags, "--epochs", "4"])
    half = train_tiny(kaggle_data, tmp_path, "resumed", model="resnet50", extra=[*flags, "--epochs", "2"])
    from train import train
    train.main(["--model", "resnet50", "--data", str(kaggle_data), "--out", str(tmp_path), "--name", "resumed",
                "--resume", "--epochs", "4", "--quiet", "--workers", "0", "--embed", "false"])
    a = safetensors.torch.load_file(straight / "checkpoint" / "last.safetensors")
    b = safetensors.torch.load_file(half / "checkpoint" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((straight / "card.json").read_text())
    assert card["pretrained"].startswith("none") and card["distillation"]["teachers"] == ["first", "second"]
    from har_core.evaluation.analysis import starts_from
    assert starts_from(card) == "random start, taught by first, second"
