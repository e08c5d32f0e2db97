"""Task actions, reports and waiting, against a real server on 127.0.0.1.

The retry rules of state-changing calls are checked by the requests the server saw: an
action is read back after an ambiguous failure and sent again only when it did not apply;
a report is never sent twice after one.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from sendai_async import (
    ConfigurationError,
    ConflictError,
    DecodeError,
    NotFoundError,
    RateLimitError,
    ReportIssue,
    RetryPolicy,
    SendAI,
    ServerError,
    Task,
    TaskStatus,
    TransportError,
    WaitTimeoutError,
)
from sendai_async.testing import SandboxServer

from .conftest import (
    CANARY_KEY,
    SEED_DOC,
    Handler,
    ScriptedServer,
    json_response,
    reset_before_response,
)


def task_doc(**changes: Any) -> dict[str, Any]:
    """The seed task (REVIEWING, not approved) with ``changes`` applied."""
    doc = copy.deepcopy(SEED_DOC)
    doc["payload"].update(changes)
    return doc


def apply_then_reset(effect: dict[str, Any], state: dict[str, Any]) -> Handler:
    """Apply ``effect`` to ``state``, then drop the connection without answering."""

    async def handler(request: web.Request) -> web.StreamResponse:
        state.update(effect)
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    return handler


def current(state: dict[str, Any]) -> Handler:
    """Serve the task as ``state`` has it now."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await json_response(200, task_doc(**state))(request)

    return handler


def methods(server: ScriptedServer) -> list[str]:
    return [f"{r.method} {r.path.rsplit('/', 1)[-1]}" for r in server.requests]


@pytest.mark.parametrize(
    ("action", "answer"),
    [
        pytest.param("approve", {"approved": True}, id="approve"),
        pytest.param("disapprove", {"approved": False}, id="disapprove"),
        pytest.param("discard", {"status": "DISCARDED"}, id="discard"),
        pytest.param("complete", {"status": "PROCESSING"}, id="complete"),
    ],
)
async def test_action_posts_without_body_and_returns_the_task(
    client: SendAI, server: ScriptedServer, action: str, answer: dict[str, Any]
) -> None:
    doc = {**task_doc(**answer), "message": "done"}
    server.play(json_response(200, doc))
    task = await getattr(client.tasks, action)("task_1", project_id="proj_1")
    request = server.requests[0]
    assert request.method == "POST"
    assert request.raw_path == f"/v2/team_1/project/proj_1/task/task_1/{action}"
    assert server.bodies[0] == b""
    assert isinstance(task, Task)
    for field, value in answer.items():
        assert getattr(task, field) == value


async def test_action_applied_then_dropped_is_read_back_not_repeated(
    client: SendAI, server: ScriptedServer
) -> None:
    """The server approves, then drops the connection: one GET proves it; no second POST."""
    state: dict[str, Any] = {}
    server.play(apply_then_reset({"approved": True}, state), current(state))
    task = await client.tasks.approve("task_1", project_id="proj_1")
    assert task.approved is True
    assert methods(server) == ["POST approve", "GET task_1"]


async def test_action_dropped_before_applying_is_sent_again(
    client: SendAI, server: ScriptedServer
) -> None:
    """The connection drops before the server acts: the read-back shows it, so it is resent."""
    state: dict[str, Any] = {}
    server.play(
        reset_before_response(),
        current(state),
        json_response(200, task_doc(approved=True)),
    )
    task = await client.tasks.approve("task_1", project_id="proj_1")
    assert task.approved is True
    assert methods(server) == ["POST approve", "GET task_1", "POST approve"]


