"""Bulk fetching against the sandbox: accounting, bounds, fatal errors, clean exits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from collections.abc import AsyncIterator, Iterator

import pytest

from sendai_async import (
    AuthenticationError,
    BatchError,
    ConfigurationError,
    Hooks,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestEvent,
    ResponseEvent,
    RetryPolicy,
    SendAI,
    ServerError,
)
from sendai_async._batch import _Outbox
from sendai_async.testing import SandboxServer


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox on its own thread, so every task in the test's loop is the client's."""
    with SandboxServer(tasks=300, seed=3).in_thread() as server:
        yield server


@pytest.fixture
async def client(sandbox: SandboxServer, sleeps: list[float]) -> AsyncIterator[SendAI]:
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
    ) as sendai:
        yield sendai


@pytest.fixture
async def narrow_client(sandbox: SandboxServer) -> AsyncIterator[SendAI]:
    """A client with exactly 8 pooled connections: a leaked one would block the ninth call."""
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, max_connections=8
    ) as sendai:
        yield sendai


async def _assert_pool_is_free(client: SendAI, sandbox: SandboxServer) -> None:
    """8 calls at once all get a connection: none is still held by cancelled work.

    A held connection would make one of them wait for the pool until the timeout.
    """
    sandbox.latency = 0.0
    calls = [client.tasks.get(i, project_id=sandbox.project_id) for i in sandbox.task_ids[:8]]
    await asyncio.wait_for(asyncio.gather(*calls), timeout=5)


def _other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_get_many_accounts_for_every_id_in_input_order(
    client: SendAI, sandbox: SandboxServer
) -> None:
    ids = [*sandbox.task_ids[:50], "task_999999", sandbox.task_ids[3], "", sandbox.task_ids[60]]
    result = await client.tasks.get_many(ids, project_id=sandbox.project_id, concurrency=8)
    assert [r.task_id for r in result.results] == [
        *sandbox.task_ids[:50],
        "task_999999",
        "",
        sandbox.task_ids[60],
    ]
    assert [t.id for t in result.tasks] == [*sandbox.task_ids[:50], sandbox.task_ids[60]]
    assert isinstance(result.errors["task_999999"], NotFoundError)
    assert isinstance(result.errors[""], ConfigurationError)
    assert sandbox.stats.by_task[sandbox.task_ids[3]] == 1  # the duplicate was fetched once
    assert not result.ok
    with pytest.raises(BatchError) as caught:
        result.raise_for_errors()
    assert caught.value.batch is result


async def test_iter_many_yields_each_id_once_and_bounds_concurrency(
    client: SendAI, sandbox: SandboxServer
) -> None:
    sandbox.latency = 0.002
    seen = [
        r.task_id
        async for r in client.tasks.iter_many(
            sandbox.task_ids, project_id=sandbox.project_id, concurrency=7
        )
    ]
    assert sorted(seen) == sandbox.task_ids
    assert sandbox.stats.max_in_flight <= 7
    assert sandbox.stats.max_in_flight >= 2  # it did run concurrently


async def test_ids_are_pulled_lazily_from_an_async_source(
    client: SendAI, sandbox: SandboxServer
) -> None:
    """A generator is pulled as workers need IDs: never more than the pool plus the queue ahead."""
    pulled = 0
    yielded = 0
    max_ahead = 0

    async def source() -> AsyncIterator[str]:
        nonlocal pulled
        for task_id in sandbox.task_ids:
            pulled += 1
            yield task_id

    async for _ in client.tasks.iter_many(source(), project_id=sandbox.project_id, concurrency=4):
        yielded += 1
        max_ahead = max(max_ahead, pulled - yielded)
        await asyncio.sleep(0)  # a slow consumer
    assert yielded == 300
    assert max_ahead <= 4 + 4  # workers in flight + results waiting in the bounded queue


async def test_401_stops_the_batch_after_yielding_what_finished(sandbox: SandboxServer) -> None:
    async with SendAI("wrong-key", team_id=sandbox.team_id, base_url=sandbox.base_url) as sendai:
        with pytest.raises(AuthenticationError) as caught:
            await sendai.tasks.get_many(
                sandbox.task_ids, project_id=sandbox.project_id, concurrency=4
            )
    assert caught.value.batch is not None
    assert sandbox.stats.requests <= 4  # no new requests after the first 401
    assert "wrong-key" not in str(caught.value)


