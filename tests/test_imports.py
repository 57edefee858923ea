"""har_core's modules import each other without a circle (#39: calibration <-> ensemble, audit <-> similarity were
two, each hidden behind an import inside a function). The graph is read from the source, imports inside
functions included, so a circle cannot hide from it. Its subpackages are concerns in levels (#43, LEVELS): no
import runs from a lower concern to a higher one, nor sideways between two of one level."""
import ast
import os
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = "har_core"
# har_core's subpackages by concern, lowest first: a module imports modules of its own subpackage and of lower
# levels only; training, explain and retrieval (one level) do not import each other. The modules at har_core's
# top (server, report, quiz) draw on every concern, and no subpackage imports them.
LEVELS = {"data": 0, "models": 1, "evaluation": 2, "training": 3, "explain": 3, "retrieval": 3}


def imported_modules(path: Path, modules: set[str], packages: tuple[str, ...] = (PACKAGE,)) -> set[str]:
    """The modules of `packages` (of `modules`) a source file imports, at its top or inside any function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.partition(".")[0] in packages:
                found.add(node.module)  # from har_core.models.inference import load_run
                # the names may be modules (from har_core.data import fileio)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def module_name(path: Path) -> str:
    """har_core/models/inference.py -> har_core.models.inference"""
    return ".".join((PACKAGE, *path.relative_to(ROOT / PACKAGE).with_suffix("").parts))


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in (ROOT / PACKAGE).rglob("*.py") if path.stem != "__init__"}
    return {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}


def concern_of(module: str) -> str | None:
    """The subpackage a module sits in (har_core.models.inference -> models); None at har_core's top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def level_of(module: str) -> int:
    concern = concern_of(module)
    return max(LEVELS.values()) + 1 if concern is None else LEVELS[concern]


def wrong_way_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from one concern into another of the same or a higher level, as "a -> b"."""
    return [f"{module} -> {target}" for module in sorted(graph) for target in sorted(graph[module])
            if concern_of(target) != concern_of(module) and level_of(target) >= level_of(module)]


def a_circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of the graph as the modules along it (first = last), or [] when there is none."""
    state: dict[str, str] = {}  # "open" while on the path being walked, "done" once every way out is walked

    def walk(module: str, path: list[str]) -> list[str]:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [module, target] if target in path else [module, target]
            if target not in state and (circle := walk(target, path + [module])):
                return circle
        state[module] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (circle := walk(start, [])):
            return circle
    return []


def test_the_circle_finder_finds_a_circle_and_passes_a_tree():
    assert a_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert a_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from har_core.data import fileio, labels\n"
                      "def f():\n"
                      "    from har_core.retrieval.audit import near_duplicates\n"
                      "    import har_core.retrieval.search\n")
    imported = {"har_core.data.fileio", "har_core.data.labels", "har_core.retrieval.audit", "har_core.retrieval.search"}
    assert imported_modules(source, imported | {"har_core.explain.cam"}) == imported


def test_the_level_check_finds_upward_and_sideways_imports():
    graph = {"har_core.models.inference": {"har_core.data.fileio", "har_core.evaluation.calibration"},
             "har_core.explain.cam": {"har_core.models.inference", "har_core.retrieval.search"},
             "har_core.training.trunk": {"har_core.training.distill", "har_core.report"},
             "har_core.report": {"har_core.explain.cam", "har_core.quiz"}}
    assert wrong_way_imports(graph) == ["har_core.explain.cam -> har_core.retrieval.search",
                                        "har_core.models.inference -> har_core.evaluation.calibration",
                                        "har_core.training.trunk -> har_core.report"]


def test_har_core_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 20 and graph["har_core.evaluation.ensemble"]  # the package was read
    circle = a_circle(graph)
    assert not circle, " -> ".join(circle)


def test_the_app_and_har_core_have_no_import_circle_between_them():
    """The warm-up's thread imports modules the visitors' scripts import too: with no circle, two threads importing
    them at once take turns module by module and cannot deadlock."""
    paths = [path for package in ("har_core", "ui") for path in (ROOT / package).rglob("*.py") if path.stem != "__init__"]
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts): path for path in paths}
    graph = {name: imported_modules(path, set(modules), ("har_core", "ui")) - {name} for name, path in modules.items()}
    assert graph["ui.warm_up"] >= {"ui.common", "har_core.models.artifacts"}  # both packages were read
    circle = a_circle(graph)
    assert not circle, " -> ".join(circle)


