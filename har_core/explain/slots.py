"""How many slow explanations (ScoreCAM, occlusion) the server computes at once, for every visitor together.

Apart from har_core.explain.cam so that the server applies the operator's setting (har_core.server's slow_cam_slots)
without importing torch or grad-cam for the first page.
"""
from __future__ import annotations

import threading


class Busy(RuntimeError):
    """Every slot for a slow method is taken by other visitors; the message says what to do."""


class SlowSlots:
    """A server-wide bound on concurrent slow CAMs (har_core.explain.cam), so a few visitors cannot stall everyone else."""

    def __init__(self, slots: int = 1, wait_s: float = 60.0):
        self.wait_s = wait_s
        self.resize(slots)

    def resize(self, slots: int) -> None:
        """Set the number of slots (the server does this once, from the operator's settings, before use)."""
        self.slots = max(1, int(slots))
        self._semaphore = threading.BoundedSemaphore(self.slots)

    def __enter__(self):
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise Busy(f"the server is already computing {self.slots} slow explanation(s) for other visitors; "
                       "try again in a minute or choose a faster method (Grad-CAM)")
        return self

    def __exit__(self, *exc):
        self._semaphore.release()


SLOW_SLOTS = SlowSlots()
