"""Weights and run-folder files: safetensors round trips and atomic writes."""
import pytest
import torch

from har_core.models import artifacts
from har_core.models.registry import build_model


@pytest.mark.parametrize("dtype, tolerance", [("float32", 0.0), ("float16", 1e-3), ("int8", 2e-2)])
def test_safetensors_round_trip(tmp_path, dtype, tolerance):
    torch.manual_seed(0)
    source = build_model("custom_cnn", 15).eval()
    path = tmp_path / "model.safetensors"
    artifacts.save_weights(path, source, dtype)
    target = build_model("custom_cnn", 15).eval()
    artifacts.load_weights(path, target, "run")
    for key, value in source.state_dict().items():
        restored = target.state_dict()[key]
        assert restored.dtype == value.dtype and restored.shape == value.shape
        if tolerance == 0:
            assert torch.equal(restored, value), key
        elif value.is_floating_point():
            assert (restored - value).abs().max() <= tolerance * max(1.0, value.abs().max()), key
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(source(images).softmax(1), target(images).softmax(1), atol=0.05 if dtype == "int8" else 1e-3)
    sizes = {"float32": 4, "float16": 2, "int8": 1}
    assert path.stat().st_size < sum(v.numel() for v in source.state_dict().values()) * sizes[dtype] * 1.1 + 10_000


def test_pickle_is_never_needed_to_read_weights(tmp_path):
    path = tmp_path / "model.safetensors"
    artifacts.save_weights(path, build_model("custom_cnn", 3))
    assert path.read_bytes()[8:9] == b"{"  # a safetensors JSON header, not a pickle stream


def test_unknown_save_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="save dtype"):
        artifacts.save_weights(tmp_path / "m.safetensors", build_model("custom_cnn", 3), "bfloat8")


def test_a_file_written_atomically_is_readable_as_a_plain_write_makes_it(tmp_path):
    """#41 walk: written through a temporary file (mkstemp: owner-only 0600) and renamed, a report or a run's file
    was unreadable to anyone else in a shared folder. The mode now is a plain open()'s: 0666 less the umask."""
    from har_core.data.fileio import atomic_write_bytes
    atomic_write_bytes(tmp_path / "report.html", b"<html></html>")
    (tmp_path / "plain.html").write_bytes(b"<html></html>")  # the independent path: Python's own open()
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == (tmp_path / "plain.html").stat().st_mode & 0o777
