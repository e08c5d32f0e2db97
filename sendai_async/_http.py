"""The request path: one retried call made of attempts, each a single HTTP exchange.

Reading order: ``Requester.request`` (builds the call, retries, decodes) -> ``_Call.attempt``
(429 gate, deadline, hooks, what may be retried) -> ``Transport.exchange`` (send, read the
body within the size limit) -> ``Transport.status_error`` for non-2xx. The whole exchange,
body read included, is inside the retry, so a body cut off mid-stream is retried like a
refused connection, when retrying is safe.

What is safe to retry: any request that provably never reached the server (connection
refused, DNS failure, connect timeout) and any 429. After an ambiguous failure (sent, then
a reset, a timeout, a cut body or a 5xx) only an idempotent request is retried; a
state-changing one either proves its outcome with ``recover`` (reading the resource back)
or fails with ``outcome_unknown`` set.
"""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import attrs
import orjson
from yarl import URL

from . import _retry
from ._config import ENV_TEAM_ID, RetryPolicy, Timeout
from ._coordination import Limits
from ._errors import (
    APIStatusError,
    ClientClosedError,
    ConfigurationError,
    DecodeError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    SendAIError,
    TransportCause,
    TransportError,
    status_error_class,
)
from ._hooks import Hooks, RequestEvent, ResponseEvent, RetryEvent, emit
from ._logging import logger
from ._redact import Redactor
from ._retry import (
    is_retryable,
    parse_retry_after,
    refund_success,
    retries_after,
    retry_after_first_failure,
)
from ._session import SessionManager
from ._version import __version__

if TYPE_CHECKING:
    from ._multipart import Multipart

T = TypeVar("T")

_CHUNK = 64 * 1024
_REQUEST_ID_LIMIT = 128
_DETAIL_LIMIT = 200
_SNIPPET_LIMIT = 120
# Errors raised before a single byte of the request left: retrying them is always safe.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)  # one class from 3.11 on, two on 3.10

Decode = Callable[[bytes], T]
Recover = Callable[[], Awaitable[bytes | None]]


def default_user_agent() -> str:
    """Return the User-Agent naming the SDK, its version, Python and aiohttp."""
    return (
        f"sendai-async/{__version__} python/{platform.python_version()} "
        f"aiohttp/{aiohttp.__version__}"
    )


class RawResponse:
    """A complete 2xx response: its request, status, content type, body and attempts.

    A plain slotted class, not a frozen attrs one: one is built per request, and a frozen
    ``__init__`` costs about a microsecond more. Users never see one: ``Requester.decoded``
    turns it into the call's result (the bulk pool does that on the consumer's side, so
    this keeps only what decoding needs, not the response's headers).
    """

    __slots__ = ("attempts", "body", "content_type", "method", "status", "url")

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        content_type: str,
        body: bytes,
        attempts: int,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.content_type = content_type
        self.body = body
        self.attempts = attempts


