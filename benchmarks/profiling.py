"""Opt-in cProfile of a benchmark's process, every thread included.

    with profiled(os.environ.get(PROFILE_ENV)):   # no-op when the variable is unset
        ...

cProfile follows one thread; the exchange spends much of its CPU in worker threads (the read
model writes in `asyncio.to_thread`), so every thread started inside the block gets its own
profiler, and the stats of all of them are merged into one file at the end. Read it with
`python -m pstats PATH` (`sort tottime`, `stats 40`). Profiling slows Python code several
times over: read the shares, not the times. cProfile counts wall time, so waits show too
(an idle worker's `SimpleQueue.get`, `epoll`, SQLite's lock): skip them.
"""

from __future__ import annotations

import cProfile
import pstats
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Final, cast

PROFILE_ENV: Final = "BOURSE_PROFILE"


class _Snapshot:
    """A profiler's figures as they are now, for `pstats.Stats` (which would stop the profiler
    through `create_stats()`, from the wrong thread for a worker's)."""

    def __init__(self, profile: cProfile.Profile) -> None:
        profile.snapshot_stats()
        self.stats = profile.stats

    def create_stats(self) -> None:
        pass


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """Profile this thread and every thread started inside the block into `path` (pstats)."""
    if not path:
        yield
        return
    workers: list[cProfile.Profile] = []

    def start_in_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
        # The first event in a new thread: from here on this thread's own profiler takes over.
        profile = cProfile.Profile()
        workers.append(profile)
        profile.enable()

    main = cProfile.Profile()
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)
        stats = pstats.Stats(main)
        for profile in workers:
            stats.add(cast(cProfile.Profile, _Snapshot(profile)))
        stats.dump_stats(path)
