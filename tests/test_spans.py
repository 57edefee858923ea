"""har_core.data.spans: a span counts its own time, not the spans inside it, and a page run's line says so (#41.2)."""
import json
import threading

from har_core.data import spans


def test_a_span_counts_its_time_without_the_spans_inside_it(monkeypatch, capsys):
    clock = iter([0.0, 0.0,  # the page run starts (logged), and its own span
                  1.0,  # "sets" starts
                  2.0, 5.0,  # a forward inside it: 2 → 5
                  6.0, 6.5,  # the same span again: 6 → 6.5
                  7.0,  # "sets" ends, after 3.5 s of forwards inside it
                  9.0])  # the page run ends
    monkeypatch.setattr(spans.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(spans.time, "time", lambda: 1_700_000_000.25)
    monkeypatch.setenv("HAR_SPANS", "1")
    forward = spans.timed("forwards")(lambda: None)

    def page():
        with spans.logged("Predict"):
            with spans.span("sets"):
                forward()
                forward()

    worker = threading.Thread(target=page)  # a fresh thread: nothing left from another test's run
    worker.start()
    worker.join()
    line = capsys.readouterr().out
    assert line.startswith("HAR Studio spans ")
    logged = json.loads(line.removeprefix("HAR Studio spans "))
    assert logged == {"page": "Predict", "started_at": 1_700_000_000.25, "spans": {
        "forwards": {"s": 3.5, "ended_at_s": 6.5},  # 3 + 0.5
        "sets": {"s": 2.5, "ended_at_s": 7.0},  # 7 - 1, less the 3.5 inside it
        "the page's other work": {"s": 3.0, "ended_at_s": 9.0}}}  # 9 - 0, less the 6 inside it


def test_a_fragment_is_a_span_of_the_run_that_draws_it_and_a_logged_run_of_its_own_when_it_reruns_alone(
        monkeypatch, capsys):
    """#41: Predict's answers are a fragment, and the What-if panel a fragment inside them. Drawn by the page's run,
    each is a span of that one logged line; rerun alone (an upload, a slider), the outermost logs its own line under
    its name, the inner one a span of it."""
    monkeypatch.setenv("HAR_SPANS", "1")
    panel = spans.fragment_run("What-if panel")(lambda: None)
    answers = spans.fragment_run("Predict & compare")(lambda: panel())

    def page_run():
        with spans.logged("Predict & compare"):
            answers()

    lines = []

    def session():  # one thread, as a session's reruns share one: nothing may stay set from the run before
        for run in (page_run, answers, panel):  # the page's run, the answers rerun alone, the panel rerun alone
            run()
            lines.append([json.loads(line.removeprefix("HAR Studio spans "))
                          for line in capsys.readouterr().out.splitlines()])
    worker = threading.Thread(target=session)
    worker.start()
    worker.join()
    assert [[(run["page"], sorted(run["spans"])) for run in logged] for logged in lines] == [
        [("Predict & compare", ["Predict & compare", "What-if panel", "the page's other work"])],
        [("Predict & compare", ["What-if panel", "the page's other work"])],
        [("What-if panel", ["the page's other work"])]]
