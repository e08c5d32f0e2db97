"""``RedisCoordinator``: one 429 gate, retry budget and rate limit for a whole fleet.

Every process (Celery prefork children, gunicorn workers, replicas on other machines) that
uses the same Redis and team shares:

1. the 429 gate: a 429 with ``Retry-After`` anywhere holds back every process until then;
2. the retry budget (botocore-style token bucket), leased to each process in small batches;
3. the optional proactive ``RateLimit`` (GCRA).

All shared state is changed by Lua scripts that read the Redis server's clock (``TIME``)
and return *relative* waits, which each process sleeps on its own monotonic clock, so
clocks that disagree between machines do not matter. Keys share a hash tag, so they live
in one Redis Cluster slot.

The fast path costs no round trip when no rate limit is set: each process keeps a local
copy of the gate, updated by a pub/sub listener (one per event loop), and spends budget
from its lease. Redis down, slow or restarted: with ``on_unavailable="local"`` the client
falls back to local limits, logs one warning, emits a ``CoordinationEvent``, and returns
to Redis when the listener reconnects; with ``"raise"`` calls fail with
``CoordinatorError`` until then. Connections are per event loop and per process, like
the HTTP sessions (after ``os.fork()`` the child opens its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import weakref
from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from . import _retry
from ._coordination import ClientSettings, Limits, LocalLimiter, RateLimit
from ._errors import ConfigurationError, CoordinatorError
from ._hooks import CoordinationEvent, Hooks, emit
from ._logging import logger
from ._retry import NotBeforeGate, RetryBudget

if TYPE_CHECKING:
    from redis.asyncio import Redis

_GATE_PUSH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delay = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + delay > current then
  current = now + delay
  redis.call('SET', KEYS[1], current, 'PX', delay + 1000)
end
local remaining = current - now
redis.call('PUBLISH', ARGV[2], remaining)
return remaining
"""

_GATE_GET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > now then return current - now end
return 0
"""

_BUDGET_LEASE = """
local capacity = tonumber(ARGV[1])
local have = tonumber(redis.call('GET', KEYS[1]) or capacity)
local take = math.min(have, tonumber(ARGV[2]))
redis.call('SET', KEYS[1], have - take, 'EX', 86400)
return take
"""

_BUDGET_RETURN = """
local capacity = tonumber(ARGV[1])
local have = tonumber(redis.call('GET', KEYS[1]) or capacity)
redis.call('SET', KEYS[1], math.min(capacity, have + tonumber(ARGV[2])), 'EX', 86400)
return 1
"""

# GCRA by reservation: every call books the next slot of the steady schedule, so waits
# add up exactly across the fleet. Times in milliseconds, as strings (Lua numbers would
# be truncated to integers on the way back).
_GCRA_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local new_tat = start + tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
local wait = start - tonumber(ARGV[2]) - now
if wait < 0 then wait = 0 end
return tostring(wait)
"""

_REDIS_DOWN = (OSError, asyncio.TimeoutError)  # plus redis.exceptions.RedisError, see below
_JITTER_SHARE = 0.1
_JITTER_MAX = 0.5
_LEASE_MIN = 10
_RETURN_DELAY = 0.5  # seconds between returns of earned tokens to Redis

_scopes: weakref.WeakSet[_Scope] = weakref.WeakSet()
_inherited: list[Any] = []  # the parent's per-loop state, kept unclosed in a forked child


