"""Training on cached trunk features: same forward, trunk untouched, tail trained, resumable."""
import pandas as pd
import pytest
import safetensors.torch
import torch

from conftest import train_tiny
from har_core.models.registry import REGISTRY
from har_core.training.trunk import trunk_parameters, trunk_skipped
from train import train


@pytest.mark.parametrize("name", [n for n, spec in REGISTRY.items() if spec.trunk])
def test_model_on_trunk_features_equals_the_full_forward(name):
    spec = REGISTRY[name]
    torch.manual_seed(0)
    model = spec.build(5).eval()
    size = 96 if name == "inception_v3" else 64  # InceptionV3 needs 75 px at least
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = images
        for module in spec.trunk:
            features = model.get_submodule(module)(features)
        with trunk_skipped(model, spec.trunk):
            from_features = model(features)
        full = model(images)
    torch.testing.assert_close(from_features, full, rtol=0, atol=1e-5)
    # the trunk is back in place, weights included
    assert set(trunk_parameters(model, spec.trunk)) <= set(model.state_dict())


def test_cached_training_trains_the_tail_only_validates_the_average_and_resumes_exactly(tmp_path, kaggle_data):
    """--cached-views with --ema-decay across the two stages: the trunk never moves, the tail trains, the running
    average of the weights (its own copy of the model takes the trunk features) is what is validated and saved,
    and a run interrupted after stage one resumes to the uninterrupted run's exact weights and average."""
    flags = ["--cached-views", "2", "--trainable", "blocks.5,blocks.6,conv_head,bn2,classifier",
             "--freeze-epochs", "1", "--ema-decay", "0.8", "--image-size", "64", "--mixup-alpha", "0",
             "--embed", "false"]
    full = train_tiny(kaggle_data, tmp_path, "full", model="efficientnet_lite0", extra=[*flags, "--epochs", "3"])
    after = safetensors.torch.load_file(full / "checkpoint" / "last.safetensors")
    train.seed_everything(0)  # the run's own initialisation
    model = REGISTRY["efficientnet_lite0"].build(3)
    before = model.state_dict()
    trunk = trunk_parameters(model, REGISTRY["efficientnet_lite0"].trunk)
    assert trunk and all(torch.equal(before[k], after[f"model.{k}"]) for k in trunk)
    assert not torch.equal(before["blocks.5.0.conv_pw.weight"], after["model.blocks.5.0.conv_pw.weight"])
    assert not torch.equal(after["average.module.blocks.6.0.conv_pw.weight"], after["model.blocks.6.0.conv_pw.weight"])

    # interrupted after one epoch (stage one, head only): the average is what was validated and saved
    first = train_tiny(kaggle_data, tmp_path, "resumed", model="efficientnet_lite0", extra=[*flags, "--epochs", "1"])
    checkpoint = safetensors.torch.load_file(first / "checkpoint" / "last.safetensors")
    saved = safetensors.torch.load_file(first / "model.safetensors")
    train_images = int((pd.read_csv(first / "split.csv")["split"] == "train").sum())
    assert int(checkpoint["average.n_averaged"]) == -(-train_images // 8)  # one update per optimiser step
    name = "classifier.weight"
    assert torch.equal(saved[name], checkpoint[f"average.module.{name}"])  # one epoch: it is the best
    assert not torch.equal(saved[name], checkpoint[f"model.{name}"])
    # resumed into stage two: the cache is rebuilt the same way and the average restored, so the run replays exactly
    resumed = train.main(["--model", "efficientnet_lite0", "--data", str(kaggle_data), "--out", str(tmp_path),
                          "--name", "resumed", "--resume", "--epochs", "3", "--quiet", "--workers", "0",
                          "--embed", "false"])
    again = safetensors.torch.load_file(resumed / "checkpoint" / "last.safetensors")
    assert after.keys() == again.keys() and all(torch.equal(after[k], again[k]) for k in after)


@pytest.mark.parametrize("flags, message", [
    (["--trainable", "all", "--mixup-alpha", "0"], "trunk parameters"),
    (["--trainable", "classifier", "--mixup-alpha", "0.2"], "without mixup")])
def test_cached_views_refuse_what_would_make_the_cache_wrong(tmp_path, kaggle_data, flags, message):
    with pytest.raises(SystemExit, match=message):
        train_tiny(kaggle_data, tmp_path, "bad", model="efficientnet_lite0",
                   extra=["--cached-views", "2", "--image-size", "64", *flags])


def test_trunk_features_run_on_the_models_device_and_are_kept_in_cpu_memory():
    """--cached-views with --device cuda fed CPU batches to a CUDA model. The batches must go to the
    model's device; here that device is 'meta' (no GPU needed), seen by a recording trunk module."""
    from har_core.training.trunk import trunk_features

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))

        def forward(self, x):
            seen.append(x.device.type)
            return torch.ones(x.shape[0], 2, 3, 3)  # what a real trunk returns, on the CPU here

    model = torch.nn.Sequential()
    model.add_module("stem", Recorder())
    images = torch.rand(5, 3, 8, 8)
    loader = torch.utils.data.DataLoader([(image, 0, i) for i, image in enumerate(images)], batch_size=2)
    features = trunk_features(model, ("stem",), loader, "test", progress=False)
    assert seen == ["meta"] * 3
    assert features.device.type == "cpu" and features.dtype == torch.float16 and features.shape == (5, 2, 3, 3)


def test_trunk_features_through_onnx_runtime_equal_pytorchs(monkeypatch):
    """On the CPU the frozen trunk runs in ONNX Runtime (several times faster there); its features must be
    the eager trunk's, in the loader's index order, whatever order the batches come in."""
    from har_core.training import trunk
    from har_core.training.trunk import onnx_trunk, trunk_features

    spec = REGISTRY["efficientnet_lite0"]
    model = spec.build(3).eval()
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    order = [4, 0, 5, 2, 1, 3]  # batches arrive out of index order, as a shuffled loader's do
    loader = torch.utils.data.DataLoader([(images[i], 0, i) for i in order], batch_size=4)
    with monkeypatch.context() as patched:  # #39: a silent fall-back to PyTorch here once passed this test
        patched.setattr(trunk, "run_trunk", lambda *args: pytest.fail("the trunk ran in PyTorch, not ONNX Runtime"))
        through_ort = trunk_features(model, spec.trunk, loader, "test", progress=False)
    eager = trunk_features(model, spec.trunk, loader, "test", progress=False, engine="pytorch")
    runner = onnx_trunk(model, spec.trunk, images)
    assert torch.allclose(runner(images), eager.float(), rtol=2e-3, atol=1e-3)
    assert through_ort.shape == eager.shape == (6, 80, 4, 4)
    assert torch.allclose(through_ort.float(), eager.float(), rtol=2e-3, atol=1e-3)  # float16: an ulp apart at most
    with torch.no_grad():
        direct = images[2:3]
        for name in spec.trunk:
            direct = model.get_submodule(name)(direct)
    assert torch.allclose(through_ort[2].float(), direct[0], rtol=2e-3, atol=1e-3)
    assert not torch.allclose(through_ort[2].float(), direct[0] * 1.05, rtol=2e-3, atol=1e-3)