class Transport:
    """What every view of one client shares: sessions, headers, the 429 gate, the budget.

    ``SendAI.with_options`` views share one ``Transport``, so they share connection pools,
    a 429 from any of them holds back all of them, and retries draw on one budget.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        hooks: Hooks,
        max_response_bytes: int,
        sessions: SessionManager,
        user_agent: str,
        limits: Limits,
        pool_limit: int | None,
        session_headers: bool = False,
    ) -> None:
        """Set up the shared state.

        ``session_headers`` says the sessions ``sessions`` hands out were created with
        ``headers`` as their defaults, so requests need not repeat them.
        """
        self.redactor = Redactor(api_key)
        self.pool_limit = pool_limit
        self.base_url = base_url
        self.hooks = hooks
        self.max_response_bytes = max_response_bytes
        self.sessions = sessions
        self.limits = limits
        self.gate = limits.gate
        # What every request carries. Sessions the SDK creates hold these as their
        # defaults (see session_headers): aiohttp copies defaults in one step, where
        # merging per-request headers costs about a microsecond per request. A caller's
        # own session gets them with every request instead.
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        json_type = {"Content-Type": "application/json"}
        self.request_headers: Mapping[str, str] | None = None
        self.json_headers: Mapping[str, str] = json_type
        if not session_headers:
            self.request_headers = self.headers
            self.json_headers = {**self.headers, **json_type}
        self._client_timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}
        self._last_client_timeout: tuple[Timeout | None, aiohttp.ClientTimeout] = (
            None,
            aiohttp.ClientTimeout(),
        )
        self.retries = 0  # retries made through this transport, for summaries
        self.requests = 0  # attempts sent through this transport

    def pool_width(self, concurrency: int) -> int:
        """Return how many workers a batch may run: at most one per pooled connection.

        More workers than pooled connections would only queue for a connection, and that
        queueing counts against each attempt's timeout.
        """
        return concurrency if self.pool_limit is None else min(concurrency, self.pool_limit)

    def client_timeout(self, timeout: Timeout, remaining: float) -> aiohttp.ClientTimeout:
        """Translate a ``Timeout`` for aiohttp, capped by what is left of the deadline.

        ``Timeout.connect`` maps to ``sock_connect``, not aiohttp's ``connect``: the latter
        also bounds the wait for a pooled connection, which is the batch helper's business,
        not a network fault.
        """
        total = timeout.total if timeout.total is not None else math.inf
        if total <= remaining:
            # Nearly every attempt uses the view's own Timeout object: an identity check
            # spares hashing a frozen attrs instance per attempt. One tuple, swapped whole,
            # so threads sharing this transport never see half an update.
            last_timeout, last_client_timeout = self._last_client_timeout
            if last_timeout is timeout:
                return last_client_timeout
            cached = self._client_timeouts.get(timeout)
            if cached is None:
                cached = self._client_timeouts[timeout] = aiohttp.ClientTimeout(
                    total=timeout.total, sock_connect=timeout.connect, sock_read=timeout.read
                )
            self._last_client_timeout = (timeout, cached)
            return cached
        # The call's deadline is nearer than the attempt's own limit: it wins.
        return aiohttp.ClientTimeout(
            total=remaining, sock_connect=timeout.connect, sock_read=timeout.read
        )

    async def exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        timeout: aiohttp.ClientTimeout,
        headers: Mapping[str, str] | None,
        data: Any,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one request and read its whole body within ``max_response_bytes``."""
        request = session.request(
            method, url, headers=headers, data=data, timeout=timeout, allow_redirects=False
        )
        if data is not None:
            async with request as response:
                return await self._read(response)
        # Without a body aiohttp starts no writer task, so all its context manager's exit
        # would do is release(): awaiting the request directly spares that manager's
        # four coroutines on every GET.
        response = await request
        try:
            return await self._read(response)
        finally:
            response.release()

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[int, Mapping[str, str], bytes]:
        """Read ``response``'s whole body within ``max_response_bytes``."""
        length = response.content_length
        limit = self.max_response_bytes
        if length is not None and length > limit:
            raise ResponseTooLargeError(
                f"response body of {length} bytes exceeds max_response_bytes={limit}",
                retryable=False,
            )
        if length is not None and "Content-Encoding" not in response.headers:
            body = await response.read()  # the length is what will be read: bounded
        else:
            # Chunked or compressed: count what is decoded, so that a small gzip body
            # cannot inflate past the limit.
            body = await _read_limited(response, limit)
        return response.status, response.headers, body

    def request_id(self, headers: Mapping[str, str]) -> str | None:
        """Return the server's request id, redacted and bounded, or ``None``."""
        raw = headers.get("x-request-id") or headers.get("request-id")
        return self.redactor.clean(raw, _REQUEST_ID_LIMIT) if raw else None

    def status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError:
        """Build the typed error for a non-2xx answer; a 429's wait closes the gate."""
        parsed = self._error_body(body)
        retry_after = parse_retry_after(headers)
        if status == 429 and retry_after is not None:
            self.gate.push(retry_after)
        cls = status_error_class(status)
        detail = _detail(parsed)
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
        return cls(
            message,
            status_code=status,
            request_id=self.request_id(headers),
            body=parsed,
            retry_after=retry_after,
        )

    def _error_body(self, body: bytes) -> Any:
        """Decode an error body (JSON, else text), every string in it redacted."""
        if not body:
            return None
        try:
            return self.redactor.clean_json(orjson.loads(body))
        except orjson.JSONDecodeError:
            return self.redactor.clean_bytes(body)

    def transport_error(self, exc: aiohttp.ClientError) -> TransportError:
        """Map an aiohttp failure to our error, chaining a redacted stand-in for it."""
        error = _transport_error(exc, self.redactor.clean(str(exc), 500))
        error.__cause__ = TransportCause(f"aiohttp.{type(exc).__name__}", error.message)
        return error

    def explain_decode_error(self, error: DecodeError, response: RawResponse) -> None:
        """Say what a body that is not JSON looks like: a login page, a proxy's error."""
        content_type = response.content_type
        if "json" in content_type.lower():
            return
        snippet = self.redactor.clean_bytes(response.body[:_SNIPPET_LIMIT], _SNIPPET_LIMIT)
        shown_type = self.redactor.clean(content_type, 100) or "none"
        error._set_message(f"{error.message} (content type {shown_type}; body starts {snippet!r})")


