from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st

from har_core.models.calibration_maths import DEFAULT_COVERAGE
from har_core.data.labels import picture_name, spoken
from har_core.quiz import (DEFAULT_PICTURES, KINDS, answers_in_words, choose_round, kind_counts, mark_colour,
                           summary)
from ui.choices import sidebar
from ui.common import Selection, friendly, image_models, need_runs, verbatim
from ui.sharing import QUIZ_ROUND
from ui.quiz import (POLL_SECONDS, QUIZ_CSS, best_cam, contest, host_key, keep_host_key, picture as quiz_picture,
                     picture_jpeg, quiz_rooms, reveal_table, room_runs, set_column, similar_training_pictures,
                     voter)

selection = sidebar()
st.html(QUIZ_CSS)
rooms = quiz_rooms()
code = st.query_params.get("room")
room = rooms.get(code)


def go_to(code: str | None) -> None:
    """Into a room (the address names it, so a visitor's link and a reload land there) or back to the start."""
    if code:
        st.query_params["room"] = code
    elif "room" in st.query_params:
        del st.query_params["room"]


def action_buttons(classes: list[str], chosen: str | None, on_click, key: str) -> None:
    """The actions in words, big, in a grid (QUIZ_CSS); the one chosen stands out."""
    with st.container(key="quiz_actions"):
        for action in classes:
            st.button(spoken(action), key=f"{key}_{action}", width="stretch", on_click=on_click, args=(action,),
                      type="primary" if action == chosen else "secondary")


def round_header(room, position: int) -> None:
    page = (st.context.url or "").split("?")[0]  # the address this browser sees (none in a headless test)
    link = f"{page}?room={room.code}" if page else f"the Quiz page, ?room={room.code}"
    left, right = st.columns([1, 2], vertical_alignment="center")
    left.subheader(f"🎯 Picture {position + 1} of {len(room)}", anchor=False)
    right.markdown(f"Vote from your own device: **{link}** · round **{room.code}**",
                   help=("This browser reaches the app at this machine's own name: the room's devices need its "
                         "network address instead (e.g. http://192.168.1.20:8501), as `streamlit run` printed it."
                         if urlsplit(page).hostname in ("localhost", "127.0.0.1", "::1", "0.0.0.0") else None))


@st.fragment(run_every=POLL_SECONDS)
def follow(room, seen) -> None:
    """A visitor's page is drawn again when the teacher shows the answer or the next picture; in between this
    looks every few seconds and draws nothing."""
    position, question, _ = room.state()
    if (position, question is not None and question.revealed) != seen:
        st.rerun()


@st.fragment(run_every=POLL_SECONDS)
def votes_so_far(room) -> None:
    """How many have voted, every few seconds; what they voted stays hidden until the answer is shown."""
    _, question, _ = room.state()
    if question is not None:
        count = len(question.votes)
        # the teacher's click shows as its highlighted button: said here too, the line took three lines at 1280 px
        # presenting and pushed "Show the answer" below a 720-px projector's edge (#41 walk)
        st.markdown(f"🗳️ **{count} vote{'s' * (count != 1)}** from the room")


def start() -> None:
    st.title("🎯 Quiz: the class against the models")
    if code:
        st.caption(f"⚠️ No round {verbatim(code)} on this server: it ended, the server restarted, or this address "
                   "leads to another copy of the app than the teacher's (rounds live in one server process). "
                   "Start one below.")
    st.caption("Guess first, then see what the networks said: pictures of the test split that every model gets "
               "right, that the models disagree on, and that every model gets wrong.")
    need_runs(selection)
    runs = image_models(selection)
    game = contest(runs.runs, runs.runs_dir)
    if isinstance(game, str):
        st.info(game)
        st.stop()
    if game.missing:
        st.caption(f"Not in the quiz (no test predictions): {', '.join(game.missing)}.")
    if selection.data_root is None:
        st.info("Choose the runs' image folder in the sidebar: the quiz shows their test pictures.")
        st.stop()
    for other in rooms.running(str(selection.runs_dir)):
        st.button(f"Join round {other.code} ({len(other)} pictures), running on this server",
                  key=f"quiz_join_{other.code}", on_click=go_to, args=(other.code,))
    a, b, c = st.columns(3)
    pictures = a.slider("Pictures in the round", 3, 15, DEFAULT_PICTURES, key="quiz_pictures")
    seed = b.number_input("Seed (the same seed, the same pictures)", 0, 9999, 1, key="quiz_seed")
    hard = c.toggle("Hard ones only", key="quiz_hard",
                    help=f"Only pictures {KINDS['split']} or {KINDS['all wrong']}.")
    counts = kind_counts(game.table)
    st.caption(f"{len(game.table):,} test pictures every model answered: "
               + ", ".join(f"{counts[kind]:,} {words}" for kind, words in KINDS.items())
               + f". Models: {', '.join(game.names)}; the ensemble of {', '.join(r.name for r in game.members)}.")
    with friendly("Choosing the pictures"):
        files = choose_round(game.table, pictures, int(seed), hard)
        mix = kind_counts(game.table[game.table["filename"].isin(files)])
        st.markdown(f"**This round: {len(files)} pictures** — " + ", ".join(
            f"{mix[kind]} {words}" for kind, words in KINDS.items() if mix[kind]) + ". Once it starts, everyone "
            "in the room can vote from their own device; no name is kept.")
        st.button("▶ Start the round", type="primary", key="quiz_start", on_click=open_room, args=(game, files))


