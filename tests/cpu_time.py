"""CPU time of the code under test, for the few tests that guard against a pathological
(quadratic, backtracking) parse.

Measured in CPU time of this thread, so that other work on a shared machine does not count,
and with Python's cycle collector paused: a full collection walks every object the test
session has left on the heap (0.58 s once, late in a CI run), which says nothing about the
code being measured and everything about the tests that ran before it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    seconds: float = 0.0


@contextmanager
def cpu_seconds() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    enabled = gc.isenabled()
    gc.disable()
    start = time.thread_time()
    try:
        yield watch
    finally:
        watch.seconds = time.thread_time() - start
        if enabled:
            gc.enable()
