"""A classroom server: the operator's allowed folders and limits, and paths that cannot leave them."""
import shutil

import pytest

from har_core.data.fileio import is_inside
from har_core.server import OutsideRoots, data_choices, inside, load_config


def test_defaults_allow_the_bundled_runs_and_the_shared_data(tmp_path):
    config = load_config(environ={}, config_file=tmp_path / "absent.toml")
    # the HAR runs first (the app opens on them), then the sports15 demo runs
    assert [p.name for p in config.runs] == ["runs_har", "runs"] and config.runs[0].parent.name == "assets"
    assert not config.free_paths and config.max_batch_images == 32 and config.slow_cam_slots == 1


def test_a_config_file_and_the_environment_set_the_roots(tmp_path, kaggle_data):
    (tmp_path / "runs_a").mkdir()
    (tmp_path / "studio.toml").write_text(
        f'runs = ["runs_a", "/nowhere"]\ndata = ["{kaggle_data.parent}"]\nfree_paths = false\n'
        'max_scan_images = 50\nmax_batch_images = 4\nslow_cam_slots = 2\n')
    config = load_config(environ={}, config_file=tmp_path / "studio.toml")
    assert config.runs[0] == (tmp_path / "runs_a").resolve() and str(config.runs[1]) == "/nowhere"
    assert (config.max_scan_images, config.max_batch_images, config.slow_cam_slots) == (50, 4, 2)
    assert kaggle_data.resolve() in data_choices(config)  # a data set directly inside an allowed folder
    env = load_config(environ={"HAR_RUNS": f"{tmp_path}:{kaggle_data}", "HAR_FREE_PATHS": "1"},
                      config_file=tmp_path / "studio.toml")
    assert env.runs == (tmp_path.resolve(), kaggle_data.resolve()) and env.free_paths
    (tmp_path / "bad.toml").write_text("runs = [")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        load_config(environ={}, config_file=tmp_path / "bad.toml")


@pytest.mark.parametrize("name", ["../secret.jpg", "/etc/passwd", "train/../../secret.jpg", "link/secret.jpg"])
def test_names_that_leave_the_folder_are_refused(tmp_path, name):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutsideRoots):
        inside(root, name)
    assert inside(root, "train/ok.jpg") == (root / "train" / "ok.jpg").resolve()
    assert is_inside(root, root) and not is_inside(root, tmp_path)


def test_symlinked_data_sets_pointing_elsewhere_are_not_offered(tmp_path, kaggle_data):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "borrowed").symlink_to(kaggle_data)
    config = load_config(environ={"HAR_DATA": str(allowed)}, config_file=tmp_path / "none.toml")
    assert data_choices(config) == []


def test_a_folder_of_data_sets_is_not_offered_and_the_runs_own_data_set_is_the_default(tmp_path, kaggle_data):
    """#25 item 2: with ../shared/data holding har/, sports15/ and videos/, the parent itself was offered (and
    picked): "3 images, 1 class: videos"."""
    from conftest import write_folder_dataset
    from har_core.server import default_data_folder
    shared = tmp_path / "data"
    shared.mkdir()
    shutil.copytree(kaggle_data, shared / "har")
    write_folder_dataset(shared / "sports15")
    (shared / "videos").mkdir()
    (shared / "videos" / "clip.mp4").write_bytes(b"not decoded here")
    config = load_config(environ={"HAR_DATA": str(shared)}, config_file=tmp_path / "none.toml")
    choices = data_choices(config)
    assert [c.name for c in choices] == ["har", "sports15"]  # not data/ itself, whose "classes" are data sets
    assert default_data_folder(choices, ["/elsewhere/sports15"]).name == "sports15"  # the runs' own, by name
    assert default_data_folder(choices, [str(shared / "har")]).name == "har"
    assert default_data_folder(choices, [""]).name == "har"  # unknown: the first
    assert default_data_folder([], ["x"]) is None


def test_a_kaggle_folder_given_directly_is_offered_without_looking_into_its_picture_folders(tmp_path, kaggle_data,
                                                                                            monkeypatch):
    """HAR_DATA=.../har: asking whether train/ and test/ were data sets listed HAR's 11,100 pictures on every page
    (0.2 s); a Kaggle folder is one data set, and only it is looked at."""
    from har_core import server
    looked_at = []
    real = server.detect_layout
    monkeypatch.setattr(server, "detect_layout", lambda folder: looked_at.append(folder.name) or real(folder))
    config = load_config(environ={"HAR_DATA": str(kaggle_data)}, config_file=tmp_path / "none.toml")
    assert data_choices(config) == [kaggle_data.resolve()] and looked_at == [kaggle_data.name]


def test_only_a_data_set_the_runs_learned_from_counts_as_theirs(tmp_path):
    from har_core.server import learned_from
    har, sports = tmp_path / "har", tmp_path / "sports15"
    assert learned_from(har, ["/work/shared/data/har"]) and learned_from(sports, [str(sports)])
    assert not learned_from(har, ["/work/shared/data/sports15", ""]) and not learned_from(har, [])
