"""``SandboxServer``: a local aiohttp server that speaks the Send AI API.

It serves every documented endpoint faithfully (Bearer auth, 401/403/404, ``{"payload": ...}``
bodies, ``{"error": ...}`` refusals, an ``x-request-id`` header) over deterministic synthetic
tasks, keeps the state the documented rules describe (task actions, reports, uploads, moves)
and injects faults on demand: a seeded rate of random ones, or a script per task or upload ID.

It also serves ``GET /v2/{team}/project/{project}/tasks``, a listing in the token-paged
shape of Send AI's public query library (``limit``, ``token``, ``status``, ``upload_id``).
That endpoint is the sandbox's own: the real API documents no list endpoint.

Where the documentation is silent the sandbox picks something and says so: refusals by the
state rules are 409, uploads answer 200, and an upload's ``files`` carry each file's
``task_id`` (the docs do not say how files map to tasks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

import attrs
import orjson
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.typedefs import Handler

from ._state import ACTIONS, Refused, SandboxState, SandboxUpload
from ._synthetic import SMALL, TaskShape, synthetic_task
from ._window import RateLimitWindow

FAULTS = ("429", "429-bare", "500", "502", "503", "reset", "truncate", "slow")
"""Random fault kinds: 429 with and without ``Retry-After``, 5xx, connection reset before the
response, a body cut off mid-stream, and a slow (but successful) response. A state-changing
request that meets a 429, a 5xx or a reset is not applied; one cut off or slow is."""

SCRIPT_STEPS = (
    "reset",
    "truncate",
    "slow",
    "stall",
    "garbage",
    "apply-reset",
    "apply-500",
    "429-bare",
)
"""Scripted steps besides an HTTP status: ``stall`` never answers, ``garbage`` is a 200
whose body is not JSON, ``apply-reset`` and ``apply-500`` apply a change and then drop the
connection or answer 500, ``429-bare`` is a 429 without ``Retry-After``."""

_MAX_PAGE = 500
_CHUNK = 64 * 1024
_MAX_FIELD = 64 * 1024
"""The most a form field (``projectId``, ``name``, ``meta``) of an upload may hold."""
_MAX_JSON = 1024 * 1024
"""The most a JSON body (a report) may hold; uploads stream past this limit."""


@attrs.define
class SandboxStats:
    """What the sandbox has served so far.

    ``by_task`` counts requests per script key (a task ID, an upload ID, ``"upload"`` or
    ``"list:<token>"``), ``by_route`` per method and endpoint (``"GET task"``,
    ``"GET tasks"``, ``"POST complete"``, ``"POST discard"``, ``"POST approve"``,
    ``"POST disapprove"``, ``"POST report"``, ``"POST upload"``, ``"GET upload"``,
    ``"POST move"``). ``arrivals`` holds each request's arrival time (``time.monotonic()``)
    and ``window`` the 429 window opened by ``SandboxServer.rate_limit_window``, if any.
    """

    requests: int = 0
    statuses: Counter[int] = attrs.Factory(Counter)
    faults: Counter[str] = attrs.Factory(Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    by_task: Counter[str] = attrs.Factory(Counter)
    arrivals: list[float] = attrs.Factory(list)
    window: RateLimitWindow | None = None
    by_route: Counter[str] = attrs.Factory(Counter)


@attrs.frozen
class _Reply:
    """What a request deserves once any fault is set aside: a status and a JSON body."""

    status: int
    body: Any


def _refusal(status: int, message: str) -> _Reply:
    return _Reply(status, {"error": message})


_Action = Callable[[], Awaitable[_Reply]]


@attrs.define
class _Form:
    """An upload's form: per file (name, content type, size, sha256), then the fields."""

    files: list[tuple[str, str, int, str]] = attrs.Factory(list)
    fields: dict[str, str] = attrs.Factory(dict)


