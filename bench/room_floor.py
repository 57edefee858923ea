"""The room's floor: thirty tabs upload to a ten-line Streamlit page that answers at once, no model behind it.

    python -m bench.room_floor [--data ../shared/data/har] [--visitors 30] [--rounds 3] [--cards lines|bars]

The same room as `bench.classroom --visitors 30` (the same tabs, photos, in-page clock and CPU counters), against a
page with Streamlit's part of Predict only: a file uploader, the photo with its name, and six bordered cards of two
lines (`--cards bars`: each Predict's own card, a class, its confidence and fifteen bars, of fixed numbers). What it
prints is what thirty tabs and Streamlit cost these two cores before any model answers: the difference to the
app's room is the app's own work.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.classroom import (ROOT, chromium_path, cpu_split, free_port, machine_cpu_seconds, photos, session_ttl_s,
                             wait_healthy)

CARDS = 6  # as many as the HAR bundle's runs
HAR_CLASSES = ["calling", "clapping", "cycling", "dancing", "drinking", "eating", "fighting", "hugging", "laughing",
               "listening_to_music", "running", "sitting", "sleeping", "texting", "using_laptop"]
CARD = {"lines": '''st.markdown(f"### model {i}")
            st.markdown("eating · 87% sure")''',
        "bars": '''st.html(answer_card(f"model_{i}", probs, CLASSES, False))'''}
PAGE = '''import sys
import numpy as np
import streamlit as st
sys.path.insert(0, {root!r})
from har_core.evaluation.plots import answer_card
CLASSES = {classes!r}  # the HAR data set's fifteen
probs = np.linspace(1, 2, len(CLASSES)) / np.linspace(1, 2, len(CLASSES)).sum()
photo = st.file_uploader("Upload one or more photos", type=["jpg", "jpeg", "png"])
if photo is not None:
    st.image(photo, caption=photo.name, width=300)
    columns = st.columns(3)
    for i in range({cards}):
        with columns[i % 3].container(border=True, key=f"card_{{i}}"):
            {card}
'''
# from the file input's change event until the photo's caption and every card are drawn, timed inside the tab
WATCH = """([name, count]) => {
  window.__drawn = null;
  const drawn = () => [...document.querySelectorAll('[data-testid="stImageCaption"]')]
      .some(el => el.textContent.includes(name)) && document.querySelectorAll('[class*="st-key-card_"]').length === count;
  document.addEventListener('change', () => {
    const start = performance.now();
    const watcher = new MutationObserver(() => {
      if (drawn()) { window.__drawn = (performance.now() - start) / 1000; watcher.disconnect(); } });
    watcher.observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true});
  }, {capture: true, once: true});
}"""


def floor_figures(data: Path, visitors: int, rounds: int, cards: str = "lines") -> dict:
    from playwright.sync_api import sync_playwright
    folder = Path(tempfile.mkdtemp())
    (folder / "page.py").write_text(PAGE.format(root=str(ROOT), cards=CARDS, card=CARD[cards], classes=HAR_CLASSES))
    pictures = photos(data, visitors * rounds, folder)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(folder / "page.py"), "--server.port",
                               str(port), "--server.address", "127.0.0.1", "--server.headless", "true"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(session_ttl_s())})
    url = f"http://127.0.0.1:{port}"
    played = []
    try:
        wait_healthy(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(),
                                                 args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(600_000)
            pages = [context.new_page() for _ in range(visitors)]
            for r in range(rounds):
                mine = pictures[r * visitors:(r + 1) * visitors]
                for page in pages:
                    page.goto(url)
                for page, path in zip(pages, mine):
                    page.get_by_text("Upload one or more photos").wait_for()
                    page.evaluate(WATCH, [path.name, CARDS])
                used = (*cpu_split(server), machine_cpu_seconds())
                for page, path in zip(pages, mine):
                    page.locator("input[type='file']").first.set_input_files(str(path))
                drawn = []
                for page in pages:
                    page.wait_for_function("() => window.__drawn !== null", polling=100)
                    drawn.append(page.evaluate("() => window.__drawn"))
                cpu = tuple(now - then for now, then in zip((*cpu_split(server), machine_cpu_seconds()), used))
                played.append({"drawn_s": drawn, "cpu_s": cpu})
                print(f"round {r + 1}: p50 {np.median(drawn):.2f} s, p95 {np.percentile(drawn, 95):.2f} s, "
                      f"max {max(drawn):.2f} s; CPU s: server {cpu[0]:.1f}, browser {cpu[1]:.1f}, machine "
                      f"{cpu[2]:.1f}", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    drawn = [t for round_ in played for t in round_["drawn_s"]]
    return {"visitors": visitors, "rounds": rounds, "p50_s": float(np.percentile(drawn, 50)),
            "p95_s": float(np.percentile(drawn, 95)), "max_s": max(drawn), "cpu_s": [r["cpu_s"] for r in played]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "har")
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cards", choices=list(CARD), default="lines")
    args = parser.parse_args(argv)
    started = time.strftime("%H:%M")
    figures = floor_figures(args.data, args.visitors, args.rounds, args.cards)
    print(f"{args.visitors} tabs × {args.rounds} rounds on a page without models (from {started}): upload → photo "
          f"and cards drawn p50 {figures['p50_s']:.2f} s, p95 {figures['p95_s']:.2f} s, max {figures['max_s']:.2f} s")
    return figures


if __name__ == "__main__":
    main()
