"""The sandbox server: faithful Get Task, deterministic data, faults on demand, the plugin."""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
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


def test_plugin_fixtures_work_in_sync_tests(
    sendai_sandbox: SandboxServer, sendai_client: SendAI
) -> None:
    """A plain (sync) test gets a running sandbox and a client that reaches it."""
    assert sendai_sandbox.base_url.startswith("http://127.0.0.1:")
    sendai_sandbox.script(sendai_sandbox.task_ids[1], [500] * 5)
    with pytest.raises(ServerError):
        asyncio.run(
            sendai_client.tasks.get(
                sendai_sandbox.task_ids[1], project_id=sendai_sandbox.project_id
            )
        )
    assert sendai_sandbox.stats.statuses[500] == 3  # the client's retries, then the error


# -- the state machine, spoken to over plain HTTP --------------------------------------

PDF = ("a.pdf", b"a", "application/pdf")


class Api:
    """A thin HTTP client for one sandbox: paths are relative to its team and project."""

    def __init__(self, sandbox: SandboxServer, http: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.http = http
        self.prefix = f"{sandbox.base_url}/v2/{sandbox.team_id}/project/{sandbox.project_id}"
        self.headers = {"Authorization": f"Bearer {sandbox.api_key}"}

    async def call(
        self, method: str, path: str, *, key: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else self.headers
        url = path if path.startswith("http") else f"{self.prefix}{path}"
        async with self.http.request(method, url, headers=headers, **kwargs) as response:
            assert response.headers["x-request-id"].startswith("req_")
            return response.status, await response.json()

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def upload(self, files: list[tuple[str, bytes, str]], **fields: str) -> tuple[int, Any]:
        """Upload ``files`` (name, bytes, content type); ``projectId`` defaults to ours."""
        return await self.post("/upload", data=form(self.sandbox, files, **fields))


def form(
    sandbox: SandboxServer, files: Sequence[tuple[str, bytes | IO[bytes], str]], **fields: str
) -> Any:
    """Build a multipart upload body as a client would (files first, then fields)."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, content, content_type in files:
        data.add_field("file", content, filename=name, content_type=content_type)
    fields.setdefault("projectId", sandbox.project_id)
    for name, value in fields.items():
        data.add_field(name, value)
    return data


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    async with SandboxServer(tasks=60, processing_delay=0.1, seed=5) as server:
        yield server


@pytest.fixture
async def api(sandbox: SandboxServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(sandbox, http)


def first_task(sandbox: SandboxServer, status: str, *, approved: bool | None = None) -> str:
    """Return the first synthetic task in ``status`` (and ``approved``, if given)."""
    for task_id in sandbox.task_ids:
        task = sandbox.task(task_id)
        if task["status"] == status and approved in {None, task["approved"]}:
            return task_id
    raise AssertionError(f"no {status} task with approved={approved}")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` without a fixed sleep: timed transitions take 0.1 s here."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_complete_goes_through_processing_to_completed(
    sandbox: SandboxServer, api: Api
) -> None:
    """Complete answers PROCESSING with a message; COMPLETED follows processing_delay later."""
    task_id = first_task(sandbox, "REVIEWING")
    started = time.monotonic()
    status, body = await api.post(f"/task/{task_id}/complete")
    assert status == 200
    assert body["payload"]["status"] == "PROCESSING"
    assert body["message"]
    untouched = synthetic_task(task_id, project_id="proj_sandbox", seed=5)
    assert body["payload"] == {**untouched, "status": "PROCESSING"}
    await until(lambda: sandbox.task(task_id)["status"] == "COMPLETED")
    assert time.monotonic() - started >= 0.1
    status, body = await api.get(f"/task/{task_id}")
    assert (status, body["payload"]["status"]) == (200, "COMPLETED")
    status, body = await api.post(f"/task/{task_id}/complete")
    assert status == 409
    assert "COMPLETED" in body["error"]


@pytest.mark.parametrize("action", ["complete", "discard"])
@pytest.mark.parametrize("state", ["PROCESSING", "COMPLETED", "FAILED", "DISCARDED", "FILTERED"])
async def test_complete_and_discard_need_reviewing(
    sandbox: SandboxServer, api: Api, action: str, state: str
) -> None:
    task_id = first_task(sandbox, state)
    before = sandbox.task(task_id)
    status, body = await api.post(f"/task/{task_id}/{action}")
    assert status == 409
    assert state in body["error"]
    assert "REVIEWING" in body["error"]
    assert sandbox.task(task_id) == before


async def test_discard_sets_discarded(sandbox: SandboxServer, api: Api) -> None:
    task_id = first_task(sandbox, "REVIEWING")
    status, body = await api.post(f"/task/{task_id}/discard")
    assert (status, body["payload"]["status"]) == (200, "DISCARDED")
    assert "message" not in body
    assert sandbox.task(task_id)["status"] == "DISCARDED"
    status, body = await api.post(f"/task/{task_id}/discard")
    assert status == 409
    assert "DISCARDED" in body["error"]


async def test_approve_and_disapprove_toggle_and_refuse_repeats(
    sandbox: SandboxServer, api: Api
) -> None:
    task_id = first_task(sandbox, "REVIEWING", approved=False)
    status, body = await api.post(f"/task/{task_id}/disapprove")
    assert status == 409
    assert "already disapproved" in body["error"]
    assert "REVIEWING" in body["error"]
    status, body = await api.post(f"/task/{task_id}/approve")
    assert (status, body["payload"]["approved"]) == (200, True)
    status, body = await api.post(f"/task/{task_id}/approve")
    assert status == 409
    assert "already approved" in body["error"]
    status, body = await api.post(f"/task/{task_id}/disapprove")
    assert (status, body["payload"]["approved"]) == (200, False)
    assert sandbox.task(task_id)["approved"] is False


@pytest.mark.parametrize("action", ["approve", "disapprove"])
async def test_approval_is_refused_while_processing(
    sandbox: SandboxServer, api: Api, action: str
) -> None:
    task_id = first_task(sandbox, "PROCESSING")
    status, body = await api.post(f"/task/{task_id}/{action}")
    assert status == 409
    assert "PROCESSING" in body["error"]


async def test_untouched_tasks_stay_deterministic(sandbox: SandboxServer, api: Api) -> None:
    """Changes are an overlay: every other task is still exactly the synthetic one."""
    changed = first_task(sandbox, "REVIEWING")
    await api.post(f"/task/{changed}/discard")
    for task_id in sandbox.task_ids:
        if task_id != changed:
            assert sandbox.task(task_id) == synthetic_task(
                task_id, project_id="proj_sandbox", seed=5
            )


ROUTES = [
    pytest.param("GET", "/task/{task}", id="get-task"),
    pytest.param("POST", "/task/{task}/complete", id="complete"),
    pytest.param("POST", "/task/{task}/discard", id="discard"),
    pytest.param("POST", "/task/{task}/approve", id="approve"),
    pytest.param("POST", "/task/{task}/disapprove", id="disapprove"),
    pytest.param("POST", "/task/{task}/report", id="report"),
    pytest.param("GET", "/upload/{upload}", id="get-upload"),
    pytest.param("POST", "/upload/{upload}/move/fold_1", id="move"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_checks_key_scope_project_and_id(
    sandbox: SandboxServer, api: Api, method: str, path: str
) -> None:
    status, _ = await api.upload([("a.pdf", b"%PDF", "application/pdf")])
    assert status == 200
    known = path.format(task="task_000001", upload="upl_000000")
    for key, expected in [("nope", 401), (sandbox.limited_key, 403)]:
        status, body = await api.call(method, known, key=key)
        assert status == expected
        assert body["error"]
    elsewhere = api.prefix.replace("proj_sandbox", "other_project")
    status, body = await api.call(method, f"{elsewhere}{known}")
    assert (status, body) == (404, {"error": "no such team or project"})
    unknown = path.format(task="task_999999", upload="upl_999999")
    status, body = await api.call(method, unknown, json={"issues": [{"label": "a", "value": "b"}]})
    assert status == 404
    assert "not found" in body["error"]


async def test_unknown_paths_and_methods_answer_json(api: Api) -> None:
    async with api.http.get(f"{api.prefix}/nowhere", headers=api.headers) as response:
        assert response.status == 404
        assert await response.json() == {"error": "Not Found"}
    async with api.http.get(f"{api.prefix}/task/task_000001/approve") as response:
        assert response.status == 405
        assert "error" in await response.json()


async def test_report_answers_207_and_is_stored(sandbox: SandboxServer, api: Api) -> None:
    issues = [{"label": "total", "value": "wrong amount"}, {"label": "iban", "value": "missing"}]
    status, body = await api.post(
        "/task/task_000003/report", json={"issues": issues, "message": "please check"}
    )
    assert status == 207
    assert body["payload"] == sandbox.task("task_000003")
    assert body["message"]
    await api.post("/task/task_000003/report", json={"issues": issues[:1]})
    assert sandbox.reports == {
        "task_000003": [
            {"issues": issues, "message": "please check"},
            {"issues": issues[:1], "message": None},
        ]
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"issues": []}', id="empty-issues"),
        pytest.param(b"{}", id="no-issues"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1]", id="not-an-object"),
        pytest.param(b'{"issues": [{"label": "a"}]}', id="issue-without-value"),
        pytest.param(b'{"issues": [{"label": "a", "value": 1}]}', id="value-not-a-string"),
        pytest.param(b'{"issues": [{"label": "a", "value": "b"}], "message": 3}', id="message"),
    ],
)
async def test_bad_reports_are_refused(sandbox: SandboxServer, api: Api, body: bytes) -> None:
    status, answer = await api.post("/task/task_000003/report", data=body)
    assert status == 400
    assert answer["error"]
    assert sandbox.reports == {}


async def test_upload_parses_the_multipart_body(sandbox: SandboxServer, api: Api) -> None:
    """Files (names, types, sizes, digests), name and meta are recorded; one task per file."""
    a, b = b"%PDF-1.7 first", b"\x89PNG second file"
    meta = [{"name": "source", "value": "scanner"}]
    status, body = await api.upload(
        [("a.pdf", a, "application/pdf"), ("b.png", b, "image/png")],
        name="batch",
        meta=orjson.dumps(meta).decode(),
    )
    assert status == 200
    assert body == {
        "id": "upl_000000",
        "name": "batch",
        "projectId": "proj_sandbox",
        "status": "processing",
        "fileType": "application/pdf",
        "fileSize": len(a) + len(b),
        "createdAt": body["createdAt"],
        "updatedAt": body["createdAt"],
    }
    upload = sandbox.uploads["upl_000000"]
    assert [(f.name, f.content_type, f.size, f.sha256) for f in upload.files] == [
        ("a.pdf", "application/pdf", len(a), hashlib.sha256(a).hexdigest()),
        ("b.png", "image/png", len(b), hashlib.sha256(b).hexdigest()),
    ]
    assert upload.meta == meta
    assert upload.task_ids == ["task_000060", "task_000061"]
    assert sandbox.task_ids[-2:] == upload.task_ids
    task = sandbox.task("task_000061")
    assert task["name"] == "b.png"
    assert task["upload_id"] == "upl_000000"
    assert task["meta"] == meta
    assert task["approved"] is False
    assert task["status"] == "PROCESSING"


async def test_uploaded_tasks_and_the_upload_finish_processing(
    sandbox: SandboxServer, api: Api
) -> None:
    """Tasks go PROCESSING to REVIEWING; the upload goes processing to IN_REVIEW."""
    await api.upload([PDF, ("b.pdf", b"b", "application/pdf")])
    status, body = await api.get("/upload/upl_000000")
    assert status == 200
    assert body["payload"] == {
        "id": "upl_000000",
        "name": "a.pdf",  # no name given: the first file's
        "status": "processing",
        "files": [
            {
                "name": "a.pdf",
                "size": 1,
                "content_type": "application/pdf",
                "task_id": "task_000060",
            },
            {
                "name": "b.pdf",
                "size": 1,
                "content_type": "application/pdf",
                "task_id": "task_000061",
            },
        ],
        "meta": [],
        "folder_id": None,
        "created_at": body["payload"]["created_at"],
        "updated_at": body["payload"]["created_at"],
        "project_id": "proj_sandbox",
    }
    status, body = await api.post("/task/task_000060/approve")
    assert status == 409
    await until(lambda: sandbox.upload("upl_000000")["status"] == "IN_REVIEW")
    for task_id in ["task_000060", "task_000061"]:
        status, body = await api.get(f"/task/{task_id}")
        assert body["payload"]["status"] == "REVIEWING"
    status, body = await api.post("/task/task_000060/complete")
    assert status == 200
    _, body = await api.get("/upload/upl_000000")
    assert body["payload"]["status"] == "processing"  # a task is PROCESSING again


async def test_file_type_falls_back_to_the_extension(api: Api) -> None:
    status, body = await api.upload([("scan.TIFF", b"II*", "application/octet-stream")])
    assert (status, body["fileType"]) == (200, "tiff")


@pytest.mark.parametrize(
    ("files", "fields", "message"),
    [
        pytest.param([], {}, "at least one", id="no-file"),
        pytest.param([PDF], {"projectId": "p2"}, "projectId", id="other-project"),
        pytest.param([PDF], {"meta": "{not json"}, "meta", id="meta-not-json"),
        pytest.param([PDF], {"meta": '[{"value": 1}]'}, "meta", id="meta-item-without-name"),
        pytest.param([("", b"a", "application/pdf")], {}, "filename", id="no-filename"),
    ],
)
async def test_bad_uploads_are_refused_with_400(
    sandbox: SandboxServer,
    api: Api,
    files: list[tuple[str, bytes, str]],
    fields: dict[str, str],
    message: str,
) -> None:
    status, body = await api.upload(files, **fields)
    assert status == 400
    assert message in body["error"]
    assert sandbox.uploads == {}
    assert sandbox.task_ids == [sandbox.task_id(i) for i in range(60)]


async def test_upload_without_project_id_or_multipart_is_refused(
    sandbox: SandboxServer, api: Api
) -> None:
    data = aiohttp.FormData()
    data.add_field("file", b"a", filename="a.pdf", content_type="application/pdf")
    status, body = await api.post("/upload", data=data)
    assert (status, body["error"]) == (400, "projectId is required")
    status, body = await api.post("/upload", json={"file": "a.pdf"})
    assert status == 400
    assert "multipart" in body["error"]
    assert sandbox.uploads == {}


async def test_upload_limits_answer_413() -> None:
    async with (
        SandboxServer(tasks=1, max_files=2, max_file_bytes=1_000_000) as sandbox,
        aiohttp.ClientSession() as http,
    ):
        api = Api(sandbox, http)
        status, body = await api.upload([(f"{i}.pdf", b"x", "application/pdf") for i in range(3)])
        assert status == 413
        assert "at most 2 files" in body["error"]
        status, body = await api.upload([("big.pdf", b"x" * 1_000_001, "application/pdf")])
        assert status == 413
        assert "'big.pdf'" in body["error"]
        assert "1 MB per file" in body["error"]
        status, _ = await api.upload([("fits.pdf", b"x" * 1_000_000, "application/pdf")])
        assert status == 200
        assert list(sandbox.uploads) == ["upl_000000"]


async def test_move_sets_the_folder(sandbox: SandboxServer, api: Api) -> None:
    await api.upload([PDF])
    status, body = await api.post("/upload/upl_000000/move/fold_9")
    assert (status, body["payload"]["folder_id"]) == (200, "fold_9")
    assert body["payload"] == sandbox.upload("upl_000000")
    assert sandbox.uploads["upl_000000"].folder_id == "fold_9"


async def test_listing_includes_uploads_and_filters_by_upload_id(
    sandbox: SandboxServer, api: Api
) -> None:
    await api.upload([PDF, ("b.pdf", b"b", "application/pdf")])
    await api.upload([("c.pdf", b"c", "application/pdf")])
    ids: list[str] = []
    token = ""
    while True:
        _, page = await api.get("/tasks", params={"limit": "25", "token": token})
        ids += [task["id"] for task in page["payload"]]
        if not page["more"]:
            break
        token = page["paginationToken"]
    assert ids == sandbox.task_ids
    assert ids[-3:] == ["task_000060", "task_000061", "task_000062"]
    _, page = await api.get("/tasks", params={"upload_id": "upl_000000"})
    assert [task["id"] for task in page["payload"]] == ["task_000060", "task_000061"]
    synthetic_upload = sandbox.task("task_000007")["upload_id"]
    _, page = await api.get("/tasks", params={"upload_id": synthetic_upload})
    assert [task["id"] for task in page["payload"]] == ["task_000007"]
    reviewing = first_task(sandbox, "REVIEWING")
    await api.post(f"/task/{reviewing}/discard")
    _, page = await api.get("/tasks", params={"status": "DISCARDED", "limit": "500"})
    assert reviewing in [task["id"] for task in page["payload"]]


# -- faults on state-changing calls ------------------------------------------------------


async def test_apply_reset_changes_state_then_drops_the_connection(
    sandbox: SandboxServer, api: Api
) -> None:
    task_id = first_task(sandbox, "REVIEWING", approved=False)
    sandbox.script(task_id, ["apply-reset"])
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.post(f"/task/{task_id}/approve")
    assert sandbox.task(task_id)["approved"] is True
    status, body = await api.post(f"/task/{task_id}/approve")  # the retry meets the new state
    assert status == 409
    assert "already approved" in body["error"]


async def test_apply_500_changes_state_then_answers_500(sandbox: SandboxServer, api: Api) -> None:
    task_id = first_task(sandbox, "REVIEWING")
    sandbox.script(task_id, ["apply-500"])
    status, body = await api.post(f"/task/{task_id}/discard")
    assert status == 500
    assert "applied" in body["error"]
    assert sandbox.task(task_id)["status"] == "DISCARDED"


@pytest.mark.parametrize("step", ["reset", 503, 429, "garbage"])
async def test_faults_before_the_server_leave_state_alone(
    sandbox: SandboxServer, api: Api, step: int | str
) -> None:
    """A reset (before the body is read), a 5xx or 429, or a gateway's garbage apply nothing."""
    task_id = first_task(sandbox, "REVIEWING")
    sandbox.script(task_id, [step])
    url = f"{api.prefix}/task/{task_id}/complete"
    if step == "reset":
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.post(url)
    else:
        async with api.http.post(url, headers=api.headers) as response:
            assert response.status == (200 if step == "garbage" else step)
    assert sandbox.task(task_id)["status"] == "REVIEWING"
    assert sandbox.stats.faults[str(step)] == 1


async def test_upload_faults_use_the_upload_key(sandbox: SandboxServer, api: Api) -> None:
    """``reset`` stores nothing, ``apply-reset`` stores the upload; IDs keep their order."""
    files = [("a.pdf", b"a" * 100_000, "application/pdf")]
    sandbox.script("upload", ["reset", "apply-reset"])
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.upload(files)
    assert sandbox.uploads == {}
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.upload(files)
    assert list(sandbox.uploads) == ["upl_000000"]
    sandbox.script("upl_000000", [502])
    status, _ = await api.get("/upload/upl_000000")
    assert status == 502
    status, _ = await api.upload(files)
    assert status == 200
    assert list(sandbox.uploads) == ["upl_000000", "upl_000001"]


async def test_random_faults_reach_posts_too() -> None:
    async with SandboxServer(tasks=20, fault_rate=1.0, faults=["503"]) as sandbox:
        task_id = first_task(sandbox, "REVIEWING")
        async with aiohttp.ClientSession() as http:
            status, _ = await Api(sandbox, http).post(f"/task/{task_id}/discard")
        assert status == 503
        assert sandbox.task(task_id)["status"] == "REVIEWING"


async def test_stats_count_requests_per_route(sandbox: SandboxServer, api: Api) -> None:
    await api.get("/task/task_000001")
    await api.get("/task/task_000002")
    await api.post("/task/task_000001/approve")
    await api.upload([PDF])
    await api.post("/upload/upl_000000/move/f")
    await api.get("/tasks")
    assert sandbox.stats.by_route == {
        "GET task": 2,
        "POST approve": 1,
        "POST upload": 1,
        "POST move": 1,
        "GET tasks": 1,
    }
    assert sandbox.stats.by_task["task_000001"] == 2
    assert sandbox.stats.by_task["upload"] == 1
    assert sandbox.stats.requests == 6


def test_bad_state_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="processing_delay"):
        SandboxServer(processing_delay=-1)
    with pytest.raises(ValueError, match="max_files"):
        SandboxServer(max_files=0)


def test_uploads_are_read_streaming(tmp_path: Path) -> None:
    """A 20 MB upload to the in-thread sandbox never sits in memory, on either thread."""
    path = tmp_path / "big.pdf"
    with path.open("wb") as stream:
        for _ in range(20):
            stream.write(b"x" * 1_000_000)

    async def send(sandbox: SandboxServer) -> int:
        async with aiohttp.ClientSession() as http:
            with path.open("rb") as stream:
                status, _ = await Api(sandbox, http).post(
                    "/upload", data=form(sandbox, [(path.name, stream, "application/pdf")])
                )
        return status

    with SandboxServer(tasks=1).in_thread() as sandbox:
        asyncio.run(send(sandbox))  # warm up: imports, the connection pool
        tracemalloc.start()
        try:
            assert asyncio.run(send(sandbox)) == 200
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert sandbox.uploads["upl_000001"].files[0].size == 20_000_000
    assert peak < 8 * 1000 * 1000