async def test_403_stops_iter_many_with_partial_results(sandbox: SandboxServer) -> None:
    sandbox.script(sandbox.task_ids[5], [403])
    results = []
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
    ) as sendai:
        stream = sendai.tasks.iter_many(
            sandbox.task_ids, project_id=sandbox.project_id, concurrency=1
        )

        async def drain() -> None:
            async for result in stream:
                results.append(result.task_id)  # noqa: PERF401 -- must keep what came before the error

        with pytest.raises(PermissionDeniedError):
            await drain()
    assert results == sandbox.task_ids[:5]
    assert sandbox.stats.requests == 6


async def test_limited_key_gets_permission_denied(sandbox: SandboxServer) -> None:
    async with SendAI(
        sandbox.limited_key, team_id=sandbox.team_id, base_url=sandbox.base_url
    ) as sendai:
        with pytest.raises(PermissionDeniedError) as caught:
            await sendai.tasks.get_many(sandbox.task_ids[:10], project_id=sandbox.project_id)
    assert caught.value.batch is not None


async def test_breaking_early_leaves_no_tasks_or_connections(
    narrow_client: SendAI, sandbox: SandboxServer
) -> None:
    sandbox.latency = 0.01
    results = narrow_client.tasks.iter_many(
        sandbox.task_ids, project_id=sandbox.project_id, concurrency=8
    )
    async with contextlib.aclosing(results):
        async for _ in results:
            break
    assert _other_tasks() == set()
    await _assert_pool_is_free(narrow_client, sandbox)


async def test_plain_break_without_aclosing_cleans_up_too(
    narrow_client: SendAI, sandbox: SandboxServer
) -> None:
    """Even a bare ``break`` (the generator is finalised by the loop) leaves nothing running."""
    sandbox.latency = 0.01
    async for _ in narrow_client.tasks.iter_many(
        sandbox.task_ids, project_id=sandbox.project_id, concurrency=8
    ):
        break
    for _ in range(50):
        if not _other_tasks():
            break
        await asyncio.sleep(0.001)
    assert _other_tasks() == set()
    await _assert_pool_is_free(narrow_client, sandbox)


async def test_cancelling_the_consumer_cancels_the_pool(
    narrow_client: SendAI, sandbox: SandboxServer
) -> None:
    sandbox.latency = 0.2

    async def consume() -> None:
        async for _ in narrow_client.tasks.iter_many(
            sandbox.task_ids, project_id=sandbox.project_id, concurrency=8
        ):
            pass

    consumer = asyncio.create_task(consume())
    while sandbox.stats.in_flight < 8:  # noqa: ASYNC110 -- the sandbox runs on another thread
        await asyncio.sleep(0.001)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert _other_tasks() == set()
    await _assert_pool_is_free(narrow_client, sandbox)


async def test_a_bad_id_is_its_own_error_not_the_batchs(
    client: SendAI, sandbox: SandboxServer
) -> None:
    """An ID with a lone surrogate (no UTF-8 form) fails alone; the other 100 are fetched."""
    ids = [*sandbox.task_ids[:50], "ab\udcff", *sandbox.task_ids[50:100]]
    batch = await client.tasks.get_many(ids, project_id=sandbox.project_id)
    assert len(batch.tasks) == 100
    ((bad_id, error),) = batch.errors.items()
    assert bad_id == "ab\udcff"
    assert isinstance(error, ConfigurationError)
    assert "surrogate" in str(error)


async def test_failing_id_source_surfaces_its_error(client: SendAI, sandbox: SandboxServer) -> None:
    def source() -> Iterator[str]:
        yield sandbox.task_ids[0]
        raise OSError("database cursor lost")

    with pytest.raises(OSError, match="cursor lost"):
        await client.tasks.get_many(source(), project_id=sandbox.project_id)


async def test_progress_callback_counts_done_and_failed(
    client: SendAI, sandbox: SandboxServer
) -> None:
    calls: list[tuple[int, int, int | None]] = []
    ids = [*sandbox.task_ids[:9], "task_999999"]
    await client.tasks.get_many(
        ids, project_id=sandbox.project_id, on_progress=lambda *a: calls.append(a)
    )
    assert calls[-1] == (9, 1, 10)
    assert len(calls) == 10


