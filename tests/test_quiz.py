"""The quiz (#42): choosing a round's pictures, the room's votes, the score, and the page played with AppTest."""
import json
import re
import threading
from collections import Counter
from contextlib import contextmanager, nullcontext

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, SPORTS15, set_temperature
from har_core.data.labels import spoken
from har_core.quiz import (ABOUT_THE_PICTURE, CODE_LETTERS, ENSEMBLE, RIGHT_WRONG, QuizError, Question, Room, Rooms,
                           answers_in_words, answers_table, choose_round, class_answer, mark_colour, played_answers,
                           summary)

ACTIONS = ["calling", "drinking", "texting"]


def stored(rows) -> pd.DataFrame:
    """A predictions file's rows: (filename, true, probabilities)."""
    frame = pd.DataFrame({"filename": [r[0] for r in rows], "true": [r[1] for r in rows]})
    probs = np.array([r[2] for r in rows], dtype=float)
    frame["predicted"] = [ACTIONS[i] for i in probs.argmax(1)]
    frame["confidence"] = probs.max(1)
    for i, action in enumerate(ACTIONS):
        frame[f"prob_{action}"] = probs[:, i]
    return frame


FRAMES = {  # p1: every run right; p2: a right, b and c wrong; p3: every run wrong; p4: every run right
    "a": stored([("p1", "calling", [.8, .1, .1]), ("p2", "drinking", [.1, .6, .3]),
                 ("p3", "texting", [.5, .3, .2]), ("p4", "texting", [.1, .1, .8])]),
    "b": stored([("p1", "calling", [.7, .2, .1]), ("p2", "drinking", [.1, .2, .7]),
                 ("p3", "texting", [.6, .2, .2]), ("p4", "texting", [.2, .2, .6])]),
    "c": stored([("p1", "calling", [.9, .05, .05]), ("p2", "drinking", [.5, .3, .2]),
                 ("p3", "texting", [.2, .7, .1]), ("p4", "texting", [.1, .3, .6])]),
}


def test_every_picture_is_sorted_by_how_many_models_get_it_right_and_the_ensemble_is_its_members_mean():
    table = answers_table(FRAMES, ACTIONS, members=["a", "b"], ensemble_temperature=2.0).set_index("filename")
    assert table["kind"].to_dict() == {"p1": "all right", "p2": "split", "p3": "all wrong", "p4": "all right"}
    assert table.loc["p2", "b:predicted"] == "texting" and table.loc["p2", "c:confidence"] == .5
    # p2 by hand: the mean of a and b is (.1, .4, .5); at temperature 2 each becomes √p, normalised
    root = np.sqrt([.1, .4, .5])
    assert table.loc["p2", f"{ENSEMBLE}:predicted"] == "texting"
    assert table.loc["p2", f"{ENSEMBLE}:confidence"] == pytest.approx(root[2] / root.sum())


def kinds_table(per_kind: dict[str, int], actions: int = 5) -> pd.DataFrame:
    rows = [(f"{kind}_{i}", f"action_{i % actions}", kind) for kind, n in per_kind.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["filename", "true", "kind"])


def test_a_round_mixes_the_kinds_repeats_with_its_seed_and_prefers_actions_not_yet_seen():
    table = kinds_table({"all right": 10, "split": 10, "all wrong": 10})
    kind_of, true_of = dict(zip(table["filename"], table["kind"])), dict(zip(table["filename"], table["true"]))
    files = choose_round(table, 5, seed=3)
    assert Counter(kind_of[f] for f in files) == {"split": 2, "all right": 2, "all wrong": 1}
    assert len({true_of[f] for f in files}) == 5  # five actions: no action twice
    assert choose_round(table, 5, seed=3) == files
    assert len({tuple(choose_round(table, 5, seed=s)) for s in range(5)}) > 1
    hard = choose_round(table, 5, seed=3, hard_only=True)
    assert Counter(kind_of[f] for f in hard) == {"split": 3, "all wrong": 2}


