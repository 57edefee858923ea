"""The quiz: the class against the models, on a runs folder's stored test predictions.

A round is a few test pictures chosen on purpose from the runs' stored predictions (predictions_test.csv, with
each run's calibrated confidence, as every page shows them): pictures the models split on (some right, some
wrong), pictures every model gets right and pictures every model gets wrong, mixed and seeded, so a round can be
played again; "hard ones only" leaves out the ones every model gets right.

The class answers each picture: the teacher clicks the class's choice, or every visitor votes from their own
device. The votes are the room's shared state on the server (`Room`): one vote per session (a later click
replaces the earlier one), counted under a random token the session draws, never a name; a lock guards every
read and change, so a room full of visitors can vote at once. At the reveal the class's answer is fixed: the
teacher's click, else the room's most voted action. The score counts the class against each model and the
ensemble; the summary says, per action, who did better.
"""
from __future__ import annotations

import copy
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from har_core.data.labels import picture_name, spoken
from har_core.evaluation.analysis import joined_predictions
from har_core.models.calibration_maths import combine
from har_core.evaluation.metrics import probabilities

ENSEMBLE = "ensemble"
CLASS = "the class"
KINDS = {"split": "the models disagree on", "all right": "every model gets right",
         "all wrong": "every model gets wrong"}  # a round takes them in turn, in this order
HARD = ("split", "all wrong")
DEFAULT_PICTURES = 5
CODE_LETTERS = "ACDEFHJKLMNPRTUVWXY3479"  # no 0/O/Q, 1/I, 2/Z, 5/S, 6/G, 8/B: read off a projector


ABOUT_THE_PICTURE = ("true action", "answered by", "room votes")  # Every answer's rows beside the players'
# what the round's tables call the class and the ensemble, and their rows beside the players: a run of one of
# these names would take the place of one of them
PLAYERS_OWN_NAMES = {"class", CLASS, ENSEMBLE, *ABOUT_THE_PICTURE}


class QuizError(ValueError):
    """A round that cannot be played; the message says what is missing."""


# ----------------------------------------------------------------------------------------- the pictures

def answers_table(frames: dict[str, pd.DataFrame], classes: list[str], members: list[str],
                  ensemble_temperature: float = 1.0) -> pd.DataFrame:
    """One row per test picture every run predicted (with a true class of `classes`): its file, true class,
    each run's answer and calibrated confidence (`<run>:predicted`, `<run>:confidence`), the ensemble's of
    `members` (mean calibrated probability at the ensemble's own temperature, as on Overview and Predict) and the
    picture's kind (KINDS). `frames`: each run's stored predictions, calibrated (ui.predictions)."""
    if not frames:
        raise QuizError("no run has test predictions")
    if clash := sorted(set(frames) & PLAYERS_OWN_NAMES):
        raise QuizError(f"a run is named \"{clash[0]}\", as one of the quiz's own rows: rename its folder to play")
    joined = joined_predictions(frames)
    joined = joined[joined["true"].isin(classes)].sort_values("filename", kind="stable").reset_index(drop=True)
    if joined.empty:
        raise QuizError("the runs share no test picture of their classes")
    mean = ensemble_probabilities(frames, classes, members, ensemble_temperature, list(joined["filename"]))
    joined[f"{ENSEMBLE}:predicted"] = np.asarray(classes)[mean.argmax(1)]
    joined[f"{ENSEMBLE}:confidence"] = mean.max(1)
    right = joined[[f"{name}:predicted" for name in frames]].eq(joined["true"], axis=0)
    joined["kind"] = np.where(right.all(axis=1), "all right", np.where(right.any(axis=1), "split", "all wrong"))
    return joined


def ensemble_probabilities(frames: dict[str, pd.DataFrame], classes: list[str], members: list[str],
                           temperature: float, files: list[str]) -> np.ndarray:
    """The ensemble's probabilities of `files` (har_core.models.calibration_maths.combine) from the members' stored calibrated
    predictions; every run is a member when none of `members` has predictions."""
    members = [name for name in members if name in frames] or list(frames)
    probs = [probabilities(frames[name].set_index("filename").loc[files], classes) for name in members]
    return combine([p / p.sum(1, keepdims=True) for p in probs], temperature)  # stored to 6 decimals: renormalised