async def test_retry_budget_caps_load_when_everything_fails(
    sandbox: SandboxServer, sleeps: list[float]
) -> None:
    """An all-503 bulk run makes far fewer than max_attempts x N requests."""
    for task_id in sandbox.task_ids:
        sandbox.script(task_id, [503] * 10)
    policy = RetryPolicy(max_attempts=3, budget_capacity=100)
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, retry=policy
    ) as sendai:
        result = await sendai.tasks.get_many(
            sandbox.task_ids, project_id=sandbox.project_id, concurrency=16
        )
    assert len(result.errors) == 300
    assert all(isinstance(e, ServerError) for e in result.errors.values())
    assert sandbox.stats.requests <= 300 + 100 // 5  # one try each plus what the budget paid for
    assert sum(e.retry_budget_exhausted for e in result.errors.values()) >= 280


async def test_429_holds_back_every_worker(sandbox: SandboxServer) -> None:
    """After a 429 with Retry-After, no worker sends anything until that time has passed."""
    sandbox.retry_after = 0.2
    sandbox.latency = 0.002
    sandbox.script(sandbox.task_ids[10], [429])
    sent: list[float] = []
    limited_at: list[float] = []

    def on_request(_event: RequestEvent) -> None:
        sent.append(time.monotonic())

    def on_response(event: ResponseEvent) -> None:
        if event.status == 429:
            limited_at.append(time.monotonic())

    hooks = Hooks(on_request=[on_request], on_response=[on_response])
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, hooks=hooks
    ) as sendai:
        result = await sendai.tasks.get_many(
            sandbox.task_ids[:80], project_id=sandbox.project_id, concurrency=8
        )
    assert result.ok
    assert len(limited_at) == 1
    after = [t for t in sent if t > limited_at[0]]
    assert after, "work continued after the 429"
    assert min(after) >= limited_at[0] + 0.2 - 0.01  # hook and clock granularity


async def test_concurrency_is_capped_at_the_pool_size(
    sandbox: SandboxServer, sleeps: list[float]
) -> None:
    sandbox.latency = 0.005
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, max_connections=3
    ) as sendai:
        result = await sendai.tasks.get_many(
            sandbox.task_ids[:60], project_id=sandbox.project_id, concurrency=50
        )
    assert result.ok
    assert sandbox.stats.max_in_flight <= 3


async def test_a_retry_after_too_long_to_wait_fails_the_batch_fast(
    sandbox: SandboxServer,
) -> None:
    """One 429 asking for 10 minutes fails every waiting ID at once, not after a minute each."""
    sandbox.retry_after = 600
    sandbox.script(sandbox.task_ids[0], [429])
    started = time.monotonic()
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
    ) as sendai:
        batch = await sendai.tasks.get_many(
            sandbox.task_ids[:48], project_id=sandbox.project_id, concurrency=1
        )
    assert time.monotonic() - started < 5
    assert len(batch.errors) == 48  # every ID accounted for, each with the server's wait
    assert all(isinstance(e, RateLimitError) for e in batch.errors.values())
    assert all((e.retry_after or 0) > 590 for e in batch.errors.values())  # type: ignore[attr-defined]
    assert sandbox.stats.requests == 1


async def test_results_wait_for_a_slow_consumer_with_a_plain_iterator(
    client: SendAI, sandbox: SandboxServer
) -> None:
    """Backpressure on the sync-source path too: IDs are pulled only as results are taken."""
    pulled = 0

    def source() -> Iterator[str]:
        nonlocal pulled
        for task_id in sandbox.task_ids:
            pulled += 1
            yield task_id

    yielded = 0
    max_ahead = 0
    async for _ in client.tasks.iter_many(source(), project_id=sandbox.project_id, concurrency=4):
        yielded += 1
        for _ in range(5):  # a consumer slower than the workers
            await asyncio.sleep(0)
        max_ahead = max(max_ahead, pulled - yielded)
    assert yielded == 300
    assert max_ahead <= 4 + 4  # workers in flight + results waiting in the bounded outbox