class SandboxServer:
    """A Send AI look-alike on 127.0.0.1, for demos, benchmarks and tests.

    Use it as ``async with SandboxServer() as sandbox:`` (same event loop), or
    ``with SandboxServer().in_thread() as sandbox:`` (its own thread and loop; works from
    sync code and from any loop). ``sandbox.base_url`` and ``sandbox.api_key`` configure a
    client; ``sandbox.task_ids`` lists the tasks it knows.

    State follows the documented rules: ``complete`` and ``discard`` need REVIEWING
    (``complete`` leaves the task PROCESSING, then COMPLETED ``processing_delay`` seconds
    later); ``approve`` and ``disapprove`` are refused while PROCESSING or when the task
    already is so. Refusals are 409 with a message naming the task's state. An upload
    creates one task per file (``task_...`` numbered after the synthetic ones), PROCESSING
    for ``processing_delay`` seconds, then REVIEWING. Tasks nobody changed are served
    exactly as ``synthetic_task`` makes them.

    Attributes:
        uploads: Every upload accepted, by ID (``upl_000000`` upwards), with its files'
            names, content types, sizes, SHA-256 digests and task IDs.
        reports: The reports received, by task ID: ``{"issues": [...], "message": ...}``.
        stats: What has been served (see ``SandboxStats``).

    Args:
        tasks: How many tasks exist (IDs ``task_000000`` upwards).
        seed: Makes tasks and random faults reproducible.
        api_key: The key with full access (random when omitted). ``limited_key`` is
            also accepted but lacks every scope, so it gets 403.
        team_id: The only team that exists.
        project_id: The only project that exists.
        shape: How big tasks are (``SMALL`` or ``LARGE`` from this module, or your own).
        fault_rate: Probability in ``[0, 1]`` that a request meets a random fault.
        faults: Which kinds of random fault to draw from (see ``FAULTS``).
        latency: Seconds added to every response.
        slow_delay: Extra seconds of a ``slow`` fault.
        retry_after: Seconds a 429 asks for (sent as ``retry-after-ms`` and ``Retry-After``).
        processing_delay: Seconds a task stays PROCESSING after an upload or ``complete``.
        max_files: The most files one upload may carry (more get 413).
        max_file_bytes: The most bytes one uploaded file may have (more get 413).
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
        processing_delay: float = 0.2,
        max_files: int = 100,
        max_file_bytes: int = 40 * 1000 * 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0 <= fault_rate <= 1:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        self.faults = tuple(faults)
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULTS}")
        if processing_delay < 0:
            raise ValueError(f"processing_delay must not be negative, got {processing_delay}")
        if max_files < 1 or max_file_bytes < 1:
            raise ValueError("max_files and max_file_bytes must be positive")
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
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.host = host
        self.port = port
        self.stats = SandboxStats()
        self._state = SandboxState(processing_delay=processing_delay)
        self.uploads: dict[str, SandboxUpload] = self._state.uploads
        self.reports: dict[str, list[dict[str, Any]]] = self._state.reports
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
    def processing_delay(self) -> float:
        """Seconds a task stays PROCESSING after an upload or ``complete``."""
        return self._state.processing_delay

    @processing_delay.setter
    def processing_delay(self, seconds: float) -> None:
        self._state.processing_delay = seconds

    @property
    def task_ids(self) -> list[str]:
        """Every task ID the sandbox knows, in order: the synthetic ones, then uploaded ones."""
        return [*(self.task_id(i) for i in range(self.tasks)), *self._state.uploaded_tasks]

    @staticmethod
    def task_id(index: int) -> str:
        """Return the ID of the ``index``-th task."""
        return f"task_{index:06d}"

    async def start(self) -> None:
        """Bind and start serving in the running loop."""
        # client_max_size bounds bodies read whole (a report's JSON); uploads are read
        # part by part in chunks, which aiohttp does not hold to that limit.
        app = web.Application(client_max_size=_MAX_JSON, middlewares=[_json_errors])
        prefix = "/v2/{team}/project/{project}"
        actions = "|".join(ACTIONS)
        app.router.add_get(f"{prefix}/task/{{task}}", self._get_task)
        app.router.add_post(f"{prefix}/task/{{task}}/{{action:{actions}}}", self._act)
        app.router.add_post(f"{prefix}/task/{{task}}/report", self._report)
        app.router.add_get(f"{prefix}/tasks", self._list_tasks)
        app.router.add_post(f"{prefix}/upload", self._create_upload)
        app.router.add_get(f"{prefix}/upload/{{upload}}", self._get_upload)
        app.router.add_post(f"{prefix}/upload/{{upload}}/move/{{folder}}", self._move_upload)
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

    def script(self, key: str, steps: Iterable[int | str]) -> None:
        """Answer the next requests for ``key`` with ``steps``, one per request.

        The key is the task ID for every ``/task/{id}`` route (GET and the POSTs share
        it), the upload ID for ``/upload/{id}`` and its move, ``"upload"`` for
        ``POST /upload``, and ``"list:<token>"`` for a listing page (``"list:"`` for the
        first). After the script runs out requests are served normally.

        A step is an HTTP status or one of ``SCRIPT_STEPS``:

        - ``200`` serves the request normally;
        - another status (``429``, ``503``, ...) answers with it and changes nothing (a
          ``429`` carries ``Retry-After``; ``"429-bare"`` is one without it);
        - ``"reset"`` drops the connection before reading the body or changing anything;
        - ``"apply-reset"`` makes the change (the action, report or upload), then drops
          the connection without answering; ``"apply-500"`` makes it, then answers 500;
        - ``"truncate"`` makes it and sends half the body; ``"slow"`` makes it after
          ``slow_delay``; ``"stall"`` never answers (nor changes anything); ``"garbage"``
          answers a 200 that is not JSON and changes nothing.
        """
        steps = list(steps)
        for step in steps:
            if isinstance(step, str) and step not in SCRIPT_STEPS:
                raise ValueError(f"unknown script step {step!r}; use a status or {SCRIPT_STEPS}")
        self._scripts[key] = steps

    def rate_limit_window(self, *, after_requests: int, seconds: float) -> RateLimitWindow:
        """Answer 429 to every request for ``seconds``, from the ``after_requests``-th on.

        As when a team's rate limit is hit: each 429 carries the time left as
        ``retry-after-ms`` and ``Retry-After``. ``stats.window`` records when the first 429
        went out and when the window ends.
        """
        self.stats.window = RateLimitWindow(after_requests=after_requests, seconds=seconds)
        return self.stats.window

    # -- state -----------------------------------------------------------------------

    def task(self, task_id: str) -> dict[str, Any]:
        """Return the payload served for ``task_id`` now (whether or not it exists).

        Tasks nobody changed come back exactly as ``synthetic_task`` makes them.
        """
        base = synthetic_task(task_id, project_id=self.project_id, seed=self.seed, shape=self.shape)
        return self._state.current(base)

    def upload(self, upload_id: str) -> dict[str, Any]:
        """Return the payload ``GET /upload/{upload_id}`` serves now.

        Raises:
            KeyError: No such upload.

        """
        upload = self.uploads[upload_id]
        return {
            "id": upload.id,
            "name": upload.name,
            "status": self._state.upload_status(upload),
            "files": [
                {
                    "name": file.name,
                    "size": file.size,
                    "content_type": file.content_type,
                    "task_id": file.task_id,
                }
                for file in upload.files
            ],
            "meta": upload.meta,
            "folder_id": upload.folder_id,
            "created_at": upload.created_at,
            "updated_at": upload.updated_at,
            "project_id": upload.project_id,
        }

    def _exists(self, task_id: str) -> bool:
        return self._known_index(task_id) is not None or self._state.is_uploaded(task_id)

    def _known_index(self, task_id: str) -> int | None:
        prefix, _, number = task_id.partition("_")
        if prefix != "task" or len(number) != 6 or not number.isdigit():
            return None
        index = int(number)
        return index if index < self.tasks else None

    # -- serving, with faults ----------------------------------------------------------

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

    async def _serve(
        self, request: web.Request, key: str, route: str, action: _Action
    ) -> web.StreamResponse:
        """Run ``action`` and answer with its reply, unless a fault was drawn for ``key``."""
        stats = self.stats
        stats.arrivals.append(time.monotonic())
        stats.requests += 1
        stats.by_task[key] += 1
        stats.by_route[route] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._respond(request, key, action)
        finally:
            stats.in_flight -= 1
        stats.statuses[response.status] += 1
        return response

    async def _respond(self, request: web.Request, key: str, action: _Action) -> web.StreamResponse:
        window = self.stats.window
        wait = window.retry_after(self.stats.requests) if window is not None else None
        if wait is not None:
            headers = {
                "x-request-id": f"req_{self.stats.requests:08d}",
                "retry-after-ms": str(int(wait * 1000)),
                "Retry-After": str(max(1, round(wait))),
            }
            return _json(429, {"error": "rate limit window"}, headers)
        fault = self._draw_fault(key)
        if self.latency:
            await asyncio.sleep(self.latency)
        headers = {"x-request-id": f"req_{self.stats.requests:08d}"}
        if fault is None:
            return await self._send(request, await action(), headers)
        self.stats.faults[str(fault)] += 1
        return await self._spoil(request, fault, action, headers)

    async def _spoil(
        self, request: web.Request, fault: str | int, action: _Action, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Answer a request that met ``fault``."""
        # Faults that answer in place of the server change nothing: the request is refused
        # (a status), lost before it was read (reset) or mangled by a gateway (garbage).
        if isinstance(fault, int) or fault.isdigit() or fault == "429-bare":
            status = int(fault) if isinstance(fault, int) or fault.isdigit() else 429
            if status == 429 and fault != "429-bare":
                headers["retry-after-ms"] = str(int(self.retry_after * 1000))
                headers["Retry-After"] = str(max(1, round(self.retry_after)))
            return _json(status, {"error": f"sandbox fault {fault}"}, headers)
        if fault == "reset":
            return _drop(request)
        if fault == "garbage":
            return web.Response(status=200, text="<html>gateway hiccup</html>", headers=headers)
        await asyncio.sleep({"stall": 3600.0, "slow": self.slow_delay}.get(fault, 0.0))
        # The rest apply the request, then spoil the answer: a client cannot tell whether
        # its change was made, which is what idempotent retries must cope with.
        reply = await action()
        if fault == "apply-reset":
            return _drop(request)
        if fault == "apply-500":
            body = {"error": "sandbox fault apply-500 (the request was applied)"}
            return _json(500, body, headers)
        return await self._send(request, reply, headers, truncate=fault == "truncate")

    async def _send(
        self,
        request: web.Request,
        reply: _Reply,
        headers: dict[str, str],
        *,
        truncate: bool = False,
    ) -> web.StreamResponse:
        payload = orjson.dumps(reply.body)
        if not truncate or not 200 <= reply.status < 300:  # refusals are sent whole
            return _json(reply.status, reply.body, headers)
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.content_type = "application/json"
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if request.transport is not None:
            request.transport.close()
        return response

    def _auth(self, request: web.Request, scope: str) -> _Reply | None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Bearer" or not key:
            return _refusal(401, "missing bearer token")
        if secrets.compare_digest(key, self.limited_key):
            return _refusal(403, f"this API key lacks the {scope} scope")
        if not secrets.compare_digest(key, self.api_key):
            return _refusal(401, "invalid API key")
        return None

    def _check_scope(self, request: web.Request, scope: str) -> _Reply | None:
        denied = self._auth(request, scope)
        if denied is not None:
            return denied
        info = request.match_info
        if info["team"] != self.team_id or info["project"] != self.project_id:
            return _refusal(404, "no such team or project")
        return None

    def _check_task(self, request: web.Request, scope: str, task_id: str) -> _Reply | None:
        refused = self._check_scope(request, scope)
        if refused is None and not self._exists(task_id):
            refused = _refusal(404, f"task {task_id!r} not found")
        return refused

    def _check_upload(self, request: web.Request, scope: str, upload_id: str) -> _Reply | None:
        refused = self._check_scope(request, scope)
        if refused is None and upload_id not in self.uploads:
            refused = _refusal(404, f"upload {upload_id!r} not found")
        return refused

    # -- tasks -------------------------------------------------------------------------

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task"]

        async def action() -> _Reply:
            refused = self._check_task(request, "task.read", task_id)
            return refused or _Reply(200, {"payload": self.task(task_id)})

        return await self._serve(request, task_id, "GET task", action)

    async def _act(self, request: web.Request) -> web.StreamResponse:
        task_id, name = request.match_info["task"], request.match_info["action"]

        async def action() -> _Reply:
            refused = self._check_task(request, "task.edit", task_id)
            if refused is not None:
                return refused
            try:
                self._state.act(name, self.task(task_id))
            except Refused as exc:
                return _refusal(exc.status, exc.message)
            body: dict[str, Any] = {"payload": self.task(task_id)}
            if name == "complete":
                body["message"] = "task completed; it is processed before it shows COMPLETED"
            return _Reply(200, body)

        return await self._serve(request, task_id, f"POST {name}", action)

    async def _report(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task"]

        async def action() -> _Reply:
            refused = self._check_task(request, "task.edit", task_id)
            if refused is not None:
                return refused
            try:
                issues, message = _parse_report(await request.read())
            except web.HTTPRequestEntityTooLarge:
                return _refusal(413, f"a report body may hold at most {_MAX_JSON} bytes")
            except Refused as exc:
                return _refusal(exc.status, exc.message)
            self._state.report(task_id, issues, message)
            return _Reply(
                207,
                {"payload": self.task(task_id), "message": f"{len(issues)} issue(s) reported"},
            )

        return await self._serve(request, task_id, "POST report", action)

    async def _list_tasks(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        token = query.get("token", "")

        async def action() -> _Reply:
            refused = self._check_scope(request, "task.read")
            if refused is not None:
                return refused
            try:
                limit = min(int(query.get("limit", "50")), _MAX_PAGE)
                start = _decode_token(token)
            except ValueError:
                return _refusal(400, "invalid limit or token")
            if limit < 1:
                return _refusal(400, "limit must be positive")
            return _Reply(
                200, self._page(start, limit, query.get("status"), query.get("upload_id"))
            )

        return await self._serve(request, f"list:{token}", "GET tasks", action)

    def _page(
        self, start: int, limit: int, status: str | None, upload_id: str | None
    ) -> dict[str, Any]:
        uploaded = self._state.uploaded_tasks
        total = self.tasks + len(uploaded)
        index = start
        if upload_id in self.uploads:  # the sandbox's uploads hold uploaded tasks only
            index = max(index, self.tasks)
        items: list[dict[str, Any]] = []
        while index < total and len(items) < limit:
            task_id = self.task_id(index) if index < self.tasks else uploaded[index - self.tasks]
            task = self.task(task_id)
            index += 1
            if status not in {None, task["status"]} or upload_id not in {None, task["upload_id"]}:
                continue
            items.append(task)
        more = index < total
        return {
            "count": len(items),
            "more": more,
            "paginationToken": _encode_token(index) if more else None,
            "payload": items,
        }

    # -- uploads -----------------------------------------------------------------------

    async def _create_upload(self, request: web.Request) -> web.StreamResponse:
        async def action() -> _Reply:
            refused = self._check_scope(request, "upload.create")
            if refused is not None:
                return refused
            try:
                form = await self._read_form(request)
                name, meta = self._check_form(form, request.match_info["project"])
            except Refused as exc:
                return _refusal(exc.status, exc.message)
            upload = self._state.create_upload(
                form.files,
                name=name,
                meta=meta,
                project_id=self.project_id,
                first_task=self.tasks,
            )
            first = upload.files[0]
            file_type = first.content_type
            if file_type == "application/octet-stream" and "." in first.name:
                file_type = first.name.rsplit(".", 1)[1].lower()
            return _Reply(
                200,
                {
                    "id": upload.id,
                    "name": upload.name,
                    "projectId": upload.project_id,
                    "status": "processing",
                    "fileType": file_type,
                    "fileSize": sum(file.size for file in upload.files),
                    "createdAt": upload.created_at,
                    "updatedAt": upload.updated_at,
                },
            )

        return await self._serve(request, "upload", "POST upload", action)

    async def _read_form(self, request: web.Request) -> _Form:
        """Read an upload's multipart body part by part, keeping no file's bytes.

        Once a file breaks a limit the remaining parts are still read (and dropped), so
        the client gets the 413 rather than a connection closed under its feet mid-send.

        Raises:
            Refused: 400 for a malformed body or a bad part, 413 over a limit.

        """
        if request.content_type != "multipart/form-data":
            raise Refused(400, "an upload is a multipart/form-data body")
        form, problem, count = _Form(), None, 0
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise Refused(400, "nested multipart parts are not supported")
                if part.name != "file":
                    form.fields[part.name or ""] = await _read_field(part)
                    continue
                count += 1
                filename, content_type = part.filename, part.headers.get(hdrs.CONTENT_TYPE)
                size, sha256 = await _digest(part)
                if problem is not None:
                    continue
                if count > self.max_files:
                    problem = Refused(413, f"an upload takes at most {self.max_files} files")
                elif size > self.max_file_bytes:
                    problem = Refused(
                        413,
                        f"file {filename!r} is {size} bytes, over the limit of "
                        f"{_amount(self.max_file_bytes)} per file",
                    )
                elif not filename:
                    problem = Refused(400, "a file part needs a filename")
                else:
                    content_type = content_type or "application/octet-stream"
                    form.files.append((filename, content_type, size, sha256))
        except ValueError as exc:
            raise Refused(400, f"malformed multipart body: {exc}") from exc
        if problem is not None:
            raise problem
        return form

    def _check_form(self, form: _Form, project: str) -> tuple[str | None, list[dict[str, Any]]]:
        """Check an upload's fields; return its name and meta items."""
        if not form.files:
            raise Refused(400, "an upload needs at least one part named 'file'")
        project_id = form.fields.get("projectId")
        if project_id is None:
            raise Refused(400, "projectId is required")
        if project_id != project:
            raise Refused(400, f"projectId {project_id!r} is not the project in the path")
        meta: Any = []
        if "meta" in form.fields:
            try:
                meta = orjson.loads(form.fields["meta"])
            except orjson.JSONDecodeError:
                meta = None
            if not isinstance(meta, list) or not all(
                isinstance(item, dict) and isinstance(item.get("name"), str) and "value" in item
                for item in meta
            ):
                raise Refused(400, "meta must be a JSON list of {name, value} objects")
        return form.fields.get("name"), meta

    async def _get_upload(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.match_info["upload"]

        async def action() -> _Reply:
            refused = self._check_upload(request, "upload.read", upload_id)
            return refused or _Reply(200, {"payload": self.upload(upload_id)})

        return await self._serve(request, upload_id, "GET upload", action)

    async def _move_upload(self, request: web.Request) -> web.StreamResponse:
        upload_id, folder_id = request.match_info["upload"], request.match_info["folder"]

        async def action() -> _Reply:
            refused = self._check_upload(request, "upload.edit", upload_id)
            if refused is not None:
                return refused
            self._state.move(upload_id, folder_id)
            return _Reply(200, {"payload": self.upload(upload_id)})

        return await self._serve(request, upload_id, "POST move", action)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=orjson.dumps(body), headers=headers)
    response.content_type = "application/json"
    return response


def _drop(request: web.Request) -> web.StreamResponse:
    """Drop the connection without answering."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=599)  # never reaches the client


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer the router's own refusals (unknown path, wrong method) in the API's shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json(exc.status, {"error": exc.reason})


async def _digest(part: BodyPartReader) -> tuple[int, str]:
    """Read a file part to its end in chunks; return its size and SHA-256."""
    size, digest = 0, hashlib.sha256()
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


async def _read_field(part: BodyPartReader) -> str:
    """Read a small form field; refuse one that is not small or not UTF-8."""
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > _MAX_FIELD:
            raise Refused(400, f"form field {part.name!r} is over {_MAX_FIELD} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise Refused(400, f"form field {part.name!r} is not UTF-8") from exc


def _amount(size: int) -> str:
    """Say a byte count as the docs do: ``40 MB`` when it is whole megabytes."""
    return f"{size // 1_000_000} MB" if size % 1_000_000 == 0 else f"{size} bytes"


def _parse_report(raw: bytes) -> tuple[list[dict[str, str]], str | None]:
    """Check a report body; return its issues and message.

    Raises:
        Refused: 400, unless the body is ``{"issues": [{"label": str, "value": str}, ...],
            "message"?: str}`` with at least one issue.

    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, "a report body must be JSON") from exc
    if not isinstance(body, dict):
        raise Refused(400, "a report body must be a JSON object")
    issues, message = body.get("issues"), body.get("message")
    if not isinstance(issues, list) or not issues:
        raise Refused(400, "issues must be a non-empty list")
    for issue in issues:
        if not (
            isinstance(issue, dict)
            and isinstance(issue.get("label"), str)
            and isinstance(issue.get("value"), str)
        ):
            raise Refused(400, "each issue must be {'label': str, 'value': str}")
    if message is not None and not isinstance(message, str):
        raise Refused(400, "message must be a string")
    return [{"label": i["label"], "value": i["value"]} for i in issues], message


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