@attrs.frozen(kw_only=True)
class RequestOptions:
    """The defaults of one client view: per-attempt timeout, retry policy and team."""

    timeout: Timeout
    retry: RetryPolicy
    team_id: str | None


class Requester:
    """Make retried requests through a shared ``Transport`` with one view's defaults.

    The resources (``tasks``, ``uploads``, listings) hold a ``Requester``; they build paths
    and choose decoders, and never touch sessions, retries or errors themselves.
    """

    __slots__ = ("options", "transport")

    def __init__(self, transport: Transport, options: RequestOptions) -> None:
        self.transport = transport
        self.options = options

    def team(self, team_id: str | None) -> str:
        """Return the call's team: its own ``team_id`` or the view's default.

        Raises:
            ConfigurationError: neither is set.

        """
        team: object = team_id if team_id is not None else self.options.team_id
        if team is None:
            raise ConfigurationError(
                f"no team: pass team_id=... to the client or the call, or set {ENV_TEAM_ID}"
            )
        if not isinstance(team, str) or not team:
            raise ConfigurationError(f"team_id must be a non-empty string, got {team!r:.80}")
        return team

    async def request(
        self,
        method: str,
        path: str,
        *,
        decode: Decode[T],
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        files: Multipart | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        recover: Recover | None = None,
    ) -> T:
        """Make a retried request to ``base_url + path`` and decode its body.

        Args:
            method: The HTTP method.
            path: Already percent-encoded, starting with ``/``.
            decode: Turns the 2xx body into the result; a ``DecodeError`` it raises gets
                this call's method, URL and attempts.
            idempotent: Whether repeating the request after an ambiguous failure is safe.
            params: Query parameters.
            json: A JSON body.
            files: A multipart body, rebuilt for every attempt.
            timeout: Overrides the view's per-attempt ``Timeout``.
            retry: Overrides the view's ``RetryPolicy``.
            recover: For a request that is not idempotent: after an ambiguous failure,
                returns a body proving the request took effect (decoded as the answer
                would have been), or ``None`` when it did not (then retrying is safe).

        Raises:
            SendAIError: a subclass describing the last failure, with ``attempts`` set.

        """
        response = await self.respond(
            method,
            path,
            idempotent=idempotent,
            params=params,
            json=json,
            files=files,
            timeout=timeout,
            retry=retry,
            recover=recover,
        )
        return self.decoded(response, decode)

    async def respond(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        files: Multipart | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        recover: Recover | None = None,
    ) -> RawResponse:
        """Make the retried request of ``request`` and return its 2xx response undecoded.

        For callers that decode elsewhere, with ``decoded``: the bulk pool decodes on the
        consumer's side, where the result is used while it is still in the CPU cache.

        Raises:
            SendAIError: a subclass describing the last failure, with ``attempts`` set.

        """
        transport = self.transport
        shown_url = transport.base_url + path
        url = URL(shown_url, encoded=True)
        if params:
            url = url.update_query(params)
            shown_url = str(url)
        policy = retry or self.options.retry
        call = _Call(
            transport,
            method,
            url,
            shown_url,
            timeout=timeout or self.options.timeout,
            policy=policy,
            idempotent=idempotent,
            json=json,
            files=files,
            recover=recover,
        )
        budget = transport.limits.budget
        deadline_at = _retry._clock() + policy.deadline
        try:
            # The first attempt is made here, not inside the retry machinery: most calls
            # succeed at once and should pay for neither tenacity nor another coroutine.
            first_failure: SendAIError | None = None
            try:
                response = await call.attempt(1, deadline_at)
            except SendAIError as exc:
                if not retries_after(exc, policy):
                    raise
                first_failure = exc  # retried below, outside this handler's context
            else:
                refund_success(budget)
            if first_failure is not None:
                response = await retry_after_first_failure(
                    call.attempt,
                    first_failure,
                    policy=policy,
                    budget=budget,
                    deadline_at=deadline_at,
                    on_retry=call.on_retry,
                )
        finally:
            if files is not None:
                files.close()
        return response

    def decoded(self, response: RawResponse, decode: Decode[T]) -> T:
        """Decode ``response``'s body; a ``DecodeError`` gets the request's context.

        Raises:
            DecodeError: the body is not what ``decode`` expects; its message is redacted,
                says what the body looks like if it is not JSON, and carries the method,
                URL and attempts.

        """
        try:
            return decode(response.body)
        except DecodeError as exc:
            # Decoders quote bad values (a malformed timestamp): those are server text too.
            transport = self.transport
            exc._set_message(transport.redactor.clean(exc.message, 1000))
            transport.explain_decode_error(exc, response)
            exc.method, exc.url, exc.attempts = response.method, response.url, response.attempts
            raise