def test_a_kind_that_runs_out_leaves_its_turn_to_the_others_and_no_hard_picture_is_said():
    table = kinds_table({"all right": 10, "split": 1, "all wrong": 0})
    files = choose_round(table, 6, seed=0)
    assert len(files) == len(set(files)) == 6 and sum(f.startswith("split") for f in files) == 1
    with pytest.raises(QuizError, match="disagrees on"):
        choose_round(kinds_table({"all right": 4}), 3, seed=0, hard_only=True)


def a_room(files=("p1", "p2", "p3")) -> tuple[Room, str]:
    return Rooms().open(answers_table(FRAMES, ACTIONS, ["a", "b"]), list(files), ACTIONS, "runs", "data",
                        ["a", "b", "c"])


def test_one_vote_per_session_the_latest_counts_and_votes_close_at_the_reveal():
    room, key = a_room()
    assert room.vote("s1", "texting") and room.vote("s2", "calling") and room.vote("s1", "calling")
    assert not room.vote("s3", "juggling") and not room.vote("", "calling")  # no class, no session
    _, question, _ = room.state()
    assert question.tally() == [("calling", 2)] and len(question.votes) == 2
    room.reveal(key)
    assert not room.vote("s3", "texting")  # too late
    _, question, played = room.state()
    assert (question.answer, question.answered_by, question.revealed) == ("calling", "room", True)
    assert len(question.votes) == 2 and played[0].filename == "p1"


def test_a_tie_goes_to_the_action_voted_first_counting_a_changed_vote_from_its_change():
    tied = Question("p1", "calling", votes={"s1": "texting", "s2": "calling"})
    assert class_answer(tied) == ("texting", "room")
    room, key = a_room()
    room.vote("s1", "texting"), room.vote("s2", "calling"), room.vote("s1", "drinking"), room.vote("s1", "texting")
    _, question, _ = room.state()
    assert class_answer(question) == ("calling", "room")  # s1's texting is now the newer vote
    assert class_answer(Question("p1", "calling")) == (None, "")


def test_the_teachers_click_is_the_class_answer_and_only_the_teacher_runs_the_round():
    room, key = a_room()
    room.vote("s1", "texting")
    room.pick(key, "drinking")
    with pytest.raises(PermissionError):
        room.reveal("someone else's key")
    with pytest.raises(PermissionError):
        room.pick("", "calling")
    room.next(key)  # not revealed yet: the picture stays
    assert room.state()[0] == 0
    room.reveal(key)
    _, question, _ = room.state()
    assert (question.answer, question.answered_by) == ("drinking", "teacher")
    question.votes["s9"] = "calling"  # a copy: the room keeps its own
    assert len(room.state()[1].votes) == 1
    for _ in range(2):
        room.next(key)
        room.reveal(key)
    room.next(key)
    assert room.finished and room.state()[1] is None and len(room.state()[2]) == 3


@contextmanager
def reading(room: Room):
    """The teacher's page reading the room over and over, in a thread, while the block runs; yields the errors
    its reads met (it stops at the first)."""
    errors, done = [], threading.Event()

    def read():
        while not done.is_set() and not errors:
            try:
                room.state()
            except RuntimeError as error:
                errors.append(error)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        yield errors
    finally:
        done.set()
        reader.join()


def test_a_room_full_of_visitors_votes_at_once_while_the_teachers_page_reads_the_votes():
    """Without the room's lock, reading the votes (a copy for the page) while other sessions vote breaks
    ("dictionary changed size during iteration"); with it, every vote is counted once."""
    room, key = a_room()

    def vote(first: int):
        for i in range(first, first + 2000):
            room.vote(f"s{i}", ACTIONS[i % 3])
    with reading(room) as errors:
        voters = [threading.Thread(target=vote, args=(n * 2000,)) for n in range(6)]
        for thread in voters:
            thread.start()
        for thread in voters:
            thread.join()
    assert not errors
    _, question, _ = room.state()
    assert len(question.votes) == 12_000 and sum(n for _, n in question.tally()) == 12_000


