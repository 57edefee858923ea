"""The sidebar (runs, image folder, class list), deep links and presentation mode."""
from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from har_core.models import artifacts
from har_core import server
from har_core.models.artifacts import Run
from har_core.evaluation.ensemble import class_groups, default_members, describe_classes
from har_core.models.backend import AUTO, BACKENDS, LABELS
from ui.common import PRESENTATION_CSS, Selection, remembered, config, env_backend, presenting, verbatim
from ui.warm_up import warm_up


def _folder_choice(label: str, key: str, choices: list[Path], optional: bool, help: str,
                   default: Path | None = None) -> Path | None:
    options = (["(none)"] if optional else []) + [str(path) for path in choices]
    kept = st.session_state.get(f"keep_{key}")
    fallback = options.index(str(default)) if default is not None and str(default) in options else \
        (1 if optional and len(options) > 1 else 0)
    index = options.index(kept) if kept in options else fallback
    if not options:
        return None
    if key in st.session_state and st.session_state[key] not in options:  # a folder no longer offered: set, so the
        st.session_state[key] = options[index]  # browser shows the one used
    picked = st.selectbox(label, options, index=index, key=key, help=help,
                          format_func=lambda value: value if value == "(none)" else _short(value))
    st.session_state[f"keep_{key}"] = picked
    return None if picked == "(none)" else Path(picked)


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def _free_folder(label: str, key: str, default: str, help: str) -> Path | None:
    typed = remembered(st.text_input, label, key, default, help=help)
    if typed and not _is_folder(typed):
        st.caption(f"⚠️ folder not found: {verbatim(typed)}")
    return Path(typed) if typed and _is_folder(typed) else None


def _is_folder(typed: str) -> bool:
    try:
        return Path(typed).is_dir()
    except (OSError, ValueError):  # a name longer than the system takes, a NUL byte: no folder, not a stopped page
        return False


@st.cache_data(show_spinner=False, ttl=3, max_entries=8)
def _data_choices(settings: server.ServerConfig) -> list[Path]:
    """The image folders a visitor may pick (har_core.server.data_choices), looked at most every 3 s: a page
    switch need not list ../shared/data's folders again."""
    return server.data_choices(settings)


def _set_widget(key: str, value) -> None:
    """Give a sidebar widget a value from the app (a link, another runs folder): through st.session_state, the one
    way the browser's widget shows it too (removing the key let the browser keep showing, and send back, the old
    value)."""
    st.session_state[key] = st.session_state[f"keep_{key}"] = value


def _follow_folder_link(param: str, key: str, choices: list[Path]) -> None:
    """A link's ?runs=<name> or ?data=<name> picks the allowed folder of that name, once per link (the page's own
    value, written back into the address, is no link)."""
    linked = st.query_params.get(param)
    if linked and st.session_state.get(f"_link_{param}") != linked:
        st.session_state[f"_link_{param}"] = linked
        match = next((str(folder) for folder in choices if folder.name == linked), None)
        if match:
            _set_widget(key, match)


_this_run = threading.local()  # the runs this script run shows (`sidebar` sets, `warm_up_after_page` reads)


