"""har_core's modules import each other without a circle (#39: calibration <-> ensemble, audit <-> similarity were
two, each hidden behind an import inside a function). The graph is read from the source, imports inside
functions included, so a circle cannot hide from it."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = "har_core"


def imported_modules(path: Path) -> set[str]:
    """The har_core modules a source file imports, at its top or inside any function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:  # from har_core import artifacts, fileio
                found.update(f"{PACKAGE}.{alias.name}" for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {f"{PACKAGE}.{path.stem}": path for path in (ROOT / PACKAGE).glob("*.py") if path.stem != "__init__"}
    return {name: imported_modules(path) & set(modules) - {name} for name, path in modules.items()}


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
    source.write_text("from har_core import fileio, labels\n"
                      "def f():\n    from har_core.audit import near_duplicates\n    import har_core.search\n")
    assert imported_modules(source) == {"har_core.fileio", "har_core.labels", "har_core.audit", "har_core.search"}


def test_har_core_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 20 and graph["har_core.ensemble"]  # the package was read
    circle = a_circle(graph)
    assert not circle, " -> ".join(circle)
