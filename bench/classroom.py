"""How fast the app answers in front of a class, measured in headless Chromium on the bundled runs.

    python -m bench.classroom [--runs assets/runs] [--data ../shared/data/sports15] [--repeats 5]

Prints (seconds; warm figures are min / median over `--repeats` different photos):
  cold start   server start → the first page drawn; → the first upload's predictions drawn
  predict      upload → every model's prediction drawn (no stale element left); → the page's run ended
               (the similar training images come after the predictions)
  explain      upload → every model's map drawn; moving the opacity slider one step → every map redrawn;
               switching the class → every map redrawn for the new class
  navigate     a page switch through the sidebar (median of Overview → Evaluate → Mistakes → Training →
               Overview, and each page's own); a confusion-matrix cell click → its pictures listed; a Mistakes card's Open → its detail
  teach        100 pictures (5 sports15 classes × 20, unseen by the base run) → a head on each bundled photo
               run's embeddings: seconds to embed, to fit, held-out accuracy (`--teach-only` skips the browser;
               `--teach-data DIR` takes 5 classes the runs never saw from a labelled folder, e.g. sports15 for
               the HAR runs)
  visitors     `--visitors 30`: thirty tabs each upload a different photo at once (`--rounds` times, new photos
               each round): upload → every card drawn p50 / p95 / max, how many tabs show every card's class and
               confidence as that photo gets them alone, the server's memory after each round and once the
               tabs have closed and their sessions' reconnect time has passed (only these figures)
  cold and split  `--cold-and-split`: server start → the Overview drawn (every run's card), → the first upload's
               cards drawn; then warm uploads (`--repeats` different photos): upload → every card drawn, split by the
               server's own spans (forwards, prediction sets, card bars, the page's other work, up to the last
               card; the rest is the upload's way in and the cards' way out and drawing), the flip TTA's share of
               the forwards, and what the page does after the cards (similar images, What-if panel, figures)
Run it on an idle machine: the figures are wall-clock times of a real server and browser.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from har_core.models.artifacts import find_runs
from har_core.data.labels import spoken
from har_core.models.backend import app_backend

ROOT = Path(__file__).resolve().parents[1]
FRESH = "(el) => !el.closest('[data-stale=\"true\"]')"

# every model's card with its confidence and the uploaded photo's own caption, drawn by this run (not left over)
PREDICTIONS_DRAWN = """([name, count]) => {
  const fresh = el => !el.closest('[data-stale="true"]');
  const cards = [...document.querySelectorAll('[class*="st-key-card_"]')]
    .filter(el => fresh(el) && /\\d+% sure/.test(el.textContent));
  const photo = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .some(el => fresh(el) && el.textContent.includes(name));
  return photo && cards.length === count;
}"""
MAPS_DRAWN = """([text, count, before]) => {
  const fresh = el => !el.closest('[data-stale="true"]');
  const labels = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .filter(el => fresh(el) && el.innerText.includes(text));
  const images = [...document.querySelectorAll('[data-testid="stImage"] img')].filter(fresh).map(i => i.src);
  // a map that is zero everywhere is said in a caption instead of drawn (a tiny model's can be)
  const empty = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .filter(el => fresh(el) && el.innerText.includes('its map is empty')).length;
  // every model's map is new (the original picture beside the controls stays the same)
  return labels.length === count && images.filter(src => !before.includes(src)).length + empty >= count;
}"""
RUN_ENDED = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"
# from the file input's change event until every card is drawn, timed inside the page: thirty tabs are timed at
# once, each by its own clock, while the bench uploads to the next. Each tab looks when its page changes, reading
# textContent (no layout), instead of polling innerText every 20 ms: the harness should not take the cores the server
# answers on (the tabs' Chromium used 20.6–26.8 CPU s a round either way, so the page's drawing is what costs)
WATCH_UPLOAD = """([name, count]) => {
  const drawn = (%s);
  window.__drawn = null;
  document.addEventListener('change', () => {
    const start = performance.now();
    const watcher = new MutationObserver(() => {
      if (drawn([name, count])) { window.__drawn = (performance.now() - start) / 1000; watcher.disconnect(); }
    });
    watcher.observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true});
  }, {capture: true, once: true});
}""" % PREDICTIONS_DRAWN
# each card's model (its key), the class it names (its heading) and its confidence ("67% sure")
CARD_ANSWERS = """() => [...document.querySelectorAll('[class*="st-key-card_"]')]
  .filter(el => !el.closest('[data-stale="true"]'))
  .map(el => ({model: [...el.classList].find(c => c.startsWith('st-key-card_')).slice('st-key-card_'.length),
               answer: (el.querySelector('h3') || {innerText: ''}).innerText.trim(),
               sure: ((el.innerText.match(/(\\d+)% sure/) || [])[0] || '')}))"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photos(data: Path, count: int, folder: Path) -> list[Path]:
    """Different photos (new content each time: nothing cached), copied under new names."""
    found = sorted((data / "train").glob("*.jpg"))[:count] if (data / "train").is_dir() else []
    if len(found) < count:
        raise SystemExit(f"error: {data} has fewer than {count} photos in train/")
    copies = []
    for i, source in enumerate(found):
        copies.append(folder / f"photo_{i}.jpg")
        shutil.copyfile(source, copies[-1])
    return copies


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "n": len(values)}


