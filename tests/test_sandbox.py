"""The sandbox server: faithful Get Task, deterministic data, faults on demand, the plugin."""

from __future__ import annotations

import aiohttp
import pytest

from sendai_async import (
    AuthenticationError,
    DecodeError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    SendAI,
    ServerError,
    TransportError,
)
from sendai_async.testing import LARGE, SandboxServer, synthetic_task


async def test_get_task_is_faithful() -> None:
    async with SandboxServer(tasks=5) as sandbox, aiohttp.ClientSession() as http:
        url = (
            f"{sandbox.base_url}/v2/{sandbox.team_id}/project/{sandbox.project_id}/task/task_000001"
        )
        async with http.get(
            url, headers={"Authorization": f"Bearer {sandbox.api_key}"}
        ) as response:
            assert response.status == 200
            assert response.headers["x-request-id"].startswith("req_")
            body = await response.json()
        assert body == {"payload": sandbox.task("task_000001")}
        async with http.get(url) as response:
            assert response.status == 401
        async with http.get(url, headers={"Authorization": "Bearer nope"}) as response:
            assert response.status == 401


async def test_auth_scope_and_unknown_ids_map_to_typed_errors(sleeps: list[float]) -> None:
    async with SandboxServer(tasks=5) as sandbox:
        for key, error in [
            ("bad", AuthenticationError),
            (sandbox.limited_key, PermissionDeniedError),
        ]:
            async with SendAI(key, team_id=sandbox.team_id, base_url=sandbox.base_url) as sendai:
                with pytest.raises(error):
                    await sendai.tasks.get("task_000001", project_id=sandbox.project_id)
        async with SendAI(
            sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
        ) as sendai:
            with pytest.raises(NotFoundError):
                await sendai.tasks.get("task_000005", project_id=sandbox.project_id)
            with pytest.raises(NotFoundError):
                await sendai.tasks.get("task_000001", project_id="other_project")
            task = await sendai.tasks.get("task_000004", project_id=sandbox.project_id)
    assert task.id == "task_000004"
    assert sandbox.stats.statuses[401] == 1
    assert sandbox.stats.statuses[403] == 1


def test_synthetic_tasks_are_deterministic_and_varied() -> None:
    a = synthetic_task("task_1", project_id="p", seed=1)
    assert a == synthetic_task("task_1", project_id="p", seed=1)
    assert a != synthetic_task("task_1", project_id="p", seed=2)
    statuses = {synthetic_task(f"t{i}", project_id="p")["status"] for i in range(300)}
    assert statuses == {"PROCESSING", "REVIEWING", "COMPLETED", "FAILED", "DISCARDED", "FILTERED"}
    large = synthetic_task("big", project_id="p", shape=LARGE)
    assert len(large["pages"]) == 20
    assert all(len(page["annotations"]) == 50 for page in large["pages"])


async def test_scripted_faults_play_in_order(sleeps: list[float]) -> None:
    async with SandboxServer(tasks=5) as sandbox:
        sandbox.script("task_000001", [503, "truncate", 200])
        policy = RetryPolicy(max_attempts=4)
        async with SendAI(
            sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, retry=policy
        ) as sendai:
            task = await sendai.tasks.get("task_000001", project_id=sandbox.project_id)
            assert task.id == "task_000001"
            assert sandbox.stats.by_task["task_000001"] == 3
            sandbox.script("task_000002", ["garbage"])
            with pytest.raises(DecodeError):
                await sendai.tasks.get("task_000002", project_id=sandbox.project_id)
            # aiohttp itself resends once when a reused keep-alive connection is reset
            # (RFC 9112 9.3.1), so each of our attempts may meet two resets.
            sandbox.script("task_000003", ["reset"] * 8)
            with pytest.raises(TransportError):
                await sendai.tasks.get("task_000003", project_id=sandbox.project_id)


async def test_random_faults_are_reproducible_with_a_seed(sleeps: list[float]) -> None:
    async def faults(seed: int) -> dict[str, int]:
        async with SandboxServer(tasks=200, fault_rate=0.2, seed=seed) as sandbox:
            async with SendAI(
                sandbox.api_key,
                team_id=sandbox.team_id,
                base_url=sandbox.base_url,
                retry=RetryPolicy(max_attempts=6),
            ) as sendai:
                await sendai.tasks.get_many(
                    sandbox.task_ids, project_id=sandbox.project_id, concurrency=8
                )
            return dict(sandbox.stats.faults)

    first = await faults(7)
    assert first == await faults(7)
    assert set(first) >= {"429", "500", "503", "reset", "truncate"}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="fault_rate"):
        SandboxServer(fault_rate=1.5)
    with pytest.raises(ValueError, match="unknown fault"):
        SandboxServer(faults=["meteor"])
    with pytest.raises(ValueError, match="script step"):
        SandboxServer().script("t", ["meteor"])


async def test_plugin_fixtures_give_a_ready_client(
    sendai_sandbox: SandboxServer, sendai_client: SendAI
) -> None:
    """The pytest11 plugin's fixtures work out of the box."""
    sendai_sandbox.script(sendai_sandbox.task_ids[0], [500, 200])
    task = await sendai_client.tasks.get(
        sendai_sandbox.task_ids[0], project_id=sendai_sandbox.project_id
    )
    assert task.id == sendai_sandbox.task_ids[0]
    assert sendai_sandbox.stats.statuses[500] == 1


def test_plugin_fixtures_work_in_sync_tests(sendai_sandbox: SandboxServer) -> None:
    assert sendai_sandbox.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(ServerError):
        raise ServerError("x", status_code=500)
