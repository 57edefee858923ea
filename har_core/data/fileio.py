"""Atomic file writing: a crash leaves the old file or the new one, never half of one.

The one home of writing files; run folders (`artifacts`) and split manifests (`data`) both use it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask, read once: from /proc where there is one, since reading it through os.umask sets it,
    for a moment, for the server's other threads too."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # as open() would make it (0666 less the umask), not mkstemp's owner-only 0600: a report or a run put in a
        # shared folder is read by others (#41 walk)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_inside(root: str | Path, path: str | Path) -> bool:
    """True when `path`, resolved (symlinks followed, '..' collapsed), is `root` or lies under it."""
    root, path = Path(root).resolve(), Path(path).resolve()
    return path == root or root in path.parents


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    torch = sys.modules.get("torch")  # a tensor exists only once torch is loaded: never imported for it here
    if torch is not None and isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes; remembered while its size and modification time stay the same."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