def upload(page, path: Path, models: int) -> tuple[float, float, float]:
    """Upload on a freshly opened Predict page: seconds until every prediction is drawn, and until the run ended;
    and the wall-clock time the upload was sent (the server's log shares that clock)."""
    page.get_by_text("Upload one or more photos").wait_for()
    page.wait_for_function(RUN_ENDED)
    sent_at = time.time()
    start = time.perf_counter()
    page.locator("input[type='file']").first.set_input_files(str(path))
    page.wait_for_function(PREDICTIONS_DRAWN, arg=[path.name, models], polling=20)
    drawn = time.perf_counter() - start
    page.wait_for_function(RUN_ENDED, polling=20)
    return drawn, time.perf_counter() - start, sent_at


def map_sources(page) -> list[str]:
    return page.eval_on_selector_all("[data-testid='stImage'] img", "imgs => imgs.map(i => i.src)")


def explain_round(page, path: Path, models: int, new_class: str) -> dict:
    page.get_by_text("Upload a photo, take one").wait_for()
    page.wait_for_function(RUN_ENDED)
    before = map_sources(page)
    start = time.perf_counter()
    page.locator("input[type='file']").first.set_input_files(str(path))
    page.wait_for_function(MAPS_DRAWN, arg=["explains", models, before], polling=20)
    first = time.perf_counter() - start
    page.wait_for_function(RUN_ENDED, polling=20)

    before = map_sources(page)
    page.get_by_role("slider").first.focus()
    start = time.perf_counter()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(MAPS_DRAWN, arg=["explains", models, before], polling=20)
    opacity = time.perf_counter() - start
    page.wait_for_function(RUN_ENDED, polling=20)

    page.locator("[data-testid='stSelectbox']", has_text="Class").click()
    option = page.get_by_role("option", name=new_class, exact=True)
    start = time.perf_counter()
    option.click()
    # the caption names the new class; the picture may rightly stay the same (it was the predicted class)
    page.wait_for_function(MAPS_DRAWN, arg=[f"explains {spoken(new_class)}", models, []], polling=20)
    switched = time.perf_counter() - start
    page.wait_for_function(RUN_ENDED, polling=20)
    return {"first": first, "opacity": opacity, "class": switched}


PAGES = {"Evaluate": "📊 Evaluate", "Mistakes": "🧐 Mistakes", "Training": "📈 Training",
         "Overview": "📋 Overview"}  # sidebar link -> the page's title


def navigation_round(page) -> dict:
    """Warm page switches through the sidebar (Overview → Evaluate → Mistakes → Training → Overview), a click on
    a confusion-matrix cell until its pictures are listed, and a Mistakes card's Open until its detail shows."""
    switches, per_page = [], {}
    for name, title in PAGES.items():
        page.wait_for_function(RUN_ENDED)
        start = time.perf_counter()
        page.locator("[data-testid='stSidebarNav'] a", has_text=name).first.click()
        page.get_by_role("heading", name=title).first.wait_for()
        page.wait_for_function(RUN_ENDED, polling=20)
        switches.append(time.perf_counter() - start)
        per_page[name] = switches[-1]
        if name == "Evaluate":  # a cell click, the matrix's 2nd row and 1st column
            heading = page.get_by_text("image(s) with true")
            before = heading.inner_text()
            rows = len(page.locator("[class*='st-key-confusion'] .ytick").all())
            cell = page.locator("[class*='st-key-confusion'] .point").nth(rows)  # true: 2nd class, predicted: 1st
            cell.scroll_into_view_if_needed()
            box = cell.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.wait_for_timeout(300)
            start = time.perf_counter()
            page.mouse.click(x, y)
            page.wait_for_function("(before) => [...document.querySelectorAll('[data-testid=\"stMarkdownContainer\"]')]"
                                   ".some(e => e.innerText.includes('image(s) with true') && e.innerText !== before)",
                                   arg=before, polling=20)
            page.wait_for_function(RUN_ENDED, polling=20)
            cell = time.perf_counter() - start
        if name == "Mistakes":
            start = time.perf_counter()
            page.get_by_role("button", name="Open ▸").nth(1).click()
            page.wait_for_function(RUN_ENDED, polling=20)
            page.locator("[role='dialog'] [data-testid='stImageCaption']").first.wait_for()
            opened = time.perf_counter() - start
            page.keyboard.press("Escape")  # close the window over the cards: the page behind it is inert
            page.locator("[role='dialog']").wait_for(state="detached")
            page.wait_for_function(RUN_ENDED, polling=20)
    return {"switch": statistics.median(switches), "pages": per_page, "cell": cell, "open": opened}


def chromium_path() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: Chromium is not installed (make browser)")
    return chromium


