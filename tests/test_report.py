"""The report to share: one HTML file with everything embedded (python -m train.report)."""
import re

import pytest
from plotly.offline import get_plotlyjs

from har_core.artifacts import find_runs
from har_core.report import SECTIONS
from train import report


@pytest.fixture(scope="module")
def written(tiny_runs, kaggle_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    report.main([str(tiny_runs), "--data", str(kaggle_data), "--mistakes", "2", "--out", str(out), "--quiet"])
    return out


def test_the_report_embeds_everything_and_fetches_nothing(written, tiny_runs):
    page = written.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    assert page.count("<script>") >= 1 and "<script src" not in page and "<link" not in page
    assert page.count(get_plotlyjs()) == 1  # the library once, however many figures
    ours = page.replace(get_plotlyjs(), "")  # (plotly.js itself names map-tile servers it never calls here)
    assert re.findall(r"https?://[^\"' )<]+", ours) == []
    runs = find_runs(tiny_runs)[0]
    wrong = {run.name: int((run.predictions("test")["true"] != run.predictions("test")["predicted"]).sum())
             for run in runs}
    pictures = sum(min(2, n) for n in wrong.values())
    assert page.count('src="data:image/jpeg;base64,') == 2 * pictures  # each mistake and its Grad-CAM
    assert page.count("Grad-CAM of ") == pictures
    for run in runs:
        assert f">{run.name}<" in page


def test_without_runs_or_with_a_missing_image_folder_it_says_why(tiny_runs, tmp_path):
    with pytest.raises(SystemExit, match="no usable runs"):
        report.main([str(tmp_path), "--out", str(tmp_path / "r.html"), "--quiet"])
    with pytest.raises(SystemExit, match="image folder .* not found"):
        report.main([str(tiny_runs), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html"), "--quiet"])
    assert not (tmp_path / "r.html").exists()
    out = report.main([str(tiny_runs), "--out", str(tmp_path / "plain.html"), "--quiet"])  # no --data: the card's folder
    assert "data:image/jpeg" in out.read_text()  # the image folder on the first run's card