def sidebar() -> Selection:
    """Runs and image folder, chosen in the sidebar among the folders the operator allows; every page
    starts by calling this. Visitors never type a path unless the operator opts in to free paths."""
    settings = config()
    runs_help = "A folder of run folders written by `python -m train.train` (or one run)."
    data_help = "The data set the runs were trained on; enables thumbnails and samples."
    with st.sidebar:
        # first, under the pages: at 1280×720 the end of the sidebar is below its fold
        was = presenting()
        present = remembered(st.toggle, "Presentation mode", "present", False,
                              help="Sidebar collapsed, larger type, the whole screen width. Link: add ?present=1.")
        if present != was:
            # into the address before the rerun, so a reload keeps the mode: written after it only, the browser
            # dropped it (Streamlit keeps the query of the run that a widget started)
            if present:
                st.query_params["present"] = "1"
            else:
                st.query_params.pop("present", None)
            st.rerun()  # app.py sets the sidebar's state before the page runs
        data_sets = _data_choices(settings)
        if settings.free_paths:
            runs_dir = _free_folder("Runs folder", "runs_dir", str(settings.runs[0]) if settings.runs else "", runs_help)
        else:
            _follow_folder_link("runs", "runs_dir", list(settings.runs))
            runs_dir = _folder_choice("Runs folder", "runs_dir", list(settings.runs), False, runs_help)
            if runs_dir is not None and st.query_params.get("runs") != runs_dir.name:
                st.query_params["runs"] = runs_dir.name  # a link names its runs too: ?data= alone reopened
                st.session_state["_link_runs"] = runs_dir.name  # another folder's runs with this data set
        found, failures = artifacts.find_runs(runs_dir, confine=not settings.free_paths) if runs_dir else ([], [])
        switched = st.session_state.get("_runs_dir_was", str(runs_dir)) != str(runs_dir)
        st.session_state["_runs_dir_was"] = str(runs_dir)
        # default: the data set the runs were trained on (their cards say which); a link's ?data=<name> wins
        their_data = [root for r in found if (root := r.card.get("data", {}).get("root", ""))]
        trained_on = server.default_data_folder(data_sets, their_data)
        if switched and (trained_on or not settings.free_paths):  # other runs bring their own data set (a link's
            _set_widget("data_dir", str(trained_on) if trained_on else "(none)")  # ?data= below still wins)
        _follow_folder_link("data", "data_dir", data_sets)
        if settings.free_paths:
            data_root = _free_folder("Image folder (optional)", "data_dir", str(trained_on or ""), data_help)
        else:
            data_root = _folder_choice("Image folder", "data_dir", data_sets, True, data_help, default=trained_on)
            if not data_sets:
                st.caption("No image folder here: uploads and the camera work; thumbnails, samples and the data "
                           "pages need the data set (README: Data).")
        if data_root is not None and their_data and not server.learned_from(data_root, their_data):
            st.warning(f"These runs did not learn from **{data_root.name}**: its pictures and labels may not match "
                       "their classes.", icon="⚠️")
        if data_root is not None and st.query_params.get("data") != data_root.name:
            st.query_params["data"] = data_root.name  # part of the link to this view
            st.session_state["_link_data"] = data_root.name  # our own value, not a link to follow on the next run
        names = [run.name for run in found]
        known = st.session_state.get("keep_known_runs", names)
        kept = [n for n in st.session_state.get("keep_chosen_runs", names) if n in names]
        if switched:  # another folder: all its runs
            _set_widget("chosen_runs", names)
        elif new := [n for n in names if n not in known]:  # a run saved since (Teach) is shown too
            _set_widget("chosen_runs", kept + new)
        elif [n for n in st.session_state.get("chosen_runs", []) if n not in names]:  # a run gone since
            _set_widget("chosen_runs", kept)
        chosen = st.multiselect("Runs to show", names, default=kept, key="chosen_runs")
        st.session_state["keep_chosen_runs"], st.session_state["keep_known_runs"] = chosen, names
        if not found:
            st.warning(f"No runs in {runs_dir}." if runs_dir else "No runs folder: type the path of a folder of runs "
                       "above." if settings.free_paths else "The operator allows no runs folder.")
        for name, reason in failures:
            st.error(f"Run **{name}** could not be loaded: {reason}", icon="⚠️")
        default = env_backend()  # HAR_BACKEND, read once per rerun (`backend()` then reads the kept choice)
        kept = st.session_state.get("keep_backend") or default
        if any("exports" in run.card for run in found) or default not in (AUTO, "pytorch"):
            options = list(BACKENDS)
            kept = st.selectbox("Prediction backend", options, index=options.index(kept), key="backend",
                                format_func=LABELS.get, help="ONNX Runtime runs a run's checked export "
                                "(python -m train.export RUN, or make exports); runs without one, and Grad-CAM, "
                                "use PyTorch. Fastest: int8 where the run has one, else float.")
        st.session_state["keep_backend"] = kept
        runs, left_out = one_class_list([run for run in found if run.name in chosen])
        if switched:  # each page's choices among the old folder's runs start from their defaults again
            st.session_state.update(run_choice_defaults(runs))
    selection = Selection(runs=runs, data_root=data_root, runs_dir=Path(runs_dir) if runs_dir else None,
                          in_folder=len(found), left_out=left_out)
    _this_run.shown = selection.runs  # warmed up once the page is drawn (`warm_up_after_page`)
    if present:
        st.html(PRESENTATION_CSS)
        share_view(present=1)
    elif "present" in st.query_params:
        del st.query_params["present"]
    return selection


def warm_up_after_page() -> None:
    """Prepare the shown runs' first answer in the background (ui.warm_up), asked for once the page's script is
    done: importing torch and loading the models never delays the first page a visitor sees (#41). Called in a
    `finally` also after st.stop(), so it makes no Streamlit call (after a stop request any would raise
    StopException again) and never raises (the page's own ending stays what the visitor sees). The shown runs are
    taken, not read: a session's reruns share one thread, and a rerun that stops before the sidebar warms nothing."""
    try:
        warm_up(_this_run.__dict__.pop("shown", []))
    except Exception as error:  # noqa: BLE001 - a page that needs a model loads it itself and names the failure
        print(f"HAR Studio: no warm-up: {error}", flush=True)


