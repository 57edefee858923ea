"""Inside the network: the registry's stages, one forward recording each of them, measured receptive fields,
the first layer's filters as tiles."""
import threading

import numpy as np
import pytest
import torch

from conftest import synthetic_image
from har_core.models.inference import load_run
from har_core.explain.inside import StageTap, filter_tiles, first_conv, receptive_fields, stage_activations
from har_core.models.registry import REGISTRY

IMAGE_MODELS = [name for name, spec in REGISTRY.items() if not spec.frames]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_image_architecture_names_stages_that_one_forward_records(name):
    spec = REGISTRY[name]
    labels, modules = zip(*spec.stages)
    assert len(set(labels)) == len(labels) >= 4
    model = spec.build(3).eval()
    tap = StageTap(model, list(modules))
    size = max(spec.input_size // 2, 96)  # half size keeps the test quick; InceptionV3 needs 75 px at least
    with torch.no_grad(), tap.capture() as captured:
        model(torch.randn(1, 3, size, size))
    assert list(captured) == list(modules)  # every stage, in forward order
    sides = [captured[m].shape[-1] for m in modules]
    assert sides == sorted(sides, reverse=True) and sides[0] > sides[-1]  # the picture shrinks stage by stage
    head_input = model.get_submodule(spec.embedding)
    linear = next(m for m in head_input.modules() if isinstance(m, torch.nn.Linear)) \
        if not isinstance(head_input, torch.nn.Linear) else head_input
    assert captured[modules[-1]].shape[1] == linear.in_features  # the last stage is what the head pools
    inside = dict(captured)
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    assert all(captured[m] is inside[m] for m in modules)  # outside capture() nothing more is recorded


def test_measured_receptive_fields_equal_the_published_ones():
    vgg = receptive_fields("vgg16", 224)
    assert [vgg[m] for _, m in REGISTRY["vgg16"].stages] == [6, 16, 44, 100, 212]  # the VGG paper's arithmetic
    resnet = receptive_fields("resnet50", 224)
    assert [resnet[m] for m in ("maxpool", "layer1", "layer2")] == [11, 35, 91]
    assert resnet["layer4"] == 224  # 427 in theory: at most the picture
    cnn = receptive_fields("custom_cnn", 256)  # conv 3×3 + pool 2, five times: 4, 10, 22, 46, 94
    assert [cnn[m] for _, m in REGISTRY["custom_cnn"].stages] == [4, 10, 22, 46, 94]


def test_stage_activations_of_a_trained_run_stay_its_own_while_another_thread_predicts(tiny_runs):
    loaded = load_run(tiny_runs / "custom_cnn", backend="pytorch")  # the other thread's forwards share the network
    picture = synthetic_image(0, seed=5, size=64)
    alone = stage_activations(loaded, picture)
    assert [s.label for s in alone] == [label for label, _ in REGISTRY["custom_cnn"].stages]
    assert loaded.run.card["input_size"] == 32  # a tiny run: the deep stages' fields are cut to the picture
    assert [s.receptive_field for s in alone] == [4, 10, 22, 31, 32]
    assert alone[0].shape[0] == 32 and alone[-1].shape[0] == 512
    others = [synthetic_image(i % 3, seed=100 + i, size=64) for i in range(8)]
    stop, passes = threading.Event(), []

    def predict_others():
        while not stop.is_set():
            loaded.predict(others)
            passes.append(1)
    thread = threading.Thread(target=predict_others)
    thread.start()
    try:
        together = []
        while len(passes) < 20 or len(together) < 5:  # both threads kept going all along
            together.append(stage_activations(loaded, picture))
    finally:
        stop.set()
        thread.join()
    for stages in together:
        for lone, now in zip(alone, stages):
            np.testing.assert_allclose(now.activations, lone.activations, rtol=1e-5, atol=1e-6)
    top = alone[2].top_channels(4)
    means = alone[2].activations.mean(axis=(1, 2))
    assert list(top) == list(np.argsort(-means)[:4]) and means[top[0]] == means.max()


def test_first_layer_filters_become_tiles_that_show_their_colour_and_sign():
    conv = torch.nn.Conv2d(3, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 2.0  # filter 0: likes red at its centre
        conv.weight[1, 2, :, 0] = -0.5  # filter 1: dislikes blue on its left column
    tiles = filter_tiles(conv)
    assert tiles.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(tiles[0, 1, 1], [1.0, 0.5, 0.5])  # strongest weight: full red over grey
    np.testing.assert_allclose(tiles[0, 0, 0], [0.5, 0.5, 0.5])  # zero weights: mid-grey
    np.testing.assert_allclose(tiles[1, :, 0], [[0.5, 0.5, 0.0]] * 3)  # negative: below grey
    for name in IMAGE_MODELS:
        assert first_conv(REGISTRY[name].build(3)).in_channels == 3


def test_channel_tops_rank_the_training_pictures_as_each_picture_alone_would(tiny_runs, kaggle_data, copy_of):
    from har_core.explain.channels import CHANNELS, ChannelError, channel_maps, channel_regions, load_channel_tops
    from har_core.data.imaging import load_image
    from train import embed
    run_dir = copy_of(tiny_runs / "custom_cnn")
    loaded = load_run(run_dir, backend="pytorch")
    with pytest.raises(ChannelError, match="no channel tops yet; compute them with `python -m train.embed"):
        load_channel_tops(loaded.run)
    embed.main([str(run_dir), "--data", str(kaggle_data), "--channels", "--quiet", "--batch-size", "5"])
    tops = load_channel_tops(loaded.run)
    manifest = loaded.run.manifest()
    assert tops.files == list(manifest.loc[manifest["split"] == "train", "filename"])  # training pictures only
    label, module = REGISTRY["custom_cnn"].stages[2]
    pictures = [load_image(kaggle_data / f) for f in tops.files]
    # each picture alone, batch of one: its strongest response per channel, then ranked by hand
    alone = np.stack([s.activations.max(axis=(1, 2)) for p in pictures
                      for s in stage_activations(loaded, p) if s.module == module])
    for channel in (0, 7, 31):
        ranked = tops.top(module, channel)
        expected = np.sort(alone[:, channel])[::-1][:len(ranked)]
        np.testing.assert_allclose([score for _, score in ranked], expected, rtol=2e-3, atol=1e-3)
        best = tops.files.index(ranked[0][0])
        assert alone[best, channel] == pytest.approx(alone[:, channel].max(), rel=2e-3)
    assert len(tops.top(module, 0)) == 8 and {m for _, m in REGISTRY["custom_cnn"].stages} == set(tops.rows)
    # the maps shown are the ones ranked: their raw maxima are the stored scores, best first
    channel = 7
    ranked = tops.top(module, channel, 3)
    maps = channel_maps(loaded, [load_image(kaggle_data / f) for f, _ in ranked], module, channel)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), [s for _, s in ranked], rtol=2e-3, atol=1e-3)
    shown = channel_regions(loaded, [load_image(kaggle_data / f) for f, _ in ranked], module, channel)
    assert len(shown) == 3 and all(p.mode == "RGB" and max(p.size) <= 320 for p in shown)
    # one scale for all: the best picture looks the same alone; a weaker one alone is scaled up to its own peak
    best_alone = channel_regions(loaded, [load_image(kaggle_data / ranked[0][0])], module, channel)[0]
    weak_alone = channel_regions(loaded, [load_image(kaggle_data / ranked[2][0])], module, channel)[0]
    assert np.array_equal(np.asarray(best_alone), np.asarray(shown[0]))
    assert ranked[2][1] < ranked[0][1] and not np.array_equal(np.asarray(weak_alone), np.asarray(shown[2]))
    # other weights: refused, not shown
    (run_dir / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes() + b" ")
    with pytest.raises(ChannelError, match="other weights"):
        load_channel_tops(loaded.run)
    (run_dir / CHANNELS).write_bytes(b"not a safetensors file")
    with pytest.raises(ChannelError, match="corrupt"):
        load_channel_tops(loaded.run)
