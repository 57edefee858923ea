"""Heavy libraries imported where first used, one thread at a time.

SciPy and scikit-learn are imported inside the functions that need them: the app's first page and first answer
would otherwise wait seconds for them (#41). But the app's server is one process of many threads, and two threads
importing scikit-learn at once can deadlock on its circular imports: Python raises `_DeadlockError`, which a fresh
server's warm-up and its first visitor did (3 of 3 uploads within 3 s of the start). Every such import goes
through `heavy_module`, which takes one process-wide lock.
"""
from __future__ import annotations

import importlib
import threading
from types import ModuleType

_importing = threading.RLock()  # re-entrant: a heavy module's own import may ask for another through here


def heavy_module(name: str) -> ModuleType:
    """The module `name` (e.g. "sklearn.metrics"), imported by one thread at a time."""
    with _importing:
        return importlib.import_module(name)