async def test_action_after_503_that_did_apply_is_read_back(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(
        json_response(503, {"error": "busy"}), json_response(200, task_doc(status="DISCARDED"))
    )
    task = await client.tasks.discard("task_1", project_id="proj_1")
    assert task.status is TaskStatus.DISCARDED
    assert methods(server) == ["POST discard", "GET task_1"]


async def test_action_that_never_applies_stops_at_max_attempts(
    client: SendAI, server: ScriptedServer
) -> None:
    """Every POST is reset and every read-back shows nothing changed: 3 POSTs, then the error."""
    server.play(
        *[h for _ in range(3) for h in (reset_before_response(), current({}))],
    )
    with pytest.raises(TransportError) as caught:
        await client.tasks.complete("task_1", project_id="proj_1")
    assert [m for m in methods(server) if m.startswith("POST")] == ["POST complete"] * 3
    assert caught.value.attempts == 3
    assert not caught.value.outcome_unknown  # the last read-back proved it did not apply


async def test_action_whose_read_back_fails_has_an_unknown_outcome(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    policy = RetryPolicy(max_attempts=1)
    server.play(reset_before_response(), json_response(500, {"error": "down"}))
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        with pytest.raises(TransportError) as caught:
            await sendai.tasks.approve("task_1", project_id="p")
    assert caught.value.outcome_unknown
    assert caught.value.request_sent is True
    assert "outcome unknown" in str(caught.value)
    assert isinstance(caught.value.__cause__, ServerError)


@pytest.mark.parametrize("status", [400, 409, 422])
async def test_refused_action_fails_at_once(
    client: SendAI, server: ScriptedServer, status: int
) -> None:
    server.play(json_response(status, {"error": "task is PROCESSING"}))
    with pytest.raises(Exception) as caught:
        await client.tasks.approve("task_1", project_id="proj_1")
    assert getattr(caught.value, "status_code", None) == status
    assert "task is PROCESSING" in str(caught.value)
    assert len(server.requests) == 1
    if status == 409:
        assert isinstance(caught.value, ConflictError)


async def test_report_sends_issues_and_accepts_207(client: SendAI, server: ScriptedServer) -> None:
    server.play(json_response(207, {**task_doc(), "message": "reported"}))
    task = await client.tasks.report(
        "task_1",
        project_id="proj_1",
        issues=[ReportIssue(label="total", value="wrong"), {"label": "iban", "value": "missing"}],
        message="please check",
    )
    assert task.id == SEED_DOC["payload"]["id"]
    request = server.requests[0]
    assert request.method == "POST"
    assert request.raw_path.endswith("/task/task_1/report")
    assert request.headers["Content-Type"] == "application/json"
    assert orjson.loads(server.bodies[0] or b"") == {
        "issues": [{"label": "total", "value": "wrong"}, {"label": "iban", "value": "missing"}],
        "message": "please check",
    }


@pytest.mark.parametrize(
    "issues",
    [
        pytest.param([], id="empty"),
        pytest.param([{"label": "x"}], id="no-value"),
        pytest.param({"label": "x", "value": "y"}, id="a-mapping-not-a-list"),
        pytest.param(["x"], id="a-string-item"),
    ],
)
async def test_bad_report_is_refused_before_any_request(
    client: SendAI, server: ScriptedServer, issues: Any
) -> None:
    with pytest.raises(ConfigurationError):
        await client.tasks.report("task_1", project_id="proj_1", issues=issues)
    assert server.requests == []


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(reset_before_response(), id="reset"),
        pytest.param(json_response(502, {"error": "bad gateway"}), id="502"),
    ],
)
async def test_report_is_never_sent_twice_after_an_ambiguous_failure(
    client: SendAI, server: ScriptedServer, failure: Handler
) -> None:
    server.play(failure, json_response(207, task_doc()))
    with pytest.raises((TransportError, ServerError)) as caught:
        await client.tasks.report(
            "task_1", project_id="proj_1", issues=[{"label": "a", "value": "b"}]
        )
    assert len(server.requests) == 1
    assert caught.value.outcome_unknown
    assert caught.value.request_sent is True
    assert "outcome unknown" in str(caught.value)


async def test_report_is_retried_after_429(client: SendAI, server: ScriptedServer) -> None:
    server.play(
        json_response(429, {"error": "slow"}, headers={"retry-after-ms": "10"}),
        json_response(207, task_doc()),
    )
    await client.tasks.report("task_1", project_id="proj_1", issues=[{"label": "a", "value": "b"}])
    assert len(server.requests) == 2


async def test_report_is_retried_when_the_connection_is_refused(sleeps: list[float]) -> None:
    """A refused connection provably sent nothing: even a report is retried."""
    async with SendAI(CANARY_KEY, team_id="t", base_url="http://127.0.0.1:9") as sendai:
        with pytest.raises(TransportError) as caught:
            await sendai.tasks.report(
                "task_1", project_id="p", issues=[{"label": "a", "value": "b"}]
            )
    assert caught.value.attempts == 3
    assert caught.value.request_sent is False
    assert not caught.value.outcome_unknown


