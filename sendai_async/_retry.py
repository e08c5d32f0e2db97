"""Retries: which failures are retried, how long to wait, and the tenacity adapter.

tenacity does the looping; this module decides. Every call builds a fresh ``AsyncRetrying``
(a shared one would share its statistics and state across concurrent calls). tenacity's own
types never leave this module.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from ._config import RetryPolicy
from ._errors import APIStatusError, RequestTimeoutError, SendAIError, TransportError

if TYPE_CHECKING:
    from ._coordination import Budget

T = TypeVar("T")

# Indirections so tests (and sendai_async.testing) can run retries without real waiting.
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
_clock: Callable[[], float] = time.monotonic
_wall_clock: Callable[[], float] = time.time

_RETRY_COST = 5
_TIMEOUT_RETRY_COST = 10
# A 429 that says when to come back closes the client's (or the fleet's) gate: every worker
# waits it out, so its retries cannot storm. Charging them like a failure would let one
# rate-limit window empty the budget and fail IDs that only had to wait; one token each
# still bounds a server that answers 429 forever.
_GATED_RETRY_COST = 1
_SUCCESS_REFUND = 1
_MAX_GATE = 86_400.0  # a day: a larger Retry-After is nonsense, not a reason to overflow


async def _dynamic_sleep(seconds: float) -> None:
    # Looked up at call time so a patched `_sleep` takes effect in running code.
    await _sleep(seconds)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait in seconds the server asked for, or ``None``.

    Reads ``retry-after-ms`` first (milliseconds), then ``Retry-After`` as delta-seconds
    or as an HTTP date in any of the three RFC 9110 formats (taken as UTC). A garbage or
    negative value is ignored rather than failing the call.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            millis = float(raw_ms)
        except ValueError:
            millis = -1.0
        if 0 <= millis < float("inf"):
            return millis / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        return _seconds_until_http_date(raw)
    return seconds if 0 <= seconds < float("inf") else None


def _seconds_until_http_date(raw: str) -> float | None:
    # email.utils reads IMF-fixdate, RFC 850 and asctime alike; all three are UTC by spec.
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - _wall_clock())


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether ``exc`` is worth another attempt under ``policy``."""
    if isinstance(exc, SendAIError) and exc.outcome_unknown:
        return False
    if isinstance(exc, APIStatusError):
        return exc.status_code in policy.retry_statuses
    if isinstance(exc, TransportError):
        return exc.retryable
    return False


def backoff(attempt: int, policy: RetryPolicy) -> float:
    """Return the full-jitter backoff before the attempt after ``attempt`` (1-based)."""
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)  # noqa: S311 -- jitter, not cryptography


