"""Class activation maps: right numbers, right class, never built from another visitor's forward pass."""
import dataclasses
import threading
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from conftest import CLASSES, synthetic_image, train_tiny
from har_core.explain import cam
from har_core.models.artifacts import Run
from har_core.explain.cam import CLASS_AGNOSTIC, METHODS, SLOW_METHODS, class_maps, explain, overlay
from har_core.explain.slots import Busy, SlowSlots
from har_core.data.datasets import eval_transform
from har_core.models.inference import EmbeddingTap, LoadedModel, Network, load_run, logits_of, predict_all
from har_core.models.registry import build_model, get_spec


def reference_gradcam(loaded: LoadedModel, image, target: int) -> np.ndarray:
    """Grad-CAM by its definition, written out: ReLU(Σ_k mean(∂y_c/∂A_k) · A_k), upsampled, scaled to [0, 1]."""
    layer = loaded.model.get_submodule(get_spec(loaded.run.card["model"]).cam_layer)
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.update(a=o))
    try:
        batch = loaded.preprocess([image]).requires_grad_(True)
        score = logits_of(loaded.model(batch))[0, target]
        (grad,) = torch.autograd.grad(score, saved["a"])
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    heat = F.relu((weights * saved["a"]).sum(1, keepdim=True)).detach()
    heat = F.interpolate(heat, size=batch.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = heat - heat.min()
    return heat / heat.max() if heat.max() > 0 else heat


def random_model(name: str) -> LoadedModel:
    spec = get_spec(name)
    card = {"model": name, "classes": CLASSES, "mean": list(spec.mean), "std": list(spec.std), "name": name}
    torch.manual_seed(0)
    model = build_model(name, 3).eval().to(memory_format=torch.channels_last).requires_grad_(False)
    return LoadedModel(run=Run(path=None, card=card), network=Network.of(model, spec.embedding),
                       transform=eval_transform(spec.data_config(96)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, kaggle_data):
    """A custom CNN trained at 128 px, as the bundled one: its target layer (the last block) is a 4×4 map.
    (The shared tiny runs work at 32 px, where that layer is a single cell and every map is flat.)"""
    run = train_tiny(kaggle_data, tmp_path_factory.mktemp("cam"), "custom_cnn_128", extra=["--image-size", "128"])
    return load_run(run)


def test_gradcam_equals_its_definition_on_a_trained_run(tiny):
    image = synthetic_image(0, seed=3)
    for target in range(len(CLASSES)):
        result = explain(tiny, image, "Grad-CAM", target=target)
        expected = reference_gradcam(tiny, image, target)
        assert np.abs(result.heatmap - expected).max() < 2e-3, target


@pytest.mark.parametrize("name", ["inception_v3", "efficientnet_lite0", "vgg16", "mobilenet_v2"])
def test_gradcam_equals_its_definition_on_each_architecture(name):
    loaded = random_model(name)
    image = synthetic_image(1, seed=4, size=120)
    result = explain(loaded, image, "Grad-CAM", target=1)
    assert result.heatmap.shape == (96, 96)
    assert np.abs(result.heatmap - reference_gradcam(loaded, image, 1)).max() < 2e-3


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_map_that_follows_the_class_unless_it_is_class_agnostic(tiny, method):
    image = synthetic_image(0, seed=3)
    targets = range(2) if method in SLOW_METHODS else range(len(CLASSES))  # ScoreCAM: a forward per channel
    found = [explain(tiny, image, method, target=t) for t in targets]
    maps = [result.heatmap for result in found]
    assert all(m.shape == (128, 128) and m.min() >= 0 and m.max() <= 1 for m in maps)
    assert max(m.std() for m in maps) > 0.05  # a map, not a flat field
    differs = max(np.abs(maps[0] - m).max() for m in maps[1:])
    if method in CLASS_AGNOSTIC:
        assert differs < 1e-6  # EigenCAM: the same map for every class, as the page says
    else:
        assert differs > 0.05
    assert [result.target for result in found] == list(targets)
    blended = np.asarray(overlay(found[1], 1.0), dtype=float)
    assert blended.shape == (128, 128, 3) and blended.std() > 1  # opacity 1: the coloured map itself


def test_gradcam_is_unaffected_by_predictions_running_beside_it(tiny):
    """The shared model predicts other images in two threads while Grad-CAMs are computed: every heatmap
    equals the one computed alone (before the fix, about a third differed)."""
    image = synthetic_image(0, seed=3)
    alone = explain(tiny, image).heatmap
    others = [synthetic_image(i % 3, seed=100 + i) for i in range(4)]
    stop, errors = threading.Event(), []

    def predict_in_a_loop():
        try:
            while not stop.is_set():
                predict_all([tiny], others)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
    threads = [threading.Thread(target=predict_in_a_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        differences = [np.abs(explain(tiny, image).heatmap - alone).max() for _ in range(30)]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert max(differences) < 1e-5, differences


def test_loaded_models_never_accumulate_weight_gradients(tiny):
    explain(tiny, synthetic_image(1, seed=5), "Grad-CAM")
    assert all(p.grad is None and not p.requires_grad for p in tiny.model.parameters())


def test_slow_methods_are_bounded_server_wide():
    slots = SlowSlots(slots=1, wait_s=0.05)
    with slots:
        with pytest.raises(Busy, match="try again"):
            with slots:
                pass
    with slots:  # released: free again
        pass


def test_scorecam_waits_for_a_free_slot(tiny, monkeypatch):
    monkeypatch.setattr(cam, "SLOW_SLOTS", SlowSlots(slots=1, wait_s=0.05))
    with cam.SLOW_SLOTS:
        with pytest.raises(Busy):
            explain(tiny, synthetic_image(0, seed=3), "ScoreCAM")
        explain(tiny, synthetic_image(0, seed=3), "Grad-CAM")  # fast methods never wait
    assert explain(tiny, synthetic_image(0, seed=3), "ScoreCAM").heatmap.std() > 0.05


@pytest.mark.parametrize("method", sorted(set(METHODS) - SLOW_METHODS))
def test_one_forward_pass_gives_every_class_the_map_the_library_computes_alone(tiny, method):
    """The page's maps of every class (one forward, a small backward per class) equal pytorch-grad-cam's own
    run for each class (a forward and a full backward each), so switching the class needs no forward."""
    image = synthetic_image(0, seed=3)
    forwards = []
    handle = tiny.model.register_forward_hook(lambda module, args, output: forwards.append(1))
    try:
        maps = class_maps(tiny, image, method)
    finally:
        handle.remove()
    assert len(forwards) == 1
    targets = [None] if method in CLASS_AGNOSTIC else list(range(len(CLASSES)))
    assert sorted(maps.heatmaps) == ([maps.predicted] if method in CLASS_AGNOSTIC else targets)
    for target in targets:
        with METHODS[method](model=cam._LogitsOnly(tiny.model), target_layers=[cam.cam_layer(tiny)]) as library:
            batch = tiny.preprocess([image]).requires_grad_(True)
            expected = library(input_tensor=batch, targets=[ClassifierOutputTarget(target or 0)])[0]
        assert np.abs(maps.explanation(target).heatmap - expected).max() < 1e-4, target
    assert maps.explanation().target == int(tiny.predict([image])[0].argmax())


def test_a_slow_method_computes_only_the_class_asked_for(tiny):
    maps = class_maps(tiny, synthetic_image(0, seed=3), "ScoreCAM", classes=[2])
    assert list(maps.heatmaps) == [2] and maps.explanation(2).heatmap.std() > 0.05
    with pytest.raises(KeyError, match="no map of class 1"):
        maps.explanation(1)


def test_a_map_is_drawn_over_the_whole_picture_with_the_models_crop_outlined(tiny):
    """#25.8: a non-square photo keeps its shape; the model's square lies where timm's eval transform cut it
    (checked on a picture whose colours encode their coordinates) and the rest is dimmed."""
    width, height = 240, 150
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    coded = Image.fromarray(np.dstack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 128)])
                            .astype(np.uint8))
    result = explain(tiny, coded, "Grad-CAM")
    card = tiny.run.card
    left, top, right, bottom = cam.crop_box(coded.size, card["input_size"], card["crop_pct"])
    view = np.asarray(result.view, dtype=float)
    assert abs(view[0, 0, 0] - left * 255 / (width - 1)) < 4 and abs(view[0, 0, 1] - top * 255 / (height - 1)) < 4
    assert abs(view[-1, -1, 0] - right * 255 / (width - 1)) < 4
    assert abs(view[-1, -1, 1] - bottom * 255 / (height - 1)) < 4
    drawn = np.asarray(cam.overlay_on_picture(result, coded, card["input_size"], card["crop_pct"], opacity=0.0))
    assert drawn.shape == (height, width, 3)
    original = np.asarray(coded)
    assert np.abs(drawn[:, :int(left) - 1].astype(int) - (0.45 * original[:, :int(left) - 1]).astype(int)).max() <= 1
    centre = drawn[height // 2 - 10:height // 2 + 10, width // 2 - 10:width // 2 + 10]
    assert np.abs(centre.astype(int) - original[height // 2 - 10:height // 2 + 10,
                                                width // 2 - 10:width // 2 + 10]).max() <= 1  # opacity 0: the photo
    assert (drawn[height // 2, int(round(left))] == 255).all()  # the white outline of the crop


class TopLeftOnly(torch.nn.Module):
    """Class 0's logit is the mean of the top-left quarter of the input, every other logit 0: only that quarter
    matters, so covering it (and nothing else) lowers class 0's probability."""

    def forward(self, x):
        side = x.shape[-1] // 2
        score = 4 * x[:, :, :side, :side].mean(dim=(1, 2, 3))
        return torch.cat([score[:, None], torch.zeros(len(x), len(CLASSES) - 1)], dim=1)


def test_occlusion_marks_the_only_part_of_the_picture_the_model_uses(tiny_runs):
    from har_core.explain.cam import OCCLUSION, occlusion_window
    loaded = load_run(tiny_runs / "custom_cnn", backend="pytorch")  # 32 px input: a 5-px patch, 2 px apart
    loaded = dataclasses.replace(loaded, network=Network.of(TopLeftOnly()))
    assert occlusion_window(32) == (5, 2) and occlusion_window(224) == (32, 16) and occlusion_window(299) == (43, 21)
    picture = Image.new("RGB", (32, 32), "white")  # bright everywhere: positive after normalisation
    maps = class_maps(loaded, picture, OCCLUSION, classes=[0])
    heat = maps.heatmaps[0]
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0)
    assert heat[:12, :12].min() > 0.5  # inside the quarter: every patch there lowers class 0
    assert heat[21:, :].max() == 0 and heat[:, 21:].max() == 0  # patches that miss the quarter change nothing
    assert maps.probs.argmax() == 0 and OCCLUSION in SLOW_METHODS
    assert explain(loaded, picture, OCCLUSION).target == 0  # the predicted class by default


BUNDLED = [run for folder in ("runs", "runs_har") for run in
           sorted((Path(__file__).resolve().parents[1] / "assets" / folder).glob("*/card.json"))]


@pytest.mark.skipif(not BUNDLED, reason="the bundled runs (assets/) are not here")
@pytest.mark.parametrize("card", BUNDLED, ids=[f"{c.parent.parent.name}/{c.parent.name}" for c in BUNDLED])
def test_scorecam_works_on_a_layer_after_the_activation(card):
    """#40.2: ScoreCAM sums a layer's channels weighted by positive scores, then keeps what is above zero. On the
    EfficientNets' conv_head (raw values before their batch norm, -29…20 on a HAR photo) that sum was below zero
    almost everywhere: a blank map after 61–88 s. On each bundled (trained) run, the layer it works on must be an
    activation's output (ReLU and ReLU6 give no negative value, SiLU none below -0.2785)."""
    loaded = load_run(card.parent, backend="pytorch")
    layer = loaded.model.get_submodule(cam.layer_for(loaded, "ScoreCAM"))
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output.detach()))
    try:
        loaded.predict([synthetic_image(1, seed=4, size=120)])
    finally:
        handle.remove()
    assert seen[0].min() >= -0.2785, f"ScoreCAM's layer holds values down to {seen[0].min():.2f}"


class BelowZero(torch.nn.Module):
    """A network whose last block's output is -1 everywhere: every class activation map of it is zero."""

    def __init__(self):
        super().__init__()
        raw = torch.nn.Conv2d(3, 4, 1)
        torch.nn.init.zeros_(raw.weight)
        torch.nn.init.constant_(raw.bias, -1.0)
        self.features = torch.nn.Sequential(*[torch.nn.Identity()] * 4, raw)
        self.classifier = torch.nn.Linear(4, len(CLASSES))

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x)).mean(dim=(2, 3)))