def test_no_import_runs_up_or_sideways_between_har_core_subpackages():
    graph = import_graph()
    assert {concern_of(module) for module in graph} - {None} <= set(LEVELS)  # every subpackage has its level
    assert not wrong_way_imports(graph), "\n".join(wrong_way_imports(graph))


# --- heavy packages imported one thread at a time (har_core.data.imports, installed by app.py) ---

def write_package(root: Path, name: str, source: str, **modules: str) -> None:
    import importlib
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(source)
    for module, text in modules.items():
        (root / name / f"{module}.py").write_text(text)
    importlib.invalidate_caches()  # the folder is on sys.path already


def body(name: str, middle: str = "") -> str:
    """A module body that records its start and end in the test's `import_log` module, sleeping in between: long
    enough for another thread to start its own import meanwhile (the order is asserted, never the time)."""
    return (f"import threading, time, import_log\n"
            f"import_log.events.append(('{name} start', threading.current_thread().name))\n"
            f"time.sleep(0.3)\n{middle}"
            f"import_log.events.append(('{name} end', threading.current_thread().name))\n")


@pytest.fixture
def fake_heavy(tmp_path, monkeypatch):
    """Import fake packages from tmp_path under har_core.data.imports' wrapper, treating slow_* as heavy."""
    import builtins
    import sys

    from har_core.data import imports
    (tmp_path / "import_log.py").write_text("import threading\nevents = []\nin_y = threading.Event()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith(("slow_", "import_log"))]:
        monkeypatch.delitem(sys.modules, name)
    locked = imports.locked_import(builtins.__import__, frozenset({"slow_a", "slow_b", "slow_c"}))
    if os.environ.get("HAR_TEST_WITHOUT_IMPORT_LOCK") != "1":  # =1: see these tests fail without the wrapper
        monkeypatch.setattr(builtins, "__import__", locked)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("slow_", "import_log"))]:
        del sys.modules[name]


def import_as_the_app(name: str, errors: list[str]) -> None:
    """`import name` as a statement of the app's code runs it; its error, if any, added to `errors`."""
    try:
        exec(f"import {name}", {"__name__": "har_core.fake_caller"})
    except Exception as error:  # noqa: BLE001 - _DeadlockError among them
        errors.append(f"{name}: {type(error).__name__}: {error}")


