"""The client facade: per-call options, views that share state, and ``map``."""

from __future__ import annotations

import functools
import gc
from typing import Any

import pytest

from sendai_async import (
    ConfigurationError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    SendAI,
    Timeout,
    bulk_gc,
)
from sendai_async.testing import SandboxServer

from .conftest import CANARY_KEY, ScriptedServer, json_response, stall


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"timeout": "5"}, "timeout must be a Timeout or a number", id="timeout-str"),
        pytest.param({"timeout": -1}, "timeout must be positive", id="timeout-negative"),
        pytest.param({"timeout": True}, "timeout must be", id="timeout-bool"),
        pytest.param({"retry": 3}, r"RetryPolicy\(max_attempts=3\)", id="retry-int"),
        pytest.param(
            {"retry": {"max_attempts": 3}}, "retry must be a RetryPolicy", id="retry-dict"
        ),
        pytest.param({"max_connections": 0}, "max_connections", id="no-connections"),
        pytest.param({"hooks": [print]}, "hooks must be a Hooks", id="hooks-list"),
    ],
)
def test_wrong_setting_types_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SendAI(CANARY_KEY, **kwargs)


def test_a_number_is_a_timeout_for_the_whole_attempt() -> None:
    client = SendAI(CANARY_KEY, timeout=5)
    assert client.timeout == Timeout(total=5.0)


async def test_per_call_number_timeout_applies(server: ScriptedServer) -> None:
    server.play(stall(5))
    policy = RetryPolicy(max_attempts=1)
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        with pytest.raises(TimeoutError):
            await sendai.tasks.get("task_1", project_id="p", timeout=0.05)


async def test_per_call_wrong_timeout_fails_before_any_request(
    client: SendAI, server: ScriptedServer
) -> None:
    with pytest.raises(ConfigurationError):
        await client.tasks.get("task_1", project_id="proj_1", timeout="soon")  # type: ignore[arg-type]
    assert server.requests == []


async def test_with_options_changes_defaults_and_shares_the_rest(
    client: SendAI, server: ScriptedServer
) -> None:
    view = client.with_options(team_id="team_2", retry=RetryPolicy(max_attempts=1), timeout=3)
    assert view.team_id == "team_2"
    assert view.timeout == Timeout(total=3.0)
    assert client.team_id == "team_1"  # the original is untouched
    server.play(json_response(503, {"error": "busy"}), json_response())
    with pytest.raises(Exception, match="HTTP 503"):
        await view.tasks.get("task_1", project_id="proj_1")
    assert server.raw_paths[0].startswith("/v2/team_2/")
    await client.tasks.get("task_1", project_id="proj_1")  # the original still retries
    assert client.requests == view.requests == 2  # one counter: they share the transport
    assert repr(view).startswith("<SendAI")
    await view.aclose()
    assert client.closed  # closing a view closes the client it views


async def test_a_429_on_one_view_holds_back_the_others(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    """The 429 gate is shared: after one view's 429, another view's call waits for it."""
    quick = client.with_options(retry=RetryPolicy(max_attempts=1))
    server.play(
        json_response(429, {"error": "slow"}, headers={"Retry-After": "4"}), json_response()
    )
    with pytest.raises(RateLimitError):
        await quick.tasks.get("task_1", project_id="proj_1")
    await client.tasks.get("task_1", project_id="proj_1")
    assert sleeps
    assert sleeps[0] == pytest.approx(4, abs=0.1)


async def test_a_call_refuses_a_gate_longer_than_it_accepts(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    """A Retry-After over max_retry_after fails the other calls at once, not after waiting."""
    server.play(json_response(429, {"error": "slow"}, headers={"Retry-After": "600"}))
    with pytest.raises(RateLimitError):
        await client.tasks.get("task_1", project_id="proj_1")
    server.play(json_response())
    with pytest.raises(RateLimitError) as caught:
        await client.tasks.get("task_2", project_id="proj_1")
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 590
    assert caught.value.attempts == 0
    assert len(server.requests) == 1  # the second call sent nothing
    assert sleeps == []
    # A view whose policy accepts the wait waits for it instead of failing.
    patient = client.with_options(retry=RetryPolicy(max_retry_after=900, deadline=1000))
    await patient.tasks.get("task_2", project_id="proj_1")
    assert sleeps
    assert sleeps[0] > 590


async def test_map_runs_any_call_per_id(sleeps: list[float]) -> None:
    async with (
        SandboxServer(tasks=10) as sandbox,
        SendAI(sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url) as sendai,
    ):
        get = functools.partial(sendai.tasks.get_raw, project_id=sandbox.project_id)
        ids = [*sandbox.task_ids[:3], "task_missing", sandbox.task_ids[0]]
        results = [r async for r in sendai.map(get, ids, concurrency=2)]
    by_key = {r.key: r for r in results}
    assert len(results) == 4  # the repeated ID once
    assert by_key["task_000001"].ok
    assert by_key["task_000001"].value is not None
    assert by_key["task_000001"].value["id"] == "task_000001"
    assert isinstance(by_key["task_missing"].error, NotFoundError)


def test_bulk_gc_raises_the_young_threshold_and_restores_it() -> None:
    """Inside (even nested) the young generation is collected rarely; after, as before."""
    before = gc.get_threshold()
    with bulk_gc():
        assert gc.get_threshold()[0] >= 100_000
        with bulk_gc(young_threshold=5):  # nested: the outer setting stays
            assert gc.get_threshold()[0] >= 100_000
        assert gc.get_threshold()[0] >= 100_000
    assert gc.get_threshold() == before
