"""The request path against a real server on 127.0.0.1: errors, retries, timeouts, limits."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web

from sendai_async import (
    APIStatusError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    DecodeError,
    Hooks,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    RetryPolicy,
    SendAI,
    SendAIError,
    ServerError,
    Timeout,
    TransportError,
)

from .conftest import (
    CANARY_KEY,
    Handler,
    ScriptedServer,
    json_response,
    raw_response,
    reset_before_response,
    stall,
    truncated_body,
)


async def test_request_carries_auth_accept_and_user_agent(
    client: SendAI, server: ScriptedServer
) -> None:
    await client.tasks.get("task_1", project_id="proj_1")
    request = server.requests[0]
    assert request.method == "GET"
    assert request.raw_path == "/v2/team_1/project/proj_1/task/task_1"
    assert request.headers["Authorization"] == f"Bearer {CANARY_KEY}"
    assert request.headers["Accept"] == "application/json"
    user_agent = request.headers["User-Agent"]
    assert user_agent.startswith("sendai-async/")
    assert "python/" in user_agent


@pytest.mark.parametrize("own_session", [False, True], ids=["client's session", "caller's"])
async def test_a_json_post_carries_each_header_once(
    server: ScriptedServer, own_session: bool
) -> None:
    """Our sessions hold the fixed headers as defaults; a caller's gets them per request."""
    server.play(json_response())
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession()) if own_session else None
        client = await stack.enter_async_context(
            SendAI(CANARY_KEY, team_id="team_1", base_url=server.base_url, session=session)
        )
        await client.tasks.report(
            "task_1", project_id="proj_1", issues=[{"label": "total", "value": "wrong"}]
        )
    headers = server.requests[0].headers
    assert headers.getall("Authorization") == [f"Bearer {CANARY_KEY}"]
    assert headers.getall("Accept") == ["application/json"]
    assert headers.getall("Content-Type") == ["application/json"]
    assert len(headers.getall("User-Agent")) == 1
    assert headers["User-Agent"].startswith("sendai-async/")


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, PermissionDeniedError, id="403"),
        pytest.param(404, NotFoundError, id="404"),
        pytest.param(400, APIStatusError, id="400"),
        pytest.param(501, ServerError, id="501-not-retried"),
        pytest.param(505, ServerError, id="505-not-retried"),
        pytest.param(302, APIStatusError, id="redirect-not-followed"),
    ],
)
async def test_non_retryable_status_makes_one_request(
    client: SendAI, server: ScriptedServer, status: int, error_class: type[APIStatusError]
) -> None:
    """4xx (other than 408/429), 501, 505 and redirects fail at once with the right class."""
    headers = {"x-request-id": "req-42"}
    if status == 302:
        headers["Location"] = "https://evil.example/steal"
    server.play(json_response(status, {"message": "nope"}, headers=headers))
    with pytest.raises(error_class) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    error = caught.value
    assert len(server.requests) == 1
    assert error.status_code == status
    assert error.request_id == "req-42"
    assert error.attempts == 1
    assert error.body == {"message": "nope"}
    assert error.method == "GET"
    assert error.url is not None
    assert error.url.endswith("/v2/team_1/project/proj_1/task/task_1")
    assert "req-42" in str(error)


async def test_request_id_header_fallback(client: SendAI, server: ScriptedServer) -> None:
    server.play(raw_response(404, "not here", headers={"request-id": "r-9"}))
    with pytest.raises(NotFoundError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    assert caught.value.request_id == "r-9"
    assert caught.value.body == "not here"


async def test_503_then_200_succeeds_in_two_requests(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(503, {"error": "busy"}), json_response())
    task = await client.tasks.get("task_1", project_id="proj_1")
    assert task.id == "task_abcdef123456"
    assert len(server.requests) == 2
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 0.5  # full jitter under the first ceiling


async def test_500_every_time_makes_max_attempts_requests(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(500, {"error": "boom"}))
    policy = RetryPolicy(max_attempts=4)
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        with pytest.raises(ServerError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
    assert len(server.requests) == 4
    assert caught.value.attempts == 4
    assert "4 attempts" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "1"}, 1.0, id="seconds"),
        pytest.param({"retry-after-ms": "250"}, 0.25, id="milliseconds"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="fractional-seconds"),
    ],
)
async def test_429_waits_what_the_server_asks(
    client: SendAI,
    server: ScriptedServer,
    sleeps: list[float],
    headers: dict[str, str],
    expected: float,
) -> None:
    server.play(json_response(429, {"error": "slow down"}, headers=headers), json_response())
    await client.tasks.get("task_1", project_id="proj_1")
    assert len(server.requests) == 2
    assert sleeps[-1] >= expected
    assert sleeps[-1] == pytest.approx(expected, abs=0.05)


