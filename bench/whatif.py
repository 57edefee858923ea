"""What if: from a slider move to every bundled model's new answer (goal ≤ 0.5 s for seven models).

    python -m bench.whatif [--runs assets/runs] [--repeats 5]

Per repeat a new edit (a brightness the cache has not seen, with a 5 % blur, noise and a covered box: the
costliest edits) is applied to a 1600×1200 photo-sized picture at each model's own size (har_core.explain.whatif.as_model_sees:
its own resize, then the edit) and every model predicts its edited picture with its embedding, one model after
another (PyTorch on this CPU; the panel asks them side by side, which `--browser` measures).
Prints the edit's time, the models' time and the total (min / median seconds).

    python -m bench.whatif --browser [--runs ~/har-train/bench_exported] [--data ../shared/data/har] [--repeats 5]

In headless Chromium at 1440×900 on a real server (the app's default backend): a photo uploaded on Predict, the
What-if panel opened, then two series of `--repeats` slider moves, each after a warm move: the brightness slider
alone, a step at a time, then one slider after another (blur, noise, rotation, zoom, contrast: torch's edits), each
move a new edit. Prints slider move → every What-if card redrawn (median, min) and the server's run split by its
spans (har_core.data.spans: the edits and forwards, the rest of the run; the whole page's spans when a move reruns
it), the move's way to the server and, after the run, the browser's drawing; and each model's forward on its
edited picture asked alone.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from har_core.models.artifacts import find_runs
from har_core.models.inference import load_run, predict_all
from har_core.explain.whatif import Edit, as_model_sees

ROOT = Path(__file__).resolve().parents[1]


# (series, slider, key) after a warm brightness move: brightness alone (NumPy's edits), then, after a warm contrast
# move (torch's first edit), one slider after another (torch's edits, each new value kept)
def moves(repeats: int) -> list[tuple[str | None, str, str]]:
    return [(None, "brightness", "Home"), *[("brightness alone", "brightness", "ArrowRight")] * repeats,
            (None, "contrast", "Home"),
            *[("every slider", slider, key) for slider, key in [
                ("blur", "End"), ("noise", "End"), ("rotation", "Home"), ("zoom", "End"), ("contrast", "End"),
                ("rotation", "End"), ("zoom", "Home"), ("noise", "Home")][:repeats]]]


# every What-if card (ui.what_if.card_words) drawn and fresh, nothing left stale, the run's status gone: once the
# server logged the move's run (har_core.data.spans), the move's cards are drawn
CARDS_DRAWN = """(count) => {
  const card = /(no change for|points (less|more) sure of) .* · now \\d+% sure/;
  const fresh = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .filter(el => !el.closest('[data-stale="true"]') && card.test(el.innerText));
  return fresh.length === count && !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidget"]');
}"""


def browser(runs_dir: Path, data: Path, repeats: int) -> dict:
    """Slider move → every What-if card redrawn in Chromium, and where the server's run spent the time."""
    import shutil
    import statistics
    import tempfile
    from playwright.sync_api import sync_playwright
    from bench.classroom import RUN_ENDED, app_server, chromium_path, logged_runs, photos, upload, wait_healthy
    from har_core.data.imaging import load_image
    from har_core.models.backend import app_backend
    runs = [run for run in find_runs(runs_dir)[0] if not run.takes_clips]
    folder = Path(tempfile.mkdtemp())
    photo = photos(data, 1, folder)[0]
    log = folder / "server.log"
    moved = []
    try:
        with app_server(runs_dir, data, log) as (url, _), sync_playwright() as playwright:
            page = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
                                             ).new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(300_000)
            wait_healthy(url)
            page.goto(f"{url}/predict")
            upload(page, photo, len(runs))
            page.get_by_text("What if…").click()
            page.wait_for_function(CARDS_DRAWN, arg=len(runs) + 1, polling=20)
            for series, slider, key in moves(repeats):
                page.wait_for_function(RUN_ENDED)
                page.wait_for_timeout(300)  # nothing left to draw from the last run
                handle = page.locator(f".st-key-whatif_{slider} input[type='range']")
                handle.scroll_into_view_if_needed()
                handle.focus()
                before = len(logged_runs(log, "Predict & compare")) + len(logged_runs(log, "What-if panel"))
                sent_at, start = time.time(), time.perf_counter()
                page.keyboard.press(key)
                while len(logged := logged_runs(log, "Predict & compare") + logged_runs(log, "What-if panel")) \
                        <= before:  # the page's run, or the panel's own
                    time.sleep(0.01)
                page.wait_for_function(CARDS_DRAWN, arg=len(runs) + 1, polling=10)
                drawn = time.perf_counter() - start
                run = max(logged, key=lambda r: r["started_at"])
                moved.append({"series": series, "slider": slider, "drawn_s": drawn, "page": run["page"],
                              "spans": run["spans"], "run_started_s": run["started_at"] - sent_at})
        models = [load_run(run, backend=app_backend()) for run in runs]
        picture = load_image(photo)
        edit = Edit(brightness=0.35, contrast=0.1, blur=0.05, noise=0.4)  # as the moves above leave it
        alone = {}
        for model in models:
            seen = as_model_sees(picture, edit, model.transform)
            predict_all([model], [seen], embed=True)
            alone[model.name] = statistics.median(predict_all([model], [seen], embed=True)[0].seconds
                                                  for _ in range(3))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures = {"alone_s": alone}
    for series in dict.fromkeys(m["series"] for m in moved if m["series"]):
        figures[series] = split([m for m in moved if m["series"] == series])
    print(f"{len(runs)} runs ({', '.join(r.name for r in runs)}), at 1440×900; slider move → every What-if card "
          f"redrawn, median (min) of {repeats} moves after a warm one, and the server's run (median s, each span "
          "without the spans inside it):")
    for series, figure in figures.items():
        if series == "alone_s":
            continue
        print(f"  {series} ({', '.join(figure['sliders'])}): {figure['drawn_s']['median']:.2f} s "
              f"({figure['drawn_s']['min']:.2f} s), each move rerunning {', '.join(sorted(set(figure['pages'])))}")
        print(f"    {'move sent → the run started':40s} {figure['run_started_s']:6.3f}")
        for name, seconds in figure["spans_s"].items():
            print(f"    {name:40s} {seconds:6.3f}")
        print(f"    {'run start → run end':40s} {figure['run_s']:6.3f}")
        print(f"    {'run end → every card drawn (browser)':40s} {figure['after_run_s']:6.3f}")
    print("  each model's forward on its edited picture, asked alone: "
          + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in alone.items()))
    return figures


