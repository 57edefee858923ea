"""3D-CNN clip models: the registry entries, clip data (windows, jitter, one crop per clip), training and
evaluation through the same commands and run folders, and a task only temporal modelling can solve."""
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from streamlit.testing.v1 import AppTest

from conftest import ROOT, encode_clip, moving_square_clip, write_folder_dataset
from har_core.models import pretrained
from har_core.evaluation.analysis import mistakes
from har_core.models.artifacts import open_run
from har_core.data.datasets import ClipDataset, ClipTransform, DataError, eval_transform, scan, train_transform
from har_core.models.inference import load_run
from har_core.models.pretrained import load_pretrained
from har_core.models.registry import KINETICS_MEAN, build_model, get_spec
from har_core.data.video import Clip
from test_app import open_page
from train import evaluate, predict, predict_video, train


def test_c3d_small_is_four_conv3d_blocks_that_keep_time_in_the_first_pool():
    model = build_model("c3d_small", 4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool3d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256] and all(c.kernel_size == (3, 3, 3) for c in convs)
    assert [p.kernel_size for p in pools] == [(1, 2, 2), 2, 2, 2]
    assert model(torch.randn(2, 3, 16, 112, 112)).shape == (2, 4)


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_torchvision_video_entries_take_their_preprocessing_from_the_kinetics_weights(name):
    spec = get_spec(name)
    preset = torchvision.models.get_weight(spec.hub.split(":")[1]).transforms()
    config = spec.data_config()
    assert config["input_size"] == (3, 112, 112) and config["frames"] == 16
    assert config["mean"] == tuple(preset.mean) == KINETICS_MEAN and config["crop_pct"] == 112 / 128


def test_kinetics_weights_load_through_the_hub_path_with_a_new_head(tmp_path, monkeypatch):
    """The real download needs a network; the fetch hands over a 400-class file the test wrote."""
    torch.manual_seed(0)
    source = torchvision.models.video.r3d_18(num_classes=400).eval()
    path = tmp_path / "r3d_18.pth"
    torch.save(source.state_dict(), path)
    monkeypatch.setattr(pretrained, "fetch", lambda ident: path)
    model = build_model("r3d_18", 4).eval()
    assert load_pretrained(model, get_spec("r3d_18"), "hub").startswith("hub")
    clip = torch.randn(1, 3, 8, 32, 32)
    body = lambda m: torch.nn.Sequential(*list(m.children())[:-1])(clip).flatten(1)  # noqa: E731
    with torch.no_grad():
        assert torch.allclose(body(model), body(source), atol=1e-5)
    assert model.fc.out_features == 4


