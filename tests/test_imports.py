"""har_core's modules import each other without a circle (#39: calibration <-> ensemble, audit <-> similarity were
two, each hidden behind an import inside a function). The graph is read from the source, imports inside
functions included, so a circle cannot hide from it. Its subpackages are concerns in levels (#43, LEVELS): no
import runs from a lower concern to a higher one, nor sideways between two of one level."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = "har_core"
# har_core's subpackages by concern, lowest first: a module imports modules of its own subpackage and of lower
# levels only; training, explain and retrieval (one level) do not import each other. The modules at har_core's
# top (server, report, quiz) draw on every concern, and no subpackage imports them.
LEVELS = {"data": 0, "models": 1, "evaluation": 2, "training": 3, "explain": 3, "retrieval": 3}


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The har_core modules (of `modules`) a source file imports, at its top or inside any function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
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


def test_no_import_runs_up_or_sideways_between_har_core_subpackages():
    graph = import_graph()
    assert {concern_of(module) for module in graph} - {None} <= set(LEVELS)  # every subpackage has its level
    assert not wrong_way_imports(graph), "\n".join(wrong_way_imports(graph))


def test_heavy_libraries_imported_inside_functions_take_the_one_import_lock():
    """#41 walk: a fresh server's warm-up and its first visitor imported scikit-learn at once and Python raised
    _DeadlockError on its circular imports. Every import of SciPy, scikit-learn, UMAP or crepes (which imports
    scikit-learn) inside a har_core function goes through har_core.data.imports.heavy_module (one lock)."""
    heavy = ("sklearn", "scipy", "umap", "crepes")  # crepes imports scikit-learn
    found = []
    for path in (ROOT / PACKAGE).rglob("*.py"):
        for function in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                         [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in heavy]
    assert found == []


def test_heavy_module_lets_one_thread_import_at_a_time(monkeypatch):
    import threading
    import time

    from har_core.data import imports
    inside, most = [0], [0]

    def slow_import(name):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # long enough for the other threads to arrive while this one imports
        inside[0] -= 1
        return name
    monkeypatch.setattr(imports.importlib, "import_module", slow_import)
    start = threading.Barrier(4)
    threads = [threading.Thread(target=lambda n=name: (start.wait(), imports.heavy_module(n)))
               for name in ("sklearn.metrics", "scipy.optimize", "sklearn.decomposition", "umap")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
