"""An opt-in for bulk jobs: let CPython's cyclic garbage collector run less often.

Decoding a large task builds thousands of small objects at once (pages, annotations,
points). CPython's cyclic collector runs its young generation every 700 net allocations
and walks every container object still in it, and a bulk pool keeps dozens of fresh tasks
alive at a time, so on a 20-page task most of the decoding time goes to the collector
walking objects that hold no cycles. Raising the young generation's threshold while a
bulk job runs gave decoding a 3.4x speed-up on large tasks in ``benchmarks/`` (see the
README). The threshold is process-wide: a library must not change it behind its user's
back, so this is an opt-in, used by the command line and the export workers, which own
their processes.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] = (700, 10, 10)

BULK_YOUNG_THRESHOLD = 100_000


@contextlib.contextmanager
def bulk_gc(young_threshold: int = BULK_YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect the young generation every ``young_threshold`` allocations inside the block.

    Garbage is still collected (cycles too), just in fewer, larger passes; the previous
    thresholds come back when the outermost block ends. Nested and concurrent blocks
    (threads) share one setting.

    Example::

        with sendai_async.bulk_gc():
            async for result in sendai.tasks.iter_many(ids, project_id="proj_1"):
                ...

    """
    global _depth, _saved  # noqa: PLW0603 -- the interpreter's setting is global too
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(young_threshold, _saved[0]), *_saved[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
