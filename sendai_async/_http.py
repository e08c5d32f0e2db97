"""The request path: one retried call made of attempts, each a single HTTP exchange.

Reading order: ``HTTPCore.request`` (retries, deadline) -> ``_attempt`` (gate, timeout, hooks)
-> ``_exchange`` (send, read the body within the size limit) -> ``_status_error`` for non-2xx.
The whole exchange, body read included, is inside the retry, so a body cut off mid-stream
is retried like a refused connection.
"""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
import orjson
from yarl import URL

from . import _retry
from ._config import RetryPolicy, Timeout
from ._errors import (
    APIStatusError,
    RequestTimeoutError,
    ResponseTooLargeError,
    SendAIError,
    TransportError,
    status_error_class,
)
from ._hooks import Hooks, RequestEvent, ResponseEvent, RetryEvent, emit
from ._logging import logger
from ._retry import NotBeforeGate, RetryBudget, call_with_retries, parse_retry_after
from ._session import SessionManager
from ._version import __version__

_ERROR_TEXT_LIMIT = 4096
_CHUNK = 64 * 1024


def default_user_agent() -> str:
    """Return the User-Agent naming the SDK, its version, Python and aiohttp."""
    return (
        f"sendai-async/{__version__} python/{platform.python_version()} "
        f"aiohttp/{aiohttp.__version__}"
    )


@attrs.frozen(kw_only=True)
class RawResponse:
    """A complete 2xx response: status, headers, body bytes and the attempts it took."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int
    url: str

    @property
    def request_id(self) -> str | None:
        """The server's request id, when it sent one."""
        return self.headers.get("x-request-id") or self.headers.get("request-id")