def open_room(game, files: list[str]) -> None:
    room, key = rooms.open(game.table, files, game.classes, str(selection.runs_dir), str(selection.data_root),
                           game.names)
    keep_host_key(room.code, key)
    go_to(room.code)


def visitor(room) -> None:
    position, question, played = room.state()
    follow(room, (position, question is not None and question.revealed))
    if question is None:
        right = sum(q.answer == q.true for q in played)
        st.success(f"The round is over: the class got **{right} of {len(played)}** right. The score against each "
                   "model is on the teacher's screen.")
        return
    st.subheader(f"🎯 Picture {position + 1} of {len(room)}", anchor=False)
    mine = question.votes.get(voter())
    jpeg = picture_jpeg(room.data, question.filename)
    if jpeg is not None:
        st.container(key="quiz_picture").image(jpeg, width="stretch")
    if question.revealed:
        verdict = "✅" if mine == question.true else "❌"
        st.header(f"The answer: {spoken(question.true)}", anchor=False)
        st.markdown(f"The class said **{spoken(question.answer) if question.answer else 'nothing'}**"
                    + (f" · you said **{spoken(mine)}** {verdict}" if mine else ""))
        return
    st.markdown("**What is this person doing?**")
    action_buttons(room.classes, mine, lambda action: room.vote(voter(), action), "quiz_vote")
    st.caption(f"Your vote: **{spoken(mine)}** (you can change it until the answer is shown)" if mine else
               "Tap your answer: one vote per device; no name is kept.")


def host(room, key: str) -> None:
    game = contest(room_runs(room), Path(room.runs))
    if isinstance(game, str):
        st.info(game)
        st.stop()
    shown = Selection(runs=game.runs, data_root=Path(room.data) if room.data else None, runs_dir=Path(room.runs))
    position, question, played = room.state()
    if question is None:
        the_end(game, played)
        return
    round_header(room, position)
    jpeg = picture_jpeg(room.data, question.filename)
    if jpeg is None:
        st.warning(f"{question.filename} is not in the image folder {room.data}.")
    if question.revealed:
        reveal(room, key, game, shown, position, question, played)
        return
    left, right = st.columns([1, 1])
    if jpeg is not None:
        left.container(key="quiz_picture").image(jpeg, width="stretch")
    with right:  # one line of words: the question, the answers, the votes and the button fit a 720-px projector
        st.markdown("**What is this person doing?**", help="Click the class's answer, or let the room vote from "
                    "their own devices: without a click, the most voted action is the class's answer.")
        action_buttons(room.classes, question.pick,
                       lambda action: room.pick(key, None if action == question.pick else action), "quiz_pick")
        count, show = st.columns(2, vertical_alignment="center")
        with count:
            votes_so_far(room)
        show.button("Show the answer", type="primary", key="quiz_reveal_button", width="stretch",
                    on_click=room.reveal, args=(key,))