def _forget_after_fork() -> None:
    for scope in list(_scopes):
        _inherited.append(scope._loops)
        scope._loops = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class RedisCoordinator:
    """Share the 429 gate, the retry budget and the rate limit through Redis.

    Pass it to every client of the fleet: ``SendAI(coordinator=RedisCoordinator(url))``.
    Needs the ``redis`` extra (``pip install 'sendai-async[redis]'``).

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL of a Redis or Valkey server.
        namespace: Prefix of every key and channel (default ``sendai``); fleets that must
            not share limits use different namespaces.
        on_unavailable: ``"local"`` (default): while Redis is unreachable, fall back to
            limits in this process; ``"raise"``: fail calls with ``CoordinatorError``.
        reconnect_interval: Seconds between attempts to reach Redis again.
        operation_timeout: Seconds a Redis command may take before Redis counts as down.

    Raises:
        ConfigurationError: a bad URL or option, or the ``redis`` package is missing.

    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        on_unavailable: Literal["local", "raise"] = "local",
        reconnect_interval: float = 1.0,
        operation_timeout: float = 2.0,
    ) -> None:
        given: object = url  # checked at run time: callers pass anything
        if not isinstance(given, str) or urlsplit(given).scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                "RedisCoordinator needs a redis://, rediss:// or unix:// URL, got "
                f"{_safe_url(url)!r}"
            )
        if on_unavailable not in ("local", "raise"):
            raise ConfigurationError(
                f'on_unavailable must be "local" or "raise", got {on_unavailable!r}'
            )
        if not reconnect_interval > 0 or not operation_timeout > 0:
            raise ConfigurationError("reconnect_interval and operation_timeout must be positive")
        try:
            import redis.asyncio  # noqa: F401, PLC0415 -- optional, from the redis extra
        except ImportError:
            raise ConfigurationError(
                "RedisCoordinator needs the redis package: pip install 'sendai-async[redis]'"
            ) from None
        self.url = url
        self.namespace = namespace or "sendai"
        self.on_unavailable = on_unavailable
        self.reconnect_interval = reconnect_interval
        self.operation_timeout = operation_timeout

    def __repr__(self) -> str:
        return (
            f"RedisCoordinator({_safe_url(self.url)!r}, namespace={self.namespace!r}, "
            f"on_unavailable={self.on_unavailable!r})"
        )

    def limits_for(self, settings: ClientSettings) -> Limits:
        """Return limits shared with every client of the same Redis, base URL and team."""
        scope = _Scope(self, settings)
        return Limits(
            gate=scope.gate,
            budget=scope.budget,
            limiter=scope.limiter,
            check=scope.check,
            ready=scope.ready,
        )


def _safe_url(url: object) -> str:
    """Show a Redis URL without its password."""
    if not isinstance(url, str):
        return type(url).__name__
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "***")
    return url


class _LoopState:
    """A scope's Redis connection and background tasks in one event loop."""

    __slots__ = ("client", "closer", "listener", "synced", "tasks")

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.synced = asyncio.Event()  # set once the listener has read the fleet's gate
        self.listener: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closer: AsyncGenerator[None, None] | None = None