class HTTPCore:
    """Send authenticated GET requests with timeouts, retries, hooks and size limits."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: Timeout,
        retry: RetryPolicy,
        hooks: Hooks,
        max_response_bytes: int,
        sessions: SessionManager,
        user_agent: str,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry
        self.hooks = hooks
        self.max_response_bytes = max_response_bytes
        self.sessions = sessions
        self.budget = RetryBudget(retry.budget_capacity) if retry.budget_capacity else None
        self.gate = NotBeforeGate()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        self._client_timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}
        self.retries = 0  # retries made by this client, for summaries
        self.requests = 0  # attempts sent by this client

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
    ) -> RawResponse:
        """Make a retried request to ``base_url + path`` (``path`` already percent-encoded).

        Raises:
            SendAIError: a subclass describing the last failure, with ``attempts`` set.

        """
        shown_url = self.base_url + path
        url = URL(shown_url, encoded=True)
        if params:
            url = url.update_query(params)
            shown_url = str(url)
        attempt_timeout = timeout or self.timeout

        async def attempt(number: int, deadline_at: float) -> RawResponse:
            return await self._attempt(method, url, shown_url, number, deadline_at, attempt_timeout)

        async def on_retry(number: int, delay: float, cause: SendAIError) -> None:
            self.retries += 1
            logger.info(
                "%s %s: attempt %d failed (%s); retrying in %.2fs",
                method,
                shown_url,
                number,
                cause.message,
                delay,
            )
            if self.hooks.on_retry:
                event = RetryEvent(
                    method=method, url=shown_url, attempt=number, delay=delay, cause=cause
                )
                await emit(self.hooks.on_retry, event)

        return await call_with_retries(
            attempt, policy=self.retry, budget=self.budget, on_retry=on_retry
        )

    def _client_timeout(self, timeout: Timeout, remaining: float) -> aiohttp.ClientTimeout:
        """Translate a ``Timeout`` for aiohttp, capped by what is left of the deadline.

        ``Timeout.connect`` maps to ``sock_connect``, not aiohttp's ``connect``: the latter
        also bounds the wait for a pooled connection, which is the batch helper's business,
        not a network fault.
        """
        total = timeout.total if timeout.total is not None else math.inf
        if total <= remaining:
            cached = self._client_timeouts.get(timeout)
            if cached is None:
                cached = self._client_timeouts[timeout] = aiohttp.ClientTimeout(
                    total=timeout.total, sock_connect=timeout.connect, sock_read=timeout.read
                )
            return cached
        # The call's deadline is nearer than the attempt's own limit: it wins.
        return aiohttp.ClientTimeout(
            total=remaining, sock_connect=timeout.connect, sock_read=timeout.read
        )

    async def _attempt(
        self,
        method: str,
        url: URL,
        shown_url: str,
        number: int,
        deadline_at: float,
        timeout: Timeout,
    ) -> RawResponse:
        now = _retry._clock()
        hold = self.gate.delay(now, deadline_at)
        if hold > 0:  # a 429 elsewhere in this client asked everyone to wait
            await _retry._sleep(hold)
            now = _retry._clock()
        remaining = deadline_at - now
        if remaining <= 0:
            raise RequestTimeoutError(
                "the call's deadline passed", method=method, url=shown_url, attempts=number - 1
            )
        session = self.sessions.current() or await self.sessions.get()
        if self.hooks.on_request:
            await emit(
                self.hooks.on_request, RequestEvent(method=method, url=shown_url, attempt=number)
            )
        started = _retry._clock()
        self.requests += 1
        error: SendAIError
        try:
            status, headers, body = await self._exchange(
                session, method, url, self._client_timeout(timeout, remaining)
            )
        except SendAIError as exc:
            error = exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            error = RequestTimeoutError(f"no complete response within the timeout ({timeout})")
            error.__cause__ = exc
        except aiohttp.ClientError as exc:
            error = _transport_error(exc)
            error.__cause__ = exc
        else:
            if 200 <= status < 300:
                response = RawResponse(
                    status=status, headers=headers, body=body, attempts=number, url=shown_url
                )
                # Reporting a success costs a call; skip it when nobody listens.
                if self.hooks.on_response or logger.isEnabledFor(logging.DEBUG):
                    await self._observe(method, shown_url, number, started, status, headers, None)
                return response
            error = self._status_error(status, headers, body)
        error.method, error.url, error.attempts = method, shown_url, number
        status_code = error.status_code if isinstance(error, APIStatusError) else None
        await self._observe(method, shown_url, number, started, status_code, {}, error)
        raise error

    async def _observe(
        self,
        method: str,
        url: str,
        number: int,
        started: float,
        status: int | None,
        headers: Mapping[str, str],
        error: SendAIError | None,
    ) -> None:
        """Log the attempt's outcome and tell the ``on_response`` hooks."""
        elapsed = _retry._clock() - started
        if logger.isEnabledFor(logging.DEBUG):
            outcome = status if error is None else repr(error)
            logger.debug(
                "%s %s -> %s in %.1f ms (attempt %d)", method, url, outcome, elapsed * 1e3, number
            )
        if self.hooks.on_response:
            request_id = (
                error.request_id
                if isinstance(error, APIStatusError)
                else headers.get("x-request-id") or headers.get("request-id")
            )
            event = ResponseEvent(
                method=method,
                url=url,
                attempt=number,
                status=status,
                elapsed=elapsed,
                request_id=request_id,
                error=error,
            )
            await emit(self.hooks.on_response, event)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with session.request(
            method, url, headers=self._headers, timeout=timeout, allow_redirects=False
        ) as response:
            length = response.content_length
            limit = self.max_response_bytes
            if length is not None and length > limit:
                raise ResponseTooLargeError(
                    f"response body of {length} bytes exceeds max_response_bytes={limit}",
                    retryable=False,
                )
            if length is not None:
                body = await response.read()
            else:
                body = await _read_chunked(response, limit)
            return response.status, response.headers, body

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError:
        parsed = _error_body(body, self._api_key)
        retry_after = parse_retry_after(headers)
        if status == 429 and retry_after is not None:
            self.gate.push(min(retry_after, self.retry.max_retry_after))
        cls = status_error_class(status)
        detail = _detail(parsed)
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
        return cls(
            message,
            status_code=status,
            request_id=headers.get("x-request-id") or headers.get("request-id"),
            body=parsed,
            retry_after=retry_after,
        )


async def _read_chunked(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLargeError(
                f"response body exceeds max_response_bytes={limit}", retryable=False
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_error(exc: aiohttp.ClientError) -> TransportError:
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)) or (
        isinstance(exc.__cause__, ssl.SSLCertVerificationError)
    ):
        return TransportError(f"TLS failure: {exc}", retryable=False)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return RequestTimeoutError(f"timed out: {exc}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(f"response body cut short: {exc}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError("server closed the connection before responding")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientResponseError)):
        return TransportError(f"connection failed: {exc}")
    return TransportError(f"HTTP client error: {exc}", retryable=False)


def _error_body(body: bytes, api_key: str) -> Any:
    if not body:
        return None
    # An echoing proxy must not leak the key into our errors: redact before anything else.
    body = body.replace(api_key.encode(), b"[redacted]")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_ERROR_TEXT_LIMIT].decode("utf-8", "replace")


def _detail(parsed: Any) -> str:
    if isinstance(parsed, dict):
        for key in ("message", "error", "detail", "title"):
            value = parsed.get(key)
            if isinstance(value, str) and value:
                return value[:200]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:200]
    if isinstance(parsed, str):
        return parsed.strip()[:200]
    return ""