def reveal(room, key, game, shown, position, question, played) -> None:
    image = quiz_picture(shown.data_root, question.filename)
    answers = reveal_table(game, question.filename)
    score = summary(played, game.table, game.names).score
    row = game.table.set_index("filename").loc[question.filename]
    # the answer first, on one screen of a 1280x720 projector: the truth, the class's, every model's (a line each);
    # then the picture, the Grad-CAM, the sets in words, the similar pictures
    truth, said, models, next_one = st.container(key="quiz_verdict").columns([1, 1, 1, 0.8],
                                                                             vertical_alignment="center")
    truth.metric("The answer", spoken(question.true))
    said.metric("The class", f"{'✅' if question.answer == question.true else '❌'} "
                f"{spoken(question.answer) if question.answer else 'none'}", by_whom(question),  # "no answer" wrapped
                delta_color="off", delta_arrow="off")
    hits = sum(row[f"{name}:predicted"] == question.true for name in game.names)
    models.metric("The models", f"{hits} of {len(game.names)} right", f"ensemble: {answers['answer'].iloc[0]}",
                  delta_color="off", delta_arrow="off")
    # short: whole in its column at every size ("The round's score" was cut to "The round's scor…")
    next_one.button("The score ▸" if position + 1 == len(room) else "Next picture ▸", type="primary",
                    key="quiz_next", width="stretch", on_click=room.next, args=(key,))
    in_words = set_column(DEFAULT_COVERAGE)
    panel, picture = st.columns([3, 1.2])
    panel.container(key="quiz_answers").table(answers.drop(columns=in_words), hide_index=True,
                                              border="horizontal")  # HTML: it grows with presentation mode's type
    votes = " · ".join(f"{spoken(action)} {n}" for action, n in question.tally())
    panel.caption(f"Calibrated confidence; the set holds the actions the model cannot rule out "
                  f"({DEFAULT_COVERAGE:.0%} coverage), in words below." + (f" The room's votes: {votes}" if votes
                                                                            else ""))
    cam, sets, scores = st.columns([1.2, 2, 1])
    if image is not None:
        picture.image(image, caption=picture_name(question.filename), width="stretch")
        with cam, friendly("Grad-CAM"), st.spinner("Grad-CAM…"):
            overlay, name = best_cam(game, image, question.filename)
            if overlay is not None:
                st.image(overlay, caption=f"Grad-CAM: where {name} looked", width="stretch")
    sets.markdown(f"**{DEFAULT_COVERAGE:.0%} sets: what each model cannot rule out**  \n" + "  \n".join(
        f"{name}: {words}" for name, words in zip(answers["model"], answers[in_words])))
    scores.markdown(f"**Score after {len(played)} of {len(room)}**  \n" + "  \n".join(
        f"{who}: **{n}**" for who, n in zip(score["who"], score["right"])))
    with friendly("Similar training pictures"):
        similar_training_pictures(shown, game, question.filename)


def by_whom(question) -> str:
    if question.answered_by == "teacher":
        return "clicked by the teacher"
    if question.answered_by == "room":
        return f"{question.tally()[0][1]} of {len(question.votes)} votes"
    return "nobody answered"


def the_end(game, played) -> None:
    result = summary(played, game.table, game.names)
    st.session_state[QUIZ_ROUND] = result  # Overview's report ends with it
    st.subheader(f"🎯 The round is over: {len(played)} pictures", anchor=False)
    board = result.score
    columns = st.columns(min(4, len(board)))  # four a row: at 1280 px a fifth cut custom_cnn_taught's name
    for i, row in board.iterrows():
        columns[i % len(columns)].metric(row["who"], f"{row['right']} of {row['of']}", border=True)
    st.markdown(f"**{result.sentence()}**")
    shares = {"class right": "{:.0%}", "models right": "{:.0%}", "ensemble right": "{:.0%}", "action": spoken}
    st.dataframe(result.actions.style.format(shares), hide_index=True, width="stretch")
    with st.expander("Every answer"):
        # HTML, not a canvas: every row and answer whole (a canvas' fixed height and columns cut them at 1280 px and
        # presenting), and its type grows with presentation mode's
        every = answers_in_words(result.answers)
        st.table(every.style.apply(lambda row: [mark_colour(row.name, cell) for cell in row], axis=1),
                 border="horizontal")
    a, b, c = st.columns(3)
    a.download_button("⬇️ Summary per action (CSV)", result.actions.round(4).to_csv(index=False), "quiz_summary.csv",
                      "text/csv", key="quiz_csv")
    b.download_button("⬇️ Every answer (CSV)", result.answers.to_csv(index=False), "quiz_answers.csv", "text/csv",
                      key="quiz_answers_csv")
    c.button("Play another round", key="quiz_again", on_click=go_to, args=(None,))
    st.caption("Overview's report (Download report) now ends with this round's summary.")


if room is not None and room.is_host(host_key(room.code)):
    host(room, host_key(room.code))
elif room is not None:
    visitor(room)
else:
    start()