class _Scope:
    """The shared limits of one (Redis, namespace, base URL, team), for one client."""

    def __init__(self, coordinator: RedisCoordinator, settings: ClientSettings) -> None:
        self.coordinator = coordinator
        self.hooks: Hooks = settings.hooks
        team = settings.team_id or "*"
        tag = hashlib.sha256(f"{settings.base_url}|{team}".encode()).hexdigest()[:16]
        prefix = f"{coordinator.namespace}:{{{tag}}}"
        self.gate_key = f"{prefix}:gate"
        self.budget_key = f"{prefix}:budget"
        self.rate_key = f"{prefix}:rate"
        self.channel = f"{prefix}:gate-events"
        self.available = True
        self._warned = False
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        # While Redis is down each limit falls back to a local one of the same settings.
        capacity, rate = settings.budget_capacity, settings.rate_limit
        self.gate = _SharedGate(self, NotBeforeGate())
        self.budget = _LeasedBudget(self, capacity, RetryBudget(capacity)) if capacity else None
        self.limiter = _SharedLimiter(self, rate, LocalLimiter(rate)) if rate else None
        _scopes.add(self)

    # -- per-loop state -------------------------------------------------------------

    def state(self) -> _LoopState:
        """Return this loop's connection, starting it (and its listener) on first use."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._start(loop)
        return state

    def _start(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        from redis.asyncio import Redis  # noqa: PLC0415 -- optional dependency

        timeout = self.coordinator.operation_timeout
        client = Redis.from_url(
            self.coordinator.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=max(1, int(timeout)),
        )
        state = _LoopState(client)
        for old in [lp for lp in self._loops if lp.is_closed()]:
            del self._loops[old]
        self._loops[loop] = state
        state.listener = loop.create_task(self._listen(state), name="sendai-redis-listener")
        closer = _close_on_loop_shutdown(state)
        state.closer = closer
        # Advancing it once registers it with this loop's async-generator finaliser, which
        # runs at loop shutdown (asyncio.run) and stops the listener and the connection.
        self.spawn(closer.__anext__())
        return state

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in the background of this loop, tracked for shutdown."""
        state = self._loops.get(asyncio.get_running_loop())
        task = asyncio.get_running_loop().create_task(coroutine)
        if state is not None:
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)

    async def run_script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script on this loop's connection; Redis errors mark it down and raise."""
        client = self.state().client
        try:
            return await client.eval(source, len(keys), *keys, *args)
        except _redis_down() as exc:
            await self.lost(exc)
            raise

    # -- availability -----------------------------------------------------------------

    async def ready(self) -> None:
        """Wait (once per loop, bounded) until the listener has read the fleet's gate."""
        synced = self.state().synced
        if not synced.is_set():
            # Redis slow to answer: go on with the local gate; the listener catches up.
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(synced.wait(), self.coordinator.operation_timeout)

    def check(self) -> None:
        """Fail the call when Redis is down and the coordinator says ``raise``."""
        if self.coordinator.on_unavailable == "raise":
            self.state()  # make sure this loop's listener is watching
            if not self.available:
                raise CoordinatorError(
                    f"the shared limits at {_safe_url(self.coordinator.url)} are unreachable; "
                    "no request was sent"
                )

    async def lost(self, exc: BaseException) -> None:
        """Record that Redis is unreachable: warn once per outage, tell the hooks."""
        if not self.available:
            return
        self.available = False
        fallback = "failing calls" if self.coordinator.on_unavailable == "raise" else "local"
        logger.warning(
            "shared limits at %s unreachable (%s); using %s limits until it is back",
            _safe_url(self.coordinator.url),
            type(exc).__name__,
            fallback,
        )
        if self.hooks.on_coordination:
            event = CoordinationEvent(
                state="unavailable", backend="redis", detail=type(exc).__name__
            )
            await emit(self.hooks.on_coordination, event)

    async def restored(self) -> None:
        """Record that Redis answers again."""
        if self.available:
            return
        self.available = True
        logger.info("shared limits at %s reachable again", _safe_url(self.coordinator.url))
        if self.hooks.on_coordination:
            await emit(
                self.hooks.on_coordination, CoordinationEvent(state="restored", backend="redis")
            )

    async def _listen(self, state: _LoopState) -> None:
        """Keep the local gate in step with the fleet's: subscribe, read, reconnect."""
        while True:
            pubsub = state.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # Learn a gate closed before we subscribed (or while we were away).
                remaining = await state.client.eval(_GATE_GET, 1, self.gate_key)
                self.gate.learn(float(remaining) / 1000)
                state.synced.set()
                await self.restored()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message.get("type") == "message":
                        self.gate.learn(float(message["data"]) / 1000)
            except asyncio.CancelledError:
                raise
            except _redis_down() as exc:
                state.synced.set()  # do not hold requests back for an unreachable Redis
                await self.lost(exc)
                await asyncio.sleep(self.coordinator.reconnect_interval)
            finally:
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]


def _redis_down() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError  # noqa: PLC0415 -- optional dependency

    return (*_REDIS_DOWN, RedisError)


async def _quietly(coroutine: Coroutine[Any, Any, Any]) -> None:
    try:
        await coroutine
    except Exception:  # noqa: BLE001 -- closing a connection that already broke
        logger.debug("ignoring an error while closing a Redis connection", exc_info=True)


