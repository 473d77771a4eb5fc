"""Pausing Python's cycle collector while large caches are read and built."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_one_shot = False


def one_shot() -> None:
    """This process exits after one run (a `plan` or `apply` on the command line): what a
    paused section built is frozen instead of collected when it ends. Collecting it means one
    walk over millions of objects that are garbage only once the process exits anyway (0.15 s,
    and as much again at exit). A long-running process (`reconcile --every`) does not call
    this, so that its garbage is collected between runs."""
    global _one_shot
    _one_shot = True


@contextmanager
def paused_gc() -> Iterator[None]:
    """Reading 10,000 cached summaries and channel records allocates millions of small
    objects; every few hundred allocations the collector runs, and the older generations make
    it walk the whole heap again and again: that took longer than the reading itself (0.7 s
    of a 3 s plan). Nothing read here forms reference cycles, so collecting can wait until
    the bulk work is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _one_shot:
            gc.freeze()
        if enabled:
            gc.enable()


@contextmanager
def collecting() -> Iterator[None]:
    """The collector on again inside a paused section: checking declarations (YAML nodes,
    models) does make reference cycles, and 10,000 checked in one process without collecting
    took three times the memory."""
    paused = not gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if paused:
            gc.disable()