@contextlib.contextmanager
def app_server(runs_dir: Path, data: Path, log: Path | None = None):
    """A real app server on a free port, stopped with whatever it started: (its url, its process). `log`: its output
    goes there, with a line per page run saying where the run's time went (har_core.data.spans)."""
    port = free_port()
    output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the server below
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1"], cwd=ROOT, env={**os.environ, "HAR_RUNS": str(runs_dir), "HAR_DATA": str(data),
                                      **({"HAR_SPANS": "1"} if log else {})},
        stdout=output, stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=True)
    if threading.current_thread() is threading.main_thread():  # a bench stopped by `timeout` or kill still stops
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # its server: SIGTERM unwinds through the finally
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)  # whatever it started, and itself if SIGTERM was ignored
            if log:
                output.close()


def wait_healthy(url: str) -> None:
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return
        except OSError:
            time.sleep(0.1)


def measure(runs_dir: Path, data: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright
    chromium = chromium_path()
    runs = [run for run in find_runs(runs_dir)[0] if not run.takes_clips]
    folder = Path(tempfile.mkdtemp())
    pictures = photos(data, 2 * repeats + 1, folder)
    started = time.perf_counter()
    results = {}
    try:
        with app_server(runs_dir, data) as (url, _), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            wait_healthy(url)
            page.goto(url)
            page.get_by_text("Model cards").wait_for()
            results["cold_first_page_s"] = time.perf_counter() - started
            page.goto(f"{url}/predict")
            first, _, _ = upload(page, pictures[0], len(runs))
            results["cold_first_prediction_s"] = time.perf_counter() - started
            results["cold_first_upload_to_predictions_s"] = first
            drawn, ended = [], []
            for path in pictures[1:repeats + 1]:
                page.goto(f"{url}/predict")  # a fresh page: the uploader takes several files
                a, b, _ = upload(page, path, len(runs))
                drawn.append(a)
                ended.append(b)
            results["predict_upload_to_predictions_s"] = stats(drawn)
            results["predict_upload_to_run_end_s"] = stats(ended)
            rounds = []
            classes = runs[0].classes
            for i, path in enumerate(pictures[repeats + 1:]):
                page.goto(f"{url}/explain")
                rounds.append(explain_round(page, path, len(runs), classes[(3 + i) % len(classes)]))
            for key in ("first", "opacity", "class"):
                results[f"explain_{key}_s"] = stats([r[key] for r in rounds])
            page.goto(url)
            page.get_by_text("Model cards").wait_for()
            navigation = [navigation_round(page) for _ in range(repeats)]
            results["page_switch_median_of_four_s"] = stats([r["switch"] for r in navigation])
            for name in PAGES:  # which page makes a switch slow
                results[f"  switch to {name}_s"] = stats([r["pages"][name] for r in navigation])
            results["evaluate_cell_click_to_its_pictures_s"] = stats([r["cell"] for r in navigation])
            results["mistakes_open_to_detail_s"] = stats([r["open"] for r in navigation])
            browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def server_memory_mb(server: subprocess.Popen) -> float:
    """The app server's resident memory (threads only: its one process holds every session and model)."""
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far, every thread included; 0 once it is gone (a
    Chromium helper that ended counts nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """The CPU time every core of this machine has been busy so far (/proc/stat: all but idle and I/O wait), whoever
    used it: the server, Chromium, Playwright's driver, this bench."""
    busy = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(busy) - busy[3] - busy[4]) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Every process below `root` (this bench's Playwright driver and its Chromium, say)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def cpu_split(server: subprocess.Popen) -> tuple[float, float]:
    """CPU seconds so far of the server (and whatever it started) and of this bench's browser (Chromium's
    processes, not Playwright's driver that steers them): both run on this machine's cores."""
    server_pids = {server.pid, *descendants(server.pid)}
    browser_pids = [pid for pid in set(descendants(os.getpid())) - server_pids if is_chromium(pid)]
    return sum(map(cpu_seconds, server_pids)), sum(map(cpu_seconds, browser_pids))


def is_chromium(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:  # gone meanwhile
        return False
    return b"chrom" in Path(command.decode(errors="replace")).name.encode()


def open_predict(pages: list, url: str) -> None:
    """Every tab on a fresh Predict page, ready for an upload (each tab is its own visitor, its own session)."""
    for page in pages:
        page.goto(f"{url}/predict")
    for page in pages:
        page.get_by_text("Upload one or more photos").wait_for()
        page.wait_for_function(RUN_ENDED)


def classroom_round(pages: list, pictures: list[Path], models: int) -> dict:
    """Each tab uploads its own photo, one after the other as fast as the browser takes them; each tab's
    upload → every card drawn, timed inside it, and the answers its cards show (None: never drawn)."""
    for page, path in zip(pages, pictures):
        page.evaluate(WATCH_UPLOAD, [path.name, models])
    first_upload_at = time.time()  # the wall clock the server's log shares
    start = time.perf_counter()
    for page, path in zip(pages, pictures):
        page.locator("input[type='file']").first.set_input_files(str(path))
    spread = time.perf_counter() - start
    drawn, shown = [], []
    for page in pages:
        try:
            page.wait_for_function("() => window.__drawn !== null", polling=100)
            drawn.append(page.evaluate("() => window.__drawn"))
            shown.append({card["model"]: (card["answer"], card["sure"]) for card in page.evaluate(CARD_ANSWERS)})
        except Exception as error:  # noqa: BLE001 - a tab that never drew its cards is counted, not fatal
            print(f"  a tab failed: {str(error).splitlines()[0]}", file=sys.stderr)
            drawn.append(None)
            shown.append(None)
    return {"spread_s": spread, "drawn_s": drawn, "shown": shown, "first_upload_at": first_upload_at}


def alone_answers(runs: list, pictures: list[Path]) -> tuple[list[dict], dict[str, str]]:
    """What each photo's cards say when it is the only one: each model's own forward of it (through the app's
    default backend), in the TTA mode the Predict page starts in (the class it names, "67% sure"); and which
    backend answered each run."""
    from har_core.evaluation.calibration import default_tta
    from har_core.data.imaging import load_image
    from har_core.models.inference import load_run
    tta = default_tta(runs)
    models = [load_run(run.path, app_backend()) for run in runs]
    answers = []
    for path in pictures:
        image = load_image(path)
        answers.append({})
        for loaded in models:
            probs = loaded.predict([image], tta)[0]
            answers[-1][loaded.name] = (spoken(loaded.classes[int(probs.argmax())]), f"{probs.max():.0%} sure")
    return answers, {loaded.name: loaded.backend for loaded in models}


def session_ttl_s() -> int:
    """How long the app's server keeps a closed tab's session for it to reconnect (server.disconnectedSessionTTL):
    the environment's value, else the app's .streamlit/config.toml, else Streamlit's default."""
    import tomllib
    if given := os.environ.get("STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"):
        return int(given)
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    return int(config.get("server", {}).get("disconnectedSessionTTL", 120))


def visitors_figures(runs_dir: Path, data: Path, visitors: int, rounds: int) -> dict:
    """`visitors` browser tabs each upload a different photo at once, `rounds` times (new photos each round):
    upload → every card drawn (p50 / p95 / max), how many tabs show the answers their photo gets alone, the
    server's memory after each round; and, since the thirty tabs' Chromium shares the server's two cores, each
    round's CPU seconds of the server and of the browser, and when the server had built the round's last card
    (from its log: every run's start and its last card)."""
    import numpy as np
    from playwright.sync_api import sync_playwright
    runs = [run for run in find_runs(runs_dir)[0] if not run.takes_clips]
    folder = Path(tempfile.mkdtemp())
    pictures = photos(data, visitors * rounds, folder)
    log = folder / "server.log"
    played = []
    try:
        with app_server(runs_dir, data, log) as (url, server), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(),
                                                 args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(600_000)
            pages = [context.new_page() for _ in range(visitors)]
            wait_healthy(url)
            memory = [server_memory_mb(server)]
            def cpu_now() -> tuple[float, float, float]:  # the server's, the tabs' Chromium's, the machine's
                return (*cpu_split(server), machine_cpu_seconds())

            for r in range(rounds):
                open_predict(pages, url)
                before = len(logged_runs(log, "Predict & compare"))
                used = cpu_now()
                played.append(classroom_round(pages, pictures[r * visitors:(r + 1) * visitors], len(runs)))
                played[-1]["cpu_s"] = tuple(now - then for now, then in zip(cpu_now(), used))
                built = [run["started_at"] + run["spans"]["card bars"]["ended_at_s"] - played[-1]["first_upload_at"]
                         for run in answered_runs(log, before, count=visitors) if "card bars" in run["spans"]]
                played[-1]["server_built_s"] = max(built, default=float("nan"))
                memory.append(server_memory_mb(server))
                times = [t for t in played[-1]["drawn_s"] if t is not None]
                server_cpu, browser_cpu, machine_cpu = played[-1]["cpu_s"]
                print(f"round {r + 1}: {len(times)}/{visitors} drawn, uploads spread over "
                      f"{played[-1]['spread_s']:.2f} s, median {np.median(times) if times else float('nan'):.2f} s, "
                      f"the server's last card built {played[-1]['server_built_s']:.2f} s after the first upload; "
                      f"CPU s: server {server_cpu:.1f}, browser {browser_cpu:.1f}, machine {machine_cpu:.1f}; "
                      f"server {memory[-1]:.0f} MB", flush=True)
            # each round opened thirty new sessions; Streamlit keeps a closed tab's session (its upload, its
            # widgets) for disconnectedSessionTTL in case it reconnects, then drops it, and the app lets its photos
            # go at its next page run (ui/sessions.py, at most once a minute): wait that long, then one visit
            for page in pages:
                page.close()
            time.sleep(session_ttl_s() + 30)
            visit = context.new_page()
            visit.goto(url)  # one visitor after the wait, as a quiet room's next one
            visit.wait_for_function(RUN_ENDED)
            memory.append(server_memory_mb(server))
            browser.close()
        expected, backends = alone_answers(runs, pictures)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    drawn = [t for round_ in played for t in round_["drawn_s"] if t is not None]
    shown = [tab for round_ in played for tab in round_["shown"]]
    right = sum(tab == alone for tab, alone in zip(shown, expected))
    return {"visitors": visitors, "rounds": rounds, "models": len(runs), "drawn": len(drawn), "tabs": len(shown),
            "p50_s": float(np.percentile(drawn, 50)) if drawn else None,
            "p95_s": float(np.percentile(drawn, 95)) if drawn else None, "max_s": max(drawn, default=None),
            "uploads_spread_s": max(round_["spread_s"] for round_ in played), "answers_right": right,
            "server_mb": memory, "backends": backends,
            "server_built_s": [round_["server_built_s"] for round_ in played],
            "cpu_s": [round_["cpu_s"] for round_ in played]}


def print_visitors(figures: dict) -> None:
    if not figures["drawn"]:
        print(f"{figures['visitors']} visitors: no tab drew its cards")
        return
    print("answering through (the app's default backend): "
          + ", ".join(f"{name} {backend}" for name, backend in figures["backends"].items()))
    print(f"{figures['visitors']} visitors × {figures['rounds']} rounds, {figures['models']} models each "
          f"(uploads spread over ≤ {figures['uploads_spread_s']:.2f} s): upload → every card drawn "
          f"p50 {figures['p50_s']:.2f} s, p95 {figures['p95_s']:.2f} s, max {figures['max_s']:.2f} s; "
          f"{figures['drawn']}/{figures['tabs']} drawn")
    print(f"answers equal to the photo's answer alone (every card's class and confidence): "
          f"{figures['answers_right']}/{figures['tabs']} tabs")
    print("the server's last card of each round built (s after its first upload): "
          + ", ".join(f"{s:.2f}" for s in figures["server_built_s"]))
    print("CPU seconds of each round, server / the tabs' Chromium / the whole machine (two cores: both busy for half "
          "the last): " + ", ".join(f"{server:.1f} / {browser:.1f} / {machine:.1f}"
                                    for server, browser, machine in figures["cpu_s"]))
    *rounds, settled = figures["server_mb"]
    print("server memory (MB): before, then after each round: " + " → ".join(f"{mb:.0f}" for mb in rounds)
          + f"; {settled:.0f} once the tabs had closed and their sessions' {session_ttl_s()} s had passed")


# what the Predict page spends a warm upload on, by the call it makes (the page imports each name again at every
# run, so a timer put around it where it is defined is the one the page calls); a stage called inside another
# counts in the outer one
STAGES = {"forwards (page's TTA mode)": ("ui.answers", "predict"), "sets and sureness": ("ui.sureness", "sureness"),
          "card figures (probability bars)": ("har_core.evaluation.plots", "probability_bars"),
          "similar images": ("ui.similar", "similar_images"), "What-if panel": ("ui.what_if", "what_if")}


def warm_split(runs_dir: Path, data: Path, repeats: int = 3) -> dict:
    """The Predict page's own time for a warm upload (models loaded, sets and embeddings read; a new photo: the
    test split's samples), by stage, in Streamlit's AppTest (no browser): median seconds over `repeats` photos.
    Also the flip TTA's share of the forwards (the runs' own forwards, without and with it), and the time from
    the run's start to its last card (the browser draws the cards after that)."""
    import importlib

    from streamlit.logger import set_log_level
    from streamlit.testing.v1 import AppTest

    from har_core.evaluation.calibration import default_tta
    from har_core.data.imaging import load_image
    from har_core.models.inference import load_run, predict_all
    set_log_level("error")  # not its warnings about running without a server, once per cached function
    spent: dict[str, float] = {}
    active: list[str] = []
    last_card = [0.0]

    def timed(stage, call):
        def wrapper(*args, **kwargs):
            if active:  # inside another stage: counted there
                return call(*args, **kwargs)
            active.append(stage)
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                active.pop()
                spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - start
                if call.__name__ == "probability_bars":
                    last_card[0] = time.perf_counter()
        return wrapper

    patched = []
    for stage, (module_name, name) in STAGES.items():
        module = importlib.import_module(module_name)
        patched.append((module, name, getattr(module, name)))
        setattr(module, name, timed(stage, getattr(module, name)))
    saved_env = {key: os.environ.get(key) for key in ("HAR_RUNS", "HAR_DATA")}
    os.environ.update(HAR_RUNS=str(runs_dir), HAR_DATA=str(data))
    rows, samples = [], []
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900).run()
        at.switch_page("views/predict.py")
        at.run()
        options = at.selectbox(key="predict_sample").options
        if len(options) < repeats + 2:
            raise SystemExit(f"error: {runs_dir} has too few test samples in {data} for the split")
        for option in options[1:repeats + 2]:  # the first photo warms the models, sets and embeddings up
            spent.clear()
            at.selectbox(key="predict_sample").set_value(option)
            start = time.perf_counter()
            at.run()
            rows.append(dict(spent, **{"page's whole run": time.perf_counter() - start,
                                       "run start → last card": last_card[0] - start}))
            if at.exception:
                raise SystemExit(f"error: the Predict page failed: {at.exception[0].message}")
            samples.append(Path(data) / at.selectbox(key="predict_sample").value)
    finally:
        for module, name, call in patched:
            setattr(module, name, call)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    split = {stage: statistics.median(row.get(stage, 0.0) for row in rows[1:])  # 0: the page did not call it
             for stage in [*STAGES, "page's whole run", "run start → last card"]}
    runs = [run for run in find_runs(runs_dir)[0] if not run.takes_clips]
    models = [load_run(run.path, app_backend()) for run in runs]
    images = [load_image(path) for path in samples[1:]]
    forwards = {tta: statistics.median(sum(p.seconds for p in predict_all(models, [image], tta=tta))
                                       for image in images) for tta in (False, True)}
    split["the runs' own forwards, without flip TTA"] = forwards[False]  # what TTA costs: the difference
    split["the runs' own forwards, with flip TTA"] = forwards[True]
    split["the page's TTA mode"] = "on" if default_tta(runs) else "off"
    return split


def print_split(split: dict) -> None:
    print("a warm upload on the Predict page, by stage (server side, AppTest; median s):")
    for stage, seconds in split.items():
        print(f"  {stage:50s} {seconds:>7}" if isinstance(seconds, str) else f"  {stage:50s} {seconds:7.3f}")
    print("  the rest of the page's run is its other widgets; the browser draws the cards after 'run start → last "
          "card'\n  (upload → cards drawn in the browser, above, minus that is transfer and drawing)")


def print_figures(results: dict) -> None:
    print(f"{'app in headless Chromium (s)':58s} {'min':>7s} {'median':>7s}")
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"{key:58s} {value['min']:7.2f} {value['median']:7.2f}")
        else:
            print(f"{key:58s} {value:7.2f}")


def teach_figures(runs_dir: Path, data: Path, per_class: int = 20, new_data: Path | None = None) -> dict:
    """Teach page's work without the page: 5 classes × `per_class` pictures, from the base's val/test split or,
    with `new_data`, from a labelled folder of classes the base runs never saw (its first 5 classes)."""
    import pandas as pd

    from har_core.data.datasets import scan
    from har_core.data.imaging import load_image
    from har_core.models.inference import load_run
    from har_core.training.teach import teach
    if new_data is not None:
        index = scan(new_data, progress=False)
        given = pd.DataFrame(index.samples, columns=["filename", "label"])
    figures = {}
    for run in find_runs(runs_dir)[0]:
        if run.takes_clips:
            continue
        if new_data is None:
            manifest = pd.read_csv(run.path / "split.csv")
            source, unseen = data, manifest[manifest["split"] != "train"]
        else:
            source, unseen = Path(new_data), given[~given["label"].isin(run.classes)]
        names = [n for n, c in unseen["label"].value_counts().sort_index().items() if c >= per_class][:5]
        pictures = [[load_image(source / f) for f in unseen.loc[unseen["label"] == n, "filename"][:per_class]]
                    for n in names]
        base = load_run(run.path)  # Teach folds a head into the PyTorch network: no export to open
        start = time.perf_counter()
        head = teach(base, names, pictures)
        figures[run.name] = {"total": time.perf_counter() - start, **head.seconds,
                             "accuracy": head.metrics["accuracy"], "interval": head.metrics["accuracy_interval"],
                             "pictures": sum(map(len, pictures)), "classes": names}
    return figures


# the Overview drawn whole: every run's card heading, drawn by this run
OVERVIEW_DRAWN = """(names) => {
  const headings = [...document.querySelectorAll('[data-testid="stMarkdownContainer"] h5')]
    .filter(el => !el.closest('[data-stale="true"]')).map(el => el.innerText.trim());
  return names.every(name => headings.includes(name));
}"""
# a warm upload's time up to its cards, by span (har_core.data.spans); the rest come after the cards, below the fold
BEFORE_CARDS = ("forwards", "not sure", "card bars")
AFTER_CARDS = ("prediction sets", "similar images", "What-if panel", "figures")


def logged_runs(log: Path, page: str) -> list[dict]:
    """Every run of `page` the server logged so far (har_core.data.spans.logged: its spans and its start's
    wall-clock time), oldest first."""
    runs = []
    for line in log.read_text().splitlines():
        if "HAR Studio spans " in line:
            with contextlib.suppress(json.JSONDecodeError):  # the last line, still being written
                runs.append(json.loads(line.split("HAR Studio spans ", 1)[1]))
    return [run for run in runs if run["page"] == page]


def answered_runs(log: Path, before: int, count: int = 1, wait_s: float = 10.0) -> list[dict]:
    """The Predict runs logged after the first `before` that answered a photo (an upload, or a rerun with one: the
    benches make none), waiting up to `wait_s` for the server to write `count` of them (it writes a run's line as
    the run ends, which the browser may see first)."""
    deadline = time.monotonic() + wait_s
    while len(runs := [run for run in logged_runs(log, "Predict & compare")[before:] if "forwards" in run["spans"]]) \
            < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return runs


def cold_and_split(runs_dir: Path, data: Path, repeats: int) -> dict:
    """Server start → the Overview drawn (every run's card), → the first upload's cards drawn on Predict; then
    `repeats` warm uploads of different photos: upload → every card drawn in the browser, and where the server's
    run spent its time (har_core.data.spans, logged by the server), the CPU seconds the upload cost the server and
    the browser, how long the tab's main thread worked on it (tasks, of which scripts: Chrome's Performance
    counters), and how many messages the server sent the page; the flip TTA's share of the forwards."""
    from playwright.sync_api import sync_playwright

    from har_core.data.imaging import load_image
    from har_core.models.inference import load_run, predict_all
    every_run = find_runs(runs_dir)[0]
    runs = [run for run in every_run if not run.takes_clips]
    folder = Path(tempfile.mkdtemp())
    pictures = photos(data, repeats + 1, folder)
    log = folder / "server.log"
    figures = {"runs": [run.name for run in every_run], "warm": []}
    try:
        started = time.perf_counter()
        with app_server(runs_dir, data, log) as (url, server), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(),
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(300_000)
            wait_healthy(url)
            page.goto(url)
            page.wait_for_function(OVERVIEW_DRAWN, arg=figures["runs"], polling=20)
            figures["first_page_s"] = time.perf_counter() - started
            page.goto(f"{url}/predict")
            page.get_by_text("Upload one or more photos").wait_for()
            page.wait_for_function(RUN_ENDED)
            figures["predict_ready_s"] = time.perf_counter() - started
            drawn, _, sent_at = upload(page, pictures[0], len(runs))
            figures["first_answer_s"] = time.perf_counter() - started
            first = answered_runs(log, 0)
            figures["first"] = {"drawn_s": drawn, "spans": first[0]["spans"] if first else {},
                                "run_started_s": first[0]["started_at"] - sent_at if first else float("nan")}
            messages = []  # the server's messages to the page (each an element, a block or a status): counted
            session = page.context.new_cdp_session(page)
            session.send("Network.enable")
            session.on("Network.webSocketFrameReceived", lambda frame: messages.append(1))
            session.send("Performance.enable")  # Chrome's own counters of the tab's main thread
            tab_counters = lambda: {metric["name"]: metric["value"]  # noqa: E731
                                   for metric in session.send("Performance.getMetrics")["metrics"]}
            for path in pictures[1:]:
                page.goto(f"{url}/predict")
                page.get_by_text("Upload one or more photos").wait_for()
                page.wait_for_function(RUN_ENDED)
                before = len(logged_runs(log, "Predict & compare"))
                messages.clear()
                used, counted = cpu_split(server), tab_counters()
                page.evaluate(WATCH_UPLOAD, [path.name, len(runs)])  # timed in the page, as the room's tabs are:
                sent_at = time.time()  # polling it every 20 ms would add to the browser's CPU
                page.locator("input[type='file']").first.set_input_files(str(path))
                page.wait_for_function("() => window.__drawn !== null", polling=100)
                drawn = page.evaluate("() => window.__drawn")
                page.wait_for_function(RUN_ENDED, polling=100)
                cpu_s = tuple(now - then for now, then in zip(cpu_split(server), used))
                tab = {name: value - counted[name] for name, value in tab_counters().items()
                       if name in ("TaskDuration", "ScriptDuration")}
                answered = answered_runs(log, before)
                figures["warm"].append({"drawn_s": drawn, "spans": answered[-1]["spans"] if answered else {},
                                        "run_started_s": answered[-1]["started_at"] - sent_at if answered
                                        else float("nan"), "cpu_s": cpu_s, "messages": len(messages), "tab_s": tab})
            browser.close()
        models = [load_run(run.path, app_backend()) for run in runs]  # TTA's share: the runs' own forwards, without and with it
        images = [load_image(path) for path in pictures[1:]]
        figures["backends"] = {m.name: m.backend for m in models}
        figures["forwards_s"] = {tta: statistics.median(sum(p.seconds for p in predict_all(models, [image], tta=tta))
                                                        for image in images) for tta in (False, True)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return figures


def print_cold_and_split(figures: dict) -> None:
    warm = figures["warm"]
    median = lambda values: statistics.median(values) if values else float("nan")  # noqa: E731
    seconds = lambda name: median([row["spans"].get(name, {}).get("s", 0.0) for row in warm])  # noqa: E731
    print(f"cold start, {len(figures['runs'])} runs ({', '.join(figures['runs'])}):")
    print("  answering through (the app's default backend): "
          + ", ".join(f"{name} {backend}" for name, backend in figures.get("backends", {}).items()))
    print(f"  server start → Overview drawn (every run's card)   {figures['first_page_s']:6.2f} s")
    print(f"  server start → first answer (its cards drawn)       {figures['first_answer_s']:6.2f} s")
    first = figures["first"]
    print(f"    of which: Predict opened and its first run ended {figures['predict_ready_s'] - figures['first_page_s']:.2f} s"
          f" after the Overview; upload sent → run started {first['run_started_s']:.2f} s; the run's spans up to "
          f"its last card: " + ", ".join(f"{name} {first['spans'].get(name, {}).get('s', 0.0):.2f} s"
                                        for name in ("models", *BEFORE_CARDS))
          + f" (last card built {first['spans'].get('card bars', {}).get('ended_at_s', float('nan')):.2f} s into the "
          f"run); upload → cards drawn {first['drawn_s']:.2f} s")
    drawn = [row["drawn_s"] for row in warm]
    print(f"warm upload → every card drawn (browser), {len(drawn)} different photos: median {median(drawn):.2f} s, "
          f"min {min(drawn, default=float('nan')):.2f} s")
    print("  the server's run up to the cards (median s, each span without the spans inside it):")
    for name in BEFORE_CARDS:
        print(f"    {name:48s} {seconds(name):6.3f}")
    last_card = median([row["spans"].get("card bars", {}).get("ended_at_s", float("nan")) for row in warm])
    print(f"    {'run start → last card built':48s} {last_card:6.3f}")
    started = median([row["run_started_s"] for row in warm])
    print(f"  {'the rest: upload sent → the run started':50s} {started:6.3f}")
    after = median([row["drawn_s"] - row["run_started_s"] - row["spans"].get("card bars", {}).get("ended_at_s", 0.0)
                    for row in warm])
    print(f"  {'          last card built → every card drawn':50s} {after:6.3f}")
    server_cpu, browser_cpu = (median([row["cpu_s"][i] for row in warm if "cpu_s" in row]) for i in (0, 1))
    print(f"  CPU of one upload (median): the server {server_cpu:.2f} s, the browser drawing it {browser_cpu:.2f} s; "
          f"the server sent the page {median([row['messages'] for row in warm if 'messages' in row]):.0f} messages")
    tab = lambda name: median([row["tab_s"][name] for row in warm if "tab_s" in row])  # noqa: E731
    print(f"  the tab's main thread (Chrome's Performance counters, median): tasks {tab('TaskDuration'):.2f} s, "
          f"of which scripts {tab('ScriptDuration'):.2f} s")
    forwards = figures["forwards_s"]
    print(f"  flip TTA: the runs' own forwards {forwards[False]:.3f} s without it, {forwards[True]:.3f} s with it")
    print("  after the cards (below the fold; not in upload → cards drawn):")
    for name in (*AFTER_CARDS, "the page's other work"):
        print(f"    {name:48s} {seconds(name):6.3f}")
    print(f"    {'run start → run end':48s} "
          f"{median([max(s['ended_at_s'] for s in row['spans'].values()) for row in warm if row['spans']]):6.3f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sports15"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--teach-only", action="store_true", help="only the Teach figures (no browser)")
    parser.add_argument("--visitors", type=int, help="only the classroom figures: this many tabs upload at once")
    parser.add_argument("--rounds", type=int, default=3, help="with --visitors: rounds of uploads (new photos each)")
    parser.add_argument("--cold-and-split", action="store_true",
                        help="only the cold start (server start → Overview drawn, → first answer) and a warm upload's "
                             "time by stage, from the server's own spans (HAR_SPANS=1) and the browser")
    parser.add_argument("--split-only", action="store_true",
                        help="only the split of a warm upload's time by stage (AppTest, no browser)")
    parser.add_argument("--teach-data", help="teach classes the runs never saw, from this labelled folder (default: "
                                             "the runs' own classes, from their val/test pictures)")
    args = parser.parse_args(argv)
    if args.visitors:
        figures = visitors_figures(Path(args.runs), Path(args.data), args.visitors, args.rounds)
        print_visitors(figures)
        return {"visitors": figures}
    if args.cold_and_split:
        figures = cold_and_split(Path(args.runs), Path(args.data), args.repeats)
        print_cold_and_split(figures)
        return {"cold_and_split": figures}
    if args.split_only:
        split = warm_split(Path(args.runs), Path(args.data), args.repeats)
        print_split(split)
        return {"split": split}
    taught = teach_figures(Path(args.runs), Path(args.data), new_data=args.teach_data and Path(args.teach_data))
    print(f"teach: {', '.join(next(iter(taught.values()))['classes'])}" if taught else "teach: no photo runs")
    print(f"{'teach, 100 pictures on':24s} {'total s':>8s} {'embed s':>8s} {'fit s':>8s} {'held-out acc':>13s} "
          f"{'95% interval':>13s}")
    for name, f in taught.items():
        print(f"{name:24s} {f['total']:8.2f} {f['embed']:8.2f} {f['fit']:8.3f} {f['accuracy']:13.3f} "
              f"{f['interval'][0]:6.2f}–{f['interval'][1]:.2f}")
    if args.teach_only:
        return {"teach": taught}
    results = measure(Path(args.runs), Path(args.data), args.repeats)
    print_figures(results)
    return results | {"teach": taught}


if __name__ == "__main__":
    main()