class RetryBudget:
    """A client-wide token bucket that caps how many retries a client makes.

    Modelled on botocore's retry quota: when the server is failing everything, retries are
    what multiply its load, so each retry spends tokens and successes earn them back. An
    empty bucket means failures are returned without retrying.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._tokens = capacity
        self._lock = threading.Lock()  # one client may serve several threads' loops

    @property
    def tokens(self) -> int:
        """Tokens left."""
        return self._tokens

    async def spend(self, cost: int) -> bool:
        """Spend ``cost`` tokens if that many are left (the ``Budget`` protocol)."""
        return self.acquire(cost)

    def acquire(self, cost: int) -> bool:
        """Spend ``cost`` tokens if that many are left."""
        with self._lock:
            if self._tokens < cost:
                return False
            self._tokens -= cost
            return True

    def release(self, amount: int) -> None:
        """Return ``amount`` tokens, up to the capacity."""
        if self._tokens >= self.capacity:
            # The usual state, checked without the lock: every success refunds, and a
            # full bucket stays full. Racing a spend can at worst drop one refund.
            return
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + amount)


class NotBeforeGate:
    """A client-wide "send nothing before" time, set by a 429's ``Retry-After``.

    In bulk, one 429 means the team's limit is hit for every worker; each waiting only for
    its own retry would send a wave of doomed requests. Every attempt consults the gate and
    either waits for it or, when the wait is longer than that call accepts, fails at once.
    """

    __slots__ = ("_not_before",)

    def __init__(self) -> None:
        self._not_before = 0.0

    def push(self, delay: float) -> None:
        """Hold every new attempt back for ``delay`` seconds from now."""
        self._not_before = max(self._not_before, _clock() + min(delay, _MAX_GATE))

    def wait(self, now: float) -> float:
        """Return how long an attempt at ``now`` must wait; 0 when the gate is open."""
        return self._not_before - now if self._not_before > now else 0.0


class _StopDecision:
    """tenacity ``stop``: decided after ``wait`` has computed the upcoming sleep.

    Asynchronous, because spending from a shared retry budget may need a round trip.
    """

    def __init__(self, policy: RetryPolicy, deadline_at: float, budget: Budget | None) -> None:
        self.policy = policy
        self.deadline_at = deadline_at
        self.budget = budget
        self.spent = 0

    async def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if state.attempt_number >= self.policy.max_attempts or not isinstance(exc, SendAIError):
            return True
        server_wait = getattr(exc, "retry_after", None)
        if server_wait is not None and server_wait > self.policy.max_retry_after:
            return True
        if _clock() + (state.upcoming_sleep or 0.0) >= self.deadline_at:
            return True
        if self.budget is not None:
            cost = _retry_cost(exc)
            if not await self.budget.spend(cost):
                exc.retry_budget_exhausted = True
                return True
            self.spent = cost
        return False


def _retry_cost(exc: SendAIError) -> int:
    """Tokens a retry after ``exc`` takes from the retry budget."""
    if isinstance(exc, RequestTimeoutError):
        return _TIMEOUT_RETRY_COST
    if isinstance(exc, APIStatusError) and exc.status_code == 429 and exc.retry_after is not None:
        return _GATED_RETRY_COST
    return _RETRY_COST


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        server_wait = getattr(exc, "retry_after", None)
        if server_wait is not None:
            return float(server_wait)
        return backoff(state.attempt_number, policy)

    return wait


def retries_after(first_failure: SendAIError, policy: RetryPolicy) -> bool:
    """Whether a call whose first attempt raised ``first_failure`` goes on to retry.

    Most calls succeed at once, so the caller makes the first attempt itself, outside
    tenacity (which costs tens of microseconds per call: it inspects its callbacks on every
    iteration) and without a coroutine level of ours; only a call with something to retry
    is handed to ``retry_after_first_failure``.
    """
    return policy.max_attempts > 1 and is_retryable(first_failure, policy)


def refund_success(budget: Budget | None) -> None:
    """Earn back a little retry budget for a call that succeeded at its first attempt."""
    if budget is not None:
        budget.release(_SUCCESS_REFUND)


async def retry_after_first_failure(
    attempt: Callable[[int, float], Awaitable[T]],
    first_failure: SendAIError,
    *,
    policy: RetryPolicy,
    budget: Budget | None,
    deadline_at: float,
    on_retry: Callable[[int, float, SendAIError], Awaitable[None]] | None,
) -> T:
    """Hand a call to tenacity, replaying its first attempt's failure as tenacity's attempt 1.

    ``attempt(attempt_number, deadline_at)`` must raise only ``SendAIError`` subclasses; the
    last one is re-raised as is. Cancellation is never retried: it propagates out of
    tenacity at once.
    """
    stop = _StopDecision(policy, deadline_at, budget)

    async def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(exc, SendAIError):
            await on_retry(state.attempt_number, state.upcoming_sleep or 0.0, exc)

    retrying = AsyncRetrying(
        # An async stop (it may ask a shared budget) is awaited by tenacity >= 8.5; its
        # type hints do not say so yet.
        stop=stop,  # type: ignore[arg-type]
        wait=_wait(policy),
        retry=retry_if_exception(lambda exc: is_retryable(exc, policy)),
        sleep=_dynamic_sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    result: T
    async for attempt_state in retrying:
        with attempt_state:
            number = attempt_state.retry_state.attempt_number
            if number == 1:
                raise first_failure
            result = await attempt(number, deadline_at)
    if budget is not None:
        # A success after retrying repays what its last retry cost.
        budget.release(stop.spent or _SUCCESS_REFUND)
    return result
