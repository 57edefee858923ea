"""Broken run folders, interrupted training and crashes while saving: clear errors, nothing lost."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch

from conftest import ROOT, TINY_FLAGS
from har_core.models import artifacts
from har_core.data import fileio
from har_core.models.artifacts import RunError, find_runs, open_run
from har_core.models.inference import load_run
from train.train import check_output_folder


def edit_card(run_dir, **changes):
    card = json.loads((run_dir / "card.json").read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    (run_dir / "card.json").write_text(json.dumps(card))


def test_truncated_weights_name_the_run_and_the_others_still_load(tiny_runs, tmp_path):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    weights = runs / "mobilenet_v2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RunError, match=r"mobilenet_v2: weights file model.safetensors is corrupt or truncated"):
        load_run(runs / "mobilenet_v2")
    found, failures = find_runs(runs)
    assert load_run(next(r for r in found if r.name == "custom_cnn")).predict  # the other run is fine


@pytest.mark.parametrize("change, message", [
    ({"model": "resnet50"}, "weights do not fit the architecture"),
    ({"model": "alexnet"}, "unknown architecture 'alexnet'"),
    ({"classes": ["a", "b", "c", "d"]}, "weights do not fit the architecture"),
])
def test_cards_that_do_not_match_the_weights_are_clear_errors(tiny_runs, copy_of, change, message):
    run_dir = copy_of(tiny_runs / "custom_cnn")
    edit_card(run_dir, **change)
    with pytest.raises(RunError, match=message):
        load_run(run_dir)


@pytest.mark.parametrize("change, message", [
    ({"classes": None}, "lacks the field 'classes'"),
    ({"input_size": "big"}, "'input_size' should be int"),
    ({"classes": ["a", "a"]}, "distinct names"),
    ({"std": [0, 1, 1]}, "std"),
    ({"input_size": 100000}, "out of range"),
])
def test_missing_or_malformed_card_fields(tiny_runs, copy_of, change, message):
    run_dir = copy_of(tiny_runs / "custom_cnn")
    edit_card(run_dir, **change)
    found, failures = find_runs(run_dir.parent)
    assert not found and failures[0][0] == "custom_cnn" and message in failures[0][1]


def test_metrics_computed_for_other_classes_are_refused(tiny_runs, copy_of):
    run_dir = copy_of(tiny_runs / "custom_cnn")
    metrics = json.loads((run_dir / "metrics_test.json").read_text())
    metrics["classes"] = ["x", "y", "z"]
    (run_dir / "metrics_test.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="other classes than the card's"):
        open_run(run_dir).metrics("test")


def test_files_inside_a_run_cannot_point_outside_it(tiny_runs, copy_of, tmp_path):
    run_dir = copy_of(tiny_runs / "custom_cnn")
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes((run_dir / "model.safetensors").read_bytes())
    (run_dir / "model.safetensors").unlink()
    os.symlink(secret, run_dir / "model.safetensors")
    with pytest.raises(RunError, match="points outside the run folder"):
        load_run(run_dir)


def test_a_crash_while_saving_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "card.json"
    fileio.write_json(target, {"version": 1})

    def crash(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        fileio.write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_a_full_disk_is_reported_before_training(tmp_path):
    with pytest.raises(SystemExit, match="MB free"):
        check_output_folder(tmp_path / "run", needed_bytes=10**18)


def test_kill_9_during_training_then_resume_gives_the_uninterrupted_result(tmp_path, kaggle_data):
    base = [sys.executable, "-m", "train.train", "--model", "custom_cnn", "--data", str(kaggle_data),
            "--out", str(tmp_path), *TINY_FLAGS, "--epochs", "6", "--image-size", "48"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(base + ["--name", "straight"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)

    victim = subprocess.Popen(base + ["--name", "killed"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = tmp_path / "killed" / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (history.exists() and len(json.loads(history.read_text())) >= 2):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # somewhere inside epoch 3
    victim.wait()
    done = len(json.loads(history.read_text()))
    assert 2 <= done < 6, "the kill should land mid-run"
    subprocess.run([sys.executable, "-m", "train.train", "--model", "custom_cnn", "--data", str(kaggle_data),
                    "--out", str(tmp_path), "--name", "killed", "--resume", "--quiet", "--workers", "0"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    a = safetensors.torch.load_file(tmp_path / "straight" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "killed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "straight" / "metrics_test.json").read_text())["accuracy"] == \
        json.loads((tmp_path / "killed" / "metrics_test.json").read_text())["accuracy"]