def test_the_lock_is_what_keeps_the_votes_whole(monkeypatch):
    """The test above can fail: with the lock replaced by nothing, reading while voting breaks."""
    room, _ = a_room()
    monkeypatch.setattr(room, "_lock", nullcontext())
    with reading(room) as errors:
        for i in range(200_000):
            room.vote(f"s{i}", ACTIONS[i % 3])
            if errors:
                break
    assert errors


def test_rooms_have_short_unique_codes_and_forget_old_rounds():
    rooms = Rooms(keep_hours=1, limit=3)
    table = answers_table(FRAMES, ACTIONS, ["a"])
    opened = [rooms.open(table, ["p1"], ACTIONS, "runs", "data", ["a"])[0] for _ in range(3)]
    assert all(len(r.code) == 4 and set(r.code) <= set(CODE_LETTERS) for r in opened)
    assert rooms.get(opened[0].code.lower()) is opened[0] and rooms.get("nope") is None and rooms.get(None) is None
    assert rooms.running("runs") == opened[::-1] and rooms.running("other") == []
    opened[0].opened -= 2 * 3600  # two hours old
    newest = rooms.open(table, ["p1"], ACTIONS, "runs", "data", ["a"])[0]
    assert rooms.get(opened[0].code) is None and rooms.get(newest.code) is newest
    rooms.open(table, ["p1"], ACTIONS, "runs", "data", ["a"])  # a fourth: the oldest goes (limit 3)
    assert rooms.get(opened[1].code) is None


def test_the_score_counts_the_class_against_each_model_and_the_summary_says_who_did_better_per_action():
    table = answers_table(FRAMES, ACTIONS, ["a", "b"])
    played = [Question("p1", "calling", answer="calling", answered_by="teacher", revealed=True),  # all right
              Question("p2", "drinking", answer="texting", answered_by="room", revealed=True,  # a alone right
                       votes={"s1": "texting"}),
              Question("p3", "texting", answer="texting", answered_by="room", revealed=True),  # class alone right
              Question("p4", "texting", answer=None, revealed=True)]  # no answer; every model right
    result = summary(played, table, ["a", "b", "c"])
    assert dict(zip(result.score["who"], result.score["right"])) == {"the class": 2, "ensemble": 2, "a": 3,
                                                                     "b": 2, "c": 2}
    assert set(result.score["of"]) == {4}
    actions = result.actions.set_index("action")
    assert actions.loc["drinking", "better"] == "the models"  # class wrong, a right
    assert actions.loc["calling", "better"] == "even"  # everyone right
    # texting: the class 1 of 2, the models 1 of 2 each (p4 right, p3 wrong)
    assert actions.loc["texting", "class right"] == .5 and actions.loc["texting", "better"] == "even"
    assert result.sentence() == "The class beat the models on: none. The models beat the class on: drinking."
    assert list(result.answers["room votes"]) == ["", "texting 1", "", ""]
    assert list(result.answers["answered by"]) == ["teacher", "room", "room", "nobody"]


