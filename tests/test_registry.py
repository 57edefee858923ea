import pytest
import torch
import torchvision
from torchvision.transforms.functional import pil_to_tensor

from har_core.data.datasets import eval_transform, train_transform
from har_core.models.inference import logits_of
from har_core.models.registry import IMAGENET_MEAN, IMAGENET_STD, REGISTRY, build_model, get_module, get_spec
from har_core.data.video import Clip


def test_torchvision_ops_nms_runs():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_the_group_models_and_offline_ones_are_registered():
    expected = {"custom_cnn", "efficientnet_b1", "efficientnet_b3", "vgg16", "inception_v3", "resnet50",
                "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
                "c3d_small", "r3d_18", "r2plus1d_18"}
    assert expected <= set(REGISTRY)
    assert get_spec("custom_cnn").input_size == 256
    assert get_spec("efficientnet_b1").input_size == 240
    assert get_spec("inception_v3").input_size == 299
    assert get_spec("resnet50").input_size == 224


def test_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError, match="custom_cnn"):
        get_spec("alexnet")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_entry_builds_predicts_and_learns(name):
    """Every entry fits four images with a fixed recipe (Adam 1e-3, ten steps, the same dropout masks at
    every step so the loss is a plain function of the weights): the loss ends below a fifth of its start."""
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build_model(name, 15)
    get_module(model, spec.cam_layer)
    for prefix in spec.head:
        get_module(model, prefix)
    if name == "inception_v3":  # training adds the auxiliary logits, which need the full 299 px grid
        with torch.no_grad():
            assert model.train()(torch.randn(2, 3, 299, 299))[1].shape == (2, 15)
        model.AuxLogits = None  # the fit below runs at 96 px
    size = 96 if name == "inception_v3" else 64
    images, labels = torch.randn(4, 3, size, size), torch.tensor([0, 3, 7, 14])
    if spec.takes_clips:  # clips of 8 frames at 32 px keep the 3D networks quick
        images = torch.randn(4, 3, 8, 32, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(10):
        torch.manual_seed(1)
        loss = torch.nn.functional.cross_entropy(logits_of(model(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses


def torchvision_official(spec):
    return torchvision.models.get_weight(spec.hub.split(":", 1)[1]).transforms()


def timm_official(spec):
    import timm
    cfg = timm.models.get_pretrained_cfg(spec.hub.split(":", 1)[1].removeprefix("timm/"))
    return timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=cfg.to_dict()))


@pytest.mark.parametrize("name", [n for n, s in sorted(REGISTRY.items()) if s.hub])
def test_preprocessing_reproduces_the_published_weights_own_transform(name):
    """Each pretrained entry feeds its network exactly what its weights' own preset does (timm's pretrained
    config, torchvision's weight transforms), on an odd-sized photo-like image."""
    import numpy as np
    from PIL import Image
    spec = get_spec(name)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (301, 457, 3), dtype=np.uint8)).resize((913, 602))
    if spec.takes_clips:
        # the Kinetics preset resizes every clip to 128×171 without antialiasing; ours keeps the aspect ratio
        # (short side 128) and antialiases, which is the same on frames already 171×128: crop, scale,
        # normalisation and the (3, T, H, W) layout must then match exactly
        frames = [Image.fromarray(rng.integers(0, 256, (128, 171, 3), dtype=np.uint8)) for _ in range(16)]
        ours = eval_transform(spec.data_config())(Clip(times=list(range(16)), frames=frames, width=171,
                                                       height=128, seconds=1.6))
        official = torchvision_official(spec)(torch.stack([pil_to_tensor(frame) for frame in frames]))
        torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)
        return
    ours = eval_transform(spec.data_config())(image)
    official = (torchvision_official(spec) if spec.hub.startswith("torchvision") else timm_official(spec))(image)
    if spec.scales_to_unit_range:  # what torchvision's Inception3(transform_input=True) does first
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        official = official * std / 0.5 + (mean - 0.5) / 0.5
    assert ours.shape == official.shape
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["custom_cnn", "efficientnet_lite1", "inception_v3"])
def test_transforms_derive_from_the_registry_entry(name):
    from PIL import Image
    spec = get_spec(name)
    image = Image.new("RGB", (333, 250), (255, 255, 255))
    tensor = eval_transform(spec.data_config())(image)
    assert tensor.shape == (3, spec.input_size, spec.input_size)
    # white normalised with the entry's own mean/std
    expected = (1 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    assert torch.allclose(tensor[:, 10, 10], expected, atol=1e-4)
    train = train_transform(spec.data_config(64), "rrc,flip,rotate,affine,perspective,color,randaugment,erasing")
    assert train(image).shape == (3, 64, 64)


def test_unknown_augmentation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown augmentation"):
        train_transform(get_spec("custom_cnn").data_config(), "flip,cutmixx")
