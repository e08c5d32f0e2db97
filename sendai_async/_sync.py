"""``SyncSendAI``: the blocking client, a thin facade over ``SendAI`` on a private loop thread.

There is one implementation of every endpoint, the async one. A sync method is the async
resource method wrapped by ``_Blocking`` (run it on the loop thread, wait, return), so
signatures, docstrings, models and errors are the async client's; an async generator
becomes a ``SyncIterator``. ``_sync_loop.py`` holds the thread and its edge cases.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

from ._client import _UNSET, SendAI
from ._config import DEFAULT_MAX_RESPONSE_BYTES, RetryPolicy, Timeout
from ._coordination import Coordinator, RateLimit
from ._hooks import Hooks
from ._pagination import AsyncPaginator, ListingPage, PageStrategy
from ._sync_loop import LoopThread
from .resources import Tasks, Uploads

P = ParamSpec("P")
T = TypeVar("T")


class _End(enum.Enum):
    END = enum.auto()


_END = _End.END


async def _anext(items: AsyncIterator[T]) -> T | Literal[_End.END]:
    # The end is returned, not raised: a coroutine should not end in StopAsyncIteration.
    try:
        return await items.__anext__()
    except StopAsyncIteration:
        return _END


def _next_or_end(items: Iterator[T]) -> T | Literal[_End.END]:
    return next(items, _END)


async def _pull_in_executor(items: Iterator[T]) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    while (item := await loop.run_in_executor(None, _next_or_end, items)) is not _END:
        yield item


class SyncIterator(Iterator[T]):
    """A plain iterator over an async iterator of the client's, advanced on its loop thread.

    Leaving early releases what the async iterator holds, as ``aclose()`` would: use it as
    ``with sendai.tasks.iter_many(...) as results:`` or call ``close()``; an iterator that
    is dropped is closed on the loop thread by asyncio's async-generator finaliser.
    """

    __slots__ = ("_done", "_items", "_loop_thread")

    def __init__(self, loop_thread: LoopThread, items: AsyncIterator[T]) -> None:
        self._loop_thread = loop_thread
        self._items = items
        self._done = False

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return f"<SyncIterator over {self._items!r} {state}>"

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._loop_thread.run(_anext(self._items))
        if item is _END:
            self._done = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop early: cancel the work in flight and release it (a no-op once done)."""
        if self._done:
            return
        self._done = True
        aclose = getattr(self._items, "aclose", None)
        # After the client closed, its loop's shutdown has closed every async generator.
        if aclose is not None and not self._loop_thread.closed:
            self._loop_thread.run(aclose())

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[T]:
        """Let the SDK's pools pull from this iterator, e.g. ``iter_many(pager.ids())``.

        Those pools run on the loop thread, where ``next()`` would be a reentrant call. On
        the client's own loop the pool takes over the underlying async iterator (and closes
        it); on any other loop, ``next()`` runs in that loop's default executor.
        """
        if self._loop_thread.on_loop_thread():
            self._done = True
            return self._items
        return _pull_in_executor(self)


class _Blocking(Generic[P, T]):
    """A sync method made of an async resource method: runs it on the loop thread, waits.

    A class attribute of a sync resource; the bound wrapper is made on first access and
    cached on the instance, so later calls cost one attribute lookup.
    """

    def __init__(self, method: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]) -> None:
        self._name = method.__name__
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> _Blocking[P, T]: ...
    @overload
    def __get__(
        self, instance: _SyncResource, owner: type[Any] | None = None
    ) -> Callable[P, T]: ...
    def __get__(
        self, instance: _SyncResource | None, owner: type[Any] | None = None
    ) -> _Blocking[P, T] | Callable[P, T]:
        if instance is None:
            return self
        bound = _blocking(instance._loop_thread, getattr(instance._resource, self._name))
        instance.__dict__[self._name] = bound
        return bound


