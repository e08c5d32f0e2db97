"""Bulk fetching: a fixed pool of workers pulling IDs lazily from any (async) iterable.

Why a pool and not one coroutine per ID: memory stays proportional to ``concurrency``
(plus one entry per distinct ID for de-duplication, which ``dedupe=False`` drops), and at
most ``concurrency`` requests are ever in flight, whatever the number of IDs.

Workers fetch; the consumer's side settles (decodes) and counts. Building a result in the
worker and handing it over costs more than building it where it is used: the consumer
takes results in bursts (every worker woken in one event-loop pass, then the consumer),
so each was built out of the CPU cache's reach of where it is read and freed. Measured
with ``benchmarks``: 15 µs of CPU per small task, and on 20-page tasks the raw path went
from 0.60x to 0.90x the floor.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sized,
)
from typing import Any, Generic, TypeVar

import attrs

from ._errors import (
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    SendAIError,
)
from ._models import Task

T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")

TaskIds = Iterable[str] | AsyncIterable[str]
ProgressCallback = Callable[[int, int, int | None], None]
PoolItem = tuple[int, str, T | None, SendAIError | None]

# Errors that would fail every remaining ID the same way: the batch stops instead.
FATAL_ERRORS = (AuthenticationError, PermissionDeniedError)


@attrs.frozen(kw_only=True)
class TaskResult:
    """The outcome for one task ID: a ``Task`` or the error that prevented it.

    Attributes:
        task_id: The ID as given.
        task: The task, or ``None`` when fetching failed.
        error: The typed error, or ``None`` on success.

    """

    task_id: str
    task: Task | None = None
    error: SendAIError | None = None

    @property
    def ok(self) -> bool:
        """Whether the task was fetched."""
        return self.error is None


@attrs.frozen(kw_only=True)
class RawTaskResult:
    """The outcome for one task ID in raw mode: the payload exactly as decoded, or an error."""

    task_id: str
    payload: dict[str, Any] | None = None
    error: SendAIError | None = None

    @property
    def ok(self) -> bool:
        """Whether the payload was fetched."""
        return self.error is None


@attrs.frozen(kw_only=True)
class MapResult(Generic[T]):
    """The outcome of one call of ``SendAI.map``: its value or the error it raised.

    Attributes:
        key: The item (an ID) the call was made for.
        value: What the call returned, or ``None`` when it failed.
        error: The typed error, or ``None`` on success.

    """

    key: str
    value: T | None = None
    error: SendAIError | None = None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None


class BatchError(SendAIError):
    """Some tasks of a batch failed; raised by ``BatchResult.raise_for_errors()``."""


@attrs.frozen
class BatchResult:
    """Every ID of a ``get_many`` call, in input order (a repeated ID once, where first seen).

    Attributes:
        results: One ``TaskResult`` per distinct input ID.

    """

    results: tuple[TaskResult, ...]

    @property
    def tasks(self) -> list[Task]:
        """The tasks fetched, in input order."""
        return [r.task for r in self.results if r.task is not None]

    @property
    def errors(self) -> dict[str, SendAIError]:
        """``{task_id: error}`` for every ID that failed."""
        return {r.task_id: r.error for r in self.results if r.error is not None}

    @property
    def ok(self) -> bool:
        """Whether every ID was fetched."""
        return all(r.error is None for r in self.results)

    def by_id(self) -> dict[str, TaskResult]:
        """Return ``{task_id: TaskResult}`` for every distinct input ID."""
        return {r.task_id: r for r in self.results}

    def raise_for_errors(self) -> None:
        """Raise ``BatchError`` (with this result as ``.batch``) if any ID failed."""
        errors = self.errors
        if not errors:
            return
        first_id, first = next(iter(errors.items()))
        error = BatchError(
            f"{len(errors)} of {len(self.results)} tasks failed; first: {first_id!r}: {first}"
        )
        error.batch = self
        raise error


class _Done:
    __slots__ = ()


class _Fatal:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = _Done()


_END: Any = object()


def as_fetched(value: T) -> T:
    """Settle a fetched value as it is (for ``run_pool`` calls that decode nothing)."""
    return value


def map_result(_index: int, key: str, value: T | None, error: SendAIError | None) -> MapResult[T]:
    """Wrap one pool outcome as a ``MapResult``."""
    return MapResult(key=key, value=value, error=error)


class _Outbox(Generic[T]):
    """Finished results on their way to the consumer: a bounded FIFO with one reader.

    ``asyncio.Queue`` would do, but it is built for many readers and writers and costs a
    few microseconds per item in bookkeeping (an event, unfinished-task counts, a coroutine
    per ``get``); a bulk fetch moves every item through here. One consumer parks on a
    single future while the outbox is empty; workers put without waiting until ``limit``
    items are pending, then wait for room (the backpressure that keeps memory bounded
    when the consumer is slow).
    """

    __slots__ = ("_consumer", "_items", "_limit", "_loop", "_putters")

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._consumer: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        """Add ``item``, waiting for room while ``limit`` items are already pending."""
        while len(self._items) >= self._limit:
            room = self._loop.create_future()
            self._putters.append(room)
            try:
                await room
            except BaseException:
                # Cancelled while (or just after) being woken: pass the turn on.
                if room in self._putters:
                    self._putters.remove(room)
                elif len(self._items) < self._limit:
                    self._wake_putter()
                raise
        self.put_nowait(item)

    def put_nowait(self, item: T) -> None:
        """Add ``item`` whatever the limit (for the few items that must never wait)."""
        self._items.append(item)
        consumer = self._consumer
        if consumer is not None and not consumer.done():
            consumer.set_result(None)

    def get_nowait(self) -> T:
        """Take the oldest item (the caller checked that there is one)."""
        item = self._items.popleft()
        if self._putters:
            self._wake_putter()
        return item

    async def wait(self) -> None:
        """Return once an item is pending."""
        while not self._items:
            self._consumer = self._loop.create_future()
            try:
                await self._consumer
            finally:
                self._consumer = None

    def _wake_putter(self) -> None:
        while self._putters:
            room = self._putters.popleft()
            if not room.done():
                room.set_result(None)
                return


class _Pool(Generic[T]):
    """The shared state of one ``run_pool`` call: the ID source, the workers, the output."""

    def __init__(
        self,
        ids: TaskIds,
        fetch: Callable[[str], Awaitable[T]],
        *,
        concurrency: int,
        dedupe: bool,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.fetch = fetch
        self.total = len(ids) if isinstance(ids, Sized) else None
        # A sync source is pulled with next(): no await between deciding and taking, so
        # workers need no lock. An async one must not be advanced concurrently.
        self.sync_source: Iterator[str] | None = None
        self.async_source: AsyncIterator[str] | None = None
        if isinstance(ids, AsyncIterable):
            self.async_source = ids.__aiter__()
        else:
            self.sync_source = iter(ids)
        self.pull_lock = asyncio.Lock()
        self.seen: set[str] | None = set() if dedupe else None
        self.position = 0
        self.done = 0
        self.failed = 0
        self.on_progress = on_progress
        self.out: _Outbox[PoolItem[T] | _Done | _Fatal] = _Outbox(concurrency)
        self.out_limit = concurrency
        self.running = concurrency
        self.stopping = False
        self.workers = [asyncio.create_task(self.work()) for _ in range(concurrency)]

    async def next_id(self) -> tuple[int, str] | None:
        """Pull the next ID not seen before, with its input position; ``None`` at the end."""
        if self.sync_source is not None:
            return self._take(self.sync_source)
        async with self.pull_lock:
            while not self.stopping:
                try:
                    task_id = await self.async_source.__anext__()  # type: ignore[union-attr]
                except StopAsyncIteration:
                    return None
                if self._is_new(task_id):
                    return self._number(task_id)
            return None

    def _take(self, source: Iterator[str]) -> tuple[int, str] | None:
        while not self.stopping:
            task_id = next(source, _END)
            if task_id is _END:
                return None
            if self._is_new(task_id):
                return self._number(task_id)
        return None

    def _is_new(self, task_id: str) -> bool:
        # A non-string ID is not hashed here: fetch() reports it as that ID's error.
        if self.seen is None or not isinstance(task_id, str):
            return True
        if task_id in self.seen:
            return False
        self.seen.add(task_id)
        return True

    def _number(self, task_id: str) -> tuple[int, str]:
        self.position += 1
        return self.position - 1, task_id

    async def work(self) -> None:
        """Fetch IDs until the source is exhausted or the pool stops."""
        sync_source = self.sync_source
        try:
            # A plain iterator is pulled without a coroutine per ID (see next_id).
            while (
                item := self._take(sync_source) if sync_source is not None else await self.next_id()
            ) is not None:
                index, task_id = item
                value: T | None = None
                error: SendAIError | None = None
                try:
                    value = await self.fetch(task_id)
                except FATAL_ERRORS as exc:
                    self.stop_with(exc)
                    return
                except SendAIError as exc:
                    error = exc
                # Handed on without a local name: a worker keeping its last result (a
                # whole body) through its next request would hold it for nothing and free
                # it long out of the CPU cache, instead of the consumer freeing it at once.
                if len(self.out) < self.out_limit:
                    self.out.put_nowait((index, task_id, value, error))
                else:  # the consumer is behind: wait for room (backpressure)
                    await self.out.put((index, task_id, value, error))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 -- the ID source failed: surface it
            self.stop_with(exc)
            return
        self.running -= 1
        if self.running == 0:
            self.out.put_nowait(_DONE)

    def count(self, error: SendAIError | None) -> None:
        """Update the counters and report progress."""
        if error is None:
            self.done += 1
        else:
            self.failed += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.failed, self.total)

    def stop_with(self, error: BaseException) -> None:
        """Stop every other worker and hand ``error`` to the consumer."""
        self.stopping = True
        current = asyncio.current_task()
        for other in self.workers:
            if other is not current:
                other.cancel()
        self.out.put_nowait(_Fatal(error))

    async def shutdown(self) -> None:
        """Cancel every worker, wait for them, and close the ID source."""
        self.stopping = True
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        closer = getattr(self.async_source, "aclose", None)
        if closer is not None:
            await closer()


async def run_pool(
    ids: TaskIds,
    fetch: Callable[[str], Awaitable[T]],
    settle: Callable[[T], U],
    make: Callable[[int, str, U | None, SendAIError | None], R],
    *,
    concurrency: int,
    dedupe: bool = True,
    on_progress: ProgressCallback | None = None,
) -> AsyncGenerator[R, None]:
    """Yield ``make(position, id, value, error)`` per distinct ID, in completion order.

    Workers ``fetch`` each ID; the consumer's side turns what was fetched into ``value``
    with ``settle`` (a decoder: see the module notes) just before handing the result on.
    A ``SendAIError`` from either is that ID's ``error``; progress counts an ID once it is
    settled. ``position`` is where the ID was first seen in the input. A 401 or 403 stops
    the pool: nothing new starts, in-flight requests are cancelled, and the error is raised
    after the results that had already finished. Leaving early (``break``, ``aclose()`` or
    cancellation) cancels every worker before returning.
    """
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency!r}")
    pool = _Pool(ids, fetch, concurrency=concurrency, dedupe=dedupe, on_progress=on_progress)
    try:
        while True:
            out = pool.out
            if not len(out):
                await out.wait()
            item = out.get_nowait()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Fatal):
                raise item.error
            index, task_id, fetched, error = item
            del item
            value: U | None = None
            if error is None:
                try:
                    # Without an error the worker put what fetch returned: a T.
                    value = settle(fetched)  # type: ignore[arg-type]
                except SendAIError as exc:
                    error = exc
            del fetched
            pool.count(error)
            yield make(index, task_id, value, error)
            # The consumer asked for more: hold no result while waiting (see work).
            del value, error
    finally:
        await pool.shutdown()
