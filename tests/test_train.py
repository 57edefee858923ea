"""Training end to end on tiny generated data: run folder, evaluate, predict, resume, torchrun."""
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import safetensors.torch
import torch

from conftest import CLASSES, ROOT, SPORTS15, TINY_FLAGS, train_tiny, write_kaggle_dataset
from har_core.models import artifacts
from har_core.models.registry import REGISTRY
from train import evaluate, predict, train


def test_run_folder_holds_every_artifact(tiny_runs):
    run_dir = tiny_runs / "custom_cnn"
    for name in ("card.json", "model.safetensors", "history.json", "split.csv", "metrics_val.json",
                 "metrics_test.json", "predictions_test.csv", "checkpoint/last.safetensors"):
        assert (run_dir / name).is_file(), name
    card = artifacts.open_run(run_dir).card
    assert card["model"] == "custom_cnn" and card["classes"] == CLASSES and card["input_size"] == 32
    assert card["recipe"]["epochs"] == 2 and card["split"]["counts"]["test"] > 0
    assert card["data"]["skipped"] == 2 and len(card["data"]["fingerprint"]) == 16
    assert set(card["versions"]) >= {"torch", "torchvision", "timm"}
    assert card["device"] == "cpu"  # where it was trained, so GPU-trained runs say so
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) >= {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_macro_f1", "lr"}
    metrics = json.loads((run_dir / "metrics_test.json").read_text())
    assert set(metrics) >= {"accuracy", "top3_accuracy" if len(CLASSES) > 3 else "accuracy", "macro_f1",
                            "weighted_f1", "macro_precision", "per_class", "confusion_matrix"}
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n"] == card["split"]["counts"]["test"]
    predictions = pd.read_csv(run_dir / "predictions_test.csv")
    assert list(predictions.columns[:4]) == ["filename", "true", "predicted", "confidence"]
    assert predictions[[f"prob_{c}" for c in CLASSES]].sum(axis=1).round(4).eq(1).all()
    # the weights are safetensors, never pickle
    assert safetensors.torch.load_file(run_dir / "model.safetensors")


def test_split_is_reused_so_no_image_is_in_two_splits(tiny_runs):
    first = pd.read_csv(tiny_runs / "custom_cnn" / "split.csv")
    second = pd.read_csv(tiny_runs / "mobilenet_v2" / "split.csv")
    assert first.equals(second)
    assert not first["filename"].duplicated().any()


def test_evaluate_reproduces_the_stored_metrics_and_predict_writes_a_submission(tiny_runs, kaggle_data, tmp_path, copy_of):
    run_dir = copy_of(tiny_runs / "custom_cnn")
    stored = json.loads((run_dir / "metrics_test.json").read_text())
    recomputed = evaluate.main([str(run_dir), "--split", "test", "--quiet", "--workers", "0"])
    assert recomputed["accuracy"] == stored["accuracy"]
    assert recomputed["confusion_matrix"] == stored["confusion_matrix"]
    with_tta = evaluate.main([str(run_dir), "--split", "val", "--tta", "--quiet", "--workers", "0"])
    assert with_tta["tta"] is True and artifacts.open_run(run_dir).card["metrics"]["val"]["tta"] is True
    out = tmp_path / "submission.csv"
    submission = predict.main([str(run_dir), str(kaggle_data / "Testing_set.csv"), "--out", str(out), "--quiet"])
    written = pd.read_csv(out)
    assert list(written.columns) == ["filename", "label"] and len(written) == 6
    assert written["filename"].tolist() == [f"Image_{i}.jpg" for i in range(1, 7)]
    assert set(written["label"]) <= set(CLASSES)
    assert submission.equals(written)


def test_tiny_model_really_learns_the_synthetic_classes(tmp_path, kaggle_data):
    run_dir = train_tiny(kaggle_data, tmp_path, "learner", extra=["--epochs", "6"])
    history = json.loads((run_dir / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_accuracy"] for h in history) >= 0.8


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, kaggle_data):
    straight = train_tiny(kaggle_data, tmp_path, "straight", extra=["--epochs", "3"])
    # "interrupted" after epoch 1, then resumed to the same length
    train_tiny(kaggle_data, tmp_path, "resumed", extra=["--epochs", "1"])
    resumed = train.main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path),
                          "--name", "resumed", "--resume", "--epochs", "3", "--quiet", "--workers", "0"])
    a = safetensors.torch.load_file(straight / "model.safetensors")
    b = safetensors.torch.load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(json.loads((straight / "history.json").read_text())) == \
        strip(json.loads((resumed / "history.json").read_text()))
    assert json.loads((straight / "metrics_test.json").read_text())["accuracy"] == \
        json.loads((resumed / "metrics_test.json").read_text())["accuracy"]


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path, kaggle_data):
    train_tiny(kaggle_data, tmp_path, "extend", extra=["--epochs", "1"])
    run_dir = train.main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path), "--name",
                          "extend", "--resume", "--epochs", "2", "--quiet", "--workers", "0"])
    assert [h["epoch"] for h in json.loads((run_dir / "history.json").read_text())] == [1, 2]
    assert artifacts.open_run(run_dir).card["recipe"]["epochs"] == 2


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, kaggle_data):
    with pytest.raises(SystemExit, match="nothing to resume"):
        train.main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path), "--resume"])