async def test_the_pool_keeps_no_result_the_consumer_has_dropped(
    client: SendAI, sandbox: SandboxServer
) -> None:
    """A dropped result is freed at once, not when a worker's next request ends.

    Bulk memory is the consumer's to bound; for large tasks, freeing late also costs CPU
    (the collector keeps walking the dead result, then it is freed out of cache).
    """
    sandbox.latency = 0.05  # the next fetches are in flight while we look
    gc_was_enabled = gc.isenabled()
    gc.disable()  # freed by reference counting alone, or not at all
    try:
        results = aiter(
            client.tasks.iter_many(
                sandbox.task_ids[:6], project_id=sandbox.project_id, concurrency=1
            )
        )
        first = await anext(results)
        assert first.task is not None
        task = weakref.ref(first.task)
        del first
        following = asyncio.ensure_future(anext(results))
        await asyncio.sleep(0.01)  # the generator resumed and waits for the worker
        assert not following.done()
        assert task() is None
        await following
        await results.aclose()  # type: ignore[attr-defined]
    finally:
        if gc_was_enabled:
            gc.enable()


async def test_outbox_holds_writers_at_the_limit_and_wakes_them_in_order() -> None:
    outbox: _Outbox[int] = _Outbox(2)
    await outbox.put(1)
    await outbox.put(2)
    third = asyncio.create_task(outbox.put(3))
    fourth = asyncio.create_task(outbox.put(4))
    await asyncio.sleep(0)
    assert not third.done()
    assert not fourth.done()
    assert len(outbox) == 2
    assert outbox.get_nowait() == 1
    await asyncio.sleep(0)
    assert third.done()
    assert not fourth.done()
    assert [outbox.get_nowait(), outbox.get_nowait()] == [2, 3]
    await fourth
    assert outbox.get_nowait() == 4


async def test_outbox_writer_cancelled_after_its_wake_up_passes_the_turn_on() -> None:
    """A woken writer that is cancelled before it runs must not strand the next one."""
    outbox: _Outbox[int] = _Outbox(1)
    await outbox.put(1)
    first = asyncio.create_task(outbox.put(2))
    second = asyncio.create_task(outbox.put(3))
    await asyncio.sleep(0)
    assert outbox.get_nowait() == 1  # wakes `first`...
    first.cancel()  # ...which is cancelled before it can run
    await asyncio.wait_for(second, timeout=1)
    assert first.cancelled()
    assert outbox.get_nowait() == 3


async def test_outbox_reader_parks_until_an_item_arrives() -> None:
    outbox: _Outbox[str] = _Outbox(4)
    reader = asyncio.create_task(outbox.wait())
    await asyncio.sleep(0)
    assert not reader.done()
    outbox.put_nowait("x")
    await asyncio.wait_for(reader, timeout=1)
    assert outbox.get_nowait() == "x"


async def test_a_rate_limit_window_does_not_use_up_the_retry_budget(sandbox: SandboxServer) -> None:
    """Every in-flight request meets the window's 429: all wait at the gate and get through.

    At five tokens a retry, 16 workers' 429s would empty a 40-token budget and fail IDs
    that only had to wait; a 429 with Retry-After costs one.
    """
    sandbox.rate_limit_window(after_requests=20, seconds=0.3)
    policy = RetryPolicy(budget_capacity=40, max_retry_after=5.0)
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, retry=policy
    ) as sendai:
        result = await sendai.tasks.get_many(
            sandbox.task_ids[:100], project_id=sandbox.project_id, concurrency=16
        )
    assert sandbox.stats.statuses[429] >= 10  # the window was met by many workers at once
    assert result.ok, {k: str(e) for k, e in list(result.errors.items())[:3]}


async def test_a_429_without_retry_after_still_costs_a_full_retry(sandbox: SandboxServer) -> None:
    """A bare 429 sets no gate: its retries are charged like any failure's."""
    for task_id in sandbox.task_ids[:40]:
        sandbox.script(task_id, ["429-bare"] * 3)
    policy = RetryPolicy(max_attempts=3, budget_capacity=20, backoff_base=0.001, backoff_max=0.002)
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, retry=policy
    ) as sendai:
        result = await sendai.tasks.get_many(
            sandbox.task_ids[:40], project_id=sandbox.project_id, concurrency=8
        )
    assert sandbox.stats.requests <= 40 + 20 // 5  # one try each plus what the budget paid for
    assert len(result.errors) >= 36