async def test_gets_are_retried_on_ambiguous_failures(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(reset_before_response(), json_response(503, {}), json_response())
    await client.tasks.get("task_1", project_id="proj_1")
    assert methods(server) == ["GET task_1"] * 3


# -- wait -------------------------------------------------------------------------------


async def test_wait_polls_until_the_task_leaves_processing(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    processing = json_response(200, task_doc(status="PROCESSING"))
    server.play(processing, processing, processing, json_response(200, task_doc()))
    task = await client.tasks.wait("task_1", project_id="proj_1", poll_interval=2.0)
    assert task.status is TaskStatus.REVIEWING
    assert len(server.requests) == 4
    assert len(sleeps) == 3  # one pause between polls, never a busy loop
    for slept, base in zip(sleeps, [2.0, 3.0, 4.5], strict=True):
        assert base * 0.8 <= slept <= base * 1.2  # growing, jittered


async def test_wait_until_a_status_keeps_polling_through_others(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(
        json_response(200, task_doc(status="PROCESSING")),
        json_response(200, task_doc(status="REVIEWING")),
        json_response(200, task_doc(status="COMPLETED")),
    )
    task = await client.tasks.wait("task_1", project_id="proj_1", until=TaskStatus.COMPLETED)
    assert task.status is TaskStatus.COMPLETED
    assert len(server.requests) == 3


async def test_wait_ends_on_a_terminal_status_it_was_not_asked_for(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(200, task_doc(status="FAILED")))
    task = await client.tasks.wait("task_1", project_id="proj_1", until=["COMPLETED"])
    assert task.status is TaskStatus.FAILED


async def test_wait_out_of_time_raises_with_the_last_task(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(200, task_doc(status="PROCESSING")))
    with pytest.raises(WaitTimeoutError) as caught:
        await client.tasks.wait("task_1", project_id="proj_1", max_wait=60, poll_interval=1)
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.last is not None
    assert error.last.status is TaskStatus.PROCESSING
    assert sum(sleeps) == pytest.approx(60, abs=0.5)
    # Intervals grow to the 30 s cap: about 10 polls in a minute, not 60.
    assert 6 <= len(server.requests) <= 12


async def test_wait_honours_retry_after_and_polls_through_transient_errors(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(
        json_response(429, {"error": "slow"}, headers={"Retry-After": "7"}),
        json_response(200, task_doc()),
    )
    policy = RetryPolicy(max_attempts=1)
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        task = await sendai.tasks.wait("task_1", project_id="p")
    assert task.status is TaskStatus.REVIEWING
    assert sleeps == [7.0]


async def test_wait_stops_at_once_on_a_permanent_error(
    client: SendAI, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.play(json_response(404, {"error": "no such task"}))
    with pytest.raises(NotFoundError):
        await client.tasks.wait("task_1", project_id="proj_1")
    assert len(server.requests) == 1


async def test_wait_rejects_bad_arguments_before_polling(
    client: SendAI, server: ScriptedServer
) -> None:
    bad: list[dict[str, Any]] = [
        {"max_wait": 0},
        {"until": 5},
        {"until": []},
        {"poll_interval": -1},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigurationError):
            await client.tasks.wait("task_1", project_id="proj_1", **kwargs)
    assert server.requests == []


async def test_rate_limit_error_from_wait_when_gate_is_too_long(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    """A Retry-After beyond max_wait ends the wait with WaitTimeoutError, cause attached."""
    server.play(json_response(429, {"error": "slow"}, headers={"Retry-After": "500"}))
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url) as sendai:
        with pytest.raises(WaitTimeoutError) as caught:
            await sendai.tasks.wait("task_1", project_id="p", max_wait=30)
    assert isinstance(caught.value.__cause__, RateLimitError)
    assert caught.value.last is None


# -- against the sandbox's state machine ------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tasks=10, processing_delay=0.05).in_thread() as server:
        yield server


@pytest.fixture
async def sandbox_client(sandbox: SandboxServer) -> AsyncIterator[SendAI]:
    """A client on real time (the sandbox's processing delay is real), backing off briefly."""
    policy = RetryPolicy(backoff_base=0.001, backoff_max=0.01)
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, retry=policy
    ) as sendai:
        yield sendai


def _reviewing_unapproved(sandbox: SandboxServer) -> str:
    for task_id in sandbox.task_ids:
        task = sandbox.task(task_id)
        if task["status"] == "REVIEWING" and not task["approved"]:
            return task_id
    pytest.fail("the seed has no REVIEWING task")


@pytest.mark.parametrize(
    ("step", "posts"),
    [
        pytest.param("apply-reset", 1, id="applied-then-dropped"),
        pytest.param("apply-500", 1, id="applied-then-500"),
        pytest.param("reset", 2, id="dropped-before-applying"),
    ],
)
async def test_sandbox_approve_after_a_lost_answer(
    sandbox: SandboxServer, sandbox_client: SendAI, step: str, posts: int
) -> None:
    """The read-back decides: an applied action is not sent again, a lost one is."""
    task_id = _reviewing_unapproved(sandbox)
    sandbox.script(task_id, [step])
    task = await sandbox_client.tasks.approve(task_id, project_id=sandbox.project_id)
    assert task.approved is True
    assert sandbox.task(task_id)["approved"] is True
    assert sandbox.stats.by_route["POST approve"] == posts


async def test_sandbox_refuses_an_action_in_the_wrong_state(
    sandbox: SandboxServer, sandbox_client: SendAI
) -> None:
    task_id = _reviewing_unapproved(sandbox)
    await sandbox_client.tasks.discard(task_id, project_id=sandbox.project_id)
    with pytest.raises(ConflictError, match="DISCARDED"):
        await sandbox_client.tasks.complete(task_id, project_id=sandbox.project_id)
    assert sandbox.stats.by_route["POST complete"] == 1


async def test_sandbox_upload_wait_complete_report(
    sandbox: SandboxServer, sandbox_client: SendAI, tmp_path: Path
) -> None:
    """A user's loop: upload, wait for processing, complete, report; the server saw it all."""
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.7 scan")
    upload = await sandbox_client.uploads.create(
        [path, ("notes.txt", b"hello")], project_id=sandbox.project_id, meta={"k": "v"}
    )
    stored = sandbox.uploads[upload.id]
    assert [(f.name, f.size) for f in stored.files] == [("scan.pdf", 13), ("notes.txt", 5)]
    assert stored.files[0].sha256 == hashlib.sha256(b"%PDF-1.7 scan").hexdigest()
    task_ids = stored.task_ids
    project = sandbox.project_id
    first = await sandbox_client.tasks.wait(task_ids[0], project_id=project, poll_interval=0.01)
    assert first.status is TaskStatus.REVIEWING
    completed = await sandbox_client.tasks.complete(task_ids[0], project_id=project)
    assert completed.status is TaskStatus.PROCESSING
    done = await sandbox_client.tasks.wait(
        task_ids[0], project_id=project, until="COMPLETED", poll_interval=0.01
    )
    assert done.status is TaskStatus.COMPLETED
    await sandbox_client.tasks.report(
        task_ids[1], project_id=project, issues=[ReportIssue(label="total", value="wrong")]
    )
    assert sandbox.reports[task_ids[1]][0]["issues"] == [{"label": "total", "value": "wrong"}]


# --- Bulk reads: decoded on the consumer's side, errors still per ID -------------------------


async def _answer_by_id(request: web.Request) -> web.StreamResponse:
    task_id = request.path.rsplit("/", 1)[-1]
    if task_id == "bad-shape":  # JSON with a payload object, but not a task
        return web.json_response({"payload": {"id": 5}})
    if task_id == "not-json":  # a proxy's login page
        return web.Response(text="<html>please log in</html>", content_type="text/html")
    return web.json_response(task_doc(id=task_id))


BULK_IDS = ["t1", "bad-shape", "t2", "not-json", "t3"]


async def test_a_bad_body_in_bulk_is_its_ids_typed_error_with_context(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(_answer_by_id)
    progress: list[tuple[int, int, int | None]] = []
    results = {
        r.task_id: r
        async for r in client.tasks.iter_many(
            BULK_IDS, project_id="proj_1", concurrency=2, on_progress=lambda *a: progress.append(a)
        )
    }
    assert sorted(results) == sorted(BULK_IDS)
    assert [results[i].task.id for i in ("t1", "t2", "t3")] == ["t1", "t2", "t3"]  # type: ignore[union-attr]
    for bad in ("bad-shape", "not-json"):
        error = results[bad].error
        assert isinstance(error, DecodeError)
        assert results[bad].task is None
        assert error.method == "GET"
        assert error.url is not None
        assert error.url.endswith(f"/task/{bad}")
        assert error.attempts == 1
    assert "payload.id" in str(results["bad-shape"].error)
    assert "text/html" in str(results["not-json"].error)
    # Progress counts an ID once decoded: the two bad bodies are failures, not successes.
    assert progress[-1] == (3, 2, 5)
    assert len(progress) == 5


async def test_raw_bulk_reads_accept_any_payload_object_and_get_many_keeps_order(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(_answer_by_id)
    raw = {r.task_id: r async for r in client.tasks.iter_many_raw(BULK_IDS, project_id="proj_1")}
    assert raw["bad-shape"].payload == {"id": 5}
    assert isinstance(raw["not-json"].error, DecodeError)
    batch = await client.tasks.get_many(BULK_IDS, project_id="proj_1", concurrency=3)
    assert [r.task_id for r in batch.results] == BULK_IDS
    assert [r.ok for r in batch.results] == [True, False, True, False, True]
