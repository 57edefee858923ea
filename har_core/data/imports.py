"""The PyTorch and SciPy stacks imported by one thread at a time, whichever thread and whichever line imports them.

The app imports these packages where they are first used, not at the top of its modules: the first page and the first
answer would otherwise wait seconds for them (#41). But the app's server is one process of many threads (each
visitor's script run, the warm-up, thread pools), and two threads importing scikit-learn at once deadlocked on its
circular imports: Python raised `_DeadlockError`, which a fresh server's warm-up and its first visitor did (3 of 3
uploads within 3 s of the start). `install_import_lock()`, called where the server starts (app.py), wraps
`builtins.__import__`, which every import statement calls: when code outside the HEAVY packages imports one of them
(a package, a module of it or a name from it) that is not fully imported yet, the whole import runs under one
re-entrant lock, so what that package imports in turn, other heavy packages included, runs in the same thread
under the lock it holds. The app's code imports them as plain lazy imports (`from sklearn import metrics`).

Why this cannot hang. Python holds a lock per module while it imports it. A thread asks for our lock at an import
statement, before Python takes the heavy module's lock, and only from outside the heavy packages. It may hold the
locks of the modules it is importing meanwhile: the app's own (har_core, ui, views), which no heavy package imports,
and those between the app and a heavy package. The thread holding our lock needs only modules a heavy package
imports. So no module outside HEAVY may be imported by the app and by a heavy package and import a heavy package
(each through modules outside HEAVY): safetensors is in HEAVY for that, as timm and the app import safetensors.torch,
which imports torch. tests/test_imports.py reads the real imports and checks it. Imports from inside a heavy package
never ask for the lock, so a heavy module imported around the wrapper (importlib.import_module, a package's lazy
submodules) fails at worst as it did before: Python raises, nothing hangs.
Not a `sys.meta_path` finder whose loaders execute under the lock: Python takes a module's lock before it asks the
finders, so a thread holding `sklearn.metrics`'s lock would wait for ours while our lock's holder, importing crepes,
waits for `sklearn.metrics`: a hang, where Python had at least raised.
"""
from __future__ import annotations

import builtins
import sys
import threading

# the packages the app imports lazily that bring PyTorch or SciPy, ONNX Runtime (the other backend, imported lazily
# by the same threads) and safetensors (see above). What they import in turn (numba, pynndescent, ttach, numpy, ...)
# runs under the lock of the thread that imports them.
HEAVY = frozenset({"torch", "torchvision", "timm", "pytorch_grad_cam", "captum", "onnxruntime",
                   "scipy", "sklearn", "crepes", "cleanlab", "umap", "safetensors"})
# a C extension's imports while Python loads it name the import machinery as their importer: they belong to the
# import that loads it
MACHINERY = "importlib._bootstrap"

_importing = threading.RLock()  # re-entrant: a heavy package's import imports others in the same thread
_installing = threading.Lock()


def locked_import(original_import, heavy: frozenset[str] = HEAVY):
    """`original_import` (builtins.__import__) with every first import of a `heavy` package, made from outside
    them, under the one lock."""
    def locked(name, globals=None, locals=None, fromlist=(), level=0):
        # the module importing: its code's globals, or its caller's (a bare `__import__(name)` passes none)
        importer = (globals if globals is not None else sys._getframe(1).f_globals).get("__name__") or ""
        if (level == 0 and name.partition(".")[0] in heavy and importer.partition(".")[0] not in heavy
                and importer != MACHINERY and not _imported(name, fromlist)):
            with _importing:
                return original_import(name, globals, locals, fromlist, level)
        return original_import(name, globals, locals, fromlist, level)
    locked.heavy = heavy
    locked.__wrapped__ = original_import  # what it wraps: one wrapper installed, not one per call
    return locked


def _imported(name: str, fromlist) -> bool:
    """Whether `import name` / `from name import *fromlist` would find everything imported already."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return False  # not imported, or another thread is importing it
    # its own namespace, not hasattr: a package's module-level __getattr__ (scikit-learn's, SciPy's, torch's lazy
    # modules) would import the missing submodule right here, outside the lock
    return all(item in vars(module) for item in fromlist or () if item != "*")


def install_import_lock() -> None:
    """Every first import of a HEAVY package, from any thread, one at a time. Once per process: the app's entry
    calls it on each run, and a module reload (Streamlit's on a source change) finds the wrapper already there."""
    with _installing:
        if getattr(builtins.__import__, "heavy", None) is None:
            builtins.__import__ = locked_import(builtins.__import__)
