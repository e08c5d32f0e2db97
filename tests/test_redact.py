"""The API key never comes back out of us, however a hostile server echoes it.

Every case is a real server on 127.0.0.1 (aiohttp, or a raw TCP server for malformed HTTP)
that puts the key, in some encoding, where we quote server text: error bodies, messages,
the request id, aiohttp's parser errors, the exception chain, the CLI's errors file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import pytest
from aiohttp import web

from sendai_async import RetryPolicy, SendAI, SendAIError
from sendai_async._redact import Redactor
from sendai_async.cli._output import error_record

from .conftest import CANARY_KEY, ScriptedServer

ENCODINGS: dict[str, Callable[[str], str]] = {
    "verbatim": lambda key: key,
    "json-unicode-escapes": lambda key: "".join(f"\\u{ord(c):04x}" for c in key),
    "json-slash-escapes": lambda key: key.replace("-", "\\u002d"),
    "percent": lambda key: quote(key, safe="").replace("-", "%2D"),
    "html-entities": lambda key: "".join(f"&#{ord(c)};" for c in key),
    "base64": lambda key: base64.b64encode(f"Bearer {key}".encode()).decode(),
    "base64-url": lambda key: base64.urlsafe_b64encode(f"x:{key}!".encode()).decode(),
    "hex": lambda key: key.encode().hex(),
    "utf-16": lambda key: key.encode("utf-16-le").decode("latin-1"),
}


def everything_said(error: SendAIError) -> str:
    """All the text an error can show: str, repr, attributes, cause, pickle, CLI record."""
    parts = [
        str(error),
        repr(error),
        repr(vars(error)),
        str(error.args),
        repr(error.__cause__),
        str(error.__cause__),
        json.dumps(error_record("task_1", error), default=str),
    ]
    parts.append(repr(pickle.loads(pickle.dumps(error)).__dict__))
    return "\n".join(parts)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("where", ["json-body", "text-body", "request-id"])
async def test_echoed_key_is_redacted_in_every_encoding(
    client: SendAI, server: ScriptedServer, encoding: str, where: str
) -> None:
    echo = ENCODINGS[encoding](CANARY_KEY)

    async def handler(_request: web.Request) -> web.StreamResponse:
        if where == "json-body":
            raw = (
                '{"message": "bad key '
                + echo.replace('"', '\\"')
                + '", "detail": ["'
                + echo
                + '"]}'
            )
            return web.Response(status=401, text=raw, content_type="application/json")
        if where == "text-body":
            return web.Response(status=400, text=f"<html>you sent {echo}</html>")
        return web.Response(status=404, text="no", headers={"x-request-id": echo[:4000]})

    server.play(handler)
    with pytest.raises(SendAIError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    said = everything_said(caught.value)
    assert CANARY_KEY not in said
    assert CANARY_KEY not in Redactor("unrelated-key-123456").clean(said)  # sanity of the probe
    for decoded in (said.encode().decode("unicode_escape", "ignore"), said.replace("\0", "")):
        assert CANARY_KEY not in decoded


async def _raw_server(reply: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def raw_reply() -> AsyncIterator[Callable[[bytes], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: bytes) -> str:
        server, url = await _raw_server(reply)
        servers.append(server)
        return url

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 2OO " + CANARY_KEY.encode() + b"\r\n\r\n", id="bad-status-line"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + CANARY_KEY.encode()
            + b"\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-" + CANARY_KEY.encode() + b" : x\r\n\r\n", id="bad-header"
        ),
    ],
)
async def test_parser_errors_quoting_the_key_are_redacted(
    raw_reply: Callable[[bytes], asyncio.Future[str]], reply: bytes, sleeps: list[float]
) -> None:
    base_url = await raw_reply(reply)
    policy = RetryPolicy(max_attempts=1)
    async with SendAI(CANARY_KEY, team_id="t", base_url=base_url, retry=policy) as sendai:
        with pytest.raises(SendAIError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
    said = everything_said(caught.value)
    assert CANARY_KEY not in said
    assert "Authorization" not in said  # aiohttp's request_info is never chained


def test_redactor_leaves_ordinary_text_alone() -> None:
    redactor = Redactor(CANARY_KEY)
    for text in ["task 42 not found", "100% & more \\n", "YWJjZGVm", "deadbeef"]:
        assert redactor.clean(text) == text


def test_redactor_bounds_long_text() -> None:
    cleaned = Redactor(CANARY_KEY).clean("x" * 10_000, limit=100)
    assert len(cleaned) < 150
    assert cleaned.endswith("(9900 more characters)")
