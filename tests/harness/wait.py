"""Polling until a condition holds."""

from __future__ import annotations

import time


def wait_for(cond, timeout: float = 60, every: float = 0.1, what: str = "condition"):
    """Polls `cond` until it returns something true (returned), or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
