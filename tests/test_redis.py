"""Limits shared through a real Redis: the 429 gate, the retry budget, the rate limit.

Every test starts its own ``redis-server`` (see ``redis_server.py``) and talks to real
HTTP servers on 127.0.0.1; the fleet tests run real processes (spawn).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from aiohttp import web

from sendai_async import (
    ConfigurationError,
    CoordinationEvent,
    CoordinatorError,
    Hooks,
    RateLimit,
    RedisCoordinator,
    RetryPolicy,
    SendAI,
    ServerError,
)
from sendai_async.testing import SandboxServer

from .conftest import SEED_BODY
from .redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base=0.01, backoff_max=0.05, max_retry_after=10)


class WindowServer:
    """An API look-alike that answers 429 to everything during one window.

    The window opens when ``open_after`` requests have arrived and lasts ``window`` s;
    429s carry the time left (plus a small margin) as ``retry-after-ms``. Outside it,
    requests are answered after ``latency`` s. Arrival times are recorded.
    """

    def __init__(self, *, open_after: int, window: float, latency: float) -> None:
        self.open_after = open_after
        self.window = window
        self.latency = latency
        self.arrivals: list[float] = []
        self.wall_arrivals: list[float] = []
        self.first_429: float | None = None
        self.window_end: float | None = None
        self.limited = 0
        self.base_url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _handle(self, _request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.arrivals.append(now)
        self.wall_arrivals.append(time.time())
        if self.window_end is None and len(self.arrivals) >= self.open_after:
            self.window_end = now + self.window
        if self.window_end is not None and now < self.window_end:
            if self.first_429 is None:
                self.first_429 = now
            self.limited += 1
            wait_ms = int((self.window_end - now) * 1000) + 20
            return web.json_response(
                {"error": "rate limited"}, status=429, headers={"retry-after-ms": str(wait_ms)}
            )
        await asyncio.sleep(self.latency)
        return web.Response(body=SEED_BODY, content_type="application/json")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> WindowServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def started_inside_window(self, allowance: float) -> int:
        """Requests that arrived after the first 429 plus ``allowance``, inside the window."""
        if self.first_429 is None or self.window_end is None:
            return 0
        return sum(1 for t in self.arrivals if self.first_429 + allowance < t < self.window_end)


def _fleet_worker(base_url: str, redis_url: str | None, ids: list[str]) -> tuple[int, str]:
    """One process of the fleet: fetch ``ids`` with 16 workers; return what arrived."""

    async def run() -> tuple[int, str]:
        coordinator = RedisCoordinator(redis_url) if redis_url else None
        async with SendAI(
            "k", team_id="t", base_url=base_url, retry=FAST_RETRY, coordinator=coordinator
        ) as sendai:
            batch = await sendai.tasks.get_many(ids, project_id="p", concurrency=16)
        errors = batch.errors
        return len(batch.tasks), repr(next(iter(errors.values()))) if errors else ""

    return asyncio.run(run())


def _run_fleet(
    base_url: str, redis_url: str | None, processes: int, per: int
) -> list[tuple[int, str]]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        jobs = [
            pool.submit(_fleet_worker, base_url, redis_url, [f"t{p}_{i}" for i in range(per)])
            for p in range(processes)
        ]
        return [job.result(timeout=120) for job in jobs]


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "local-only"])
def test_one_429_holds_back_the_whole_fleet(redis_server: RedisServer, shared: bool) -> None:
    """4 processes x 16 workers: after the first 429, nobody sends until the window ends.

    Without Redis each process learns of the window only from its own 429s; every ID is
    still delivered, and the figures of both runs are in the README.
    """
    with WindowServer(open_after=300, window=3.0, latency=0.15) as server:
        delivered = _run_fleet(server.base_url, redis_server.url if shared else None, 4, 200)
        inside = server.started_inside_window(0.05)
        print(
            f"\n{'redis' if shared else 'local'}: {server.limited} 429s, {inside} requests "
            f"started inside the window after 50 ms, {len(server.arrivals)} requests"
        )
    assert delivered == [(200, "")] * 4  # every ID delivered
    assert server.first_429 is not None
    if shared:
        assert inside == 0
    # Without Redis each process is held only by its own gate after its own first 429, so a
    # few requests (1 to 31 in our runs, recorded in the README) still arrive inside the
    # window; how many depends on timing, so it is printed, not asserted.


def _rate_worker(base_url: str, redis_url: str, start_at: float, seconds: float) -> int:
    """Send as fast as the fleet's rate limit allows from ``start_at`` for ``seconds``."""

    async def run() -> int:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.monotonic() + seconds
        sent = 0
        async with SendAI(
            "k",
            team_id="t",
            base_url=base_url,
            coordinator=RedisCoordinator(redis_url),
            rate_limit=RateLimit(per_second=50, burst=5),
        ) as sendai:

            async def ids() -> AsyncIterator[str]:
                while time.monotonic() < stop_at:
                    yield "task"

            async for result in sendai.tasks.iter_many(
                ids(), project_id="p", concurrency=8, dedupe=False
            ):
                sent += result.ok
        return sent

    return asyncio.run(run())


def test_the_rate_limit_holds_for_the_whole_fleet(redis_server: RedisServer) -> None:
    """3 processes with RateLimit(50/s, burst 5) for 4 s send about 205 requests in all."""
    with WindowServer(open_after=10**9, window=0, latency=0) as server:
        context = multiprocessing.get_context("spawn")
        start_at = time.time() + 3  # after every process has started
        with ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
            jobs = [
                pool.submit(_rate_worker, server.base_url, redis_server.url, start_at, 4.0)
                for _ in range(3)
            ]
            sent = [job.result(timeout=60) for job in jobs]
    # Counted over the 4 s the processes run together (slots booked before the end are
    # still sent after it; they belong to the next seconds' budget).
    total = sum(1 for t in server.wall_arrivals if start_at <= t < start_at + 4.0)
    print(f"\nrate limit: {sent} per process, {total} in 4 s (expected 205)")
    assert 205 * 0.9 <= total <= 205 * 1.1


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tasks=3000, seed=1).in_thread() as server:
        yield server