async def _close_on_loop_shutdown(state: _LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        tasks = [t for t in (state.listener, *state.tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _quietly(state.client.aclose())


class _SharedGate:
    """The fleet's 429 gate, read from a local copy; a 429 here is told to everyone."""

    __slots__ = ("_local", "_scope")

    def __init__(self, scope: _Scope, local: NotBeforeGate) -> None:
        self._scope = scope
        self._local = local

    def wait(self, now: float) -> float:
        """Return the wait before sending at ``now``, from the local copy (no round trip)."""
        self._scope.state()  # first use in this loop starts the listener
        return self._local.wait(now)

    def push(self, delay: float) -> None:
        """Close the gate here at once, and for the fleet in the background."""
        self._local.push(delay)
        if self._scope.available:
            self._scope.spawn(self._publish(delay))

    async def _publish(self, delay: float) -> None:
        scope = self._scope
        try:
            await scope.run_script(
                _GATE_PUSH, [scope.gate_key], [max(1, round(delay * 1000)), scope.channel]
            )
        except _redis_down():
            pass  # recorded by run_script; the local gate still holds

    def learn(self, remaining: float) -> None:
        """Take a gate closed elsewhere, with jitter so the fleet does not wake as one."""
        if remaining <= 0:
            return
        jitter = random.uniform(0, min(remaining * _JITTER_SHARE, _JITTER_MAX))  # noqa: S311
        self._local.push(remaining + jitter)


class _LeasedBudget:
    """The fleet's retry budget, spent from a small local lease.

    Successes earn tokens into the lease; what overflows goes back to Redis in batches.
    A retry spends from the lease, and only when the lease cannot pay does it ask Redis
    (one round trip, while retrying anyway). No token is spent twice across the fleet.
    """

    __slots__ = (
        "_capacity",
        "_fallback",
        "_lease",
        "_pending_return",
        "_scope",
        "_tokens",
    )

    def __init__(self, scope: _Scope, capacity: int, fallback: RetryBudget) -> None:
        self._scope = scope
        self._capacity = capacity
        self._fallback = fallback
        self._lease = max(_LEASE_MIN, capacity // 20)
        self._tokens = 0
        self._pending_return = 0

    @property
    def tokens(self) -> int:
        """Tokens leased to this process and not yet spent."""
        return self._tokens

    async def spend(self, cost: int) -> bool:
        """Spend ``cost`` tokens: from the lease, else leased from Redis now."""
        if not self._scope.available:
            return self._fallback.acquire(cost)
        if self._tokens < cost:
            scope = self._scope
            try:
                got = await scope.run_script(
                    _BUDGET_LEASE, [scope.budget_key], [self._capacity, self._lease + cost]
                )
            except _redis_down():
                return self._fallback.acquire(cost)
            self._tokens += int(got)
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def release(self, amount: int) -> None:
        """Earn tokens back: into the lease, the overflow returned to Redis in batches."""
        if not self._scope.available:
            self._fallback.release(amount)
            return
        self._tokens += amount
        if self._tokens > self._lease:
            # At most one return in flight, sent a moment later with everything earned by
            # then: a busy process costs Redis a few calls a second, not one per request.
            if not self._pending_return:
                self._scope.spawn(self._give_back())
            self._pending_return += self._tokens - self._lease
            self._tokens = self._lease

    async def _give_back(self) -> None:
        await asyncio.sleep(_RETURN_DELAY)
        amount, self._pending_return = self._pending_return, 0
        scope = self._scope
        try:
            await scope.run_script(_BUDGET_RETURN, [scope.budget_key], [self._capacity, amount])
        except _redis_down():
            pass


class _SharedLimiter:
    """The fleet's GCRA rate limit: one Redis round trip books each send slot."""

    __slots__ = ("_fallback", "_interval_ms", "_scope", "_tolerance_ms")

    def __init__(self, scope: _Scope, limit: RateLimit, fallback: LocalLimiter) -> None:
        self._scope = scope
        self._interval_ms = limit.interval * 1000
        self._tolerance_ms = limit.interval * 1000 * (limit.burst - 1)
        self._fallback = fallback

    async def reserve(self) -> float:
        """Book the fleet's next slot; the local limiter while Redis is down."""
        scope = self._scope
        if scope.available:
            try:
                wait = await scope.run_script(
                    _GCRA_RESERVE,
                    [scope.rate_key],
                    [repr(self._interval_ms), repr(self._tolerance_ms)],
                )
                return float(wait) / 1000
            except _redis_down():
                pass
        return self._fallback.reserve_now(_retry._clock())
