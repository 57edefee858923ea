"""The load of a room voting in a quiz round: N visitors' pages on a real server, in one headless Chromium.

    python -m bench.quiz_room [--visitors 30] [--runs assets/runs_har] [--data ../shared/data/har] [--idle 30]

Starts `streamlit run app.py` (in a process group of its own, stopped with all it started), opens the teacher's
Quiz page, starts a round and opens N visitors' pages on it (each its own session, as N phones would be). Prints:
  idle CPU     the server's CPU while the pages sit on the asking screen, each looking for the next picture every
               few seconds (ui.quiz.POLL_SECONDS), and the teacher's page counting the votes: first the teacher's
               page alone, then with the N visitors (% of one core, over --idle seconds)
  memory       the server's resident memory with the teacher alone, and with the N visitors after they voted
  votes        each visitor taps one action, one page after the other; seconds from the first tap, and from the
               last, until the teacher's page shows all N votes
It asserts nothing: the figures depend on the machine (a shared one inflates them; say how busy it was).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.classroom import (RUN_ENDED, app_server, chromium_path, cpu_seconds, server_memory_mb,
                             wait_healthy)

ROOT = Path(__file__).resolve().parents[1]
VOTES_SHOWN = """(n) => [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
  .some(el => !el.closest('[data-stale="true"]') && el.innerText.includes(`${n} vote${n === 1 ? '' : 's'} from the room`))"""


def cpu_percent(pid: int, seconds: float) -> float:
    """The process's CPU over the next `seconds`, in % of one core."""
    start, begun = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / (time.monotonic() - begun)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def measure(runs: Path, data: Path, visitors: int, idle: float, wait: float = 300) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
    figures = {"visitors": visitors, "idle_s": idle, "cores": os.cpu_count(), "load_before": load_average()}
    with app_server(runs, data) as (url, server), sync_playwright() as playwright:
        wait_healthy(url)
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-timer-throttling",  # every page polls as a
            "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"])  # phone in hand would
        teacher = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        teacher.set_default_timeout(600_000)
        teacher.goto(f"{url}/quiz")
        teacher.get_by_role("button", name="Start the round").click()
        teacher.get_by_role("button", name="Show the answer").wait_for()
        teacher.wait_for_function(RUN_ENDED)
        room = teacher.url.split("room=", 1)[1][:4]
        print(f"round {room} started; measuring the idle CPU with the teacher's page alone", flush=True)
        figures["cpu_teacher_alone"] = cpu_percent(server.pid, idle)
        figures["memory_teacher_alone_mb"] = server_memory_mb(server)

        phones = browser.new_context(viewport={"width": 390, "height": 844})  # one context: N tabs, N sessions
        pages = [phones.new_page() for _ in range(visitors)]
        began = time.monotonic()
        for page in pages:
            page.set_default_timeout(600_000)
            page.goto(f"{url}/quiz?room={room}")
        for page in pages:
            page.locator(".st-key-quiz_actions button").first.wait_for()
            page.wait_for_function(RUN_ENDED)
        figures["join_s"] = time.monotonic() - began
        print(f"{visitors} visitors joined round {room}; measuring the idle CPU", flush=True)
        figures["cpu_idle"] = cpu_percent(server.pid, idle)

        buttons = pages[0].locator(".st-key-quiz_actions button").count()
        first = time.monotonic()
        for i, page in enumerate(pages):
            page.locator(".st-key-quiz_actions button").nth(i % buttons).click()
        last = time.monotonic()
        try:
            teacher.wait_for_function(VOTES_SHOWN, arg=visitors, polling=100, timeout=wait * 1000)
        except PlaywrightTimeout:
            counted = teacher.get_by_text("from the room").first.inner_text()
            raise SystemExit(f"the teacher's page did not show {visitors} votes in {wait:.0f} s; it shows: {counted}")
        shown = time.monotonic()
        figures |= {"taps_s": last - first, "votes_shown_from_first_tap_s": shown - first,
                    "votes_shown_from_last_tap_s": shown - last,
                    "memory_with_visitors_mb": server_memory_mb(server), "load_after": load_average()}
        browser.close()
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs_har"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "har"))
    parser.add_argument("--idle", type=float, default=30, help="seconds over which the idle CPU is measured")
    args = parser.parse_args(argv)
    f = measure(Path(args.runs), Path(args.data), args.visitors, args.idle)
    print(f"quiz room: {f['visitors']} visitors' pages + the teacher's, one headless Chromium, {f['cores']} cores "
          f"(load average {f['load_before']:.1f} before, {f['load_after']:.1f} after)")
    print(f"  idle CPU of the server, over {f['idle_s']:.0f} s: teacher alone {f['cpu_teacher_alone']:.1f}% of a "
          f"core; with {f['visitors']} visitors on the asking screen {f['cpu_idle']:.1f}%")
    print(f"  server memory: teacher alone {f['memory_teacher_alone_mb']:.0f} MB; with {f['visitors']} visitors "
          f"after they voted {f['memory_with_visitors_mb']:.0f} MB")
    print(f"  {f['visitors']} visitors joined in {f['join_s']:.1f} s; their taps took {f['taps_s']:.1f} s; the "
          f"teacher's page showed all {f['visitors']} votes {f['votes_shown_from_first_tap_s']:.1f} s after the "
          f"first tap, {f['votes_shown_from_last_tap_s']:.1f} s after the last")
    return f


if __name__ == "__main__":
    main()