def split(moved: list[dict]) -> dict:
    """A series of slider moves: browser times and the server's spans, medians."""
    import statistics
    median = statistics.median
    ended = [max(s["ended_at_s"] for s in m["spans"].values()) for m in moved]
    names = sorted({name for m in moved for name in m["spans"]})
    return {"sliders": [m["slider"] for m in moved], "pages": [m["page"] for m in moved],
            "drawn_s": {"min": min(m["drawn_s"] for m in moved), "median": median([m["drawn_s"] for m in moved])},
            "run_started_s": median([m["run_started_s"] for m in moved]), "run_s": median(ended),
            "spans_s": {name: median([m["spans"].get(name, {}).get("s", 0.0) for m in moved]) for name in names},
            "after_run_s": median([m["drawn_s"] - m["run_started_s"] - end for m, end in zip(moved, ended)])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="slider move → cards redrawn in Chromium")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "har"))
    args = parser.parse_args(argv)
    if args.browser:
        return browser(Path(args.runs).expanduser(), Path(args.data), args.repeats)
    models = [load_run(run) for run in find_runs(args.runs)[0] if not run.takes_clips]
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8))
    for model in models:  # warm-up: first forwards allocate
        predict_all([model], [picture], embed=True)
    edits, predictions = [], []
    for i in range(args.repeats):
        edit = Edit(brightness=0.5 + 0.05 * i, blur=0.05, noise=0.1, cover=(0.3, 0.3, 0.7, 0.7))
        start = time.perf_counter()
        edited = [as_model_sees(picture, edit, model.transform) for model in models]
        middle = time.perf_counter()
        for model, seen in zip(models, edited):  # one after another, each answer on its own
            predict_all([model], [seen], embed=True)
        edits.append(middle - start)
        predictions.append(time.perf_counter() - middle)
    total = [a + b for a, b in zip(edits, predictions)]
    figures = {name: {"min": round(min(v), 3), "median": round(float(np.median(v)), 3)}
               for name, v in (("edit", edits), ("models", predictions), ("total", total))}
    print(f"{len(models)} models ({', '.join(m.name for m in models)}), {args.repeats} slider moves:")
    for name, figure in figures.items():
        print(f"  {name:<7} min {figure['min']:.3f} s   median {figure['median']:.3f} s")
    return figures


if __name__ == "__main__":
    main()
