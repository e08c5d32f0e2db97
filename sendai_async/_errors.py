"""The exceptions sendai_async raises, and nothing else.

::

    SendAIError
    ├── ConfigurationError        (also ValueError)  bad or missing settings and arguments
    ├── ClientClosedError         (also RuntimeError) a call on a client after aclose()
    ├── ReentrantCallError        (also RuntimeError) a SyncSendAI call from its own loop
    ├── CoordinatorError          shared limits unreachable (RedisCoordinator, "raise")
    ├── TransportError            no complete HTTP response: connect, reset, truncated body
    │   ├── RequestTimeoutError   (also TimeoutError)
    │   └── ResponseTooLargeError a body over the client's size limit, refused unread
    ├── APIStatusError            non-2xx; .status_code .request_id .body .retry_after
    │   ├── BadRequestError       400
    │   ├── AuthenticationError   401
    │   ├── PermissionDeniedError 403
    │   ├── NotFoundError         404
    │   ├── ConflictError         409 (e.g. an action refused in the task's state)
    │   ├── ContentTooLargeError  413 (an upload over the API's limits)
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError        429
    │   └── ServerError           5xx
    ├── DecodeError               (also ValueError) a 2xx body that is not JSON or not a task
    ├── PaginationError           a listing that would never end
    └── WaitTimeoutError          (also TimeoutError) tasks.wait ran out of time; .last

A failure after a state-changing request was sent (a reset, a timeout, a 5xx) leaves its
outcome unknown: such errors have ``outcome_unknown`` set and are not retried blindly.

Every error records the request it belongs to (method and a URL that never holds a secret)
and how many requests were made. Messages are built from those fields only, so an API key
can never leak through ``str(error)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._batch import BatchResult


class SendAIError(Exception):
    """Base class of every error raised by sendai_async.

    Attributes:
        message: The human-readable description, without secrets.
        method: HTTP method of the request, or ``None`` when no request was involved.
        url: URL of the request (never contains the API key), or ``None``.
        attempts: How many HTTP requests were made before giving up (0 when none was).
        retry_budget_exhausted: ``True`` when a retry was skipped because the client's
            retry budget was empty.
        batch: For a fatal error in ``get_many``, what finished before the batch stopped.
        resume_from: For an error while paging, the cursor that produced the failed page.
        request_sent: Whether the last request may have reached the server (``False``
            when it provably did not, e.g. the connection was refused; ``None`` when no
            request was involved).
        outcome_unknown: ``True`` when a state-changing request (report, upload) was sent
            but no complete answer came back: it may or may not have taken effect, so it
            was not retried. Check the resource before repeating it.

    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.attempts = attempts
        self.retry_budget_exhausted = False
        self.batch: BatchResult | None = None
        self.resume_from: Any = None
        self.request_sent: bool | None = None
        self.outcome_unknown = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors defeat the default pickling (it replays ``args``), so
        # errors cross process pools as class + message + attributes.
        return (_restore, (type(self), self.message, dict(self.__dict__)))

    def _set_message(self, message: str) -> None:
        """Replace the message everywhere it is kept (``args`` too, which tracebacks show)."""
        self.message = message
        self.args = (message,)

    def __str__(self) -> str:
        text = self.message
        if self.method and self.url:
            plural = "" if self.attempts == 1 else "s"
            text += f" ({self.method} {self.url}, {self.attempts} attempt{plural})"
        if self.outcome_unknown:
            text += (
                " [outcome unknown: the request was sent and may have taken effect; it was"
                " not retried because repeating it is not safe]"
            )
        if self.retry_budget_exhausted:
            text += " [not retried: the client's retry budget is exhausted]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, attempts={self.attempts})"


