"""The first page a visitor sees (Overview) is drawn without torch (#41: importing torch, timm and grad-cam was most
of a cold start's 14 s): the models are loaded by a warm-up thread asked for only after the page is drawn."""
import json
import subprocess
import sys

from conftest import PREDICT_CARD, ROOT

# a fresh interpreter (this one has torch already) runs app.py's first page on the bundled HAR runs, the folder the
# app opens on; the warm-up thread is recorded, not started (it loads the models, torch included, by design)
FIRST_PAGE = """
import json, sys, threading, traceback
sys.path.insert(0, {root!r})
asked = []
start = threading.Thread.start
def record_warm_up(thread):
    if thread.name == "har-warm-up":  # where it was asked for: the page's own files, or after them
        asked.append([frame.filename for frame in traceback.extract_stack()])
        return
    start(thread)
threading.Thread.start = record_warm_up
import ui.warm_up  # and which runs it would load
start_loading = ui.warm_up._start_loading
loading = []
def record_runs(paths, stamps):
    loading.append(sorted(path.rsplit("/", 1)[-1] for path in paths))
    return start_loading(paths, stamps)
ui.warm_up._start_loading = record_runs
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=600)
if {page!r}:
    at.switch_page({page!r})
at.run()
heavy = sorted(m for m in ("torch", "timm", "torchvision", "pytorch_grad_cam", "sklearn", "av") if m in sys.modules)
print(json.dumps({{"title": [t.value for t in at.title], "errors": [e.message for e in at.exception],
                  "cards": [m.value for m in at.markdown if m.value.startswith("##### ")], "heavy": heavy,
                  "info": [i.value for i in at.info],
                  "warm_up": asked, "loading": loading}}))
"""


def first_page(page: str = "") -> dict:
    """app.py's first run in a fresh interpreter on the bundled HAR runs, opened on `page` (default: Overview)."""
    bundled = ROOT / "assets" / "runs_har"
    script = FIRST_PAGE.format(root=str(ROOT), app=str(ROOT / "app.py"), page=page)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT.parent), "HAR_RUNS": str(bundled),
                               "HAR_DATA": str(ROOT.parent / "shared" / "data" / "har")})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def bundled_runs() -> list[str]:
    return sorted(p.name for p in (ROOT / "assets" / "runs_har").iterdir() if (p / "card.json").is_file())


def test_the_overview_is_drawn_without_torch_and_the_models_warm_up_after_it():
    runs = bundled_runs()
    page = first_page()
    assert page["title"] == ["📋 Overview"] and not page["errors"]
    assert sorted(card.removeprefix("##### ") for card in page["cards"]) == runs  # the page was drawn whole
    assert page["heavy"] == []
    assert len(page["warm_up"]) == 1  # the models are still loaded ahead of the first upload, asked for once the
    assert not [name for name in page["warm_up"][0] if "/views/" in name]  # page's script is done (not inside it)
    assert page["loading"] == [runs]  # every bundled (image) run's model


def test_a_first_page_that_stops_early_still_warms_the_models_up():
    # Predict before a photo ends in st.stop(): the warm-up must still be asked for, after the page's own script,
    # or the room's first upload waits for torch and every model (it did: app.py's call came after page.run())
    page = first_page("views/predict.py")
    assert page["title"] == ["🔮 Predict & compare"] and not page["errors"]
    assert any("photo" in info.lower() for info in page["info"])  # it did stop, waiting for a photo
    assert len(page["warm_up"]) == 1 and page["loading"] == [bundled_runs()]
    assert not [name for name in page["warm_up"][0] if "/views/" in name]


# the Predict page in a fresh interpreter, the warm-up running for real: a sample picked, the cards read back, and
# which heavy modules were imported once the warm-up thread and the page's run are both done
PREDICT_SAMPLE = """
import json, sys, threading
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=600)
at.switch_page("views/predict.py")
at.run()
sample = at.selectbox(key="predict_sample")
at = sample.set_value(sample.options[1]).run()
at.session_state["whatif_open"] = True  # and both panels a visitor opens: the What-if and every card's details
for name in {runs!r}:
    at.session_state["details_" + name] = True
at.run()
for thread in threading.enumerate():
    if thread.name == "har-warm-up":
        thread.join()
heavy = sorted(m for m in ("torch", "timm", "torchvision", "pytorch_grad_cam") if m in sys.modules)
print(json.dumps({{"errors": [e.message for e in at.exception], "warnings": [w.value for w in at.warning],
                  "sample": at.selectbox(key="predict_sample").value, "markdown": [m.value for m in at.markdown],
                  "html": [h.value for h in at.get("html")],
                  "sliders": [s.key for s in at.slider], "heavy": heavy}}))
"""


def test_runs_served_by_their_exports_answer_predict_without_torch(exported_tiny_runs, kaggle_data):
    """#41: with every run exported, the first answer needs neither torch nor timm (their import was seconds of a
    cold start): NumPy preprocessing, ONNX Runtime, and once opened, every card's similar images and the What-if
    panel's untouched picture. The cards say what each run's own PyTorch network says of the picture."""
    from har_core.data.imaging import load_image
    from har_core.data.labels import spoken
    from har_core.evaluation.calibration import default_tta
    from har_core.models.inference import load_run
    runs = exported_tiny_runs
    names = sorted(p.name for p in runs.iterdir() if (p / "card.json").is_file())
    script = PREDICT_SAMPLE.format(root=str(ROOT), app=str(ROOT / "app.py"), runs=names)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT.parent), "HAR_RUNS": str(runs),
                               "HAR_DATA": str(kaggle_data)})
    assert done.returncode == 0, done.stderr[-3000:]
    page = json.loads(done.stdout.strip().splitlines()[-1])
    assert not page["errors"] and not page["warnings"], page
    assert page["heavy"] == []
    assert "whatif_brightness" in page["sliders"]  # the What-if panel was built
    assert sum("most similar training pictures" in m for m in page["markdown"]) == len(names)  # and every card's
    models = [load_run(run, backend="pytorch") for run in sorted(p for p in runs.iterdir() if p.is_dir())]
    tta = default_tta([m.run for m in models])
    picture = load_image(kaggle_data / page["sample"])
    drawn = [card.groups() for h in page["html"] if (card := PREDICT_CARD.search(h))]
    cards = {name: (answer, sure) for name, answer, sure in drawn}
    assert sorted(cards) == names
    for loaded in models:
        probs = loaded.predict([picture], tta)[0]
        assert cards[loaded.name] == (spoken(loaded.classes[int(probs.argmax())]), f"{probs.max():.0%} sure")
