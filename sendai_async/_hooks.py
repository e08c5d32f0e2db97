"""Observation hooks: small frozen events handed to user callables once per attempt."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from ._errors import SendAIError
from ._logging import logger


@attrs.frozen(kw_only=True)
class RequestEvent:
    """An attempt is about to be sent."""

    method: str
    url: str
    attempt: int


@attrs.frozen(kw_only=True)
class ResponseEvent:
    """An attempt ended, with a response (``status``) or without one (``error``)."""

    method: str
    url: str
    attempt: int
    status: int | None
    elapsed: float
    request_id: str | None = None
    error: SendAIError | None = None


@attrs.frozen(kw_only=True)
class RetryEvent:
    """An attempt failed and another follows after ``delay`` seconds."""

    method: str
    url: str
    attempt: int
    delay: float
    cause: SendAIError


@attrs.frozen(kw_only=True)
class CoordinationEvent:
    """The shared-limits backend (Redis) became unreachable, or reachable again.

    ``state`` is ``"unavailable"`` (the client falls back to local limits, or fails calls
    with ``on_unavailable="raise"``) or ``"restored"``.
    """

    state: str
    backend: str
    detail: str = ""


Event = RequestEvent | ResponseEvent | RetryEvent | CoordinationEvent
Hook = Callable[[Any], Awaitable[None] | None]


def _as_tuple(value: Sequence[Hook] | None) -> tuple[Hook, ...]:
    return tuple(value or ())


@attrs.frozen(kw_only=True)
class Hooks:
    """Callables to observe requests, for metrics, tracing and logging.

    Each list holds sync or async callables that receive one event. A hook that raises is
    logged under ``sendai_async`` and never breaks the request.

    Args:
        on_request: Called with a ``RequestEvent`` before each attempt.
        on_response: Called with a ``ResponseEvent`` after each attempt.
        on_retry: Called with a ``RetryEvent`` before each backoff sleep.
        on_coordination: Called with a ``CoordinationEvent`` when a shared-limits
            backend (``RedisCoordinator``) is lost or comes back.

    """

    on_request: tuple[Hook, ...] = attrs.field(default=(), converter=_as_tuple)
    on_response: tuple[Hook, ...] = attrs.field(default=(), converter=_as_tuple)
    on_retry: tuple[Hook, ...] = attrs.field(default=(), converter=_as_tuple)
    on_coordination: tuple[Hook, ...] = attrs.field(default=(), converter=_as_tuple)


async def emit(hooks: tuple[Hook, ...], event: Event) -> None:
    """Call every hook with ``event``; log, never raise, what a hook raises."""
    for hook in hooks:
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 -- a broken metrics hook must not fail a request
            logger.exception("hook %r raised on %s", hook, type(event).__name__)