class TransportCause(Exception):  # noqa: N818 -- a cause, chained, never raised alone
    """What the HTTP library reported, chained as a transport error's ``__cause__``.

    aiohttp's own exceptions hold the request's headers (the API key among them) and
    server text; this keeps their class name and redacted message only.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.detail))


class ConfigurationError(SendAIError, ValueError):
    """A setting or argument is missing or invalid; raised before any request."""


class ClientClosedError(SendAIError, RuntimeError):
    """The client was closed with ``aclose()``; create a new one to make more calls."""


class ReentrantCallError(SendAIError, RuntimeError):
    """A ``SyncSendAI`` method was called from the client's own event-loop thread.

    That happens in a hook that calls back into the sync client: waiting there for the
    loop it blocks would deadlock, so the call fails instead. Use the async client
    (``sync_client.async_client``) inside hooks.
    """


class CoordinatorError(SendAIError):
    """The shared-limits backend (Redis) is unreachable and ``on_unavailable="raise"``.

    No request was sent: without the fleet's 429 gate and rate limit, sending could
    join a storm the fleet is meant to avoid.
    """


class TransportError(SendAIError):
    """No complete HTTP response arrived: connection refused or reset, body cut short.

    Attributes:
        retryable: Whether another attempt could succeed (``False`` for TLS certificate
            errors and oversized bodies).

    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        method: str | None = None,
        url: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, method=method, url=url, attempts=attempts)
        self.retryable = retryable


class RequestTimeoutError(TransportError, TimeoutError):
    """An attempt took longer than its ``Timeout`` (connect, read or total)."""


class ResponseTooLargeError(TransportError):
    """The response body exceeds the client's ``max_response_bytes`` and was not read."""


class APIStatusError(SendAIError):
    """The server answered with a non-2xx status.

    Attributes:
        status_code: The HTTP status.
        request_id: The server's request id (``x-request-id`` or ``request-id``), if sent.
        body: The parsed JSON body, or its text when it is not JSON, or ``None`` when empty.
        retry_after: Seconds the server asked us to wait, or ``None``.

    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        method: str | None = None,
        url: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, method=method, url=url, attempts=attempts)
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code}, "
            f"request_id={self.request_id!r}, attempts={self.attempts})"
        )


class BadRequestError(APIStatusError):
    """HTTP 400: the server rejected the request as malformed."""


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the key lacks the scope (e.g. ``task.read``) or project access."""


class NotFoundError(APIStatusError):
    """HTTP 404: no such team, project or task for this key."""


class ConflictError(APIStatusError):
    """HTTP 409: the resource is not in a state that allows the request."""


class ContentTooLargeError(APIStatusError):
    """HTTP 413: the upload exceeds the API's limits (40 MB a file, 20 MB a page, 100 files)."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422: the request was understood but refused (e.g. the task's state forbids it)."""


class RateLimitError(APIStatusError):
    """HTTP 429: the team's rate limit was hit; see ``retry_after``."""


class ServerError(APIStatusError):
    """HTTP 5xx: the server failed."""


class DecodeError(SendAIError, ValueError):
    """A 2xx response whose body is not JSON or not the expected shape.

    Attributes:
        path: Where in the body the problem is, e.g. ``payload.pages[0].width``, or ``None``.

    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        method: str | None = None,
        url: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, method=method, url=url, attempts=attempts)
        self.path = path


class PaginationError(SendAIError):
    """A listing repeated its cursor or produced endless empty pages."""


class WaitTimeoutError(SendAIError, TimeoutError):
    """``tasks.wait`` ran out of time before the task reached the awaited status.

    Attributes:
        last: The last ``Task`` seen while waiting, or ``None`` if no poll succeeded.

    """

    def __init__(self, message: str, *, last: Any = None, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.last = last


def _restore(cls: type[SendAIError], message: str, state: dict[str, Any]) -> SendAIError:
    """Rebuild a pickled error without calling its (keyword-only) constructor."""
    error = cls.__new__(cls, message)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: ContentTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """Return the most specific ``APIStatusError`` subclass for an HTTP status."""
    if status >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status, APIStatusError)