def test_an_empty_map_is_marked_so_a_page_says_so_instead_of_drawing_it(tiny_runs, tiny):
    """#40.2: no method may show an all-zero map as its answer."""
    loaded = tiny_runs_model(tiny_runs)
    loaded = dataclasses.replace(loaded, network=Network.of(BelowZero().eval()))
    picture = synthetic_image(0, seed=3, size=64)
    for method in ("Grad-CAM", "ScoreCAM"):
        empty = explain(loaded, picture, method, target=0)
        assert not empty.heatmap.any() and empty.empty, method
    assert not explain(tiny, picture, "Grad-CAM", target=0).empty


def tiny_runs_model(tiny_runs) -> LoadedModel:
    return load_run(tiny_runs / "custom_cnn", backend="pytorch")


def test_occlusion_maps_every_class_from_one_pass_as_captum_maps_each(tiny_runs):
    """#40: switching Occlusion's class recomputed it (51.6 s): the occluded pictures' forwards give every class's
    drop at once (Captum with no target), so a switch picks a computed map; each equals Captum's map of that class."""
    from captum.attr import Occlusion
    from har_core.explain.cam import OCCLUSION, occlusion_window
    loaded = tiny_runs_model(tiny_runs)
    picture = synthetic_image(1, seed=5, size=64)
    maps = class_maps(loaded, picture, OCCLUSION)
    assert sorted(maps.heatmaps) == list(range(len(CLASSES)))
    batch = loaded.preprocess([picture])
    window, stride = occlusion_window(batch.shape[-1])
    occlusion = Occlusion(lambda x: logits_of(loaded.model(x)).float().softmax(1))
    for target in range(len(CLASSES)):
        with torch.inference_mode():
            drop = occlusion.attribute(batch, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                       baselines=0.0, target=target)[0].sum(0).clamp(min=0)
        expected = (drop / drop.max() if drop.max() > 0 else drop).numpy()
        assert np.abs(maps.heatmaps[target] - expected).max() < 1e-4, target  # batched forwards round apart
