"""Shared fixtures: a scripted aiohttp server on 127.0.0.1, a canary key, a fake sleep."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aioresponses import aioresponses

from sendai_async import SendAI, _retry

# A key no test may ever see in a repr, log record or exception text.
CANARY_KEY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_KEPT_BODY_LIMIT = 1024 * 1024


def _seed_body() -> bytes:
    """The Get Task reference's example response, copied verbatim from the seed page."""
    local = Path(__file__).with_name("data") / "seed_get_task.json"
    return local.read_bytes()


SEED_BODY = _seed_body()
SEED_DOC: dict[str, Any] = orjson.loads(SEED_BODY)


def json_response(
    status: int = 200, body: Any = None, headers: dict[str, str] | None = None
) -> Handler:
    """Answer with ``body`` as JSON (the seed task by default)."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        payload = SEED_BODY if body is None else orjson.dumps(body)
        return web.Response(
            status=status, body=payload, content_type="application/json", headers=headers
        )

    return handler


def raw_response(status: int, text: str, headers: dict[str, str] | None = None) -> Handler:
    """Answer with a plain text body."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return handler


def truncated_body() -> Handler:
    """Send headers promising 4 KiB, a few bytes of body, then drop the connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "4096"})
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"payload": {"id": ')
        assert request.transport is not None
        request.transport.close()
        return response

    return handler


def reset_before_response() -> Handler:
    """Drop the connection without answering."""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    return handler


def stall(seconds: float) -> Handler:
    """Answer only after ``seconds`` (long enough to trip a read timeout)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await json_response()(request)

    return handler


class ScriptedServer:
    """An aiohttp server whose task endpoint plays a script of handlers, one per request.

    The last handler repeats once the script runs out. Every request is recorded.
    """

    def __init__(self) -> None:
        self.script: list[Handler] = [json_response()]
        self.requests: list[web.Request] = []
        self.raw_paths: list[str] = []
        self.bodies: list[bytes | None] = []  # None: too large to keep (or not read)
        self.peers: list[tuple[str, int] | None] = []
        self.request_seen = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def play(self, *handlers: Handler) -> None:
        """Replace the script."""
        self.script = list(handlers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.request_seen.set()
        self.raw_paths.append(request.raw_path)
        length = request.content_length
        small = length is not None and length <= _KEPT_BODY_LIMIT
        # Kept for assertions; aiohttp caches it, so handlers may still read() or post().
        self.bodies.append(await request.read() if small else None)
        transport = request.transport
        self.peers.append(transport.get_extra_info("peername") if transport else None)
        handler = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            await asyncio.sleep(0)  # let closed transports finish before the loop may end


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace backoff sleeps with a recorder and a clock they advance; no real waiting."""
    recorded: list[float] = []
    skipped = [0.0]

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)
        skipped[0] += seconds
        await asyncio.sleep(0)

    monkeypatch.setattr(_retry, "_sleep", fake_sleep)
    monkeypatch.setattr(_retry, "_clock", lambda: time.monotonic() + skipped[0])
    monkeypatch.setattr(_retry, "_wall_clock", lambda: time.time() + skipped[0])
    return recorded


@pytest.fixture
async def client(server: ScriptedServer, sleeps: list[float]) -> AsyncIterator[SendAI]:
    async with SendAI(CANARY_KEY, team_id="team_1", base_url=server.base_url) as sendai:
        yield sendai


class _CanaryWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1]) + repr(record.exc_info[1])
        if CANARY_KEY in text:
            self.leaks.append(text)


@pytest.fixture(autouse=True)
def no_canary_in_logs() -> Iterator[None]:
    """Fail any test during which the canary key reached a log record of ours."""
    watch = _CanaryWatch()
    logger = logging.getLogger("sendai_async")
    previous = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)  # exercise every log line, not just the enabled ones
    try:
        yield
    finally:
        logger.removeHandler(watch)
        logger.setLevel(previous)
    assert not watch.leaks, f"API key leaked into logs: {watch.leaks[:1]}"


# aiohttp < 3.14 (the oldest supported is 3.11) has no such argument.
_TAKES_STREAM_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _CompatResponse(ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument.

    Upstream: pnuckowski/aioresponses#289 (open). Supplying a stub writer is all it needs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _TAKES_STREAM_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
def mock_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, made to work with aiohttp 3.14."""
    monkeypatch.setattr("aioresponses.core.ClientResponse", _CompatResponse)
    with aioresponses() as mocked:
        yield mocked
