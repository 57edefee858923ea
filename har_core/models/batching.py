"""Visitors' forwards batched per model, as model servers do (dynamic batching).

Thirty visitors uploading at once would otherwise run thirty one-picture forwards side by side, each fighting for
the same two cores. Instead every loaded model has one shared queue: the first request waits a few milliseconds
for others, then one worker thread runs them all as one forward and hands each visitor its own rows. Requests
that arrive while a forward runs go into the next one. Threads only: the app's server is one process.

Only the quick path (`LoadedModel.forward`: probabilities and embeddings) goes through the queue. The slow
explanations (ScoreCAM, occlusion, har_core.explain.cam) run the model in the visitor's own thread under their own
server-wide slots, so they never hold a queue that quick answers wait in.

A request that fails (a malformed tensor, a forward that raises) fails its own visitor only: a batch that
raises is run again one request at a time, so the others still get their answers.
"""
from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

WINDOW_S = 0.005  # how long the first request waits for others to join its forward
MAX_IMAGES = 32  # pictures in one forward (the server's max_batch_images per request); a bigger request goes alone
IDLE_S = 30.0  # a worker with nothing to do for this long ends; the next request starts another

Forward = Callable[[np.ndarray, bool, bool], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class _Request:
    batch: np.ndarray  # LoadedModel.pixels: NumPy, so a served export never needs torch
    tta: bool
    embed: bool
    done: threading.Event = field(default_factory=threading.Event)
    answer: tuple[np.ndarray, np.ndarray | None] | None = None
    error: BaseException | None = None



class ModelQueue:
    """One model's shared queue and the worker thread that empties it. `forward(batch, tta, embed)` gives the
    probabilities (rows in the batch's order) and, when `embed`, the embeddings (`LoadedModel.forward`)."""

    def __init__(self, forward: Forward, name: str = "model", window_s: float = WINDOW_S,
                 max_images: int = MAX_IMAGES, idle_s: float = IDLE_S):
        self.forward, self.name = forward, name
        self.window_s, self.max_images, self.idle_s = window_s, max_images, idle_s
        self._pending: list[_Request] = []
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.forwards = 0  # forwards run, and requests they answered: how much batching happened
        self.requests = 0

    def submit(self, batch: np.ndarray, tta: bool = False, embed: bool = False):
        """The forward's (probabilities, embeddings or None) of this request's rows, computed with whatever other
        requests arrived at the same time; raises what its own forward raised."""
        request = _Request(batch, tta, embed)
        with self._changed:
            if self._closed:
                raise RuntimeError(f"{self.name}: the shared queue is closed")
            self._pending.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=f"har-batch-{self.name}", daemon=True)
                self._worker.start()
            self._changed.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.answer

    def close(self, wait: bool = True) -> None:
        """Answer what is queued, then end the worker; `wait`: until it has ended."""
        with self._changed:
            self._closed = True
            worker = self._worker
            self._changed.notify_all()
        if wait and worker is not None and worker is not threading.current_thread():
            worker.join()

    def _work(self) -> None:
        while (taken := self._next_batch()) is not None:
            try:
                self._answer(taken)
            finally:  # whatever happened, no visitor waits forever
                for request in taken:
                    if not request.done.is_set():
                        request.error = request.error or RuntimeError(f"{self.name}: the batch was not answered")
                        request.done.set()

    def _next_batch(self) -> list[_Request] | None:
        """The requests of the next forward: the first waiting one and whatever joins it within the window, up
        to `max_images` pictures; None (the worker ends) once idle for `idle_s` or closed with nothing queued."""
        with self._changed:
            idle_until = time.monotonic() + self.idle_s
            while not self._pending:
                left = idle_until - time.monotonic()
                if self._closed or left <= 0:
                    self._worker = None
                    return None
                self._changed.wait(left)
            window_ends = time.monotonic() + self.window_s
            while (not self._closed and self._images() < self.max_images
                   and (left := window_ends - time.monotonic()) > 0):
                self._changed.wait(left)
            taken, images = [], 0
            while self._pending and (not taken or images + len(self._pending[0].batch) <= self.max_images):
                images += len(self._pending[0].batch)
                taken.append(self._pending.pop(0))
            return taken

    def _images(self) -> int:
        return sum(len(request.batch) for request in self._pending)

    def _answer(self, taken: list[_Request]) -> None:
        groups: dict[bool, list[_Request]] = {}  # one forward per TTA mode
        for request in taken:
            groups.setdefault(request.tta, []).append(request)
        for group in groups.values():
            try:
                self._run(group)
            except Exception:  # noqa: BLE001 - someone's request broke the batch: each alone, so only it fails
                for request in group:
                    try:
                        self._run([request])
                    except Exception as error:  # noqa: BLE001 - handed to its own visitor's thread
                        request.error = error
                        request.done.set()

    def _run(self, group: list[_Request]) -> None:
        embed = any(request.embed for request in group)
        batch = group[0].batch if len(group) == 1 else np.concatenate([np.asarray(request.batch) for request in group])
        probs, vectors = self.forward(batch, group[0].tta, embed)
        self.forwards, self.requests = self.forwards + 1, self.requests + len(group)
        start = 0
        for request in group:
            rows = slice(start, start + len(request.batch))
            request.answer = probs[rows], vectors[rows] if request.embed and vectors is not None else None
            start = rows.stop
            request.done.set()


_queues: dict[int, ModelQueue] = {}
_queues_lock = threading.RLock()  # `_forget` may run inside, from the garbage collector


def queue_of(loaded) -> ModelQueue:
    """The shared queue of a loaded model (`har_core.models.inference.LoadedModel`), one per loaded object: sessions
    share loaded models (the app caches them), so they share its queue. The queue holds the model weakly, and is
    forgotten when the model is."""
    key = id(loaded)
    with _queues_lock:
        if (queue := _queues.get(key)) is None:
            model = weakref.ref(loaded)

            def forward(batch, tta, embed):
                if (alive := model()) is None:
                    raise RuntimeError("the model of this queue was unloaded")
                return alive.forward(batch, tta, embed)
            queue = _queues[key] = ModelQueue(forward, name=loaded.name)
            weakref.finalize(loaded, _forget, key, queue)
        return queue


def _forget(key: int, queue: ModelQueue) -> None:
    with _queues_lock:
        if _queues.get(key) is queue:
            del _queues[key]
    queue.close(wait=False)  # never join from a garbage collector's callback


def shared_forward(loaded, batch: np.ndarray, tta: bool = False, embed: bool = False):
    """`loaded.forward(batch, tta, embed)`, batched with other visitors' requests for the same model."""
    return queue_of(loaded).submit(batch, tta, embed)


def close_all() -> None:
    """End every queue's worker (tests: no thread left behind)."""
    with _queues_lock:
        queues = list(_queues.values())
        _queues.clear()
    for queue in queues:
        queue.close()