def test_too_few_images_to_split_exits_with_the_reason_and_writes_no_weights(tmp_path):
    data = write_kaggle_dataset(tmp_path / "few", per_class=2, extras=False)
    with pytest.raises(SystemExit, match="error: 6 images in 3 classes are too few"):
        train.main(["--model", "custom_cnn", "--data", str(data), "--out", str(tmp_path / "runs"), *TINY_FLAGS])
    assert not list((tmp_path / "runs").rglob("*.safetensors"))


def test_a_broken_split_manifest_exits_with_the_reason(tmp_path, kaggle_data):
    (tmp_path / "split.csv").write_text("filename,label,split\nImage_1.jpg,calling,train\nImage_1.jpg,calling,test\n")
    with pytest.raises(SystemExit, match="error: .*lists an image twice"):
        train.main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path / "runs"),
                    "--split", str(tmp_path / "split.csv"), *TINY_FLAGS])


def test_unwritable_output_folder_fails_before_training(tmp_path, kaggle_data):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the run folder should go")
    with pytest.raises(SystemExit, match="cannot write"):
        train.main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(blocked), *TINY_FLAGS])


def test_torchrun_ranks_stay_identical_through_a_plateau_reduction(tmp_path, kaggle_data):
    """Two gloo processes; the plateau schedule cuts the lr after the second epoch (a tiny lr and frozen
    batch norms keep the val loss flat). Both ranks must end with the same weights, batch-norm statistics
    and lr history (before timm's scheduler was stepped on every rank, rank 1 never saw the cut)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "train.train", "--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path),
               "--name", "ddp", "--backend", "gloo", "--device", "cpu", *TINY_FLAGS, "--epochs", "3",
               "--scheduler", "plateau", "--plateau-patience", "0", "--gamma", "0.5", "--lr", "1e-7",
               "--bn-frozen", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["lr"] == ranks[1]["lr"] == pytest.approx([1e-7, 1e-7, 5e-8])
    assert ranks[0]["digest"] == ranks[1]["digest"]
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert [h["lr"] for h in history] == ranks[0]["lr"]
    metrics = json.loads((tmp_path / "ddp" / "metrics_test.json").read_text())
    manifest = pd.read_csv(tmp_path / "ddp" / "split.csv")
    assert metrics["n"] == int((manifest["split"] == "test").sum()) > 0


@pytest.mark.parametrize("scheduler", ["cosine", "plateau", "step"])
def test_resume_replays_every_schedule_exactly(tmp_path, kaggle_data, scheduler):
    flags = ["--scheduler", scheduler, "--plateau-patience", "0", "--step-size", "1", "--gamma", "0.5",
             "--warmup-epochs", "1", "--freeze-epochs", "2"]
    straight = train_tiny(kaggle_data, tmp_path, "straight", extra=[*flags, "--epochs", "4"])
    train_tiny(kaggle_data, tmp_path, "resumed", extra=[*flags, "--epochs", "3"])
    resumed = train.main(["--model", "custom_cnn", "--data", str(kaggle_data), "--out", str(tmp_path),
                          "--name", "resumed", "--resume", "--epochs", "4", "--quiet", "--workers", "0"])
    lrs = lambda run: [h["lr"] for h in json.loads((run / "history.json").read_text())]  # noqa: E731
    assert lrs(straight) == lrs(resumed) and len(set(lrs(straight))) > 1
    a = safetensors.torch.load_file(straight / "model.safetensors")
    b = safetensors.torch.load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_split_flag_that_differs_from_the_runs_own_split_is_refused(tmp_path, kaggle_data):
    first = train_tiny(kaggle_data, tmp_path, "first", extra=["--epochs", "1"])
    other = pd.read_csv(first / "split.csv")
    other["split"] = other["split"].map({"train": "test", "test": "train", "val": "val"})
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(SystemExit, match=r"--split .*other.csv differs from this run's own split .*first/split.csv"):
        train_tiny(kaggle_data, tmp_path, "first", extra=["--epochs", "1", "--split", str(tmp_path / "other.csv")])
    again = train_tiny(kaggle_data, tmp_path, "first", extra=["--epochs", "1", "--split", str(first / "split.csv")])
    assert pd.read_csv(again / "split.csv").equals(pd.read_csv(first / "split.csv"))


def test_a_manifest_putting_copies_of_a_picture_in_two_splits_is_refused(tmp_path):
    data = write_kaggle_dataset(tmp_path / "data", per_class=12, extras=False)
    shutil.copy(data / "train" / "Image_1.jpg", data / "train" / "Image_copy.jpg")
    with open(data / "Training_set.csv", "a") as listing:
        listing.write("Image_copy.jpg,cycling\n")
    rows = pd.read_csv(data / "Training_set.csv")
    manifest = rows.assign(split=["train"] * 24 + ["val"] * 6 + ["test"] * 7)
    manifest.loc[manifest["filename"] == "Image_1.jpg", "split"] = "train"
    manifest.loc[manifest["filename"] == "Image_copy.jpg", "split"] = "test"
    manifest["filename"] = "train/" + manifest["filename"]
    manifest.to_csv(tmp_path / "leaky.csv", index=False)
    with pytest.raises(SystemExit, match=r"1 picture\(s\) are in two splits.*Image_1.jpg \(train\) = train/Image_copy.jpg"
                                         r" \(test\)"):
        train.main(["--model", "custom_cnn", "--data", str(data), "--out", str(tmp_path / "runs"),
                    "--split", str(tmp_path / "leaky.csv"), *TINY_FLAGS])


@pytest.mark.parametrize("flags, value", [(["--weighted-sampler"], True), (["--weighted-sampler", "no"], False),
                                          (["--tta", "TRUE"], True), ([], None)])
def test_boolean_flags_take_a_value_or_stand_alone(flags, value):
    args = train.parse_args(["--model", "custom_cnn", "--data", "x", *flags])
    assert getattr(args, "recipe_weighted_sampler" if "--weighted-sampler" in flags else "recipe_tta") is value


def test_a_typo_in_a_boolean_flag_is_an_error(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "custom_cnn", "--data", "x", "--bn-frozen", "ture"])
    assert "expected true or false, got 'ture'" in capsys.readouterr().err


def test_resume_and_evaluate_warn_when_the_data_changed(tmp_path, capsys):
    data = write_kaggle_dataset(tmp_path / "data", per_class=12, extras=False)
    run = train_tiny(data, tmp_path, "run", extra=["--epochs", "1"])
    capsys.readouterr()
    evaluate.main([str(run), "--quiet", "--data", str(data)])
    assert "warning" not in capsys.readouterr().err
    image = data / "train" / "Image_2.jpg"
    image.write_bytes(image.read_bytes()[:-2] + b"\x00\xd9")  # a changed picture
    evaluate.main([str(run), "--quiet", "--data", str(data)])
    assert "changed since run was trained" in capsys.readouterr().err
    train.main(["--model", "custom_cnn", "--data", str(data), "--out", str(tmp_path), "--name", "run", "--resume",
                "--epochs", "2", "--quiet", "--workers", "0"])
    assert "warning: the data changed since this run started" in capsys.readouterr().out


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="../shared/data/sports15 not present")
def test_efficientnet_lite0_from_offline_weights_learns_sports15(tmp_path):
    """Real learning, not plumbing: a linear probe (the head only) on real photos, on the frozen trunk's features
    computed once (--cached-views 1) as a CPU user would train it."""
    run_dir = train.main(["--model", "efficientnet_lite0", "--data", str(SPORTS15), "--out", str(tmp_path),
                          "--recipe", "linear_probe", "--pretrained", "offline", "--epochs", "3",
                          "--quiet", "--workers", "1", "--cached-views", "1", "--embed", "false"])
    history = json.loads((run_dir / "history.json").read_text())
    assert max(h["val_accuracy"] for h in history) >= 0.80, history


@pytest.mark.parametrize("bn_frozen", [True, False])
def test_bn_frozen_keeps_every_batch_norm_statistic_while_the_weights_train(tmp_path, kaggle_data, bn_frozen):
    run = train_tiny(kaggle_data, tmp_path, f"bn_{bn_frozen}", extra=["--bn-frozen", str(bn_frozen).lower()])
    trained = safetensors.torch.load_file(run / "checkpoint" / "last.safetensors")
    train.seed_everything(0)  # the run's own initialisation
    initial = REGISTRY["custom_cnn"].build(3).state_dict()
    statistics = [k for k in initial if k.endswith(("running_mean", "running_var"))]
    assert statistics and not torch.equal(initial["classifier.1.weight"], trained["model.classifier.1.weight"])
    unchanged = [torch.equal(initial[k], trained[f"model.{k}"]) for k in statistics]
    assert all(unchanged) if bn_frozen else not any(unchanged)


def test_bf16_precision_trains_in_bfloat16_on_the_cpu_and_the_card_says_so(tmp_path, kaggle_data):
    recipe = REGISTRY["custom_cnn"].recipe
    cpu = train.Processes(world=1, rank=0, device="cpu")
    layer = torch.nn.Linear(4, 3)
    for precision, dtype in (("bf16", torch.bfloat16), ("auto", torch.float32), ("fp32", torch.float32)):
        with train.autocast_for(recipe.replace(precision=precision), cpu):
            assert layer(torch.ones(2, 4)).dtype == dtype, precision
    runs = {p: train_tiny(kaggle_data, tmp_path, p, extra=["--epochs", "1", "--precision", p]) for p in ("bf16", "fp32")}
    assert artifacts.open_run(runs["bf16"]).card["recipe"]["precision"] == "bf16"
    weights = {p: safetensors.torch.load_file(run / "model.safetensors") for p, run in runs.items()}
    assert {w.dtype for w in weights["bf16"].values() if w.is_floating_point()} == {torch.float32}  # master weights
    # the same seed and data: only the step's arithmetic differs, so the weights do
    assert any(not torch.equal(weights["bf16"][k], weights["fp32"][k]) for k in weights["fp32"])
    with pytest.raises(SystemExit, match="--precision must be one of auto, bf16, fp32, not 'fp8'"):
        train_tiny(kaggle_data, tmp_path, "fp8", extra=["--precision", "fp8"])


def test_cached_views_of_students_that_differ_only_in_crop_pct_are_shared_under_a_random_resized_crop():
    custom = {"input_size": (3, 128, 128), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
              "crop_pct": 1.0, "interpolation": "bilinear"}
    resnet = custom | {"crop_pct": 224 / 232}
    assert train.pixel_config(custom, "rrc,flip,randaugment") == train.pixel_config(resnet, "rrc,flip,randaugment")
    assert train.pixel_config(custom, "rrc,flip")["input_size"] == [3, 128, 128]
    # without the random crop, crop_pct decides the centre crop: the views differ and so must the caches
    assert train.pixel_config(custom, "flip,color") != train.pixel_config(resnet, "flip,color")
    assert train.pixel_config(custom | {"interpolation": "bicubic"}, "rrc") != train.pixel_config(custom, "rrc")
    clip = custom | {"frames": 16}  # a clip's random crop follows a resize by crop_pct: there it makes pixels
    assert train.pixel_config(clip, "rrc,flip")["crop_pct"] == 1.0
    # and the key the training's views are kept under (what training_views hands the cache) is the same one
    import dataclasses
    from types import SimpleNamespace
    from har_core.models.registry import REGISTRY
    from har_core.training import view_cache
    keys = []

    def key_of(data_config, augment):
        recipe = dataclasses.replace(REGISTRY["custom_cnn"].recipe, augment=augment, cached_views=2)
        index = SimpleNamespace(fingerprint=lambda: "the same pictures", root=ROOT)
        manifest = pd.DataFrame({"filename": ["a.jpg", "b.jpg"], "label": ["x", "y"], "split": "train"})
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(view_cache, "build", lambda spec, *args: keys.append(spec.key) or (None, None))
            train.training_views(torch.nn.Linear(1, 1), SimpleNamespace(trunk=None), recipe, index, manifest,
                                 ["x", "y"], data_config, 0, None, 0, False)
        return keys[-1]
    assert key_of(custom, "rrc,flip,randaugment") == key_of(resnet, "rrc,flip,randaugment")
    assert key_of(custom, "flip,color") != key_of(resnet, "flip,color")