def test_every_answer_reads_in_words_on_the_page_while_its_csv_keeps_the_data_sets_names():
    """The round's Every answer table: a column per picture (by its file's name), a row per player; "✓" when
    right, else the wrong action in words ("using laptop", not "using_laptop"); the CSV keeps the names."""
    table = answers_table(FRAMES, ACTIONS, ["a", "b"])
    played = [Question("train/p1", "calling", answer="calling", answered_by="room", revealed=True,
                       votes={"s1": "using_laptop"}),
              Question("p2", "drinking", answer=None, answered_by=None, revealed=True)]
    answers = played_answers(played, table.assign(filename=["train/p1", "p2", "p3", "p4"]), ["a"])
    assert answers.loc[0, "room votes"] == "using laptop 1"  # one string for people, in words in the CSV too
    assert [c for c in answers if c.endswith(" answer")] == ["class answer", "ensemble answer", "a answer"]  # as shown
    # by hand from FRAMES: p2 is drinking, a says drinking, b texting and so does their ensemble (.1 .4 .5)
    answers.loc[0, ["true action", "a answer", "a right", "class right", "ensemble right"]] = [
        "using_laptop", "listening_to_music", False, False, False]  # p1's truth changed: everyone is wrong
    shown = answers_in_words(answers)
    assert list(shown.columns) == ["p1", "p2"] and list(shown.index) == [
        "true action", "the class", "answered by", "room votes", "ensemble", "a"]
    assert shown["p1"].tolist() == ["using laptop", "✗ calling", "room", "using laptop 1", "✗ calling",
                                    "✗ listening to music"]
    assert shown["p2"].tolist() == ["drinking", "✗ no answer", "nobody", "", "✗ texting", "✓"]
    assert answers.loc[0, ["picture", "true action"]].tolist() == ["train/p1", "using_laptop"]  # the CSV's
    twins = answers.assign(picture=["train/p1", "test/p1"])  # one name in two folders: each keeps its folder
    assert list(answers_in_words(twins).columns) == ["train/p1", "test/p1"]
    assert "room votes" not in answers_in_words(answers.assign(**{"room votes": ""})).index  # nobody voted
    # the colours: a player's marks only (a class may be named "✓_done"), whatever a cell holds
    assert [mark_colour("a", "✓"), mark_colour("ensemble", "✗ eating"), mark_colour("true action", "✓ done"),
            mark_colour("a", float("nan"))] == ["color: #1a7f37", "color: #b42318", "", ""]


def test_the_report_ends_with_the_quiz_round_when_one_was_played(tiny_runs):
    from har_core.models.artifacts import find_runs
    from har_core.report import build_report
    runs = find_runs(tiny_runs)[0]
    played = [Question("p2", "drinking", answer="drinking", answered_by="teacher", revealed=True)]
    result = summary(played, answers_table(FRAMES, ACTIONS, ["a", "b"]), ["a", "b", "c"])
    with_quiz = build_report(runs, quiz=result)
    assert '<h2>Quiz</h2>' in with_quiz and "The models beat the class on: none." in with_quiz
    assert "the class <b>1</b> of 1" in with_quiz and "b <b>0</b> of 1" in with_quiz
    assert '<h2>Quiz</h2>' not in build_report(runs)
    # as the page shows them: a picture by its name, an action in words, no second, empty header row
    played = [Question("train/p2", "drinking", answer="drinking", answered_by="room", revealed=True,
                       votes={"s1": "drinking"})]
    table = answers_table(FRAMES, ACTIONS, ["a", "b"]).assign(filename=["p1", "train/p2", "p3", "p4"])
    result = summary(played, table, ["a", "b", "c"])
    result.actions.loc[0, "action"] = "using_laptop"
    quiz = build_report(runs, quiz=result).split("<h2>Quiz</h2>")[1]
    assert "<th>p2</th>" in quiz and "train/p2" not in quiz
    assert "<th>using laptop</th>" in quiz and "using_laptop" not in quiz
    assert "<th>action</th>" not in quiz and "<th>picture</th>" not in quiz
    # every player's row, by hand from FRAMES: p2 is drinking; a says drinking, b texting, c calling, and the
    # ensemble of a and b texting (.1 .4 .5); the room said drinking
    every = {who: (colour, mark) for who, colour, mark in
             re.findall(r'<tr>\s*<th>([^<]*)</th>\s*<td(?: style="color: ([^"]*)")?>([^<]*)</td>\s*</tr>', quiz)}
    assert [every[who][1] for who in ("the class", "ensemble", "a", "b", "c")] == [
        "✓", "✗ texting", "✓", "✗ texting", "✗ calling"]
    # in the page's colours: green right, red wrong, a row about the picture never
    assert {who: colour for who, (colour, _) in every.items()} == {
        "true action": "", "answered by": "", "room votes": "", "the class": "#1a7f37", "ensemble": "#b42318",
        "a": "#1a7f37", "b": "#b42318", "c": "#b42318"}


def test_a_run_named_as_one_of_the_quizs_own_rows_is_refused_in_one_line():
    """A run called "ensemble" or "the class" took that row's place in the round's tables, without a word."""
    for name in ("ensemble", "the class", "class", "room votes"):
        with pytest.raises(QuizError, match=f'a run is named "{name}"'):
            answers_table({**FRAMES, name: FRAMES["a"]}, ACTIONS, ["a", "b"])