class _Iterating(Generic[P, T]):
    """A sync method made of an async resource method that returns an async iterator."""

    def __init__(self, method: Callable[Concatenate[Any, P], AsyncIterator[T]]) -> None:
        self._name = method.__name__
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> _Iterating[P, T]: ...
    @overload
    def __get__(
        self, instance: _SyncResource, owner: type[Any] | None = None
    ) -> Callable[P, SyncIterator[T]]: ...
    def __get__(
        self, instance: _SyncResource | None, owner: type[Any] | None = None
    ) -> _Iterating[P, T] | Callable[P, SyncIterator[T]]:
        if instance is None:
            return self
        method = getattr(instance._resource, self._name)
        loop_thread = instance._loop_thread

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> SyncIterator[T]:
            # Creating the async generator runs none of its code: this makes no request.
            return SyncIterator(loop_thread, method(*args, **kwargs))

        instance.__dict__[self._name] = call
        return call


def _blocking(
    loop_thread: LoopThread, method: Callable[P, Coroutine[Any, Any, T]]
) -> Callable[P, T]:
    """Return ``method`` as a function that runs it on ``loop_thread`` and waits."""
    run = loop_thread.run

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return run(method(*args, **kwargs))

    return call


class _SyncResource:
    """What the descriptors above need: the async resource and the loop thread."""

    def __init__(self, resource: Any, loop_thread: LoopThread) -> None:
        self._resource = resource
        self._loop_thread = loop_thread


class SyncTasks(_SyncResource):
    """``Tasks`` (``sendai.tasks``), blocking: same arguments, results and errors.

    ``iter_many`` and ``iter_many_raw`` return a ``SyncIterator``.
    """

    get = _Blocking(Tasks.get)
    get_raw = _Blocking(Tasks.get_raw)
    get_many = _Blocking(Tasks.get_many)
    iter_many = _Iterating(Tasks.iter_many)
    iter_many_raw = _Iterating(Tasks.iter_many_raw)
    complete = _Blocking(Tasks.complete)
    discard = _Blocking(Tasks.discard)
    approve = _Blocking(Tasks.approve)
    disapprove = _Blocking(Tasks.disapprove)
    report = _Blocking(Tasks.report)
    wait = _Blocking(Tasks.wait)


class SyncUploads(_SyncResource):
    """``Uploads`` (``sendai.uploads``), blocking: same arguments, results and errors."""

    create = _Blocking(Uploads.create)
    get = _Blocking(Uploads.get)
    move = _Blocking(Uploads.move)


class SyncPaginator(Generic[T]):
    """``AsyncPaginator``, blocking: ``for item in paginator``, ``pages()``, ``ids()``.

    Lazy like the async one: no request is made before an item is needed. A failed page
    raises the usual typed error with ``error.resume_from`` set.
    """

    __slots__ = ("_loop_thread", "_paginator")

    def __init__(self, loop_thread: LoopThread, paginator: AsyncPaginator[T]) -> None:
        self._loop_thread = loop_thread
        self._paginator = paginator

    def __repr__(self) -> str:
        return f"<SyncPaginator of {self._paginator!r}>"

    @property
    def pages_fetched(self) -> int:
        """How many pages have been fetched so far."""
        return self._paginator.pages_fetched

    def __iter__(self) -> SyncIterator[T]:
        """Yield every item of every page, in order."""
        return SyncIterator(self._loop_thread, self._paginator.__aiter__())

    def pages(self) -> SyncIterator[ListingPage[T]]:
        """Yield whole pages until the listing ends (see ``AsyncPaginator.pages``)."""
        return SyncIterator(self._loop_thread, self._paginator.pages())

    def ids(self, field: str = "id") -> SyncIterator[str]:
        """Yield each item's ID; pass it straight to ``tasks.iter_many`` or ``get_many``."""
        return SyncIterator(self._loop_thread, self._paginator.ids(field))

    def first_page(self) -> ListingPage[T]:
        """Fetch and return the page at the starting cursor."""
        return self._loop_thread.run(self._paginator.first_page())