class _Call:
    """One retried call: what every attempt of it needs, and the attempt itself."""

    __slots__ = (
        "data",
        "files",
        "headers",
        "idempotent",
        "method",
        "policy",
        "recover",
        "shown_url",
        "timeout",
        "transport",
        "url",
    )

    def __init__(
        self,
        transport: Transport,
        method: str,
        url: URL,
        shown_url: str,
        *,
        timeout: Timeout,
        policy: RetryPolicy,
        idempotent: bool,
        json: Any,
        files: Multipart | None,
        recover: Recover | None,
    ) -> None:
        self.transport = transport
        self.method = method
        self.url = url
        self.shown_url = shown_url
        self.timeout = timeout
        self.policy = policy
        self.idempotent = idempotent
        self.recover = recover
        self.files = files
        self.data: bytes | None = None
        self.headers = transport.request_headers
        if json is not None:
            self.data = orjson.dumps(json)
            self.headers = transport.json_headers

    def _stamp(self, error: SendAIError, attempts: int) -> SendAIError:
        error.method, error.url, error.attempts = self.method, self.shown_url, attempts
        return error

    async def _time_left(self, number: int, deadline_at: float) -> float:
        """Wait at the 429 gate if this call accepts to; return what is left of its deadline."""
        ready = self.transport.limits.ready
        if ready is not None:  # a shared gate's first sync in this loop: learn it first
            await ready()
        now = _retry._clock()
        hold = self.transport.gate.wait(now)
        if hold > 0:  # a 429 elsewhere in this client asked everyone to wait
            # Never wait longer than this call would for its own retry: fail instead, so
            # one long Retry-After cannot stall a batch or a web handler's deadline.
            if hold > min(self.policy.max_retry_after, deadline_at - now):
                raise self._stamp(_gate_refusal(hold), number - 1)
            await _retry._sleep(hold)
            now = _retry._clock()
        limits = self.transport.limits
        if limits.check is not None:
            try:
                limits.check()
            except SendAIError as refused:
                raise self._stamp(refused, number - 1) from None
        if limits.limiter is not None:
            slot = await limits.admit()
            if slot > deadline_at - now:
                raise self._stamp(
                    RequestTimeoutError(
                        f"the client's rate limit would delay this call {slot:.1f} s, past "
                        "its deadline"
                    ),
                    number - 1,
                )
            if slot > 0:
                await _retry._sleep(slot)
            now = _retry._clock()
        remaining = deadline_at - now
        if remaining <= 0:
            raise self._stamp(RequestTimeoutError("the call's deadline passed"), number - 1)
        return remaining

    async def attempt(self, number: int, deadline_at: float) -> RawResponse:
        """Make attempt ``number``; raise a ``SendAIError`` carrying this call's context."""
        transport = self.transport
        limits = transport.limits
        now = _retry._clock()
        if limits.slow_path or limits.gate.wait(now):
            remaining = await self._time_left(number, deadline_at)
        else:  # the common case, without a coroutine call: nothing to wait for
            remaining = deadline_at - now
            if remaining <= 0:
                raise self._stamp(RequestTimeoutError("the call's deadline passed"), number - 1)
        if self.files is not None and number > 1 and not self.files.replayable:
            raise self._stamp(
                TransportError("a non-seekable upload stream cannot be sent again"), number - 1
            )
        session = transport.sessions.current() or await transport.sessions.get()
        if transport.hooks.on_request:
            await emit(
                transport.hooks.on_request,
                RequestEvent(method=self.method, url=self.shown_url, attempt=number),
            )
        started = _retry._clock()
        transport.requests += 1
        error: SendAIError
        sent: bool | None = True
        data = self.data if self.files is None else self.files.form()
        try:
            status, headers, body = await transport.exchange(
                session,
                self.method,
                self.url,
                transport.client_timeout(self.timeout, remaining),
                self.headers,
                data,
            )
        except (
            SendAIError,
            RuntimeError,
            asyncio.TimeoutError,
            TimeoutError,
            aiohttp.ClientError,
        ) as exc:
            error, sent = self._failure(exc, session, number)
        else:
            if 200 <= status < 300:
                response = RawResponse(
                    self.method,
                    self.shown_url,
                    status,
                    headers.get("Content-Type", ""),
                    body,
                    number,
                )
                # Reporting a success costs a call; skip it when nobody listens.
                if transport.hooks.on_response or logger.isEnabledFor(logging.DEBUG):
                    await self._observe(number, started, status, headers, None)
                return response
            error = transport.status_error(status, headers, body)
            sent = status != 429  # a 429 is a refusal: the request was not acted on
        error.request_sent = sent
        self._stamp(error, number)
        status_code = error.status_code if isinstance(error, APIStatusError) else None
        await self._observe(number, started, status_code, {}, error)
        if sent and not self.idempotent and is_retryable(error, self.policy):
            return await self._settle_ambiguous(error, number)
        raise error

    def _failure(
        self, exc: BaseException, session: aiohttp.ClientSession, number: int
    ) -> tuple[SendAIError, bool]:
        """Map what an exchange raised to our error, and whether the request was sent."""
        if isinstance(exc, SendAIError):
            return exc, True
        if isinstance(exc, aiohttp.ClientError):
            return self.transport.transport_error(exc), not isinstance(exc, _NOT_SENT)
        if isinstance(exc, _TIMEOUTS):
            error = RequestTimeoutError(f"no complete response within the timeout ({self.timeout})")
            error.__cause__ = exc
            return error, True
        if session.closed:  # aclose() ran while this attempt waited (in a hook, for a socket)
            raise self._stamp(_closed_error(), number - 1) from None
        raise exc

    async def _settle_ambiguous(self, error: SendAIError, number: int) -> RawResponse:
        """Decide a state-changing request whose fate is unknown: prove it, or give up."""
        if self.recover is None:
            error.outcome_unknown = True
            raise error
        try:
            proof = await self.recover()
        except SendAIError as read_back:
            error.outcome_unknown = True
            raise error from read_back
        if proof is None:
            raise error  # provably not applied: the retry loop may send it again
        logger.info(
            "%s %s: attempt %d failed (%s) but the read-back shows it took effect",
            self.method,
            self.shown_url,
            number,
            error.message,
        )
        return RawResponse(self.method, self.shown_url, 200, "application/json", proof, number)

    async def on_retry(self, number: int, delay: float, cause: SendAIError) -> None:
        """Count, log and report a retry before its backoff sleep."""
        transport = self.transport
        transport.retries += 1
        logger.info(
            "%s %s: attempt %d failed (%s); retrying in %.2fs",
            self.method,
            self.shown_url,
            number,
            cause.message,
            delay,
        )
        if transport.hooks.on_retry:
            event = RetryEvent(
                method=self.method, url=self.shown_url, attempt=number, delay=delay, cause=cause
            )
            await emit(transport.hooks.on_retry, event)

    async def _observe(
        self,
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
                "%s %s -> %s in %.1f ms (attempt %d)",
                self.method,
                self.shown_url,
                outcome,
                elapsed * 1e3,
                number,
            )
        hooks = self.transport.hooks.on_response
        if hooks:
            request_id = (
                error.request_id
                if isinstance(error, APIStatusError)
                else self.transport.request_id(headers)
            )
            event = ResponseEvent(
                method=self.method,
                url=self.shown_url,
                attempt=number,
                status=status,
                elapsed=elapsed,
                request_id=request_id,
                error=error,
            )
            await emit(hooks, event)


