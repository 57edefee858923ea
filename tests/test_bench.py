"""The benchmark's timing helpers (the figures themselves are never asserted: they belong to `make bench`)."""
import subprocess
import sys
import time
from pathlib import Path

from bench.run import interleaved, timed
from conftest import ROOT


def test_interleaved_times_each_contender_in_turn_every_repeat():
    calls = []
    contenders = {"short": lambda: (calls.append("short"), time.sleep(0.001)),
                  "long": lambda: (calls.append("long"), time.sleep(0.02))}
    times = interleaved(contenders, repeats=3)
    assert calls == ["short", "long"] * 4  # one warm-up each, then three rounds in turn
    assert {name: len(t) for name, t in times.items()} == {"short": 3, "long": 3}
    assert all(long > short and long >= 0.02 for short, long in zip(times["short"], times["long"]))


def test_timed_reports_min_and_median_after_warm_up():
    calls = []
    result = timed(lambda: (calls.append(1), time.sleep(0.005)), repeats=3, warmup=2)
    assert len(calls) == 5 and 0.005 <= result["min"] <= result["median"]


def test_a_bench_stopped_by_sigterm_stops_its_app_server_too(tmp_path):
    # `timeout 600 python -m bench.quiz_room` left its Streamlit server running (a session of its own) when the
    # limit struck: SIGTERM killed the bench before app_server's cleanup ran
    bench = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bench.classroom import app_server\n"
        f"with app_server(Path({str(tmp_path)!r}), Path({str(tmp_path)!r})) as (url, server):\n"
        "    print(server.pid, flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    server = int(bench.stdout.readline())
    bench.terminate()
    assert bench.wait(timeout=120) == 143  # the bench exited through its cleanup, which waits for the server
    stat = Path(f"/proc/{server}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", "the server outlived its bench"


def test_the_machines_busy_time_counts_this_process_work():
    """The room's 'whole machine' CPU figure (/proc/stat) grows at least by what this process itself burned."""
    from bench.classroom import machine_cpu_seconds
    before, own = machine_cpu_seconds(), time.process_time()
    while time.process_time() - own < 0.5:  # half a second of this process's own CPU
        sum(range(1000))
    assert machine_cpu_seconds() - before >= 0.45
