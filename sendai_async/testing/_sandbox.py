"""``SandboxServer``: a local aiohttp server that speaks the Send AI API.

It serves Get Task faithfully (Bearer auth, 401/403/404, ``{"payload": ...}`` bodies, an
``x-request-id`` header) over deterministic synthetic tasks, and injects faults on demand:
a seeded rate of random ones, or a script per task ID for tests.

It also serves ``GET /v2/{team}/project/{project}/tasks``, a listing in the token-paged
shape of Send AI's public query library (``limit``, ``token``, ``status``). That endpoint
is the sandbox's own: the real API documents no list endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import attrs
import orjson
from aiohttp import web

from ._synthetic import SMALL, TaskShape, synthetic_task
from ._window import RateLimitWindow

FAULTS = ("429", "429-bare", "500", "502", "503", "reset", "truncate", "slow")
"""Random fault kinds: 429 with and without ``Retry-After``, 5xx, connection reset before the
response, a body cut off mid-stream, and a slow (but successful) response."""

SCRIPT_STEPS = ("reset", "truncate", "slow", "stall", "garbage")
"""Scripted steps besides an HTTP status: ``stall`` never answers, ``garbage`` is a 200
whose body is not JSON."""

_MAX_PAGE = 500


@attrs.define
class SandboxStats:
    """What the sandbox has served so far.

    ``arrivals`` holds each request's arrival time (``time.monotonic()``) and ``window``
    the 429 window opened by ``SandboxServer.rate_limit_window``, if any.
    """

    requests: int = 0
    statuses: Counter[int] = attrs.Factory(Counter)
    faults: Counter[str] = attrs.Factory(Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    by_task: Counter[str] = attrs.Factory(Counter)
    arrivals: list[float] = attrs.Factory(list)
    window: RateLimitWindow | None = None


class SandboxServer:
    """A Send AI look-alike on 127.0.0.1, for demos, benchmarks and tests.

    Use it as ``async with SandboxServer() as sandbox:`` (same event loop), or
    ``with SandboxServer().in_thread() as sandbox:`` (its own thread and loop; works from
    sync code and from any loop). ``sandbox.base_url`` and ``sandbox.api_key`` configure a
    client; ``sandbox.task_ids`` lists the tasks it knows.

    Args:
        tasks: How many tasks exist (IDs ``task_000000`` upwards).
        seed: Makes tasks and random faults reproducible.
        api_key: The key with full access (random when omitted). ``limited_key`` is
            also accepted but lacks ``task.read``, so it gets 403.
        team_id: The only team that exists.
        project_id: The only project that exists.
        shape: How big tasks are (``SMALL`` or ``LARGE`` from this module, or your own).
        fault_rate: Probability in ``[0, 1]`` that a request meets a random fault.
        faults: Which kinds of random fault to draw from (see ``FAULTS``).
        latency: Seconds added to every response.
        slow_delay: Extra seconds of a ``slow`` fault.
        retry_after: Seconds a 429 asks for (sent as ``retry-after-ms`` and ``Retry-After``).
        host: Interface to bind; loopback unless you know why not.
        port: Port to bind; 0 picks a free one.

    """

    def __init__(
        self,
        *,
        tasks: int = 1000,
        seed: int = 0,
        api_key: str | None = None,
        team_id: str = "team_sandbox",
        project_id: str = "proj_sandbox",
        shape: TaskShape = SMALL,
        fault_rate: float = 0.0,
        faults: Iterable[str] = FAULTS,
        latency: float = 0.0,
        slow_delay: float = 0.3,
        retry_after: float = 0.05,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0 <= fault_rate <= 1:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        self.faults = tuple(faults)
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULTS}")
        self.tasks = tasks
        self.seed = seed
        self.api_key = api_key or f"sandbox-{secrets.token_hex(12)}"
        self.limited_key = f"{self.api_key}-no-task-read"
        self.team_id = team_id
        self.project_id = project_id
        self.shape = shape
        self.fault_rate = fault_rate
        self.latency = latency
        self.slow_delay = slow_delay
        self.retry_after = retry_after
        self.host = host
        self.port = port
        self.stats = SandboxStats()
        self._scripts: dict[str, list[int | str]] = {}
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to pass as ``SendAI(base_url=...)``."""
        if self._runner is None:
            raise RuntimeError("the sandbox is not running; start it first")
        return f"http://{self.host}:{self.port}"

    @property
    def task_ids(self) -> list[str]:
        """Every task ID the sandbox knows, in order."""
        return [self.task_id(i) for i in range(self.tasks)]

    @staticmethod
    def task_id(index: int) -> str:
        """Return the ID of the ``index``-th task."""
        return f"task_{index:06d}"

    async def start(self) -> None:
        """Bind and start serving in the running loop."""
        app = web.Application()
        app.router.add_get("/v2/{team}/project/{project}/task/{task}", self._get_task)
        app.router.add_get("/v2/{team}/project/{project}/tasks", self._list_tasks)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is None:
            return
        # A connection accepted a moment ago is still being set up (a task of the loop's);
        # let it finish, so that cleanup closes it rather than leaving it half-made.
        for _ in range(3):
            await asyncio.sleep(0)
        await self._runner.cleanup()
        self._runner = None
        await asyncio.sleep(0)  # run the transports' connection_lost callbacks

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def in_thread(self) -> _ThreadedSandbox:
        """Return a context manager running the sandbox on its own thread and loop."""
        return _ThreadedSandbox(self)

    # -- scripting -------------------------------------------------------------------

    def script(self, task_id: str, steps: Iterable[int | str]) -> None:
        """Answer the next requests for ``task_id`` with ``steps``, one per request.

        A step is an HTTP status (``200`` serves the task normally) or one of
        ``SCRIPT_STEPS``. After the script runs out the task is served normally.
        """
        steps = list(steps)
        for step in steps:
            if isinstance(step, str) and step not in SCRIPT_STEPS:
                raise ValueError(f"unknown script step {step!r}; use a status or {SCRIPT_STEPS}")
        self._scripts[task_id] = steps

    def rate_limit_window(self, *, after_requests: int, seconds: float) -> RateLimitWindow:
        """Answer 429 to every request for ``seconds``, from the ``after_requests``-th on.

        As when a team's rate limit is hit: each 429 carries the time left as
        ``retry-after-ms`` and ``Retry-After``. ``stats.window`` records when the first 429
        went out and when the window ends.
        """
        self.stats.window = RateLimitWindow(after_requests=after_requests, seconds=seconds)
        return self.stats.window

    # -- handlers ----------------------------------------------------------------------

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Bearer" or not key:
            return self._error(401, "missing bearer token")
        if secrets.compare_digest(key, self.limited_key):
            return self._error(403, "this API key lacks the task.read scope")
        if not secrets.compare_digest(key, self.api_key):
            return self._error(401, "invalid API key")
        return None

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return self._json(status, {"error": message}, headers)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        response = web.Response(status=status, body=orjson.dumps(body), headers=headers)
        response.content_type = "application/json"
        return response

    def _draw_fault(self, key: str) -> str | int | None:
        script = self._scripts.get(key)
        if script:
            step = script.pop(0)
            return None if step == 200 else step
        if self.fault_rate <= 0:
            return None
        nth = self.stats.by_task[key]
        rng = random.Random(f"{self.seed}:fault:{key}:{nth}")  # noqa: S311 -- test faults
        if rng.random() >= self.fault_rate:
            return None
        return rng.choice(self.faults)

    async def _serve(self, request: web.Request, key: str, body: Any) -> web.StreamResponse:
        """Answer with ``body`` unless a fault was drawn for this request."""
        stats = self.stats
        stats.arrivals.append(time.monotonic())
        stats.requests += 1
        stats.by_task[key] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._respond(request, key, body)
        finally:
            stats.in_flight -= 1
        stats.statuses[response.status] += 1
        return response

    async def _respond(self, request: web.Request, key: str, body: Any) -> web.StreamResponse:
        window = self.stats.window
        wait = window.retry_after(self.stats.requests) if window is not None else None
        if wait is not None:
            headers = {
                "x-request-id": f"req_{self.stats.requests:08d}",
                "retry-after-ms": str(int(wait * 1000)),
                "Retry-After": str(max(1, round(wait))),
            }
            return self._error(429, "rate limit window", headers)
        fault = self._draw_fault(key)
        if self.latency:
            await asyncio.sleep(self.latency)
        headers = {"x-request-id": f"req_{self.stats.requests:08d}"}
        if fault is None:
            return await self._answer(request, body, headers)
        self.stats.faults[str(fault)] += 1
        if isinstance(fault, int) or fault.isdigit() or fault == "429-bare":
            status = int(fault) if isinstance(fault, int) or fault.isdigit() else 429
            if status == 429 and fault != "429-bare":
                headers["retry-after-ms"] = str(int(self.retry_after * 1000))
                headers["Retry-After"] = str(max(1, round(self.retry_after)))
            return self._error(status, f"sandbox fault {fault}", headers)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=599)  # never reaches the client
        if fault == "garbage":
            return web.Response(status=200, text="<html>gateway hiccup</html>", headers=headers)
        await asyncio.sleep({"stall": 3600.0, "slow": self.slow_delay}.get(fault, 0.0))
        return await self._answer(request, body, headers, truncate=fault == "truncate")

    async def _answer(
        self,
        request: web.Request,
        body: Any,
        headers: dict[str, str],
        *,
        truncate: bool = False,
    ) -> web.StreamResponse:
        data = body() if callable(body) else body
        if isinstance(data, web.Response):  # an auth or not-found refusal
            data.headers.update(headers)
            return data
        payload = orjson.dumps(data)
        if truncate:
            return await self._truncated(request, payload, headers)
        response = web.Response(status=200, body=payload, headers=headers)
        response.content_type = "application/json"
        return response

    async def _truncated(
        self, request: web.Request, payload: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "application/json"
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if request.transport is not None:
            request.transport.close()
        return response

    def _known_index(self, task_id: str) -> int | None:
        prefix, _, number = task_id.partition("_")
        if prefix != "task" or len(number) != 6 or not number.isdigit():
            return None
        index = int(number)
        return index if index < self.tasks else None

    def _check_scope(self, request: web.Request) -> web.Response | None:
        denied = self._auth(request)
        if denied is not None:
            return denied
        info = request.match_info
        if info["team"] != self.team_id or info["project"] != self.project_id:
            return self._error(404, "no such team or project")
        return None

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task"]

        def body() -> Any:
            refused = self._check_scope(request)
            if refused is not None:
                return refused
            if self._known_index(task_id) is None:
                return self._error(404, f"task {task_id!r} not found")
            return {"payload": self.task(task_id)}

        return await self._serve(request, task_id, body)

    def task(self, task_id: str) -> dict[str, Any]:
        """Return the payload served for ``task_id`` (whether or not it exists)."""
        return synthetic_task(task_id, project_id=self.project_id, seed=self.seed, shape=self.shape)

    async def _list_tasks(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        token = query.get("token", "")

        def body() -> Any:
            refused = self._check_scope(request)
            if refused is not None:
                return refused
            try:
                limit = min(int(query.get("limit", "50")), _MAX_PAGE)
                start = _decode_token(token)
            except ValueError:
                return self._error(400, "invalid limit or token")
            if limit < 1:
                return self._error(400, "limit must be positive")
            wanted = query.get("status")
            items: list[dict[str, Any]] = []
            index = start
            while index < self.tasks and len(items) < limit:
                task = self.task(self.task_id(index))
                index += 1
                if wanted is None or task["status"] == wanted:
                    items.append(task)
            more = index < self.tasks
            return {
                "count": len(items),
                "more": more,
                "paginationToken": _encode_token(index) if more else None,
                "payload": items,
            }

        return await self._serve(request, f"list:{token}", body)


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("bad token") from exc
    prefix, _, number = text.partition(":")
    if prefix != "o" or not number.isdigit():
        raise ValueError("bad token")
    return int(number)


class _ThreadedSandbox:
    """Runs a ``SandboxServer`` on a daemon thread, inside ``asyncio.run`` of its own.

    ``asyncio.run`` matters: its shutdown (cancel what is left, run it to the end, close
    async generators) is what leaves no half-accepted socket behind for the GC to warn about.
    """

    def __init__(self, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="sendai-sandbox")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 -- reported to the starting thread
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.sandbox:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SandboxServer:
        self._thread.start()
        if not self._ready.wait(timeout=10) or self._failure is not None:
            raise RuntimeError("the sandbox did not start") from self._failure
        return self.sandbox

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
