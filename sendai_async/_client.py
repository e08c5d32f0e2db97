"""``SendAI``: the client facade users construct, and what it owns."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

import aiohttp
import attrs

from ._batch import MapResult, ProgressCallback, TaskIds, as_fetched, map_result, run_pool
from ._config import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RetryPolicy,
    Timeout,
    coerce_retry,
    coerce_timeout,
    resolve_api_key,
    resolve_base_url,
    resolve_team_id,
)
from ._coordination import ClientSettings, Coordinator, LocalCoordinator, RateLimit
from ._errors import ConfigurationError
from ._hooks import Hooks
from ._http import Requester, RequestOptions, Transport, default_user_agent
from ._logging import configure_from_env
from ._pagination import AsyncPaginator, PageStrategy, make_paginator
from ._session import SessionManager
from .resources import Tasks, Uploads

T = TypeVar("T")

configure_from_env()

_UNSET: Any = object()


class SendAI:
    """An asyncio client for the Send AI API.

    Constructing it needs no running event loop and makes no request. It may be shared by
    every coroutine of a program, reused across ``asyncio.run`` calls, used from several
    threads' loops, and survives ``os.fork()``: each event loop gets its own connection
    pool, created on first use and closed when that loop shuts down.

    Resources: ``sendai.tasks`` (get, bulk, actions, report, wait) and ``sendai.uploads``
    (create, get, move); ``sendai.paginate`` walks listings; ``sendai.map`` runs any
    per-ID call through the bulk worker pool; ``sendai.with_options`` gives a view with
    other defaults.

    Args:
        api_key: The API key; defaults to ``SENDAI_API_KEY``.
        team_id: The default team; defaults to ``SENDAI_TEAM_ID``. Every call may override it.
        base_url: The API root; defaults to ``SENDAI_BASE_URL``, then ``https://api.send.ai``.
            Plain http is accepted only for loopback hosts.
        timeout: Per-attempt time limits: a ``Timeout``, or a number of seconds for the
            whole attempt.
        retry: What is retried and the whole call's deadline.
        max_connections: Connection pool size per event loop; also the most requests a
            batch runs at once.
        hooks: Observation callbacks for metrics and tracing.
        session: An ``aiohttp.ClientSession`` to use instead of our own. It is never closed
            by us, and it must belong to the loop the client is used in.
        user_agent: Replaces the default ``User-Agent``.
        max_response_bytes: Larger response bodies are refused (``ResponseTooLargeError``),
            counted after decompression.
        coordinator: Where the 429 gate, the retry budget and the rate limit live:
            in this process (the default, ``LocalCoordinator()``) or shared by every
            process using the same Redis (``RedisCoordinator(url)``).
        rate_limit: A proactive limit, ``RateLimit(per_second, burst=...)``; none by
            default (the server's 429s are always honoured).

    Raises:
        ConfigurationError: the key is missing, or an argument is invalid.

    """

    tasks: Tasks
    """Read, act on, report and wait for tasks."""
    uploads: Uploads
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
        session: aiohttp.ClientSession | None = None,
        user_agent: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        coordinator: Coordinator | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        _check_positive_int(max_connections, "max_connections")
        _check_positive_int(max_response_bytes, "max_response_bytes")
        if hooks is not None and not isinstance(hooks, Hooks):
            raise ConfigurationError(f"hooks must be a Hooks, got {type(hooks).__name__}")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(
                f"rate_limit must be a RateLimit, got {type(rate_limit).__name__}"
            )
        attempt_timeout = coerce_timeout(timeout) or Timeout()
        policy = coerce_retry(retry) or RetryPolicy()
        key = resolve_api_key(api_key)
        base = resolve_base_url(base_url)
        team = resolve_team_id(team_id)
        hooks = hooks or Hooks()
        settings = ClientSettings(
            base_url=base,
            team_id=team,
            budget_capacity=policy.budget_capacity,
            rate_limit=rate_limit,
            hooks=hooks,
        )
        self.coordinator = coordinator or LocalCoordinator()

        def new_session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0)
            # trust_env stays off: with it aiohttp would read .netrc credentials and
            # refuse to combine them with our Authorization header.
            session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers=transport.headers
            )
            # aiohttp silently sends an idempotent request again after a reset, unseen by
            # our attempts, hooks and retry budget: the server would get up to twice the
            # requests a RetryPolicy allows. Our retry layer is the only one. (A caller's
            # own session keeps aiohttp's behaviour.)
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            return session

        transport = Transport(
            api_key=key,
            base_url=base,
            hooks=hooks,
            max_response_bytes=max_response_bytes,
            sessions=SessionManager(new_session, external=session),
            user_agent=user_agent or default_user_agent(),
            limits=self.coordinator.limits_for(settings),
            pool_limit=max_connections if session is None else None,
            session_headers=session is None,
        )
        self.max_connections = max_connections
        options = RequestOptions(timeout=attempt_timeout, retry=policy, team_id=team)
        self._bind(Requester(transport, options))

    def _bind(self, requester: Requester) -> None:
        self._requester = requester
        self.tasks = Tasks(requester)
        self.uploads = Uploads(requester)

    def with_options(
        self,
        *,
        timeout: Timeout | float | None = _UNSET,
        retry: RetryPolicy | None = _UNSET,
        team_id: str | None = _UNSET,
    ) -> SendAI:
        """Return a view of this client with other defaults.

        The view shares everything else: connection pools, the 429 gate, the retry budget
        and the counters. Closing either closes both. Typical use, in a web handler that
        must answer within two seconds::

            quick = sendai.with_options(retry=RetryPolicy(deadline=2), timeout=1)

        Args:
            timeout: The per-attempt ``Timeout`` (or seconds for the whole attempt).
            retry: The ``RetryPolicy``. The retry budget stays the client's.
            team_id: The default team (``None`` removes it).

        Raises:
            ConfigurationError: a value of the wrong type.

        """
        changes: dict[str, Any] = {}
        if timeout is not _UNSET:
            changes["timeout"] = coerce_timeout(timeout) or Timeout()
        if retry is not _UNSET:
            changes["retry"] = coerce_retry(retry) or RetryPolicy()
        if team_id is not _UNSET:
            if team_id is not None and not isinstance(team_id, str):
                raise ConfigurationError(f"team_id must be a string, got {type(team_id).__name__}")
            changes["team_id"] = team_id
        view = object.__new__(SendAI)
        view.max_connections = self.max_connections
        view.coordinator = self.coordinator
        view._bind(
            Requester(self._requester.transport, attrs.evolve(self._requester.options, **changes))
        )
        return view

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._requester.transport.base_url

    @property
    def team_id(self) -> str | None:
        """The default team of this client (or view)."""
        return self._requester.options.team_id

    @property
    def timeout(self) -> Timeout:
        """The per-attempt time limits."""
        return self._requester.options.timeout

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._requester.options.retry

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._requester.transport.sessions.closed

    @property
    def retries(self) -> int:
        """How many retries this client has made so far (for summaries and metrics)."""
        return self._requester.transport.retries

    @property
    def requests(self) -> int:
        """How many HTTP requests this client has sent so far, retries included."""
        return self._requester.transport.requests

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SendAI base_url={self.base_url!r} team_id={self.team_id!r} {state}>"

    async def __aenter__(self) -> SendAI:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools this client created; a caller's session stays open."""
        await self._requester.transport.sessions.aclose()

    def map(
        self,
        call: Callable[[str], Awaitable[T]],
        ids: TaskIds,
        *,
        concurrency: int = 16,
        dedupe: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> AsyncGenerator[MapResult[T], None]:
        """Run ``call(id)`` for every ID through the bulk worker pool; yield as each ends.

        The pool of ``tasks.iter_many``, for any per-ID call: IDs pulled lazily from any
        (async) iterable, at most ``concurrency`` calls at once, each ID's ``SendAIError``
        its own result, and a 401 or 403 stopping the run. For example, approve many::

            approve = functools.partial(sendai.tasks.approve, project_id="proj_1")
            async for result in sendai.map(approve, ids, concurrency=8):
                print(result.key, "approved" if result.ok else result.error)

        Args:
            call: An async callable taking one ID.
            ids: The IDs.
            concurrency: Calls in flight at most (capped at ``max_connections``).
            dedupe: Call once per distinct ID.
            on_progress: Called as ``on_progress(done, failed, total)`` as each result is
                handed on.

        """
        return run_pool(
            ids,
            call,
            as_fetched,
            map_result,
            concurrency=self._requester.transport.pool_width(concurrency),
            dedupe=dedupe,
            on_progress=on_progress,
        )

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
    ) -> AsyncPaginator[dict[str, Any]]: ...

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
    ) -> AsyncPaginator[T]: ...

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        item_type: type[Any] | None = None,
        strategy: PageStrategy | None = None,
        team_id: str | None = None,
        resume_from: Any = None,
    ) -> AsyncPaginator[Any]:
        """Walk a listing under ``/v2/{team_id}``, lazily, page by page.

        Args:
            path: Relative to ``/v2/{team_id}``, e.g. ``"project/proj_1/tasks"``.
            params: Extra query parameters for every page (filters, sort).
            item_type: ``Task`` (or another model) to structure each item; plain dicts
                otherwise.
            strategy: How the listing pages; ``TokenPagination()`` by default.
            team_id: Overrides the client's team.
            resume_from: A cursor from a failed walk's ``error.resume_from``.

        Returns:
            An ``AsyncPaginator``; no request is made until it is iterated.

        """
        return make_paginator(
            self._requester,
            path,
            params=params,
            item_type=item_type,
            strategy=strategy,
            team_id=team_id,
            resume_from=resume_from,
        )


def _check_positive_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
