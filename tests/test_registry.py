import pytest
import torch
import torchvision

from har_core.data import eval_transform, train_transform
from har_core.inference import logits_of
from har_core.registry import REGISTRY, build_model, get_module, get_spec

# small inputs keep the suite fast; InceptionV3 needs at least 75 px
TEST_SIZE = {"inception_v3": 299}  # its auxiliary head needs the full 17×17 grid in training


def test_torchvision_ops_nms_runs():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_the_five_group_models_and_offline_ones_are_registered():
    expected = {"custom_cnn", "efficientnet_b1", "efficientnet_b3", "vgg16", "inception_v3", "resnet50",
                "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"}
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
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build_model(name, 15)
    size = TEST_SIZE.get(name, 64)
    images = torch.randn(4, 3, size, size)
    labels = torch.tensor([0, 3, 7, 14])
    # the Grad-CAM target layer and the head exist
    get_module(model, spec.cam_layer)
    for prefix in spec.head:
        get_module(model, prefix)
    model.train()
    torch.manual_seed(1)  # the same dropout masks on every forward: the loss is a plain function of the weights
    logits = logits_of(model(images))
    assert logits.shape == (4, 15)
    loss_before = torch.nn.functional.cross_entropy(logits, labels)
    loss_before.backward()
    # one plain gradient step, with the step size found by backtracking (random-init nets differ in scale)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for lr in (1e-3, 1e-4, 1e-5, 1e-6):
        model.load_state_dict(start)
        torch.optim.SGD(model.parameters(), lr=lr).step()
        torch.manual_seed(1)
        with torch.no_grad():
            loss_after = torch.nn.functional.cross_entropy(logits_of(model(images)), labels)
        if loss_after < loss_before:
            break
    assert loss_after < loss_before


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