class SyncSendAI:
    """A blocking client for the Send AI API: ``SendAI``, for code without ``await``.

    It takes the same arguments as ``SendAI`` (except ``session``: an aiohttp session
    belongs to one event loop, and this client's loop is private) and has the same
    resources and methods, with the same models and errors. It runs one ``SendAI`` on a
    private event loop in a daemon thread, started on first use; each call waits for its
    result there. So it can be shared by any number of threads, works inside a running
    event loop (a notebook; the call blocks that loop meanwhile) and after ``os.fork()``
    (the child starts its own loop thread). Ctrl-C during a call cancels its request.

    Hooks run on that loop thread: they must not block, and must not call this client
    (``ReentrantCallError``); an async hook may ``await`` on ``sendai.async_client``.
    ``map`` is not offered, as it takes coroutine functions: use ``async_client.map`` from
    async code, or ``tasks.iter_many`` / ``tasks.get_many`` here.

    Use ``with SyncSendAI() as sendai:`` or call ``close()``; a client that is dropped, or
    still open at exit, is closed for you.

    Raises:
        ConfigurationError: the key is missing, or an argument is invalid.

    """

    tasks: SyncTasks
    """Read, act on, report and wait for tasks."""
    uploads: SyncUploads
    """Upload documents; read and move uploads."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        team_id: str | None = None,
        base_url: str | None = None,
        timeout: Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        hooks: Hooks | None = None,
        user_agent: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        coordinator: Coordinator | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        client = SendAI(
            api_key,
            team_id=team_id,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            max_connections=max_connections,
            hooks=hooks,
            user_agent=user_agent,
            max_response_bytes=max_response_bytes,
            coordinator=coordinator,
            rate_limit=rate_limit,
        )
        self._bind(client, LoopThread(client.aclose))

    def _bind(self, client: SendAI, loop_thread: LoopThread) -> None:
        self._async = client
        self._loop_thread = loop_thread
        self.tasks = SyncTasks(client.tasks, loop_thread)
        self.uploads = SyncUploads(client.uploads, loop_thread)

    @property
    def async_client(self) -> SendAI:
        """The ``SendAI`` this client runs (for async hooks; closing it closes this one)."""
        return self._async

    def with_options(
        self,
        *,
        timeout: Timeout | float | None = _UNSET,
        retry: RetryPolicy | None = _UNSET,
        team_id: str | None = _UNSET,
    ) -> SyncSendAI:
        """Return a view of this client with other defaults (see ``SendAI.with_options``).

        The view shares the loop thread, connection pools, limits and counters. Closing
        either closes both.
        """
        view = object.__new__(SyncSendAI)
        view._bind(
            self._async.with_options(timeout=timeout, retry=retry, team_id=team_id),
            self._loop_thread,
        )
        return view

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._async.base_url

    @property
    def team_id(self) -> str | None:
        """The default team of this client (or view)."""
        return self._async.team_id

    @property
    def timeout(self) -> Timeout:
        """The per-attempt time limits."""
        return self._async.timeout

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._async.retry

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or the async client was closed)."""
        return self._loop_thread.closed or self._async.closed

    @property
    def retries(self) -> int:
        """How many retries this client has made so far."""
        return self._async.retries

    @property
    def requests(self) -> int:
        """How many HTTP requests this client has sent so far, retries included."""
        return self._async.requests

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SyncSendAI base_url={self.base_url!r} team_id={self.team_id!r} {state}>"

    def __enter__(self) -> SyncSendAI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pools and stop the loop thread; later calls fail.

        Idempotent. Calls still waiting get ``ClientClosedError``, as do later ones.

        Raises:
            ReentrantCallError: called from a hook (the loop thread).

        """
        self._loop_thread.close()

    @overload
    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        item_type: None = None,
        strategy: PageStrategy | None = None,
        team_id: str | None = None,
        resume_from: Any = None,
    ) -> SyncPaginator[dict[str, Any]]: ...

    @overload
    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        item_type: type[T],
        strategy: PageStrategy | None = None,
        team_id: str | None = None,
        resume_from: Any = None,
    ) -> SyncPaginator[T]: ...

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        item_type: type[Any] | None = None,
        strategy: PageStrategy | None = None,
        team_id: str | None = None,
        resume_from: Any = None,
    ) -> SyncPaginator[Any]:
        """Walk a listing under ``/v2/{team_id}``, lazily (see ``SendAI.paginate``).

        Returns:
            A ``SyncPaginator``; no request is made until it is iterated.

        """
        paginator = self._async.paginate(
            path,
            params=params,
            item_type=item_type,
            strategy=strategy,
            team_id=team_id,
            resume_from=resume_from,
        )
        return SyncPaginator(self._loop_thread, paginator)