async def test_429_with_http_date_retry_after(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    server.play(
        json_response(429, headers={"Retry-After": format_datetime(when, usegmt=True)}),
        json_response(),
    )
    await client.tasks.get("task_1", project_id="proj_1")
    assert 28 <= sleeps[-1] <= 31


async def test_429_longer_than_cap_fails_at_once(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    """A server asking for more than max_retry_after gets no retry; the error says how long."""
    server.play(json_response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimitError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    assert caught.value.retry_after == 3600
    assert len(server.requests) == 1
    assert not [s for s in sleeps if s > 0]


async def test_429_longer_than_deadline_fails_at_once(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(429, headers={"Retry-After": "10"}))
    policy = RetryPolicy(deadline=5)
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        with pytest.raises(RateLimitError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
    assert caught.value.retry_after == 10
    assert len(server.requests) == 1


async def test_garbage_retry_after_falls_back_to_backoff(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(429, headers={"Retry-After": "soon-ish"}), json_response())
    await client.tasks.get("task_1", project_id="proj_1")
    assert len(server.requests) == 2
    assert 0 <= sleeps[-1] <= 0.5


async def test_truncated_body_is_retried(client: SendAI, server: ScriptedServer) -> None:
    """A body cut off after its headers is a transport fault, and the retry succeeds."""
    server.play(truncated_body(), json_response())
    task = await client.tasks.get("task_1", project_id="proj_1")
    assert task.id == "task_abcdef123456"
    assert len(server.requests) == 2


async def test_truncated_body_every_time_is_a_transport_error(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(truncated_body())
    with pytest.raises(TransportError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    assert caught.value.attempts == 3
    assert caught.value.__cause__ is not None


async def test_connection_reset_is_retried(client: SendAI, server: ScriptedServer) -> None:
    server.play(reset_before_response(), json_response())
    await client.tasks.get("task_1", project_id="proj_1")
    assert len(server.requests) == 2


async def test_connection_refused_is_a_transport_error(sleeps: list[float]) -> None:
    async with SendAI(CANARY_KEY, team_id="t", base_url="http://127.0.0.1:9") as sendai:
        with pytest.raises(TransportError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
    assert caught.value.attempts == 3


async def test_stalled_server_times_out_and_is_retried(server: ScriptedServer) -> None:
    server.play(stall(5), json_response())
    timeout = Timeout(total=10, connect=1, read=0.1)
    async with SendAI(
        CANARY_KEY,
        team_id="t",
        base_url=server.base_url,
        timeout=timeout,
        retry=RetryPolicy(backoff_base=0.01),
    ) as sendai:
        task = await sendai.tasks.get("task_1", project_id="p")
    assert task.id == "task_abcdef123456"
    assert len(server.requests) == 2


async def test_stalled_every_time_raises_request_timeout(server: ScriptedServer) -> None:
    server.play(stall(5))
    timeout = Timeout(total=10, connect=1, read=0.05)
    async with SendAI(
        CANARY_KEY,
        team_id="t",
        base_url=server.base_url,
        timeout=timeout,
        retry=RetryPolicy(max_attempts=2, backoff_base=0.01),
    ) as sendai:
        with pytest.raises(RequestTimeoutError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.attempts == 2


async def test_per_call_timeout_overrides_client(client: SendAI, server: ScriptedServer) -> None:
    server.play(stall(5))
    with pytest.raises(RequestTimeoutError):
        await client.tasks.get("task_1", project_id="proj_1", timeout=Timeout(read=0.05))


async def test_outer_asyncio_timeout_cancels_promptly(
    client: SendAI, server: ScriptedServer
) -> None:
    """asyncio.wait_for around a stalled call cancels it in time; the server saw one request."""
    server.play(stall(5))
    started = time.monotonic()
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await asyncio.wait_for(client.tasks.get("task_1", project_id="proj_1"), timeout=0.2)
    assert time.monotonic() - started < 2
    assert len(server.requests) == 1


async def test_cancellation_is_never_retried(client: SendAI, server: ScriptedServer) -> None:
    server.play(stall(5))
    call = asyncio.create_task(client.tasks.get("task_1", project_id="proj_1"))
    await server.request_seen.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.05)
    assert len(server.requests) == 1


async def test_deadline_bounds_the_whole_call(server: ScriptedServer) -> None:
    """No backoff sleep starts that would end past the deadline."""
    server.play(json_response(503))
    policy = RetryPolicy(max_attempts=10, backoff_base=5, backoff_max=5, deadline=0.3)
    started = time.monotonic()
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        with pytest.raises(ServerError):
            await sendai.tasks.get("task_1", project_id="p")
    assert time.monotonic() - started < 2


async def test_oversized_body_is_refused(server: ScriptedServer) -> None:
    server.play(json_response())
    async with SendAI(
        CANARY_KEY, team_id="t", base_url=server.base_url, max_response_bytes=100
    ) as sendai:
        with pytest.raises(ResponseTooLargeError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
    assert len(server.requests) == 1
    assert "max_response_bytes=100" in str(caught.value)


async def test_decode_error_of_complete_2xx_is_not_retried(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(raw_response(200, "<html>maintenance</html>"))
    with pytest.raises(DecodeError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    assert len(server.requests) == 1
    assert caught.value.attempts == 1
    assert caught.value.url is not None


@pytest.mark.parametrize(
    ("task_id", "raw_tail"),
    [
        pytest.param("../x", "/task/..%2Fx", id="dot-dot-slash"),
        pytest.param("..", "/task/%2E%2E", id="dot-dot"),
        pytest.param("a/b", "/task/a%2Fb", id="slash"),
        pytest.param("a?b", "/task/a%3Fb", id="query"),
        pytest.param("a#b", "/task/a%23b", id="fragment"),
        pytest.param("a%2Fb", "/task/a%252Fb", id="pre-encoded"),
    ],
)
async def test_malicious_ids_cannot_change_the_path(
    client: SendAI, server: ScriptedServer, task_id: str, raw_tail: str
) -> None:
    await client.tasks.get(task_id, project_id="proj_1")
    assert server.raw_paths == [f"/v2/team_1/project/proj_1{raw_tail}"]


async def test_hooks_see_each_attempt_and_a_failing_hook_is_harmless(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    events: list[object] = []

    async def record(event: object) -> None:
        events.append(event)

    def broken(_event: object) -> None:
        raise RuntimeError("metrics backend down")

    hooks = Hooks(on_request=[record, broken], on_response=[record], on_retry=[record])
    server.play(json_response(503), json_response())
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, hooks=hooks) as sendai:
        await sendai.tasks.get("task_1", project_id="p")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RequestEvent", "ResponseEvent", "RetryEvent", "RequestEvent", "ResponseEvent"]
    assert [getattr(e, "status", None) for e in events if type(e).__name__ == "ResponseEvent"] == [
        503,
        200,
    ]
    assert all(CANARY_KEY not in repr(e) for e in events)


async def _echo_auth(request: web.Request) -> web.StreamResponse:
    return web.json_response({"message": f"bad key {request.headers['Authorization']}"}, status=401)


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(_echo_auth, id="server-echoes-key"),
        pytest.param(truncated_body(), id="truncated"),
        pytest.param(raw_response(200, "not json"), id="decode"),
        pytest.param(json_response(503, {"error": "x"}), id="5xx"),
    ],
)
async def test_canary_key_absent_from_every_error(
    client: SendAI, server: ScriptedServer, handler: Handler
) -> None:
    """Whatever fails, the key is in no error text, repr, body or cause."""
    server.play(handler)
    with pytest.raises(SendAIError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    error = caught.value
    texts = [
        str(error),
        repr(error),
        repr(vars(error)),
        str(error.__cause__),
        repr(error.__cause__),
    ]
    assert all(CANARY_KEY not in text for text in texts)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_gzip_bomb_is_refused_after_decoding(
    server: ScriptedServer, sleeps: list[float], framing: str
) -> None:
    """A small gzip body that inflates past max_response_bytes is refused, in any framing."""
    bomb = gzip.compress(b'{"payload": "' + b"0" * (8 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        if framing == "content-length":
            return web.Response(body=bomb, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(bomb)
        await response.write_eof()
        return response

    server.play(handler)
    limit = 1024 * 1024
    async with SendAI(
        CANARY_KEY, team_id="t", base_url=server.base_url, max_response_bytes=limit
    ) as sendai:
        with pytest.raises(ResponseTooLargeError, match="after decompression"):
            await sendai.tasks.get("task_1", project_id="p")
    assert len(server.requests) == 1  # not retried: the next answer would be as large


async def test_aiohttp_never_resends_behind_our_back(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    """A server that resets every request gets exactly max_attempts requests, not twice that."""
    server.play(reset_before_response())
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url) as sendai:
        with pytest.raises(TransportError) as caught:
            await sendai.tasks.get("task_1", project_id="p")
        assert sendai.requests == 3
    assert caught.value.attempts == 3
    assert len(server.requests) == 3


async def test_aclose_during_a_request_raises_client_closed(server: ScriptedServer) -> None:
    """A hook that closes the client mid-request gets ClientClosedError, not aiohttp's text."""
    holder: list[SendAI] = []

    async def close_now(_event: object) -> None:
        await holder[0].aclose()

    hooks = Hooks(on_request=[close_now])
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, hooks=hooks) as sendai:
        holder.append(sendai)
        with pytest.raises(ClientClosedError):
            await sendai.tasks.get("task_1", project_id="p")
    assert server.requests == []


async def test_a_200_html_page_says_what_it_got(client: SendAI, server: ScriptedServer) -> None:
    server.play(raw_response(200, "<html><title>Sign in</title>" + "x" * 5000 + "</html>"))
    with pytest.raises(DecodeError) as caught:
        await client.tasks.get("task_1", project_id="proj_1")
    text = str(caught.value)
    assert "text/plain" in text
    assert "<html><title>Sign in</title>" in text
    assert len(text) < 600


async def test_a_huge_id_is_bounded_in_messages(client: SendAI, server: ScriptedServer) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await client.tasks.get("\udcff" + "a" * 5000, project_id="proj_1")
    assert len(str(caught.value)) < 300
    assert server.requests == []
