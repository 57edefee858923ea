"""The warm-up at the server's start (serve.py, #41): it prepares what a first visitor is shown, steps aside while a
page's script runs, and a server started as `make run` starts it loads the models before anyone visits."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from streamlit.testing.v1 import AppTest

from conftest import ROOT


def test_a_warm_up_step_waits_until_the_running_page_has_ended(monkeypatch):
    from ui import warm_up
    monkeypatch.setattr(warm_up, "STEP_ASIDE_S", 600.0)  # longer than the test: only the page's end can free it
    order = []
    step = threading.Thread(target=lambda: (warm_up._step_aside(), order.append("warm-up step")))
    with warm_up.page_running():
        step.start()
        step.join(0.5)
        order.append("page ended")
    step.join(60)
    assert order == ["page ended", "warm-up step"]


def test_a_warm_up_step_waits_at_most_its_limit_for_a_busy_room(monkeypatch):
    from ui import warm_up
    monkeypatch.setattr(warm_up, "STEP_ASIDE_S", 0.2)
    order = []
    step = threading.Thread(target=lambda: (warm_up._step_aside(), order.append("warm-up step")))
    with warm_up.page_running():  # a page that runs on and on: the warm-up goes on regardless
        step.start()
        step.join(60)
        order.append("page ended")
    assert order == ["warm-up step", "page ended"]


def test_the_start_loads_the_exported_models_of_the_runs_the_first_page_shows(exported_tiny_runs, kaggle_data,
                                                                              tmp_path, monkeypatch):
    """Runs of two class lists: the first page shows the larger group, and the start loads those of its runs that
    answer through an export (no torch), not the one PyTorch answers, nor the run of the other class list."""
    from ui import warm_up
    folder = tmp_path / "runs"
    shutil.copytree(exported_tiny_runs, folder)
    other = folder / "other_classes"
    shutil.copytree(folder / "custom_cnn", other)
    card = json.loads((other / "card.json").read_text())
    card["classes"] = [f"other_{name}" for name in card["classes"]]
    (other / "card.json").write_text(json.dumps(card))
    (folder / "mobilenet_v2" / "model.onnx").unlink()  # PyTorch answers this one
    monkeypatch.setenv("HAR_RUNS", str(folder))
    monkeypatch.setenv("HAR_DATA", str(kaggle_data))
    monkeypatch.delenv("HAR_BACKEND", raising=False)
    loaded = []
    monkeypatch.setattr(warm_up, "_load_models", lambda paths: loaded.append(paths) or [])
    warm_up.at_server_start().join(300)
    assert loaded == [(str(folder / "custom_cnn"),)]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    shown = [m.value.removeprefix("##### ") for m in at.markdown if m.value.startswith("##### ")]
    assert not at.exception and sorted(shown) == ["custom_cnn", "mobilenet_v2"]  # the larger class list
    assert sorted(run.name for run in warm_up.default_runs()) == sorted(shown)


def test_the_start_loads_no_run_whose_chosen_export_is_missing_or_damaged(exported_tiny_runs, tmp_path,
                                                                           monkeypatch):
    """#41 review: the start took "has an export" for "answers without torch": a backend asked for by name whose
    export the run lacks, or a damaged export, made PyTorch answer, so the start imported torch before the first
    page (3 s)."""
    from ui import warm_up
    folder = tmp_path / "runs"
    shutil.copytree(exported_tiny_runs, folder)
    monkeypatch.setenv("HAR_RUNS", str(folder))
    loaded = []
    monkeypatch.setattr(warm_up, "_load_models", lambda paths: loaded.append(paths) or [])
    monkeypatch.setenv("HAR_BACKEND", "onnxruntime-int8")  # the tiny runs are exported in float only
    warm_up.at_server_start().join(300)
    monkeypatch.delenv("HAR_BACKEND")
    with (folder / "custom_cnn" / "model.onnx").open("r+b") as export:  # a damaged copy: not the one checked
        export.seek(100)
        export.write(b"damaged")
    warm_up.at_server_start().join(300)
    assert loaded == [(), (str(folder / "mobilenet_v2"),)]


def test_app_runs_every_page_with_the_warm_up_stepping_aside(tiny_runs, kaggle_data, monkeypatch):
    """The warm-up waits while a page's script runs: app.py runs each page inside page_running()."""
    import har_core.evaluation.analysis as analysis
    from ui import warm_up
    monkeypatch.setenv("HAR_RUNS", str(tiny_runs))
    monkeypatch.setenv("HAR_DATA", str(kaggle_data))
    seen, real = [], analysis.overview_table
    monkeypatch.setattr(analysis, "overview_table", lambda *a, **k: seen.append(warm_up._pages_running) or
                        real(*a, **k))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert not at.exception and seen == [1] and warm_up._pages_running == 0


def test_make_run_loads_the_models_before_anyone_visits(exported_tiny_runs, kaggle_data, tmp_path):
    """`make run` serves serve.py: the exported models are loaded while the server waits for its first visitor."""
    from bench.classroom import free_port
    log = tmp_path / "server.log"
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HAR_")},
           "HAR_RUNS": str(exported_tiny_runs), "HAR_DATA": str(kaggle_data)}
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "serve.py", "--server.port", str(port),
                                   "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=ROOT, env=env,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wanted = {"HAR Studio: loaded model custom_cnn", "HAR Studio: loaded model mobilenet_v2"}
            for _ in range(240):
                if wanted <= set(log.read_text().splitlines()) or server.poll() is not None:
                    break
                time.sleep(0.5)
            assert wanted <= set(log.read_text().splitlines()), log.read_text()[-2000:]
            import urllib.request
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10).read() == b"ok"
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