NO_RUN = ""  # no run is called this: a selectbox holding it falls back to its page's default


def run_choice_defaults(runs: list[Run]) -> dict[str, list[str] | str]:
    """What each page's choice among the shown runs starts from again when other runs are shown (another runs
    folder, another class list). Set through st.session_state, not removed, so the browser shows them too: the
    pickers of several runs get their pages' defaults; a single-run picker gets no run's name, which makes
    Streamlit pick its page's default and send that to the browser."""
    members, images = default_members(runs), [run.name for run in runs if not run.takes_clips]
    return {"predict_models": images, "cam_models": images, "video_models": members, "mistakes_models": members,
            "predict_ensemble": members, "overview_ensemble": members,
            **dict.fromkeys(("map_run", "eval_model", "teach_base", "dataset_audit_run", "inside_model"), NO_RUN)}



def one_class_list(runs: list[Run]) -> tuple[list[Run], list[tuple[str, str]]]:
    """Pages compare runs of one class list: the largest group of the chosen runs, or the one picked in the
    sidebar when they have several; the others are named there with the reason."""
    groups = class_groups(runs)
    if len(groups) < 2:
        return runs, []
    labels = [f"{describe_classes(g[0].classes)} ({len(g)} run{'s' if len(g) > 1 else ''})" for g in groups]
    picked = st.selectbox("Class list", range(len(groups)), format_func=labels.__getitem__, key="class_list",
                          help="The chosen runs were trained on different classes; the pages compare runs of one "
                          "class list at a time.")
    if st.session_state.get("keep_class_list", picked) != picked:
        # choices among the other group's runs: each page starts from its default again
        st.session_state.update(run_choice_defaults(groups[picked]))
    st.session_state["keep_class_list"] = picked
    left_out = [(run.name, f"trained on {describe_classes(run.classes)}")
                for i, group in enumerate(groups) if i != picked for run in group]
    st.caption("Not shown (other classes): " + "; ".join(f"**{name}**, {why}" for name, why in left_out))
    return groups[picked], left_out


def follow_link(param: str, key: str, allowed=None, many: bool = False) -> None:
    """Deep links: a URL parameter (?models=a,b&split=test&sample=…&method=…&cls=…&present=1) sets the widget
    `key` when the page opens with it, once; values not among `allowed` are left out. `share_view` writes the
    current choices back, so the address bar is always a link that reopens this view."""
    raw = st.query_params.get(param)
    # the session's own choice mirrored into the address (share_view) is no link: applying it again would undo the
    # visitor's next change of the widget
    if raw is None or raw in (st.session_state.get(f"_link_{key}"), st.session_state.get(_shared_key(param))):
        return
    st.session_state[f"_link_{key}"] = raw
    if many:
        values = [v for v in raw.split(",") if allowed is None or v in allowed]
        if values:
            st.session_state[key] = values
    elif allowed is None or raw in allowed:
        st.session_state[key] = raw
    if (not many and allowed is not None and raw not in allowed) or (many and not values):
        st.caption(f"⚠️ The link's {param}={verbatim(raw)} is not available here; the page's default is used.")


def _shared_key(param: str) -> str:
    """Where this page remembers what it wrote into the address (pages share parameter names: model, split)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    context = get_script_run_ctx()
    return f"_shared_{context.page_script_hash if context else ''}_{param}"


def share_view(**params) -> None:
    """Mirror the page's choices into the URL (lists comma-joined), so a teacher copies the address bar."""
    for param, value in params.items():
        raw = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        st.session_state[_shared_key(param)] = raw
        if st.query_params.get(param) != raw:
            st.query_params[param] = raw


def ensemble_members(runs: list[Run], key: str) -> list[str]:
    """The ensemble's members, chosen among `runs`; both pages start from har_core.evaluation.ensemble's default."""
    names = [run.name for run in runs]
    if key in st.session_state and not set(st.session_state[key]) <= set(names):  # set while other runs were shown
        st.session_state[key] = default_members(runs)
    return st.multiselect("Ensemble members", names, default=default_members(runs), key=key,
                          help="The ensemble averages its members' calibrated probabilities (then applies its own "
                               "temperature). Default: the runs that started from ImageNet weights (when there are two "
                               "or more), else all.")

