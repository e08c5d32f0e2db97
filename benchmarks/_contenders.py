"""The contenders of the bulk benchmark: each fetches ``ids`` at a given concurrency.

All use the same pattern (a fixed pool of ``concurrency`` workers pulling IDs from one
iterator) and one connection pool sized to the concurrency, so only the stack differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import orjson

from sendai_async import RetryPolicy, SendAI, bulk_gc

PROJECT = "proj_bench"
TEAM = "team_bench"
KEY = "bench-key"

Contender = Callable[[str, list[str], int], Awaitable[int]]


def _task_url(base: str, task_id: str) -> str:
    return f"{base}/v2/{TEAM}/project/{PROJECT}/task/{task_id}"


async def _pool(ids: list[str], concurrency: int, fetch: Callable[[str], Awaitable[None]]) -> None:
    source: Iterator[str] = iter(ids)

    async def worker() -> None:
        for task_id in source:
            await fetch(task_id)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def floor(base: str, ids: list[str], concurrency: int) -> int:
    """Raw aiohttp + ``resp.read()`` + ``orjson.loads``: the limit for this stack."""
    decoded = 0
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def fetch(task_id: str) -> None:
            nonlocal decoded
            async with session.get(_task_url(base, task_id)) as response:
                body = await response.read()
            orjson.loads(body)["payload"]
            decoded += 1

        await _pool(ids, concurrency, fetch)
    return decoded


def _client(base: str, concurrency: int) -> SendAI:
    # The pool is sized to the concurrency, as for the floor (the default is 100).
    return SendAI(
        KEY, team_id=TEAM, base_url=base, max_connections=concurrency, retry=RetryPolicy()
    )


async def _sdk(base: str, ids: list[str], concurrency: int, *, raw_payloads: bool) -> int:
    count = 0
    async with _client(base, concurrency) as client:
        tasks = client.tasks
        stream = tasks.iter_many_raw if raw_payloads else tasks.iter_many
        async for result in stream(ids, project_id=PROJECT, concurrency=concurrency):
            count += result.ok
    return count


async def typed(base: str, ids: list[str], concurrency: int) -> int:
    """sendai_async ``iter_many`` returning ``Task`` objects."""
    return await _sdk(base, ids, concurrency, raw_payloads=False)


async def typed_gc(base: str, ids: list[str], concurrency: int) -> int:
    """``iter_many`` inside ``bulk_gc()``: the collector's young generation run less often."""
    with bulk_gc():
        return await _sdk(base, ids, concurrency, raw_payloads=False)


async def raw(base: str, ids: list[str], concurrency: int) -> int:
    """sendai_async ``iter_many_raw``: the CLI ``fetch`` path (payloads as received)."""
    return await _sdk(base, ids, concurrency, raw_payloads=True)


async def peer(base: str, ids: list[str], concurrency: int) -> int:
    """An openai-style stack: ``httpx.AsyncClient`` + pydantic v2 models."""
    import httpx

    from ._peer import PEnvelope

    decoded = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:

        async def fetch(task_id: str) -> None:
            nonlocal decoded
            response = await client.get(_task_url(base, task_id))
            response.raise_for_status()
            PEnvelope.model_validate_json(response.content)
            decoded += 1

        await _pool(ids, concurrency, fetch)
    return decoded


def available() -> dict[str, Contender]:
    """The contenders whose dependencies are installed (the peer needs the bench group)."""
    found: dict[str, Contender] = {
        "floor": floor,
        "typed": typed,
        "typed+gc": typed_gc,
        "raw": raw,
    }
    try:
        import httpx  # noqa: F401
        import pydantic  # noqa: F401

        found["peer"] = peer
    except ImportError:
        pass
    return found


def run_one(contender: Contender, base: str, ids: list[str], concurrency: int, loop: str) -> float:
    """Run one contender in a fresh event loop; return the elapsed seconds."""
    return run_measured(contender, base, ids, concurrency, loop)[0]


def run_measured(
    contender: Contender, base: str, ids: list[str], concurrency: int, loop: str
) -> tuple[float, float]:
    """Run one contender in a fresh event loop; return (elapsed seconds, client CPU seconds).

    The server is another process, so ``process_time`` is the client's own cost: on a
    shared 2-core machine it varies far less than wall-clock throughput.
    """
    import time

    async def timed() -> tuple[float, float, int]:
        started, cpu_started = time.perf_counter(), time.process_time()
        count = await contender(base, ids, concurrency)
        return time.perf_counter() - started, time.process_time() - cpu_started, count

    if loop == "uvloop":
        import uvloop

        elapsed, cpu, count = uvloop.run(timed())
    else:
        elapsed, cpu, count = asyncio.run(timed())
    if count != len(ids):
        name = getattr(contender, "__name__", repr(contender))
        raise RuntimeError(f"{name} fetched {count} of {len(ids)}")
    return elapsed, cpu
