"""What if: the edits of the Predict page's panel and of the robustness benchmark, and train.robustness."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from har_core.explain.whatif import CORRUPTIONS, GREY, STRENGTHS, Edit, apply, centre_box, corruption


def quadrants(size=(80, 60)) -> Image.Image:
    """Four flat colours, one a quadrant, and a white centre square: every edit's effect is predictable."""
    width, height = size
    array = np.zeros((height, width, 3), np.uint8)
    array[:height // 2, :width // 2] = (200, 40, 40)
    array[:height // 2, width // 2:] = (40, 200, 40)
    array[height // 2:, :width // 2] = (40, 40, 200)
    array[height // 2:, width // 2:] = (200, 200, 40)
    array[height // 2 - 5:height // 2 + 5, width // 2 - 5:width // 2 + 5] = 255
    return Image.fromarray(array)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_each_edit_does_what_its_name_says():
    picture = quadrants()
    original = pixels(picture)
    assert apply(picture, Edit()) is picture  # nothing to do: the very picture, no re-encoding
    np.testing.assert_allclose(pixels(apply(picture, Edit(brightness=0.5))), np.round(original * 0.5), atol=1)
    assert np.array_equal(pixels(apply(picture, Edit(flip=True))), original[:, ::-1])
    np.testing.assert_allclose(pixels(apply(picture, Edit(rotation=180))), original[::-1, ::-1], atol=1)
    flat = pixels(apply(picture, Edit(contrast=0.0)))
    assert np.ptp(flat) <= 1  # no contrast: one grey, the picture's mean brightness
    # zoom 2: the centre half, enlarged: the 10-px white square now 20 px across
    zoomed = pixels(apply(picture, Edit(zoom=2.0)))
    white = np.argwhere((zoomed > 250).all(axis=2))
    assert 18 <= np.ptp(white[:, 0]) + 1 <= 21 and 18 <= np.ptp(white[:, 1]) + 1 <= 21
    # cover: exactly the box, painted mid-grey; the rest untouched
    covered = pixels(apply(picture, Edit(cover=(0.25, 0.5, 0.75, 1.0))))
    assert np.all(np.abs(covered[30:60, 20:60] - GREY * 255) <= 0.5)
    assert np.array_equal(covered[:30], original[:30]) and np.array_equal(covered[:, :20], original[:, :20])
    # blur smooths the edges (sigma 3 px: a 160-level step spreads over ~15 px), same mean
    blurred = pixels(apply(picture, Edit(blur=0.05)))
    assert np.abs(np.diff(blurred, axis=1)).max() < 0.3 * np.abs(np.diff(original, axis=1)).max()
    assert blurred.mean() == pytest.approx(original.mean(), rel=0.03)
    # noise: seeded (the same edit is the same picture), of the asked strength
    noisy = pixels(apply(picture, Edit(noise=0.1)))
    assert np.array_equal(noisy, pixels(apply(picture, Edit(noise=0.1))))
    assert not np.array_equal(noisy, pixels(apply(picture, Edit(noise=0.1), seed=1)))
    assert (noisy - original)[25:35].std() == pytest.approx(25.5, rel=0.15)  # 0.1 of 255, little clipping there


def test_the_separable_blur_is_torchvisions_gaussian_blur():
    import math
    import torch
    import torchvision.transforms.v2.functional as F
    from har_core.explain.whatif import gaussian_blur
    picture = torch.rand(3, 40, 70, generator=torch.Generator().manual_seed(0))
    for sigma in (0.8, 2.5, 6.0):
        kernel = 2 * math.ceil(3 * sigma) + 1
        expected = F.gaussian_blur(picture, [kernel, kernel], [sigma, sigma])
        assert torch.allclose(gaussian_blur(picture, sigma), expected, atol=1e-5), sigma


def test_a_model_meets_an_edit_at_its_own_size_and_a_do_nothing_edit_is_the_picture_as_given():
    """#39.1–2: the edit is applied after the model's own resize (the first step of its eval transform), whatever
    other models are compared; a picture needing no edit or an edit too small to change a pixel (brightness
    1.0001) reaches the model exactly as the photo does."""
    import torch
    from torchvision.transforms import InterpolationMode, Resize
    from har_core.data.datasets import eval_transform
    from har_core.explain.whatif import as_model_sees
    big = quadrants((800, 600))
    card = {"input_size": (3, 64, 64), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "crop_pct": 0.875,
            "interpolation": "bicubic"}
    transform = eval_transform(card)
    own = Resize(73, InterpolationMode.BICUBIC)(big)  # floor(64 / 0.875) = 73, the card's bicubic
    darker = as_model_sees(big, Edit(brightness=0.5), transform)
    assert darker.size == (97, 73)
    np.testing.assert_allclose(pixels(darker), np.round(pixels(own) * 0.5), atol=1)
    for nothing in (Edit(), Edit(brightness=1.0001), Edit(contrast=1.0001)):
        assert torch.equal(transform(as_model_sees(big, nothing, transform)), transform(big)), nothing
    with pytest.raises(ValueError, match="eval transform"):
        as_model_sees(big, Edit(brightness=0.5), lambda image: image)


def test_corruptions_grow_stronger_with_their_strength():
    picture = quadrants((120, 90))
    original = pixels(picture)
    assert set(CORRUPTIONS) == {"darker", "less contrast", "blur", "noise", "rotation", "zoom", "centre covered"}
    for name in CORRUPTIONS:
        assert corruption(name, 0) == Edit()
        changes = [np.abs(pixels(apply(picture, corruption(name, s))) - original).mean() for s in STRENGTHS]
        assert 0 < changes[0] < changes[1] < changes[2], (name, changes)
    assert centre_box(0.25) == (0.25, 0.25, 0.75, 0.75)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corruption("fog", 1)


def test_robustness_clean_accuracy_is_train_evaluates_and_every_corruption_is_measured(tiny_runs, kaggle_data,
                                                                                     copy_of, tmp_path):
    from har_core.models.artifacts import open_run
    from har_core.models.inference import load_run
    from har_core.data.imaging import load_image
    from har_core.explain.robustness import ROBUSTNESS, read_robustness
    from train import evaluate, robustness
    run_dir = copy_of(tiny_runs / "custom_cnn")
    out = tmp_path / "all.csv"
    other = copy_of(tiny_runs / "mobilenet_v2")
    table = robustness.main([str(run_dir), str(other), "--data", str(kaggle_data), "--out",
                             str(out), "--quiet", "--batch-size", "16"])
    assert list(table.columns) == ["run", "corruption", "strength", "accuracy"]
    assert len(table) == 2 * 7 * 4 and set(table["strength"]) == {0, 1, 2, 3}
    clean = evaluate.main([str(run_dir), "--split", "test", "--data", str(kaggle_data), "--quiet"])["accuracy"]
    mine = table[table["run"] == "custom_cnn"]
    assert list(mine.loc[mine["strength"] == 0, "accuracy"]) == [pytest.approx(clean, abs=1e-12)] * 7
    # each row is the model's accuracy on the edited test pictures: recomputed here picture by picture
    run = open_run(run_dir)
    manifest = run.manifest()
    rows = manifest[manifest["split"] == "test"]
    loaded = load_run(run, backend="pytorch")
    from torchvision.transforms import InterpolationMode, Resize
    own_side = Resize(int(run.card["input_size"] / run.card["crop_pct"]),  # the card's resize, written from it
                      InterpolationMode(run.card["interpolation"]))
    right = [int(loaded.predict([apply(own_side(load_image(kaggle_data / f)), corruption("darker", 3))])[0].argmax())
             == run.classes.index(label) for f, label in zip(rows["filename"], rows["label"])]
    assert mine.set_index(["corruption", "strength"]).loc[("darker", 3), "accuracy"] == pytest.approx(np.mean(right))
    assert pd.read_csv(out).equals(table)
    stored, info = read_robustness(run)
    assert stored.equals(mine.reset_index(drop=True)) and info["split"] == "test" and info["pictures"] == len(rows)
    (run_dir / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes() + b" ")
    assert read_robustness(open_run(run_dir)) is None  # measured by other weights: not shown
    assert (run_dir / ROBUSTNESS).is_file()
    # a folder the run never saw: its labelled pictures, here the first three of each class (test has two)
    few = robustness.main([str(other), "--data", str(kaggle_data), "--split", "all", "--per-class", "3",
                           "--out", str(tmp_path / "few.csv"), "--quiet"])
    info = read_robustness(open_run(other))[1]
    assert info["split"] == "all" and info["pictures"] == 3 * len(run.classes) > len(rows) and len(few) == 28


def test_brightness_mirror_and_cover_alone_give_torchvisions_very_pixels():
    """The panel's commonest moves (brightness, mirror, a covered box) are edited without torch: every pixel comes out
    as torchvision's steps, written out here, give it, at every step of the brightness slider and around its ends."""
    import torch
    import torchvision.transforms.v2.functional as F
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8))  # every value
    for brightness in [*np.arange(0.1, 2.0001, 0.05), 1.0001, 0.9999, 1.0]:
        for flip in (False, True):
            for cover in (None, (0.3, 0.25, 0.71, 0.9)):
                edit = Edit(brightness=float(brightness), flip=flip, cover=cover)
                tensor = F.to_dtype(F.pil_to_tensor(picture), torch.float32, scale=True)
                tensor = F.adjust_brightness(F.hflip(tensor) if flip else tensor, float(brightness))
                if cover is not None:
                    left, top, right, bottom = cover
                    tensor[:, round(top * 61):round(bottom * 61), round(left * 83):round(right * 83)] = 0.5
                expected = (tensor * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                assert np.array_equal(np.asarray(apply(picture, edit)), expected), edit


def test_a_brightness_mirror_or_cover_move_imports_no_torch():
    """Under load torch's two threads cost ~50 ms an operation (six models' edits: seconds a slider move), and its
    first import more than a second: the panel's commonest moves need none of it."""
    import subprocess
    import sys
    from conftest import ROOT
    script = """
import sys
from PIL import Image
from har_core.explain.whatif import Edit, apply
picture = Image.new("RGB", (40, 30), (90, 120, 200))
apply(picture, Edit(brightness=0.4, flip=True, cover=(0.1, 0.1, 0.5, 0.5)))
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
