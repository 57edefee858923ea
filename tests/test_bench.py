"""The benchmark's timing helpers (the figures themselves are never asserted: they belong to `make bench`)."""
import time

from bench.run import interleaved, timed


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