def choose_round(table: pd.DataFrame, pictures: int = DEFAULT_PICTURES, seed: int = 0,
                 hard_only: bool = False) -> list[str]:
    """The files of a round: the kinds taken in turn (KINDS' order; HARD only with `hard_only`), each kind's
    pictures in a seeded random order, an action not yet in the round preferred; a kind that runs out leaves its
    turn to the others. The round is then shuffled (same seed), so the kinds come in no fixed order."""
    rng = np.random.default_rng(seed)
    kinds = HARD if hard_only else tuple(KINDS)
    pools = {kind: [table.loc[i, "filename"] for i in rng.permutation(np.flatnonzero(table["kind"] == kind))]
             for kind in kinds}
    true_of = dict(zip(table["filename"], table["true"]))
    chosen: list[str] = []
    while len(chosen) < pictures and any(pools.values()):
        for kind in kinds:
            pool = pools[kind]
            if not pool or len(chosen) == pictures:
                continue
            seen = {true_of[f] for f in chosen}
            pick = next((f for f in pool if true_of[f] not in seen), pool[0])
            pool.remove(pick)
            chosen.append(pick)
    if not chosen:
        raise QuizError("no picture every model gets wrong or disagrees on" if hard_only else "no test pictures")
    return [chosen[i] for i in rng.permutation(len(chosen))]