def numbered_clip(n: int, size=(40, 60)) -> Clip:
    """Frame i is a flat grey of brightness 8·i, with a white bar on its left third."""
    frames = []
    for i in range(n):
        image = Image.new("RGB", size[::-1], (8 * i,) * 3)
        image.paste((255, 255, 255), (0, 0, size[1] // 3, size[0]))
        frames.append(image)
    return Clip(times=[i / 10 for i in range(n)], frames=frames, width=size[1], height=size[0], seconds=n / 10)


def frame_values(tensor: torch.Tensor) -> list[int]:
    """Undo the normalisation of a (3, T, H, W) clip; each frame's brightness at its right edge / 8."""
    mean = torch.tensor(KINETICS_MEAN)[:, None, None, None]
    std = torch.tensor(get_spec("c3d_small").std)[:, None, None, None]
    pixels = (tensor * std + mean) * 255
    return [round(v / 8) for v in pixels[0, :, pixels.shape[2] // 2, -1].tolist()]


def test_evaluation_takes_the_centre_window_and_training_a_random_one():
    config = get_spec("c3d_small").data_config(32)
    clip = numbered_clip(30)
    centre = eval_transform(config)(clip)
    assert centre.shape == (3, 16, 32, 32)
    assert frame_values(centre) == list(range(7, 23))  # 14 spare frames: the window starts at 7
    torch.manual_seed(0)
    starts = {frame_values(train_transform(config, "")(clip))[0] for _ in range(40)}
    assert len(starts) > 5 and starts <= set(range(15))
    short = eval_transform(config)(numbered_clip(5))
    assert frame_values(short) == [0, 1, 2, 3] + [4] * 12  # too short: the last frame repeats


def test_training_draws_one_crop_and_one_flip_for_the_whole_clip():
    transform = train_transform(get_spec("c3d_small").data_config(32), "rrc,flip")
    torch.manual_seed(1)
    for _ in range(10):
        tensor = transform(numbered_clip(16))
        bar_left = tensor[0, :, 16, :4].mean(1) > tensor[0, :, 16, -4:].mean(1)  # is the white bar on the left?
        assert bar_left.all() or not bar_left.any()  # every frame flipped alike
    with pytest.raises(ValueError, match="randaugment"):
        train_transform(get_spec("c3d_small").data_config(32), "flip,randaugment")


def test_a_clip_folder_is_scanned_and_broken_clips_are_reported(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    for direction in ("left", "right"):
        (tmp_path / direction).mkdir()
        for i in range(3):
            (tmp_path / direction / f"{i}.mp4").write_bytes(encode_clip(moving_square_clip(direction, rng)))
    (tmp_path / "left" / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "left" / "empty.webm").write_bytes(b"")
    index = scan(tmp_path, progress=False)
    assert index.layout == "clips" and index.classes == ["left", "right"] and len(index.samples) == 6
    assert {rel for rel, _ in index.problems} == {"left/broken.mp4", "left/empty.webm"}
    transform = eval_transform(get_spec("c3d_small").data_config(32))
    clip, label, _ = ClipDataset(tmp_path, ["right/0.mp4"], [1], transform)[0]
    assert clip.shape == (3, 16, 32, 32) and label == 1


def test_a_model_and_data_of_different_kinds_are_refused_before_training(tmp_path, moving_squares):
    images = write_folder_dataset(tmp_path / "images")
    with pytest.raises(SystemExit, match="c3d_small takes video clips but .* holds images"):
        train.main(["--model", "c3d_small", "--data", str(images), "--out", str(tmp_path / "runs"), "--quiet"])
    with pytest.raises(SystemExit, match="custom_cnn takes images but .* holds clips.*c3d_small, r3d_18"):
        train.main(["--model", "custom_cnn", "--data", str(moving_squares), "--out", str(tmp_path / "runs"),
                    "--quiet"])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("weights*"))


def test_only_temporal_modelling_tells_which_way_the_square_moves(square_runs):
    """c3d_small learns the direction of motion; custom_cnn, trained on the same clips' middle frames with the
    same recipe and split, sees a square somewhere and stays near chance (4 classes: 25%)."""
    clip_run, frame_run = open_run(square_runs / "c3d_small"), open_run(square_runs / "custom_cnn_frames")
    clip_accuracy = clip_run.card["metrics"]["val"]["accuracy"]
    frame_accuracy = frame_run.card["metrics"]["val"]["accuracy"]
    print(f"\nmoving squares, val accuracy: c3d_small {clip_accuracy:.3f}, custom_cnn on middle frames "
          f"{frame_accuracy:.3f}; test: {clip_run.card['metrics']['test']['accuracy']:.3f} vs "
          f"{frame_run.card['metrics']['test']['accuracy']:.3f}")
    assert clip_accuracy >= 0.9
    assert frame_accuracy <= 0.45
    assert clip_run.takes_clips and not frame_run.takes_clips and clip_run.card["frames"] == 16


def test_a_clip_run_is_evaluated_again_with_the_same_numbers_and_embedded(square_runs, moving_squares, tmp_path):
    import shutil
    run = shutil.copytree(square_runs / "c3d_small", tmp_path / "c3d_small")
    stored = open_run(run).predictions("val")
    metrics = evaluate.main([str(run), "--data", str(moving_squares), "--split", "val", "--quiet"])
    again = open_run(run).predictions("val")
    assert metrics["n"] == len(stored) == 24
    assert metrics["accuracy"] == pytest.approx(open_run(square_runs / "c3d_small").card["metrics"]["val"]["accuracy"])
    assert (again["predicted"] == stored["predicted"]).all()
    assert (again["confidence"] - stored["confidence"]).abs().max() < 1e-5
    loaded = load_run(run)
    assert isinstance(loaded.transform, ClipTransform)
    assert loaded.model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert open_run(run).has("embeddings.safetensors")


def test_the_photo_command_refuses_a_clip_run_and_the_video_command_takes_it(square_runs, moving_squares, tmp_path):
    clip = next(moving_squares.glob("left/*.mp4"))
    with pytest.raises(SystemExit, match="c3d_small is a clip model .* python -m train.evaluate"):
        predict.main([str(square_runs / "c3d_small"), str(clip.parent), "--out", str(tmp_path / "out.csv"), "--quiet"])
    assert not (tmp_path / "out.csv").exists()
    predict_video.main([str(square_runs / "c3d_small"), str(clip), "--fps", "4", "--out", str(tmp_path / "t.csv"),
                        "--quiet"])
    rows = pd.read_csv(tmp_path / "t.csv")
    assert len(rows) >= 4 and (rows["label"] == "left").mean() > 0.5  # a window per sampled time, motion seen


def test_a_torchvision_video_resnet_trains_and_evaluates_through_the_same_commands(tmp_path):
    from conftest import write_moving_squares
    clips = write_moving_squares(tmp_path / "clips", per_class=7)
    run = train.main(["--model", "r2plus1d_18", "--data", str(clips), "--out", str(tmp_path / "runs"),
                      "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--quiet",
                      "--embed", "false"])
    card = open_run(run).card
    assert card["model"] == "r2plus1d_18" and card["frames"] == 16 and card["pretrained"].startswith("none")
    assert len(open_run(run).predictions("test")) == card["split"]["counts"]["test"] == 5
    assert evaluate.main([str(run), "--split", "test", "--quiet"])["n"] == 5


def test_clip_models_join_the_timeline_with_a_window_centred_on_each_sampled_time(square_runs, moving_squares):
    """A clip run answers for the same moments as the image runs: one 16-frame window (its stride) per time."""
    import torch
    from har_core.models.inference import load_run
    from har_core.explain.timeline import timeline, window_clips
    from har_core.data.video import read_clip
    path = sorted((moving_squares / "right").glob("*.mp4"))[0]
    clips, frames = load_run(square_runs / "c3d_small"), load_run(square_runs / "custom_cnn_frames")
    clip = read_clip(path, fps=4)
    line = timeline([frames, clips], clip, source=path)
    assert set(line.probs) == {"custom_cnn_frames", "c3d_small", "ensemble"}
    assert line.probs["c3d_small"].shape == (len(clip.times), len(clips.classes))
    windows = window_clips(clips, path, clip.times)
    assert all(len(w.frames) == 16 for w in windows)
    middle = len(clip.times) // 2
    with torch.inference_mode():
        alone = clips.forward(clips.preprocess([windows[middle]]))[0][0]
    np.testing.assert_allclose(line.probs["c3d_small"][middle], alone, atol=1e-5)
    said = [clips.classes[i] for i in line.probs["c3d_small"].argmax(1)]
    assert said.count("right") > len(said) / 2  # it sees the motion
    assert "c3d_small" not in timeline([frames, clips], clip).probs  # no source: only the image models


# in this file, not test_app.py: the suite's processes take a file each, and the clip runs are built once per process
def test_clip_runs_show_on_the_result_pages_and_are_left_out_where_photos_go_in(square_runs, moving_squares,
                                                                                monkeypatch):
    """A 3D-CNN run (c3d_small on clips) beside an image run: Overview, Evaluate (clip thumbnails), Mistakes
    (the clip plays), Training and Embeddings show it; Predict and Explain name it and go on without it."""
    monkeypatch.setenv("HAR_RUNS", str(square_runs))
    monkeypatch.setenv("HAR_DATA", str(moving_squares))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["run"]) == ["c3d_small", "custom_cnn_frames"]
    assert any("No ensemble of these members" in c.value for c in at.caption)  # they predicted other files
    at = open_page(at, "predict")
    assert any("c3d_small: clip model (3D CNN)" in c.value for c in at.caption)
    assert at.multiselect(key="predict_models").options == ["custom_cnn_frames"]
    at.sidebar.multiselect(key="chosen_runs").set_value(["c3d_small"]).run()
    assert any("c3d_small: clip model" in i.value for i in at.info) and not at.exception
    at = open_page(at, "evaluate")
    assert len(at.image) >= 1 and all(c.endswith("%") for image in at.image for c in image.captions)
    at = open_page(at, "mistakes")
    wrong = mistakes({"c3d_small": open_run(square_runs / "c3d_small").predictions("test")})
    assert len(wrong) >= 1
    assert len(at.get("video")) == 1  # the chosen mistake plays as a clip
    at = open_page(at, "training")
    assert len(at.dataframe[0].value) >= 1
    at = open_page(at, "embeddings")
    assert not at.exception
    at.sidebar.multiselect(key="chosen_runs").set_value(["c3d_small", "custom_cnn_frames"]).run()
    at = open_page(at, "video")  # the clip model joins the timeline, a row of its own
    at.multiselect(key="video_models").set_value(["c3d_small", "custom_cnn_frames"]).run()
    picker = at.selectbox(key="video_pick")
    at = picker.set_value(next(o for o in picker.options if o.startswith("right/"))).run()
    assert not at.exception and not at.error
    chart = at.get("plotly_chart")[0].proto.spec
    assert "c3d_small" in chart and "custom_cnn_frames" in chart and "ensemble" in chart
    assert at.selectbox(key="video_cam_model").options == ["custom_cnn_frames"]  # Grad-CAM: the image model
