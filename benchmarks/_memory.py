"""Peak RSS of ``iter_many`` over N IDs from a generator: run as its own process.

``python -m benchmarks._memory BASE_URL N DEDUPE`` prints ``peak_rss_kib``.

The peak is this process's own: Linux's ``VmHWM``, which starts afresh at ``exec``.
``ru_maxrss`` would not do there: it keeps the high-water mark of the address space the
process was forked from, so every row would show the parent benchmark's size.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Iterator

from ._contenders import PROJECT, _client


def _ids(count: int) -> Iterator[str]:
    for index in range(count):
        yield f"task_{index:07d}"


def _peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # not Linux: ru_maxrss (KiB there too on most systems) is the fallback
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _run(base: str, count: int, dedupe: bool) -> int:
    done = 0
    async with _client(base, 64) as client:
        async for result in client.tasks.iter_many(
            _ids(count), project_id=PROJECT, concurrency=64, dedupe=dedupe
        ):
            done += result.ok
    return done


if __name__ == "__main__":
    base, count, dedupe = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    done = asyncio.run(_run(base, count, dedupe))
    assert done == count, (done, count)
    print(_peak_rss_kib())