def import_in_threads(*names: str, timeout: float = 60) -> tuple[list[str], list[str]]:
    """Each module imported by a thread of its own, all started at once; the errors, and the threads still running
    after `timeout` (hung)."""
    import threading
    start, errors = threading.Barrier(len(names)), []
    threads = [threading.Thread(target=lambda n=name: (start.wait(), import_as_the_app(n, errors)), name=name,
                                daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors, [thread.name for thread in threads if thread.is_alive()]


def test_two_threads_importing_heavy_packages_that_import_each_other_take_turns(fake_heavy):
    """#41 walk: a fresh server's warm-up and its first visitor imported scikit-learn at once and Python raised
    _DeadlockError on its circular imports. Here one thread imports slow_a.x while another imports slow_b.y; slow_a
    imports slow_b.y and slow_b imports slow_a.x. Without the lock each thread holds its module's lock while it
    imports the package first, and then asks for the other's: Python raises _DeadlockError in one of them."""
    import import_log
    write_package(fake_heavy, "slow_a", body("slow_a", "import slow_b.y\n"), x="")
    write_package(fake_heavy, "slow_b", body("slow_b", "import slow_a.x\n"), y="")
    errors, hung = import_in_threads("slow_a.x", "slow_b.y")
    assert (errors, hung) == ([], [])
    threads = [thread for _, thread in import_log.events]  # each thread's module bodies ran without the other's
    assert threads == sorted(threads, key=threads.index)    # between (sorted by first appearance, stable)
    assert sorted(event for event, _ in import_log.events) == ["slow_a end", "slow_a start", "slow_b end",
                                                                 "slow_b start"]  # each body ran once


def test_a_thread_starting_a_heavy_module_another_threads_heavy_import_needs_does_not_hang(fake_heavy):
    """Why the lock is taken at the import statement and not by a sys.meta_path finder around the module's execution:
    Python takes a module's own lock before it asks the finders. Thread y imports slow_c.y, which imports slow_c.x;
    meanwhile thread x imports slow_c.x. Taken there, thread x would hold slow_c.x's module lock waiting for ours,
    and thread y would hold ours waiting for slow_c.x: both for ever."""
    import threading

    import import_log
    write_package(fake_heavy, "slow_c", "", x=body("slow_c.x"),
                  y="import import_log\nimport_log.in_y.set()\n" + body("slow_c.y", "from slow_c import x\n"))
    errors = []
    import_as_the_app("slow_c", errors)
    importing_y = threading.Thread(target=import_as_the_app, args=("slow_c.y", errors), daemon=True)
    importing_y.start()
    import_log.in_y.wait(60)  # thread y is inside slow_c.y, holding the lock, before slow_c.x is asked for
    importing_x = threading.Thread(target=import_as_the_app, args=("slow_c.x", errors), daemon=True)
    importing_x.start()
    for thread in (importing_y, importing_x):
        thread.join(60)
    assert not importing_y.is_alive() and not importing_x.is_alive() and errors == []
    assert [event for event, _ in import_log.events].count("slow_c.x start") == 1


def test_the_lock_is_asked_for_only_from_outside_heavy_packages_and_only_for_what_is_not_imported(monkeypatch):
    """A heavy package importing another (or its own modules) runs under the lock its thread already holds: it never
    waits for it (which is what keeps a thread holding a heavy module's lock from waiting for ours)."""
    import sys

    from har_core.data import imports
    asked = []

    class RecordingLock:
        def __enter__(self):
            asked.append(True)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(imports, "_importing", RecordingLock())
    locked = imports.locked_import(lambda *call: None, frozenset({"slow_a", "slow_b"}))
    monkeypatch.setitem(sys.modules, "slow_b", type(sys)("slow_b"))  # imported already

    def asks(name, importer, fromlist=(), level=0):
        asked.clear()
        locked(name, {"__name__": importer}, None, fromlist, level)
        return bool(asked)
    assert asks("slow_a.x", "ui.teaching")  # a heavy module not imported yet, from the app
    assert not asks("slow_a", "slow_b.y")  # from inside a heavy package
    assert not asks("slow_b", "ui.teaching")  # imported already
    assert asks("slow_b", "ui.teaching", ("sub",))  # a submodule of an imported one, not imported yet
    assert not asks("x", "slow_a.y", level=1)  # relative, inside a heavy package
    assert not asks("numpy", "ui.teaching")
    assert not asks("slow_a", "importlib._bootstrap")  # a C extension's import while it loads
    lazy = type(sys)("slow_b")  # #41 review: scikit-learn's module __getattr__ imports a submodule when asked for it
    lazy.__getattr__ = lambda name: asked.append(f"imported {name} outside the lock") or type(sys)(name)
    monkeypatch.setitem(sys.modules, "slow_b", lazy)
    assert asks("slow_b", "ui.teaching", ("metrics",)) and asked == [True]  # the lock, and no import before it
    asked.clear()
    exec("locked('slow_a')", {"__name__": "slow_b.z", "locked": locked})  # a bare __import__(name) in a heavy package
    assert not asked


# the app's entry run twice in a fresh interpreter (Overview, the bundled runs; the warm-up thread recorded, not
# started): how many import-lock wrappers builtins.__import__ is made of, and the packages they treat as heavy
ENTRY = """
import builtins, json, sys, threading
sys.path.insert(0, {root!r})
start = threading.Thread.start
threading.Thread.start = lambda thread: None if thread.name == "har-warm-up" else start(thread)
before = getattr(builtins.__import__, "heavy", None)
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=600)
at.run()
at.run()
wrappers, current = [], builtins.__import__
while hasattr(current, "heavy"):
    wrappers.append(sorted(current.heavy))
    current = current.__wrapped__
print(json.dumps({{"before": before, "wrappers": wrappers, "errors": [e.message for e in at.exception],
                  "title": [t.value for t in at.title]}}))
"""


def test_the_apps_entry_installs_the_import_lock_once():
    import json
    import subprocess
    import sys

    from har_core.data.imports import HEAVY
    script = ENTRY.format(root=str(ROOT), app=str(ROOT / "app.py"))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT.parent),
                               "HAR_RUNS": str(ROOT / "assets" / "runs_har")})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["title"] == ["📋 Overview"] and not result["errors"]  # the page ran, twice
    assert result["before"] is None and result["wrappers"] == [sorted(HEAVY)]