def test_the_report_downloaded_from_overview_ends_with_this_sessions_quiz_round(tiny_runs, monkeypatch):
    """Streamlit makes a deferred download in a worker thread, outside any session: the report read no session
    state there, so it never held the round; a new round must make a new report, not the cached one."""
    import streamlit.elements.widgets.button as button
    import ui.sharing
    made = []  # the deferred download's maker, as the Overview page registers it
    real_marshall = button.marshall_file
    monkeypatch.setattr(button, "marshall_file", lambda coordinates, data, *args, **kwargs: (
        made.append(data) if callable(data) else None, real_marshall(coordinates, data, *args, **kwargs))[1])
    from har_core import report as report_module

    def build(runs, *args, quiz=None, **kwargs):  # the report's quiz section alone: the rest is test_report's
        return f"<h2>Quiz</h2>{quiz.sentence()}" if quiz is not None else "no quiz"
    monkeypatch.setattr(report_module, "build_report", build)
    ui.sharing._report.clear()
    table = answers_table(FRAMES, ACTIONS, ["a", "b"])
    rounds = [summary([Question("p2", "drinking", answer=said, answered_by="teacher", revealed=True)], table,
                      ["a", "b", "c"]) for said in ("drinking", "texting")]

    def downloaded(played) -> str:
        monkeypatch.setenv("HAR_RUNS", str(tiny_runs))
        monkeypatch.chdir(ROOT)
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        if played is not None:
            at.session_state["quiz_summary"] = played
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        pages = []
        worker = threading.Thread(target=lambda: pages.append(made[-1]()))  # no session in this thread
        worker.start()
        worker.join()
        return pages[0]

    assert downloaded(rounds[0]) == "<h2>Quiz</h2>" + rounds[0].sentence()  # the class beat the models on drinking
    assert downloaded(rounds[1]) == "<h2>Quiz</h2>" + rounds[1].sentence()  # a new round: a new report
    assert rounds[0].sentence() != rounds[1].sentence()
    assert downloaded(None) == "no quiz"


# ----------------------------------------------------------------------------------------- the page

