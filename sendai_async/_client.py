"""``SendAI``: the client facade users construct, and what it owns."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

import aiohttp

from ._config import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ENV_TEAM_ID,
    RetryPolicy,
    Timeout,
    resolve_api_key,
    resolve_base_url,
    resolve_team_id,
)
from ._errors import ConfigurationError
from ._hooks import Hooks
from ._http import HTTPCore, default_user_agent
from ._logging import configure_from_env
from ._pagination import AsyncPaginator, PageStrategy, make_paginator
from ._session import SessionManager
from ._tasks import Tasks

T = TypeVar("T")

configure_from_env()


class SendAI:
    """An asyncio client for the Send AI API.

    Constructing it needs no running event loop and makes no request. It may be shared by
    every coroutine of a program, reused across ``asyncio.run`` calls, used from several
    threads' loops, and survives ``os.fork()``: each event loop gets its own connection
    pool, created on first use and closed when that loop shuts down.

    Args:
        api_key: The API key; defaults to ``SENDAI_API_KEY``.
        team_id: The default team; defaults to ``SENDAI_TEAM_ID``. Every call may override it.
        base_url: The API root; defaults to ``SENDAI_BASE_URL``, then ``https://api.send.ai``.
            Plain http is accepted only for loopback hosts.
        timeout: Per-attempt time limits.
        retry: What is retried and the whole call's deadline.
        max_connections: Connection pool size per event loop; also the most requests a
            batch runs at once.
        hooks: Observation callbacks for metrics and tracing.
        session: An ``aiohttp.ClientSession`` to use instead of our own. It is never closed
            by us, and it must belong to the loop the client is used in.
        user_agent: Replaces the default ``User-Agent``.
        max_response_bytes: Larger response bodies are refused unread
            (``ResponseTooLargeError``).

    Raises:
        ConfigurationError: the key is missing, or an argument is invalid.

    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        team_id: str | None = None,
        base_url: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        hooks: Hooks | None = None,
        session: aiohttp.ClientSession | None = None,
        user_agent: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be at least 1, got {max_connections}")
        if max_response_bytes < 1:
            raise ConfigurationError("max_response_bytes must be positive")
        key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.team_id = resolve_team_id(team_id)
        self.max_connections = max_connections
        self._owns_pool = session is None

        def new_session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0)
            # trust_env stays off: with it aiohttp would read .netrc credentials and
            # refuse to combine them with our Authorization header.
            return aiohttp.ClientSession(connector=connector, trust_env=False)

        self._http = HTTPCore(
            api_key=key,
            base_url=self.base_url,
            timeout=timeout or Timeout(),
            retry=retry or RetryPolicy(),
            hooks=hooks or Hooks(),
            max_response_bytes=max_response_bytes,
            sessions=SessionManager(new_session, external=session),
            user_agent=user_agent or default_user_agent(),
        )
        self.tasks = Tasks(self)

    @property
    def timeout(self) -> Timeout:
        """The per-attempt time limits."""
        return self._http.timeout

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._http.retry

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._http.sessions.closed

    @property
    def retries(self) -> int:
        """How many retries this client has made so far (for summaries and metrics)."""
        return self._http.retries

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
        await self._http.sessions.aclose()

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
            self,
            path,
            params=params,
            item_type=item_type,
            strategy=strategy,
            team_id=team_id,
            resume_from=resume_from,
        )

    def _team(self, team_id: str | None) -> str:
        team = team_id if team_id is not None else self.team_id
        if team is None:
            raise ConfigurationError(
                f"no team: pass team_id=... to the client or the call, or set {ENV_TEAM_ID}"
            )
        return team

    def _pool_width(self, concurrency: int) -> int:
        # More workers than pooled connections would only queue for a connection, and
        # that queueing counts against each attempt's timeout.
        return min(concurrency, self.max_connections) if self._owns_pool else concurrency
