"""An ordered ``map`` over a process pool with bounded memory, for the simulator's blocks."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["ordered_map"]


def _process_context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """Worker processes forked from a server that imported ``preload`` once (cheap start, no fork of a
    threaded parent); plain spawn where forkserver does not exist."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def ordered_map(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int,
                preload: Sequence[str] = ()) -> Iterator[Any]:
    """``map(fn, tasks)`` in order; with ``workers`` > 1 in a process pool (its forkserver importing the
    modules ``preload``), at most 2 tasks per worker in flight so memory stays bounded. Pending work is
    cancelled if the consumer stops."""
    if workers == 1:
        yield from map(fn, tasks)
        return
    pool = ProcessPoolExecutor(workers, mp_context=_process_context(preload))
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