def _client(sandbox: SandboxServer, coordinator: RedisCoordinator, **kwargs: Any) -> SendAI:
    return SendAI(
        sandbox.api_key,
        team_id=sandbox.team_id,
        base_url=sandbox.base_url,
        coordinator=coordinator,
        retry=FAST_RETRY,
        **kwargs,
    )


async def test_a_429_seen_by_one_client_holds_back_another(
    redis_server: RedisServer, sandbox: SandboxServer
) -> None:
    sandbox.retry_after = 0.6
    sandbox.script("task_000001", [429])
    first = _client(sandbox, RedisCoordinator(redis_server.url))
    second = _client(sandbox, RedisCoordinator(redis_server.url))
    async with first, second:
        await second.tasks.get("task_000002", project_id=sandbox.project_id)  # listening
        await asyncio.sleep(0.05)
        limited_at = time.monotonic()
        task = asyncio.create_task(first.tasks.get("task_000001", project_id=sandbox.project_id))
        await asyncio.sleep(0.1)  # the 429 is in and published
        await second.tasks.get("task_000003", project_id=sandbox.project_id)
        assert time.monotonic() - limited_at >= 0.6
        await task


async def test_the_retry_budget_is_shared(
    redis_server: RedisServer, sandbox: SandboxServer
) -> None:
    """One client spending the fleet's budget leaves none for another."""
    for task_id in sandbox.task_ids[:40]:
        sandbox.script(task_id, [503] * 10)
    policy = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.002, budget_capacity=50)
    clients = [
        SendAI(
            sandbox.api_key,
            team_id=sandbox.team_id,
            base_url=sandbox.base_url,
            retry=policy,
            coordinator=RedisCoordinator(redis_server.url),
        )
        for _ in range(2)
    ]
    async with clients[0], clients[1]:
        for client in clients:  # start both listeners and leases
            await client.tasks.get("task_000100", project_id=sandbox.project_id)
        await asyncio.sleep(0.1)
        before = sandbox.stats.requests
        for index, task_id in enumerate(sandbox.task_ids[:40]):
            with pytest.raises(ServerError):
                await clients[index % 2].tasks.get(task_id, project_id=sandbox.project_id)
            await asyncio.sleep(0.005)  # let lease refills land
    retries = sandbox.stats.requests - before - 40
    assert retries <= 50 // 5 + 4  # the fleet's 50 tokens, 5 a retry (plus lease rounding)


async def test_redis_down_falls_back_warns_once_and_comes_back(
    redis_server: RedisServer, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []

    def on_coordination(event: CoordinationEvent) -> None:
        events.append(event.state)

    sandbox.latency = 0.004
    coordinator = RedisCoordinator(redis_server.url, reconnect_interval=0.05)
    hooks = Hooks(on_coordination=[on_coordination])
    async with _client(sandbox, coordinator, hooks=hooks) as sendai:

        async def outage() -> None:
            await asyncio.sleep(0.3)
            redis_server.kill()
            await asyncio.sleep(0.4)
            await asyncio.to_thread(redis_server.start)

        chaos = asyncio.create_task(outage())
        with caplog.at_level(logging.WARNING, logger="sendai_async"):
            batch = await sendai.tasks.get_many(
                sandbox.task_ids, project_id=sandbox.project_id, concurrency=8
            )
        await chaos
        for _ in range(100):
            if events[-1:] == ["restored"]:
                break
            await asyncio.sleep(0.02)
    assert batch.ok
    assert len(batch.tasks) == 3000  # nothing lost
    assert events == ["unavailable", "restored"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()


async def test_raise_mode_fails_calls_while_redis_is_down(
    redis_server: RedisServer, sandbox: SandboxServer
) -> None:
    coordinator = RedisCoordinator(
        redis_server.url, on_unavailable="raise", reconnect_interval=0.05
    )
    async with _client(sandbox, coordinator) as sendai:
        await sendai.tasks.get("task_000001", project_id=sandbox.project_id)
        redis_server.kill()
        refused: CoordinatorError | None = None
        for _ in range(100):  # the listener notices within a moment
            try:
                await sendai.tasks.get("task_000001", project_id=sandbox.project_id)
            except CoordinatorError as exc:
                refused = exc
                break
            await asyncio.sleep(0.02)
        assert refused is not None, "calls kept going without the shared limits"
        assert refused.attempts == 0
        requests = sandbox.stats.requests
        with pytest.raises(CoordinatorError):
            await sendai.tasks.get("task_000002", project_id=sandbox.project_id)
        assert sandbox.stats.requests == requests  # nothing was sent
        await asyncio.to_thread(redis_server.start)
        for _ in range(100):
            try:
                await sendai.tasks.get("task_000002", project_id=sandbox.project_id)
                break
            except CoordinatorError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("calls did not resume when Redis came back")


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        pytest.param("http://localhost:6379", {}, id="wrong-scheme"),
        pytest.param("localhost:6379", {}, id="no-scheme"),
        pytest.param("redis://x", {"on_unavailable": "ignore"}, id="bad-mode"),
    ],
)
def test_bad_coordinator_settings_are_refused(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisCoordinator(url, **kwargs)


def test_the_password_stays_out_of_the_repr() -> None:
    assert "hunter2" not in repr(RedisCoordinator("redis://:hunter2@localhost:6379/0"))