def modules_that_could_hang(graph: dict[str, set[str]], heavy: set[str], app: tuple[str, ...]) -> list[str]:
    """The modules outside `heavy` that the `app`'s modules and a heavy package import, and that import a heavy
    package, each through modules outside `heavy`: a thread of the app importing one first would hold its module
    lock while it waits for the import lock, which a thread importing that heavy package may hold while it waits for
    the module. `graph`: module -> the modules it imports."""
    def is_heavy(module):
        return module.partition(".")[0] in heavy

    def light_reach(starts) -> set[str]:
        """The modules outside `heavy` that `starts` import, through modules outside `heavy`."""
        seen, todo = set(), list(starts)
        while todo:
            for target in graph.get(todo.pop(), ()):
                if not is_heavy(target) and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen
    imports_heavy = {module for module, targets in graph.items() if any(is_heavy(target) for target in targets)}
    both = (light_reach(module for module in graph if is_heavy(module))
            & light_reach(module for module in graph if module.startswith(app)))
    return sorted(module for module in both if ({module} | light_reach([module])) & imports_heavy)


def test_the_hang_finder_finds_a_light_module_the_app_and_a_heavy_one_import_that_imports_a_heavy_one():
    graph = {"timm": {"safe.torch", "numpy", "ttach"}, "safe.torch": {"safe"}, "safe": {"torch"}, "numpy": set(),
             "har_core.cam": {"torch", "safe.torch", "captum"}, "torch": {"numpy"}, "captum": {"torch"},
             "ttach": {"torch"}}  # ttach: only timm imports it, captum: only the app does
    assert modules_that_could_hang(graph, {"timm", "torch"}, ("har_core",)) == ["safe", "safe.torch"]
    assert modules_that_could_hang(graph, {"timm", "torch", "safe"}, ("har_core",)) == []


# a fresh interpreter imports har_core's and ui's modules and every other module their source or the pages' names
# (inside functions too), recording which module's code imports which module, as the import lock tells them apart
IMPORT_GRAPH = """
import builtins, importlib, importlib.util, json, sys
sys.path.insert(0, {root!r})
from har_core.data.imports import MACHINERY
original, graph = builtins.__import__, {{}}
def recording(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals if globals is not None else sys._getframe(1).f_globals).get("__name__") or ""
    target = importlib.util.resolve_name("." * level + name, globals.get("__package__") or "") if level else name
    if importer != MACHINERY:  # a C extension's imports as Python loads it: they never ask for the lock
        graph.setdefault(importer, set()).update([target] + [target + "." + item for item in fromlist or ()])
    return original(name, globals, locals, fromlist, level)
builtins.__import__ = recording
for module in {modules!r}:
    importlib.import_module(module)
modules = {{name: sorted(m for m in targets if m in sys.modules) for name, targets in graph.items()}}
for name in list(sys.modules):  # importing a.b imports a first, while a.b's module lock is held
    if "." in name:
        modules.setdefault(name, []).append(name.rpartition(".")[0])
print(json.dumps(modules))
"""
APP = (PACKAGE + ".", "ui.", "views.")
# numpy's add_newdoc imports the module whose docstrings it sets, which its caller (SciPy, as it loads) has imported
IMPORTS_ONLY_WHAT_IS_IMPORTED = {"numpy._core.function_base"}


def test_no_module_between_the_app_and_two_heavy_packages_is_left_outside_the_heavy_set():
    """The import lock's no-hang argument (har_core/data/imports.py) needs HEAVY to hold every module the app and a
    heavy package import that imports a heavy package (safetensors.torch, which timm and the app import, imports
    torch). Read from the real imports of the app's modules and of every module its source names."""
    import json
    import subprocess
    import sys

    from har_core.data.imports import HEAVY
    sources = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
               for folder in (PACKAGE, "ui", "views") for path in (ROOT / folder).rglob("*.py")}
    named = {module: {name for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
                      for name in ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else
                                   [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])}
             for module, path in sources.items()}
    others = sorted({name for names in named.values() for name in names if not name.startswith(APP)} - {"__future__"})
    assert "sklearn.metrics" in others and "torch" in others  # the source was read, functions' imports included
    imported = sorted(module for module in sources if not module.startswith("views.")) + others
    script = IMPORT_GRAPH.format(root=str(ROOT), modules=imported)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT.parent)})
    assert done.returncode == 0, done.stderr[-3000:]
    graph = {name: set(targets) for name, targets in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert "safetensors.torch" in graph["timm.models._hub"]  # the imports were read
    for module, names in named.items():  # and what the app's functions import when they run
        graph.setdefault(module, set()).update(names)
    for module in IMPORTS_ONLY_WHAT_IS_IMPORTED:
        graph[module] = {target for target in graph[module] if target.partition(".")[0] not in HEAVY}
    assert modules_that_could_hang(graph, set(HEAVY), APP) == []
    assert not [module for module in graph if module.partition(".")[0] in HEAVY
                and any(target.startswith(APP) for target in graph[module])]  # no heavy package imports ours
