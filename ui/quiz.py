"""The quiz (har_core.quiz) wired to Streamlit: the server's rooms, each session's vote token, the runs a round
plays and the pieces of its reveal (every model's answer and set, the best model's Grad-CAM, the most similar
training pictures)."""
from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from har_core.models import artifacts
from har_core.evaluation.analysis import overview_table
from har_core.models.artifacts import Run
from har_core.models.calibration_maths import DEFAULT_COVERAGE
from har_core.explain.cam import overlay_on_picture
from har_core.evaluation.ensemble import default_members
from har_core.data.imaging import image_digest, load_image
from har_core.data.labels import spoken
from har_core.evaluation.metrics import probabilities
from har_core.quiz import ENSEMBLE, QuizError, Room, Rooms, answers_table, ensemble_probabilities
from ui.answers import explanation
from ui.common import Selection, best_run, data_file, models, predictions
from ui.similar import has_embeddings, neighbour_grid, picture_neighbours
from ui.sureness import ensemble_temperature, sureness

QUIZ_CSS = """<style>
.st-key-quiz_actions { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(6.5rem, 1fr));
                      gap: .5rem; }
.st-key-quiz_actions button { min-height: 3.2rem; height: 100%; }
.st-key-quiz_actions [data-testid="stElementContainer"], .st-key-quiz_actions .stButton { height: 100%; }
.st-key-quiz_actions button p { font-size: 1.15rem; line-height: 1.2; }
.st-key-quiz_actions button * { white-space: normal; overflow: visible; text-overflow: clip; }  /* whole words */
.st-key-quiz_picture img { max-height: 70vh; object-fit: contain; }
.st-key-quiz_answers th, .st-key-quiz_answers th *, .st-key-quiz_answers td,
.st-key-quiz_answers td * { white-space: nowrap !important; }  /* a line a model: every answer on the first screen */
.st-key-quiz_verdict [data-testid="stMetricValue"], .st-key-quiz_verdict [data-testid="stMetricValue"] *,
.st-key-quiz_verdict [data-testid="stMetricDelta"] * { white-space: normal !important; overflow: visible !important; }
.st-key-quiz_verdict [data-testid="stMetricValue"] { font-size: 2rem; line-height: 1.15; }  /* a long action wraps */
.st-key-quiz_reveal_button button, .st-key-quiz_next button { min-height: 3rem; }
.st-key-quiz_reveal_button button p, .st-key-quiz_next button p { font-size: 1.2rem; }
</style>"""  # the actions in a grid as wide as the screen allows: three a row beside the picture, two on a phone
POLL_SECONDS = 3  # how often a visitor's page looks for the next picture, and the teacher's for new votes; the
# fragments that look draw a line at most: a fragment holding the picture and the buttons, drawn every 2 s, kept a
# busy browser from ever finishing the page (it showed placeholders only)


@st.cache_resource
def quiz_rooms() -> Rooms:
    """The server's rooms, one object shared by every session."""
    return Rooms()


def voter() -> str:
    """This session's vote token: random, drawn once per session, tied to no name or address."""
    if "quiz_voter" not in st.session_state:
        st.session_state["quiz_voter"] = secrets.token_hex(8)
    return st.session_state["quiz_voter"]


def host_key(code: str) -> str | None:
    """The key of the room `code` when this session opened it."""
    return st.session_state.get("quiz_keys", {}).get(code)


def keep_host_key(code: str, key: str) -> None:
    st.session_state.setdefault("quiz_keys", {})[code] = key


@dataclass
class Contest:
    """The runs a round plays and every test picture's answers (har_core.quiz.answers_table)."""

    runs: list[Run]  # the runs with test predictions, the most accurate first
    table: pd.DataFrame
    members: list[Run]  # the ensemble's (har_core.evaluation.ensemble's default)
    temperature: float  # the ensemble's own
    missing: list[str]  # runs of the folder without test predictions

    @property
    def classes(self) -> list[str]:
        return self.runs[0].classes

    @property
    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    def run(self, name: str) -> Run:
        return next(run for run in self.runs if run.name == name)


def contest(runs: list[Run], folder: Path | None) -> Contest | str:
    """The runs with stored test predictions and their answers table; one line saying what is missing instead
    when no run has any (or they share no picture)."""
    frames = {run.name: frame for run in runs if (frame := predictions(run, "test")) is not None}
    order = list(overview_table(runs)["run"]) if runs else []
    kept = sorted([run for run in runs if run.name in frames], key=lambda run: order.index(run.name))
    if not kept:
        where = f"in {folder}" if folder is not None else "here"
        return (f"No test predictions {where}: the quiz needs each run's predictions_test.csv (python -m "
                "train.evaluate RUN --split test writes it).")
    members = [run for run in kept if run.name in default_members(kept)]
    temperature = ensemble_temperature(members)
    try:
        table = answers_table(frames, kept[0].classes, [run.name for run in members], temperature)
    except QuizError as error:
        return f"No quiz on these runs: {error}."
    return Contest(kept, table, members, temperature, [run.name for run in runs if run.name not in frames])


