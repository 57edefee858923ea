"""train.har_bundle decides, per run, whether to train from the start, resume or skip, and waits for teachers."""
import json

from har_core.models import artifacts
from train import har_bundle
from train.har_bundle import bundle_run, finished, train_command


def write_card(run_dir, epochs_trained, with_test=True, last_val=0.5):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.json").write_text(json.dumps([{"epoch": epochs_trained, "val_accuracy": last_val}]))
    metrics = {"val": {"accuracy": 0.5}} | ({"test": {"accuracy": 0.5}} if with_test else {})
    (run_dir / artifacts.CARD).write_text(json.dumps({"epochs_trained": epochs_trained, "metrics": metrics}))


def test_a_run_is_finished_only_with_all_its_epochs_and_a_test_figure(tmp_path):
    run = bundle_run("custom_cnn")
    assert not finished(tmp_path / "custom_cnn", run)
    write_card(tmp_path / "custom_cnn", run.epochs - 1)
    assert not finished(tmp_path / "custom_cnn", run)
    write_card(tmp_path / "custom_cnn", run.epochs, with_test=False)
    assert not finished(tmp_path / "custom_cnn", run)
    write_card(tmp_path / "custom_cnn", run.epochs)
    assert finished(tmp_path / "custom_cnn", run)


def test_a_stopped_run_resumes_and_a_new_one_gets_its_recipe_and_teachers(tmp_path):
    run = bundle_run("custom_cnn_taught")
    fresh = train_command(run, "DATA", tmp_path, tmp_path / "split.csv", "cpu")
    assert "--resume" not in fresh
    assert fresh[fresh.index("--teacher") + 1] == f"{tmp_path / 'efficientnet_lite2'},{tmp_path / 'efficientnet_lite1'}"
    assert fresh[fresh.index("--cached-views") + 1] == "4" and fresh[fresh.index("--image-size") + 1] == "128"
    assert fresh[fresh.index("--split") + 1] == str(tmp_path / "split.csv")
    checkpoint = tmp_path / run.name / artifacts.CHECKPOINT_DIR
    checkpoint.mkdir(parents=True)
    (checkpoint / "last.safetensors").write_bytes(b"")
    resumed = train_command(run, "DATA", tmp_path, tmp_path / "split.csv", "cpu")
    # the recipe is the stopped run's own (on its card): only the epochs are said again
    assert "--resume" in resumed and "--teacher" not in resumed and "--lr" not in resumed
    assert resumed[resumed.index("--epochs") + 1] == str(run.epochs)


def test_a_student_waits_for_unfinished_teachers_and_trains_nothing(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "split.csv").write_text("filename,label,split\n")
    called = []
    monkeypatch.setattr(har_bundle, "run_module", lambda module, argv: called.append(module))
    write_card(tmp_path / "runs" / "efficientnet_lite2", bundle_run("efficientnet_lite2").epochs)  # Lite1 unfinished
    assert har_bundle.main(["--data", str(data), "--out", str(tmp_path / "runs"), "--split", str(tmp_path / "split.csv"),
                            "--only", "custom_cnn_taught"]) == 0
    assert called == []
    assert "custom_cnn_taught: waits for its teachers efficientnet_lite1" in capsys.readouterr().out


def test_of_two_finished_rivals_only_the_better_on_val_is_shipped(tmp_path):
    plain, taught = bundle_run("custom_cnn"), bundle_run("custom_cnn_taught")
    assert taught.rival == "custom_cnn"
    write_card(tmp_path / "custom_cnn", plain.epochs, last_val=0.46)
    assert har_bundle.without_beaten_rivals(tmp_path, ["custom_cnn"]) == ["custom_cnn"]  # the rival is unfinished
    write_card(tmp_path / "custom_cnn_taught", taught.epochs, last_val=0.41)
    assert har_bundle.without_beaten_rivals(tmp_path, ["custom_cnn", "custom_cnn_taught"]) == ["custom_cnn"]
    write_card(tmp_path / "custom_cnn_taught", taught.epochs, last_val=0.58)
    assert har_bundle.without_beaten_rivals(tmp_path, ["custom_cnn", "custom_cnn_taught"]) == ["custom_cnn_taught"]


def test_every_bundle_recipe_starts_from_weights_found_offline():
    # resnet50's recipe left its start to the model's default, the ImageNet download: offline it failed when the
    # run began. The bundle is rebuilt without a network: each run names a start that needs none
    from har_core.models.registry import REGISTRY
    for run in har_bundle.RUNS:
        start = run.recipe.get("pretrained") or REGISTRY[run.model].default_pretrained
        assert start in ("none", "offline"), f"{run.name} starts from {start}"