def kind_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many test pictures of each kind there are (for the page's one line on the mix)."""
    return {kind: int((table["kind"] == kind).sum()) for kind in KINDS}


# ----------------------------------------------------------------------------------------- the room

@dataclass
class Question:
    filename: str
    true: str
    votes: dict[str, str] = field(default_factory=dict)  # session token -> action; the latest vote last
    pick: str | None = None  # the teacher's click for the class
    answer: str | None = None  # the class's answer, fixed at the reveal (None: the class gave none)
    answered_by: str = ""  # "teacher", "room" or "" (no answer)
    revealed: bool = False

    def tally(self) -> list[tuple[str, int]]:
        """The room's votes per action, the most voted first (ties: in the order of `class_answer`)."""
        counts = Counter(self.votes.values())
        order = {action: i for i, action in enumerate(dict.fromkeys(self.votes.values()))}
        return sorted(counts.items(), key=lambda item: (-item[1], order[item[0]]))


def class_answer(question: Question) -> tuple[str | None, str]:
    """The class's answer and who gave it: the teacher's click, else the room's most voted action (a tie goes to
    the tied action whose vote came first, a changed vote counting from when it was changed), else none."""
    if question.pick is not None:
        return question.pick, "teacher"
    tally = question.tally()
    return (tally[0][0], "room") if tally else (None, "")


class Room:
    """One round, shared by every session that joined it: its pictures, which one is shown, the votes on it and
    the answers given. Only the session holding `key` (the one that opened the room) picks, reveals and moves on.
    Every method takes the lock; reads return copies, so a page draws a consistent state."""

    def __init__(self, code: str, key: str, classes: list[str], questions: list[Question], runs: str,
                 data: str | None, models: list[str]):
        self.code, self._key, self.classes = code, key, list(classes)
        self._questions, self.runs, self.data, self.models = questions, runs, data, list(models)
        self._position, self._lock, self.opened = 0, threading.Lock(), time.time()

    def _host(self, key: str) -> None:
        if not secrets.compare_digest(key or "", self._key):
            raise PermissionError("only the session that started this round can run it")

    def vote(self, token: str, action: str) -> bool:
        """A session's vote on the picture shown; its earlier vote is replaced. False: refused (the picture is
        revealed, the round over, or `action` is no class)."""
        if action not in self.classes or not token:
            return False
        with self._lock:
            question = self._current()
            if question is None or question.revealed:
                return False
            question.votes.pop(token, None)  # a changed vote counts from now (the tie rule)
            question.votes[token] = action
            return True

    def pick(self, key: str, action: str | None) -> None:
        """The teacher's click for the class (None takes it back: the room's votes decide)."""
        self._host(key)
        if action is not None and action not in self.classes:
            raise ValueError(f"{action} is not one of the classes")
        with self._lock:
            question = self._current()
            if question is not None and not question.revealed:
                question.pick = action

    def reveal(self, key: str) -> None:
        """Fix the class's answer to the picture shown and show everyone the truth."""
        self._host(key)
        with self._lock:
            question = self._current()
            if question is not None and not question.revealed:
                question.answer, question.answered_by = class_answer(question)
                question.revealed = True

    def next(self, key: str) -> None:
        """The next picture, after the last one the end of the round (only once the picture shown is revealed)."""
        self._host(key)
        with self._lock:
            question = self._current()
            if question is not None and question.revealed:
                self._position += 1

    def _current(self) -> Question | None:
        return self._questions[self._position] if self._position < len(self._questions) else None

    def state(self) -> tuple[int, Question | None, list[Question]]:
        """(the picture's position, a copy of the question shown (None: the round is over), copies of the
        questions revealed so far)."""
        with self._lock:
            current = self._current()
            return (self._position, copy.deepcopy(current),
                    [copy.deepcopy(q) for q in self._questions if q.revealed])

    def __len__(self) -> int:
        return len(self._questions)

    def is_host(self, key: str | None) -> bool:
        return bool(key) and secrets.compare_digest(key, self._key)

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._position >= len(self._questions)


class Rooms:
    """Every room of a server, by code. Rooms older than `keep_hours` are forgotten, and at most `limit` are
    kept (the oldest go first): a server never fills up with finished rounds."""

    def __init__(self, keep_hours: float = 12, limit: int = 100):
        self.keep_s, self.limit = keep_hours * 3600, limit
        self._rooms: dict[str, Room] = {}
        self._lock = threading.Lock()

    def open(self, table: pd.DataFrame, files: list[str], classes: list[str], runs: str, data: str | None,
             models: list[str]) -> tuple[Room, str]:
        """A new room playing `files` (rows of an answers_table); returns it and the key that runs it."""
        true_of = dict(zip(table["filename"], table["true"]))
        questions = [Question(f, true_of[f]) for f in files]
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._forget_old()
            code = self._new_code()
            room = self._rooms[code] = Room(code, key, classes, questions, runs, data, models)
        return room, key

    def get(self, code: str | None) -> Room | None:
        with self._lock:
            return self._rooms.get((code or "").strip().upper())

    def running(self, runs: str) -> list[Room]:
        """The rounds not yet over that play pictures of the runs folder `runs`, the newest first."""
        with self._lock:
            rooms = [room for room in self._rooms.values() if room.runs == runs]
        return sorted([room for room in rooms if not room.finished], key=lambda room: -room.opened)

    def _new_code(self) -> str:
        while (code := "".join(secrets.choice(CODE_LETTERS) for _ in range(4))) in self._rooms:
            pass
        return code

    def _forget_old(self) -> None:
        now = time.time()
        for code in [c for c, room in self._rooms.items() if now - room.opened > self.keep_s]:
            del self._rooms[code]
        while len(self._rooms) >= self.limit:
            del self._rooms[min(self._rooms, key=lambda c: self._rooms[c].opened)]


# ----------------------------------------------------------------------------------------- the score

def played_answers(played: list[Question], table: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row per picture revealed: file, true action, the class's answer (and who gave it, and the room's
    votes), each model's and the ensemble's answer, and who was right."""
    rows = table.set_index("filename")
    records = []
    for question in played:
        row = rows.loc[question.filename]
        record = {"picture": question.filename, "true action": question.true, "class answer": question.answer or "",
                  "answered by": question.answered_by or "nobody",
                  "room votes": " · ".join(f"{spoken(action)} {n}" for action, n in question.tally()),
                  "class right": question.answer == question.true}
        for name in [ENSEMBLE, *models]:  # as the screen and the scoreboard list them
            record[f"{name} answer"] = row[f"{name}:predicted"]
            record[f"{name} right"] = row[f"{name}:predicted"] == question.true
        records.append(record)
    return pd.DataFrame(records)


RIGHT_WRONG = {"✓": "#1a7f37", "✗": "#b42318"}  # the marks of `answers_in_words` and their colours: green, red


def mark_colour(row: str, cell) -> str:
    """The CSS colour of an Every answer cell: a player's ✓ green, ✗ red; nothing else (a row ABOUT_THE_PICTURE
    holds no marks, though an action may begin with either sign)."""
    sign = str(cell)[:1]
    return f"color: {RIGHT_WRONG[sign]}" if row not in ABOUT_THE_PICTURE and sign in RIGHT_WRONG else ""


def answers_in_words(answers: pd.DataFrame) -> pd.DataFrame:
    """`played_answers` as a page shows them: a column per picture (by its file's name), a row for the true
    action, one per player (the class, then who answered for it and the room's votes; the ensemble; each model) with
    "✓" when right, else "✗ " and the wrong action in words. Twelve columns of answers and ticks were wider than
    a 1280 px page; a round's few pictures side by side fit it. The room's votes only when the room voted. Their
    CSV keeps `played_answers`."""
    def marks(player: str) -> list[str]:
        return ["✓" if right else f"✗ {spoken(answer) if answer else 'no answer'}"
                for answer, right in zip(answers[f"{player} answer"], answers[f"{player} right"])]
    models = [column.removesuffix(" answer") for column in answers
              if column.endswith(" answer") and column not in ("class answer", f"{ENSEMBLE} answer")]
    names = answers["picture"].map(picture_name)
    repeated = names.duplicated(keep=False)  # the same name in two folders: each keeps its folder
    pictures = answers["picture"].where(repeated, names)
    rows = {"true action": answers["true action"].map(spoken).tolist(), CLASS: marks("class"),
            "answered by": answers["answered by"].tolist(), "room votes": answers["room votes"].tolist(),
            ENSEMBLE: marks(ENSEMBLE), **{name: marks(name) for name in models}}
    if not any(rows["room votes"]):  # the teacher answered every picture: a row of blanks says nothing
        del rows["room votes"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=pictures.tolist())


def scoreboard(answers: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Pictures right of those played: the class, the ensemble and each model (in the order given)."""
    names = [CLASS, ENSEMBLE, *models]
    right = [int(answers["class right"].sum()) if len(answers) else 0] + [
        int(answers[f"{name} right"].sum()) if len(answers) else 0 for name in names[1:]]
    return pd.DataFrame({"who": names, "right": right, "of": len(answers)})


WINNER = {1: "the class", -1: "the models", 0: "even"}


def per_action(answers: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row per true action of the pictures played: how many, the share the class got right, the share the
    models got right (their mean), the ensemble's share, and who did better (the class against the models'
    mean share)."""
    rows = []
    for action, group in answers.groupby("true action", sort=True):
        class_share = float(group["class right"].mean())
        models_share = float(np.mean([group[f"{name} right"].mean() for name in models]))
        rows.append({"action": action, "pictures": len(group), "class right": class_share,
                     "models right": models_share, "ensemble right": float(group[f"{ENSEMBLE} right"].mean()),
                     "better": WINNER[int(np.sign(round(class_share - models_share, 9)))]})
    return pd.DataFrame(rows, columns=["action", "pictures", "class right", "models right", "ensemble right",
                                       "better"])


@dataclass
class Summary:
    """A round's end: every answer, the score and the per-action verdict."""

    answers: pd.DataFrame
    score: pd.DataFrame
    actions: pd.DataFrame

    def beaten_by(self, who: str) -> list[str]:
        """The actions `who` ("the class" or "the models") did better on."""
        return list(self.actions.loc[self.actions["better"] == who, "action"])

    def sentence(self) -> str:
        """The summary in words."""
        won, lost = self.beaten_by("the class"), self.beaten_by("the models")
        words = lambda actions: ", ".join(spoken(a) for a in actions) or "none"  # noqa: E731
        return f"The class beat the models on: {words(won)}. The models beat the class on: {words(lost)}."


def summary(played: list[Question], table: pd.DataFrame, models: list[str]) -> Summary:
    answers = played_answers(played, table, models)
    return Summary(answers, scoreboard(answers, models), per_action(answers, models))