def room_runs(room: Room) -> list[Run]:
    """The runs a room plays, read again from its runs folder (the sidebar may show another folder meanwhile)."""
    found, _ = artifacts.find_runs(room.runs, confine=True)
    return [run for run in found if run.name in room.models]


def picture(data_root: Path | None, filename: str):
    """A test picture of the room's image folder, whole; None when the folder does not hold it."""
    path = None if data_root is None else data_file(Selection(data_root=data_root), filename)
    return load_image(path) if path is not None and path.is_file() else None


@st.cache_data(show_spinner=False, max_entries=64)
def picture_jpeg(data_root: str | None, filename: str, longest: int = 1280) -> bytes | None:
    """The picture as JPEG bytes, encoded once for every session of the room: each visitor's page draws it again
    at each of its reruns (a vote, the answer shown), and bytes already encoded cost nothing to send again."""
    image = picture(Path(data_root) if data_root else None, filename)
    if image is None:
        return None
    image.thumbnail((longest, longest))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def reveal_table(game: Contest, filename: str, coverage: float = DEFAULT_COVERAGE) -> pd.DataFrame:
    """The reveal's answers to one picture: the ensemble, then every model (the most accurate first): its answer
    (✅ right, ❌ wrong), calibrated confidence, and its prediction set at `coverage`: how many actions it holds
    (set_size_column: a short line that keeps every model's answer on the first screen) and which
    (set_column)."""
    classes, true = game.classes, game.table.set_index("filename").loc[filename, "true"]
    rows = []
    for run in game.runs:
        frame = predictions(run, "test")
        probs = probabilities(frame.set_index("filename").loc[[filename]], classes)
        rows.append(_answer_row(run.name, [run], probs / probs.sum(1, keepdims=True), classes, true, coverage))
    mean = ensemble_probabilities({run.name: predictions(run, "test") for run in game.runs}, classes,
                                  [run.name for run in game.members], game.temperature, [filename])
    rows.insert(0, _answer_row(ENSEMBLE, game.members, mean, classes, true, coverage))
    return pd.DataFrame(rows)


def _answer_row(name: str, runs: list[Run], probs: np.ndarray, classes: list[str], true: str,
                coverage: float) -> dict:
    answer = classes[int(probs[0].argmax())]
    sure = sureness(runs, probs, classes, coverage)
    sets = sure.sets[0] if sure.sets is not None else None
    return {"model": name, "answer": f"{'✅' if answer == true else '❌'} {spoken(answer)}",
            "confidence": f"{probs[0].max():.1%}",
            set_size_column(coverage): f"{len(sets)} action{'s' * (len(sets) != 1)}" if sets is not None else "–",
            set_column(coverage): " · ".join(spoken(c) for c in sets) if sets is not None else "–"}


def set_size_column(coverage: float) -> str:
    return f"{coverage:.0%} set"


def set_column(coverage: float) -> str:
    return f"{coverage:.0%} set, in words"


def best_cam(game: Contest, image, filename: str):
    """The best run's Grad-CAM (ui.common.best_run: the one every page opens on) over the whole picture, of the
    class it answered in its stored predictions (what the reveal says it answered), and that run's name."""
    run = best_run(game.runs)
    loaded = models([run])
    if not loaded:
        return None, run.name
    answer = game.table.set_index("filename").loc[filename, f"{run.name}:predicted"]
    result = explanation(loaded[0], image, image_digest(image), "Grad-CAM", run.classes.index(answer))
    return overlay_on_picture(result, image, run.card["input_size"], run.card["crop_pct"]), run.name


def similar_training_pictures(selection: Selection, game: Contest, filename: str, k: int = 3) -> None:
    """The k training pictures most like this one in the embedding of the best run (ui.common.best_run), or of
    the next run in the table's order that has embeddings, with their labels and similarity."""
    run = next((run for run in [best_run(game.runs), *game.runs] if has_embeddings(run)), None)
    if run is None:
        st.caption("No run here has embeddings: the Embeddings page computes them.")
        return
    near = picture_neighbours(run, filename, k)
    if isinstance(near, str):
        st.caption(near)
        return
    found, similarities, rows = near
    st.markdown(f"**The {k} most similar training pictures** ({run.name})")
    neighbour_grid(selection, run, found, similarities[0], rows[0], columns=k, size=240)
