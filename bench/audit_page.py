"""How long Dataset → Data quality takes from the page, on a fresh server.

    python -m bench.audit_page [--runs assets/runs_har] [--data ../shared/data/har]

Starts `streamlit run app.py` in a process group of its own, opens /dataset in headless Chromium at 1440×900 and
times until the audit's summary line ("N near-duplicate pair(s) … likely label error(s) …") is shown, from opening
the page and from the moment its top has drawn. Then it lists the server's process group (the audit must have
started no process) and stops the whole group.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.classroom import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def group_members(group: int) -> list[int]:
    """The live processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def measure(runs: Path, data: Path) -> dict:
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: Chromium is not installed (make browser)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAR_")} | {"HAR_RUNS": str(runs),
                                                                                "HAR_DATA": str(data)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(900_000)
            started = time.perf_counter()
            page.goto(f"{url}/dataset")
            page.get_by_text("Data quality").wait_for()
            top = time.perf_counter()
            page.get_by_text(re.compile(r"near-duplicate pair\(s\).*likely label error")).wait_for()
            ended = time.perf_counter()
            browser.close()
        return {"open_to_audit_s": ended - started, "top_to_audit_s": ended - top,
                "server_processes_after": len(group_members(server.pid))}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the server and anything it started
            server.wait()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / "runs_har"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "har"))
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    result = measure(Path(args.runs), Path(args.data))
    print(f"Data quality from the page: {result['open_to_audit_s']:.0f} s from opening it, "
          f"{result['top_to_audit_s']:.0f} s after its top drew; the server's processes afterwards: "
          f"{result['server_processes_after']} (itself); load average at the start {load:.1f}")
    return result


if __name__ == "__main__":
    main()