def _closed_error() -> ClientClosedError:
    error = ClientClosedError(
        "this SendAI client was closed while the request was being made; create a new client"
    )
    error.request_sent = False
    return error


def _gate_refusal(hold: float) -> RateLimitError:
    error = RateLimitError(
        f"the server asked every request to wait {hold:.1f} s (Retry-After), longer than "
        "this call accepts (RetryPolicy.max_retry_after or its remaining deadline)",
        status_code=429,
        retry_after=hold,
    )
    error.request_sent = False
    return error


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLargeError(
                f"response body exceeds max_response_bytes={limit} (after decompression)",
                retryable=False,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_error(exc: aiohttp.ClientError, text: str) -> TransportError:
    """Choose the error class for an aiohttp failure; ``text`` is its redacted message."""
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)) or (
        isinstance(exc.__cause__, ssl.SSLCertVerificationError)
    ):
        return TransportError(f"TLS failure: {text}", retryable=False)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return RequestTimeoutError(f"timed out: {text}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(f"response body cut short: {text}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError("server closed the connection before responding")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientResponseError)):
        return TransportError(f"connection failed: {text}")
    return TransportError(f"HTTP client error: {text}", retryable=False)


def _detail(parsed: Any) -> str:
    if isinstance(parsed, dict):
        for key in ("message", "error", "detail", "title"):
            value = parsed.get(key)
            if isinstance(value, str) and value:
                return value[:_DETAIL_LIMIT]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:_DETAIL_LIMIT]
    if isinstance(parsed, str):
        return parsed.strip()[:_DETAIL_LIMIT]
    return ""