def quiz_page(runs, data, monkeypatch, room: str | None = None) -> AppTest:
    monkeypatch.setenv("HAR_RUNS", str(runs))
    monkeypatch.setenv("HAR_DATA", str(data))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    if room:
        at.query_params["room"] = room
    at.run()
    at.switch_page("views/quiz.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_a_picture_nobody_answered_says_none_in_one_short_word(tiny_runs, kaggle_data, monkeypatch):
    """"❌ no answer" took two lines of the reveal's row at 1280 px; the line under it says who (nobody)."""
    host = quiz_page(tiny_runs, kaggle_data, monkeypatch)
    host.button(key="quiz_start").click().run()
    host.button(key="quiz_reveal_button").click().run()
    said = next(m for m in host.metric if m.label == "The class")
    assert (said.value, said.delta) == ("❌ none", "nobody answered")


def val_scores(run_dir) -> tuple[float, float]:
    """A run's val accuracy and macro-F1, from its metrics file."""
    metrics = json.loads((run_dir / "metrics_val.json").read_text())
    return metrics["accuracy"], metrics["macro_f1"]


def calibrated_from_files(run_dir) -> pd.DataFrame:
    """A run's stored test predictions read straight from its CSV, at the temperature on its card.json."""
    card = json.loads((run_dir / "card.json").read_text())
    frame = pd.read_csv(run_dir / "predictions_test.csv").set_index("filename")
    probs = frame[[f"prob_{c}" for c in card["classes"]]].to_numpy(float)
    probs /= probs.sum(1, keepdims=True)
    tempered = probs ** (1 / card.get("calibration", {}).get("temperature", 1.0))  # softmax(log p / T)
    return pd.DataFrame(tempered / tempered.sum(1, keepdims=True), index=frame.index, columns=card["classes"]).assign(
        true=frame["true"])


def prediction_set_by_hand(run_dir, filename: str) -> tuple[float, list[str]]:
    """A test picture's prediction set from the run's files alone: the temperature and coverage in its
    calibration.json, its val predictions of the pictures its split.csv marks for calibration, its stored test
    probabilities. Split conformal with the APS score: a class's score is the calibrated probability of the
    classes ranked above it (ties: the earlier class first); it joins the set when its p-value, (the calibration
    pictures whose true class scores at least as much + 1) / (n + 1), is at least 1 - coverage. Most likely
    first."""
    stored = json.loads((run_dir / "calibration.json").read_text())
    classes, temperature, coverage = stored["classes"], stored["temperature"], stored["coverage"]

    def calibrated(frame: pd.DataFrame) -> np.ndarray:
        probs = frame[[f"prob_{c}" for c in classes]].to_numpy(float)
        tempered = (probs / probs.sum(1, keepdims=True)) ** (1 / temperature)  # softmax(log p / T)
        return tempered / tempered.sum(1, keepdims=True)

    def mass_above(p: np.ndarray, c: int) -> float:
        return sum(p[j] for j in range(len(p)) if p[j] > p[c] or (p[j] == p[c] and j < c))

    manifest = pd.read_csv(run_dir / "split.csv", dtype=str)
    marked = set(manifest.loc[manifest["calibrate"] == "1", "filename"])
    val = pd.read_csv(run_dir / "predictions_val.csv")
    val = val[val["filename"].isin(marked)]
    assert len(val) == stored["calibrated_on"]["pictures"]
    truth = [mass_above(p, classes.index(t)) for p, t in zip(calibrated(val), val["true"])]
    test = pd.read_csv(run_dir / "predictions_test.csv").set_index("filename")
    p = calibrated(test.loc[[filename]])[0]
    kept = [c for c in range(len(classes))
            if (sum(s >= mass_above(p, c) for s in truth) + 1) / (len(truth) + 1) >= 1 - coverage]
    return coverage, [classes[c] for c in sorted(kept, key=lambda c: -p[c])]


def shown_file(at, csv: pd.DataFrame) -> str:
    """The picture the reveal shows, by its caption (the file's name)."""
    caption = next(c for image in at.image for c in image.captions if c.startswith("Image_"))
    return next(f for f in csv.index if f.rsplit("/", 1)[-1] == caption)


def expected_rows(csvs: dict[str, pd.DataFrame], filename: str, members: list[str],
                  ensemble_temperature: float = 1.0) -> dict[str, tuple[str, str]]:
    """Each model's and the ensemble's (answer, confidence) as the reveal should write them."""
    def words(name, probs):
        answer = probs.idxmax()
        mark = "✅" if answer == csvs[name].loc[filename, "true"] else "❌"
        return f"{mark} {spoken(answer)}", f"{probs.max():.1%}"
    rows = {name: words(name, csv.loc[filename].drop("true").astype(float)) for name, csv in csvs.items()}
    mean = np.mean([csvs[m].loc[filename].drop("true").astype(float) for m in members], axis=0)
    tempered = mean ** (1 / ensemble_temperature)
    rows[ENSEMBLE] = words(members[0], pd.Series(tempered / tempered.sum(), index=csvs[members[0]].columns[:-1]))
    return rows


def test_a_round_of_five_with_two_voting_sessions_shows_the_stored_answers_and_the_score(tiny_runs, kaggle_data,
                                                                                        monkeypatch, tmp_path):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    for name, temperature in (("custom_cnn", 2.0), ("mobilenet_v2", 0.5)):  # calibrated: the confidences move
        set_temperature(runs / name, temperature)
    csvs = {name: calibrated_from_files(runs / name) for name in ("custom_cnn", "mobilenet_v2")}
    host = quiz_page(runs, kaggle_data, monkeypatch)
    assert host.slider(key="quiz_pictures").value == 5
    host.button(key="quiz_start").click().run()
    code = host.query_params["room"]
    voters = [quiz_page(runs, kaggle_data, monkeypatch, room=code) for _ in range(2)]
    assert all(v.button(key="quiz_vote_dancing") for v in voters)  # every visitor gets the 15 (here 3) buttons

    from ui.quiz import quiz_rooms  # the server's rooms: one object, shared by every session of this process
    truth = quiz_rooms().get(code).state()[1].true
    wrong = next(c for c in ("cycling", "dancing", "sleeping") if c != truth)
    voters[0].button(key=f"quiz_vote_{wrong}").click().run()  # first a wrong answer, then changed:
    voters[0].button(key=f"quiz_vote_{truth}").click().run()  # one vote per session, the latest
    voters[1].button(key=f"quiz_vote_{truth}").click().run()
    assert any(c.value.startswith(f"Your vote: **{spoken(truth)}**") for c in voters[1].caption)
    host.run()
    assert any("**2 votes** from the room" in m.value for m in host.markdown)
    host.button(key="quiz_reveal_button").click().run()
    assert not host.exception and not host.error

    class_right, clicks = [], [None, "truth", "truth", "wrong", "wrong"]
    for picture in range(5):
        if picture:  # the teacher clicks the class's answer
            truth = quiz_rooms().get(code).state()[1].true
            wrong = next(c for c in ("cycling", "dancing", "sleeping") if c != truth)
            host.button(key=f"quiz_pick_{truth if clicks[picture] == 'truth' else wrong}").click().run()
            host.button(key="quiz_reveal_button").click().run()
            assert not host.exception and not host.error
        filename = shown_file(host, csvs["custom_cnn"])
        metrics = {m.label: m for m in host.metric}
        assert metrics["The answer"].value == spoken(csvs["custom_cnn"].loc[filename, "true"])
        said = metrics["The class"]
        class_right.append(said.value.startswith("✅"))
        if picture == 0:
            assert said.value == f"✅ {spoken(truth)}" and said.delta == "2 of 2 votes"
        else:
            assert said.delta == "clicked by the teacher" and class_right[-1] == (clicks[picture] == "truth")
        table = host.table[0].value.set_index("model")
        expected = expected_rows(csvs, filename, ["custom_cnn", "mobilenet_v2"])  # members: both (none from ImageNet)
        assert {name: (row["answer"], row["confidence"]) for name, row in table.iterrows()} == expected
        assert list(table.index) == [ENSEMBLE, "mobilenet_v2", "custom_cnn"] or \
            list(table.index) == [ENSEMBLE, "custom_cnn", "mobilenet_v2"]
        host.button(key="quiz_next").click().run()

    for voter in voters:  # the visitors' pages follow the round to its end
        voter.run()
        assert any("The round is over" in s.value for s in voter.success)
    assert class_right == [True, True, True, False, False]
    board = {m.label: m.value for m in host.metric}
    answers = host.session_state["quiz_summary"].answers
    played = list(answers["picture"])
    assert len(set(played)) == 5
    assert board["the class"] == "3 of 5"
    for name, csv in csvs.items():
        right = sum(csv.loc[f].drop("true").astype(float).idxmax() == csv.loc[f, "true"] for f in played)
        assert board[name] == f"{right} of 5"
    assert host.download_button(key="quiz_csv")
    shown = next(t for t in host.table if "true action" in t.value.index)  # "Every answer"
    every = shown.value
    # each ✓ in green, each ✗ in red: as many cells of each colour as marks (the Styler groups equal cells' rules)
    rules = re.findall(r"([^{}]+)\{\s*color:\s*(#\w{6})", shown.proto.arrow_data.styler.styles)
    coloured = {colour: sum(len(cells.split(",")) for cells, c in rules if c == colour)
                for colour in RIGHT_WRONG.values()}
    signs = every.drop(index=[r for r in ABOUT_THE_PICTURE if r in every.index]).stack().str[:1]
    assert coloured == {RIGHT_WRONG[sign]: int((signs == sign).sum()) for sign in RIGHT_WRONG}
    assert all("/" in f for f in played)  # each picture under its split's folder: the table names it as pages do
    assert list(every.columns) == [f.rsplit("/", 1)[1] for f in played]
    assert list(every.loc["true action"]) == [spoken(csvs["custom_cnn"].loc[f, "true"]) for f in played]
    for name, csv in csvs.items():  # each model's row from its own predictions file
        said = [csv.loc[f].drop("true").astype(float).idxmax() for f in played]
        assert list(every.loc[name]) == ["✓" if answer == csv.loc[f, "true"] else f"✗ {spoken(answer)}"
                                         for answer, f in zip(said, played)]


def test_a_runs_folder_without_test_predictions_says_what_is_missing_in_one_line(tiny_runs, kaggle_data,
                                                                                 monkeypatch, tmp_path):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    for run in runs.iterdir():
        (run / "predictions_test.csv").unlink(missing_ok=True)
    at = quiz_page(runs, kaggle_data, monkeypatch)
    assert not at.error and len(at.info) == 1
    message = at.info[0].value
    assert "No test predictions" in message and "predictions_test.csv" in message and "\n" not in message
    assert "quiz_start" not in [b.key for b in at.button]


def test_an_unknown_room_is_said_and_the_round_can_be_started(tiny_runs, kaggle_data, monkeypatch):
    at = quiz_page(tiny_runs, kaggle_data, monkeypatch, room="ZZZZ")
    assert any("No round `ZZZZ`" in c.value for c in at.caption)
    assert at.button(key="quiz_start")


@pytest.mark.skipif(not SPORTS15.is_dir(), reason="the bundled demo runs' data (../shared/data/sports15) is not here")
def test_on_the_bundled_runs_the_reveal_shows_each_runs_calibrated_confidence_and_prediction_set(monkeypatch):
    """The seven sports15 runs are calibrated: each row's confidence is the CSV's at the card's temperature, and
    its set is the one its calibration file and val predictions give, worked out by hand here."""
    from har_core.models.artifacts import find_runs
    from ui.sureness import ensemble_temperature
    runs_dir = ROOT / "assets" / "runs"
    runs = {run.name: run for run in find_runs(runs_dir)[0]}
    csvs = {name: calibrated_from_files(run.path) for name, run in runs.items()}
    at = quiz_page(runs_dir, SPORTS15, monkeypatch)
    at.toggle(key="quiz_hard").set_value(True).run()
    at.button(key="quiz_start").click().run()
    at.button(key=f"quiz_pick_{runs['vgg16'].classes[0]}").click().run()
    at.button(key="quiz_reveal_button").click().run()
    assert not at.exception and not at.error
    filename = shown_file(at, csvs["vgg16"])
    table = at.table[0].value.set_index("model")
    from har_core.evaluation.ensemble import default_members
    members = default_members(list(runs.values()))
    temperature = ensemble_temperature([runs[m] for m in members])
    assert {name: (row["answer"], row["confidence"]) for name, row in table.iterrows()} == \
        expected_rows(csvs, filename, members, temperature)
    in_words = next(m.value for m in at.markdown if m.value.startswith("**90% sets: what each model cannot rule out"))
    shown_sets = dict(line.split(": ", 1) for line in in_words.split("  \n")[1:])
    sizes = []
    for name, run in runs.items():
        coverage, sets = prediction_set_by_hand(run.path, filename)
        assert table.loc[name, f"{coverage:.0%} set"] == f"{len(sets)} action{'s' * (len(sets) != 1)}"
        assert shown_sets[name] == " · ".join(spoken(c) for c in sets)
        assert sets[0] == csvs[name].loc[filename].drop("true").astype(float).idxmax()  # the answer leads its set
        sizes.append(len(sets))
    assert any(1 < size < len(runs["vgg16"].classes) for size in sizes)  # a set of one or of all proves little
    assert any("most similar training pictures" in m.value for m in at.markdown)
    best = max(runs, key=lambda name: val_scores(runs[name].path))  # the run every page opens on
    assert any(c == f"Grad-CAM: where {best} looked" for i in at.image for c in i.captions)
    assert any(f"most similar training pictures** ({best})" in m.value for m in at.markdown)
