"""Limits the request path honours: the 429 gate, the retry budget, a proactive rate limit.

A *coordinator* builds the ``Limits`` of a client. ``LocalCoordinator`` (the default) keeps
them in this process; ``RedisCoordinator`` (``_redis.py``) shares them with every process
using the same Redis and team. The request path calls only ``Limits``:

* ``gate.wait(now)`` / ``gate.push(seconds)``: synchronous and local (a shared gate keeps a
  local copy, updated in the background), so checking it costs no round trip;
* ``await budget.spend(cost)`` (only when retrying) / ``budget.release(n)`` (synchronous,
  on every success);
* ``await admit()``: the proactive rate limit; returns at once when none is set.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs

from . import _retry
from ._errors import ConfigurationError
from ._hooks import Hooks
from ._retry import NotBeforeGate, RetryBudget


def _positive(_instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen
class RateLimit:
    """A proactive request rate limit: ``per_second`` on average, ``burst`` at once.

    Enforced with GCRA (the generic cell rate algorithm): a steady request every
    ``1 / per_second`` seconds, with up to ``burst`` requests allowed back to back. Per
    process with the default coordinator; for the whole fleet with ``RedisCoordinator``.
    """

    per_second: float = attrs.field(validator=_positive)
    burst: int = attrs.field(default=1, kw_only=True, validator=_positive)

    @property
    def interval(self) -> float:
        """Seconds between two requests at the steady rate."""
        return 1.0 / self.per_second


class Gate(Protocol):
    """The 429 gate: "send nothing before ..."."""

    def wait(self, now: float) -> float:
        """Return how long an attempt at ``now`` must wait; 0 when open."""
        ...

    def push(self, delay: float) -> None:
        """Hold every new attempt back for ``delay`` seconds from now."""
        ...


class Budget(Protocol):
    """The retry budget: retries spend tokens, successes earn them back.

    Spending is asynchronous (a shared budget may ask its server when its local lease
    runs dry, which only happens while retrying); earning is synchronous, as it happens
    on every success.
    """

    async def spend(self, cost: int) -> bool:
        """Spend ``cost`` tokens if that many are available."""
        ...

    def release(self, amount: int) -> None:
        """Return ``amount`` tokens."""
        ...


class Limiter(Protocol):
    """A proactive rate limit."""

    async def reserve(self) -> float:
        """Book the next send slot; return seconds to wait for it (0: send now)."""
        ...


class LocalLimiter:
    """GCRA in this process: each call books the next slot of the steady schedule."""

    __slots__ = ("_lock", "_tat", "limit")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._tat = 0.0  # the theoretical arrival time of the next request
        self._lock = threading.Lock()  # one client may serve several threads' loops

    async def reserve(self) -> float:
        """Book a slot; return how long to wait for it."""
        return self.reserve_now(_retry._clock())

    def reserve_now(self, now: float) -> float:
        """Book a slot at ``now`` (synchronously); return the wait."""
        interval = self.limit.interval
        tolerance = interval * (self.limit.burst - 1)
        with self._lock:
            start = max(self._tat, now)
            self._tat = start + interval
        return max(0.0, start - tolerance - now)


@attrs.define
class Limits:
    """What one client's requests consult: gate, budget (or none) and limiter (or none).

    ``check``, when set, runs before every attempt and raises to refuse it (a shared
    backend that is down and configured to fail calls). ``ready``, when set, is awaited
    before every attempt: a shared gate uses it to read the fleet's gate once per event
    loop before the first request, so a process joining during a 429 window does not send
    a first wave into it.
    """

    gate: Gate
    budget: Budget | None
    limiter: Limiter | None
    check: Callable[[], None] | None = None
    ready: Callable[[], Awaitable[None]] | None = None

    @property
    def slow_path(self) -> bool:
        """Whether every attempt must go through the waits (a limiter, a check or a sync)."""
        return self.limiter is not None or self.check is not None or self.ready is not None

    async def admit(self) -> float:
        """Book a send slot under the rate limit; return seconds to wait (0 without one)."""
        if self.limiter is None:
            return 0.0
        return await self.limiter.reserve()


@attrs.frozen(kw_only=True)
class ClientSettings:
    """What a coordinator needs to know about the client it serves."""

    base_url: str
    team_id: str | None
    budget_capacity: int | None
    rate_limit: RateLimit | None
    hooks: Hooks


class Coordinator(Protocol):
    """Builds the ``Limits`` of a client: local, or shared through a server."""

    def limits_for(self, settings: ClientSettings) -> Limits:
        """Return the limits for a client with ``settings``."""
        ...


def local_limits(settings: ClientSettings) -> Limits:
    """Return limits kept in this process only."""
    return Limits(
        gate=NotBeforeGate(),
        budget=RetryBudget(settings.budget_capacity) if settings.budget_capacity else None,
        limiter=LocalLimiter(settings.rate_limit) if settings.rate_limit else None,
    )


class LocalCoordinator:
    """The default: every limit is per client, in this process."""

    def limits_for(self, settings: ClientSettings) -> Limits:
        """Return in-process limits."""
        return local_limits(settings)

    def __repr__(self) -> str:
        return "LocalCoordinator()"
