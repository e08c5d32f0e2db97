"""SyncSendAI: the blocking facade over SendAI, on a private event-loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pytest
from aiohttp import web

from sendai_async import (
    AsyncPaginator,
    ClientClosedError,
    ConfigurationError,
    Hooks,
    NotFoundError,
    ReentrantCallError,
    RequestEvent,
    SendAI,
    SyncIterator,
    SyncPaginator,
    SyncSendAI,
    SyncTasks,
    SyncUploads,
    Task,
    TaskStatus,
)
from sendai_async.resources import Tasks, Uploads
from sendai_async.testing import SandboxServer, synthetic_task

from .conftest import CANARY_KEY

REPO = Path(__file__).resolve().parent.parent
PROJECT = "proj_sandbox"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tasks=120).in_thread() as server:
        yield server


def sync_client(sandbox: SandboxServer, **kwargs: Any) -> SyncSendAI:
    return SyncSendAI(sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, **kwargs)


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[SyncSendAI]:
    with sync_client(sandbox) as sendai:
        yield sendai


def tasks_left(sendai: SyncSendAI) -> int:
    """Count the tasks still running on the client's loop (besides the one counting)."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return sendai._loop_thread.run(count())


def eventually(condition: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def in_daemon_thread(call: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
    """Run ``call`` on a daemon thread: if it hangs, the test fails instead of hanging too."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(call(*args, **kwargs))
        except BaseException as exc:  # handed to the test
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


class ThreadedApp:
    """A tiny aiohttp server on its own thread and loop, for what the sandbox lacks.

    ``GET .../task/{task}``: the first request hangs until its client goes away (recorded in
    ``arrived`` and ``gone``); later ones answer with a task. ``POST .../task/{task}/{action}``
    answers with the task after the action; bodies are kept in ``bodies``.
    """

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.gone = threading.Event()
        self.bodies: list[Any] = []
        self.gets = 0
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.gets += 1
        if self.gets == 1:
            self.arrived.set()
            # aiohttp neither cancels a handler whose client left nor signals it: poll.
            while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            self.gone.set()
            return web.Response(status=500)
        return self._task(request.match_info["task"])

    async def _act(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        self.bodies.append(await request.json() if request.can_read_body else None)
        changes = {"approve": {"approved": True}, "disapprove": {"approved": False}}
        return self._task(request.match_info["task"], **changes.get(action, {}))

    def _task(self, task_id: str, **changes: Any) -> web.Response:
        payload = {**synthetic_task(task_id, project_id="proj_1"), **changes}
        return web.Response(
            body=orjson.dumps({"payload": payload}), content_type="application/json"
        )

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/{team}/project/{project}/task/{task}", self._get)
        app.router.add_post("/v2/{team}/project/{project}/task/{task}/{action}", self._act)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ThreadedApp:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def app() -> Iterator[ThreadedApp]:
    with ThreadedApp() as server:
        yield server


def app_client(app: ThreadedApp) -> SyncSendAI:
    return SyncSendAI(CANARY_KEY, team_id="team_1", base_url=app.base_url)


# -- the surface -----------------------------------------------------------------------


def test_constructor_takes_the_async_clients_arguments() -> None:
    """Same names, kinds and defaults as SendAI, but ``session`` (bound to another loop)."""

    def params(function: Any, skip: str = "") -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters if p.name != skip]

    assert params(SyncSendAI.__init__) == params(SendAI.__init__, skip="session")
    assert params(SyncSendAI.paginate) == params(SendAI.paginate)
    assert params(SyncSendAI.with_options) == params(SendAI.with_options)


def test_arguments_are_validated_by_the_async_client() -> None:
    with pytest.raises(ConfigurationError, match="max_connections"):
        SyncSendAI(CANARY_KEY, max_connections=0)


@pytest.mark.parametrize(
    ("sync_class", "async_class"),
    [pytest.param(SyncTasks, Tasks, id="tasks"), pytest.param(SyncUploads, Uploads, id="uploads")],
)
def test_every_async_resource_method_has_a_sync_twin(sync_class: type, async_class: type) -> None:
    async_methods = {
        name
        for name, value in vars(async_class).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    sync_methods = {name for name in vars(sync_class) if not name.startswith("_")}
    assert sync_methods == async_methods


def test_the_sync_paginator_offers_every_async_paginator_method() -> None:
    async_methods = {name for name in vars(AsyncPaginator) if not name.startswith("_")}
    assert async_methods <= {name for name in vars(SyncPaginator) if not name.startswith("_")}


def test_sync_methods_carry_the_async_docstrings_and_signatures(client: SyncSendAI) -> None:
    assert client.tasks.get.__doc__ == Tasks.get.__doc__
    assert SyncTasks.get.__doc__ == Tasks.get.__doc__
    assert list(inspect.signature(client.tasks.get).parameters)[:2] == ["task_id", "project_id"]
    assert not inspect.iscoroutinefunction(client.tasks.get)


def test_repr_and_properties_never_show_the_key() -> None:
    with SyncSendAI(CANARY_KEY, team_id="team_1", base_url="http://127.0.0.1:9") as sendai:
        text = repr(sendai)
        assert CANARY_KEY not in text
        assert text == "<SyncSendAI base_url='http://127.0.0.1:9' team_id='team_1' open>"
        assert isinstance(sendai.async_client, SendAI)
        assert (sendai.timeout, sendai.retry) == (
            sendai.async_client.timeout,
            sendai.async_client.retry,
        )
    assert repr(sendai).endswith("closed>")


# -- plain use -------------------------------------------------------------------------


def test_get_get_raw_and_get_many(client: SyncSendAI, sandbox: SandboxServer) -> None:
    task = client.tasks.get("task_000003", project_id=PROJECT)
    assert isinstance(task, Task)
    assert task.id == "task_000003"
    assert client.tasks.get_raw("task_000003", project_id=PROJECT) == sandbox.task("task_000003")
    batch = client.tasks.get_many(["task_000001", "task_000002", "task_999999"], project_id=PROJECT)
    assert [t.id for t in batch.tasks] == ["task_000001", "task_000002"]
    assert isinstance(batch.errors["task_999999"], NotFoundError)
    assert client.requests == sandbox.stats.requests == 5


def test_errors_reach_the_caller_unchanged(client: SyncSendAI) -> None:
    with pytest.raises(NotFoundError) as info:
        client.tasks.get("task_999999", project_id=PROJECT)
    assert info.value.status_code == 404
    with pytest.raises(ConfigurationError):
        client.tasks.get("", project_id=PROJECT)


def test_iter_many_is_a_plain_iterator(client: SyncSendAI, sandbox: SandboxServer) -> None:
    results = client.tasks.iter_many(sandbox.task_ids[:30], project_id=PROJECT, concurrency=8)
    assert isinstance(results, Iterator)
    assert sorted(r.task_id for r in results if r.ok) == sandbox.task_ids[:30]
    raw = list(client.tasks.iter_many_raw(["task_000005"], project_id=PROJECT))
    assert raw[0].payload == sandbox.task("task_000005")


def test_leaving_iter_many_early_cancels_in_flight_requests(
    client: SyncSendAI, sandbox: SandboxServer
) -> None:
    """Closing the iterator (``with``) cancels the requests still in flight, as aclose does."""
    stalled = sandbox.task_ids[1:4]
    for task_id in stalled:
        sandbox.script(task_id, ["stall"])
    ids = ["task_000000", *stalled]
    with client.tasks.iter_many(ids, project_id=PROJECT, concurrency=4) as results:
        assert next(results).task_id == "task_000000"
        assert eventually(lambda: sandbox.stats.in_flight == 3)
        assert tasks_left(client) > 0
    assert tasks_left(client) == 0
    assert list(results) == []


def test_breaking_out_of_iter_many_cancels_in_flight_requests(
    client: SyncSendAI, sandbox: SandboxServer
) -> None:
    """A dropped iterator is closed on the loop thread by asyncio's async-generator finaliser."""
    sandbox.script("task_000001", ["stall"])
    for result in client.tasks.iter_many(["task_000000", "task_000001"], project_id=PROJECT):
        assert result.task_id == "task_000000"
        break
    assert eventually(lambda: tasks_left(client) == 0)


def test_paginate_yields_items_pages_and_ids(client: SyncSendAI, sandbox: SandboxServer) -> None:
    path = f"project/{PROJECT}/tasks"
    paginator = client.paginate(path, item_type=Task)
    assert isinstance(paginator, SyncPaginator)
    assert [task.id for task in paginator] == sandbox.task_ids
    assert paginator.pages_fetched == 3  # 120 tasks, 50 a page
    assert list(client.paginate(path).ids()) == sandbox.task_ids
    assert [len(page.items) for page in client.paginate(path).pages()] == [50, 50, 20]
    assert client.paginate(path).first_page().next_cursor is not None


def test_a_listings_ids_feed_iter_many(client: SyncSendAI, sandbox: SandboxServer) -> None:
    """The pool pulls a SyncIterator on the loop thread without a reentrant call."""
    ids = client.paginate(f"project/{PROJECT}/tasks").ids()
    results = client.tasks.iter_many(ids, project_id=PROJECT, concurrency=8)
    assert sorted(r.task_id for r in results if r.ok) == sandbox.task_ids
    # One from another client's loop is pulled through that loop's executor.
    with sync_client(sandbox) as other:
        foreign = other.paginate(f"project/{PROJECT}/tasks").ids()
        batch = client.tasks.get_many(foreign, project_id=PROJECT)
    assert [t.id for t in batch.tasks] == sandbox.task_ids


def test_actions_and_reports(app: ThreadedApp) -> None:
    with app_client(app) as sendai:
        approved = sendai.tasks.approve("task_1", project_id="proj_1")
        assert approved.approved is True
        assert sendai.tasks.disapprove("task_1", project_id="proj_1").approved is False
        reported = sendai.tasks.report(
            "task_1", project_id="proj_1", issues=[{"label": "date", "value": "wrong"}]
        )
        assert reported.id == "task_1"
    assert app.bodies[-1] == {"issues": [{"label": "date", "value": "wrong"}]}


def test_wait_returns_once_the_status_is_reached(
    client: SyncSendAI, sandbox: SandboxServer
) -> None:
    task_id = next(
        t for t in sandbox.task_ids if sandbox.task(t)["status"] == TaskStatus.COMPLETED.value
    )
    assert client.tasks.wait(task_id, project_id=PROJECT).status is TaskStatus.COMPLETED


# -- threads, loops, processes ---------------------------------------------------------


def test_eight_threads_share_one_client_and_one_loop_thread(sandbox: SandboxServer) -> None:
    request_threads: set[int] = set()
    hooks = Hooks(on_request=[lambda _event: request_threads.add(threading.get_ident())])
    with sync_client(sandbox, hooks=hooks) as sendai:

        def fetch(n: int) -> list[str]:
            ids = sandbox.task_ids[n * 10 : n * 10 + 10]
            return [sendai.tasks.get(i, project_id=PROJECT).id for i in ids]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            fetched = [task_id for ids in pool.map(fetch, range(8)) for task_id in ids]
        callers = {thread.ident for thread in threading.enumerate()}
    assert fetched == sandbox.task_ids[:80]
    assert sandbox.stats.requests == 80
    assert len(request_threads) == 1  # every request ran on the client's one loop thread
    assert request_threads.isdisjoint({threading.get_ident()})
    assert request_threads <= callers  # ... which existed, and was not a worker of the pool


async def test_usable_inside_a_running_event_loop(sandbox: SandboxServer) -> None:
    """From a coroutine (a notebook cell), calls block this loop but do not fail."""
    assert asyncio.get_running_loop().is_running()
    with sync_client(sandbox) as sendai:
        assert sendai.tasks.get("task_000007", project_id=PROJECT).id == "task_000007"
        assert len(list(sendai.paginate(f"project/{PROJECT}/tasks").ids())) == 120


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_loop_thread(
    client: SyncSendAI, sandbox: SandboxServer
) -> None:
    client.tasks.get("task_000000", project_id=PROJECT)
    parent_loop = client._loop_thread._loop
    parent_thread = client._loop_thread._thread
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child reports through its exit status
        status = 1
        try:
            task = client.tasks.get("task_000001", project_id=PROJECT)
            own = client._loop_thread._loop not in (None, parent_loop)
            status = 0 if task.id == "task_000001" and own else 3
        except BaseException:  # any failure is a status for the parent
            status = 2
        finally:
            os._exit(status)
    deadline = time.monotonic() + 20
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if waited[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    # The parent's loop thread went on untouched.
    assert client._loop_thread._thread is parent_thread
    assert client.tasks.get("task_000002", project_id=PROJECT).id == "task_000002"
    assert sandbox.stats.by_task["task_000001"] == 1


def fetch_missing_in_worker(api_key: str, team_id: str, base_url: str) -> None:
    """Run in a spawned worker process: a fresh SyncSendAI asking for a missing task."""
    with SyncSendAI(api_key, team_id=team_id, base_url=base_url) as sendai:
        sendai.tasks.get("task_999999", project_id=PROJECT)


def test_errors_cross_a_spawned_process_pool(sandbox: SandboxServer) -> None:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        job = pool.submit(
            fetch_missing_in_worker, sandbox.api_key, sandbox.team_id, sandbox.base_url
        )
        with pytest.raises(NotFoundError) as info:
            job.result(timeout=60)
    assert info.value.status_code == 404
    assert sandbox.stats.by_task["task_999999"] == 1


# -- reentrancy, Ctrl-C, closing -------------------------------------------------------


def test_a_hook_calling_the_sync_client_gets_reentrant_call_error(
    sandbox: SandboxServer,
) -> None:
    caught: list[BaseException] = []
    holder: list[SyncSendAI] = []

    def hook(_event: RequestEvent) -> None:
        for call in (
            lambda: holder[0].tasks.get("task_000002", project_id=PROJECT),
            lambda: next(iter(holder[0].paginate(f"project/{PROJECT}/tasks"))),
            holder[0].close,
        ):
            try:
                call()
            except BaseException as exc:  # asserted below
                caught.append(exc)

    with sync_client(sandbox, hooks=Hooks(on_request=[hook])) as sendai:
        holder.append(sendai)
        call = in_daemon_thread(sendai.tasks.get, "task_000001", project_id=PROJECT)
        assert call.result(timeout=10).id == "task_000001"
        assert not sendai.closed
    assert [type(exc) for exc in caught] == [ReentrantCallError] * 3
    assert sandbox.stats.requests == 1


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs the default SIGINT handler on the main thread",
)
def test_ctrl_c_cancels_the_request_on_the_loop_thread(app: ThreadedApp) -> None:
    """The request is cancelled (its connection dropped) while this process lives on."""

    def interrupt_when_sent() -> None:
        if app.arrived.wait(10):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_sent)
    with app_client(app) as sendai:
        interrupter.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            sendai.tasks.get("task_1", project_id="proj_1")
        assert time.monotonic() - started < 5
        assert app.gone.wait(3)
        assert eventually(lambda: tasks_left(sendai) == 0)
        assert sendai.tasks.get("task_2", project_id="proj_1").id == "task_2"  # still usable
    interrupter.join()


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SENDAI_LOG", None)
    return subprocess.Popen(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics are POSIX")
def test_ctrl_c_in_a_script_exits_promptly(app: ThreadedApp) -> None:
    script = """
        import sys
        from sendai_async import SyncSendAI
        sendai = SyncSendAI("sk-test", team_id="team_1", base_url=sys.argv[1])
        sendai.tasks.get("task_1", project_id="proj_1")
    """
    process = run_python(script, app.base_url)
    try:
        assert app.arrived.wait(20), process.communicate()
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=5)
    finally:
        process.kill()
    assert time.monotonic() - started < 5
    assert process.returncode != 0
    assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr
    assert "Warning" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert app.gone.wait(3)


def test_exit_without_close_is_quick_and_silent(sandbox: SandboxServer) -> None:
    """A client left open (and an iterator mid-way) is closed at exit, without warnings."""
    script = """
        import atexit, sys
        # Registered before the SDK's own exit hook, so it runs after it.
        atexit.register(lambda: print("closed" if sendai.async_client.closed else "open"))
        from sendai_async import SyncSendAI
        sendai = SyncSendAI(sys.argv[1], team_id=sys.argv[2], base_url=sys.argv[3])
        print(sendai.tasks.get("task_000000", project_id="proj_sandbox").id)
        results = sendai.tasks.iter_many(["task_000001", "task_000002"], project_id="proj_sandbox")
        next(results)
    """
    sandbox.script("task_000002", ["stall"])
    started = time.monotonic()
    process = run_python(script, sandbox.api_key, sandbox.team_id, sandbox.base_url)
    try:
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert (process.returncode, stdout, stderr) == (0, "task_000000\nclosed\n", "")
    assert time.monotonic() - started < 10


def test_close_stops_the_thread_and_later_calls_fail(client: SyncSendAI) -> None:
    client.tasks.get("task_000000", project_id=PROJECT)
    thread = client._loop_thread._thread
    assert thread is not None
    results = client.tasks.iter_many(["task_000001"], project_id=PROJECT)
    client.close()
    client.close()  # idempotent
    assert client.closed
    assert client.async_client.closed
    assert not thread.is_alive()
    with pytest.raises(ClientClosedError):
        client.tasks.get("task_000000", project_id=PROJECT)
    with pytest.raises(ClientClosedError):
        next(results)
    with pytest.raises(ClientClosedError):
        client.with_options(timeout=5).tasks.get("task_000000", project_id=PROJECT)


def test_close_while_a_request_waits_fails_that_call(app: ThreadedApp) -> None:
    sendai = app_client(app)
    waiting = in_daemon_thread(sendai.tasks.get, "task_1", project_id="proj_1")
    assert app.arrived.wait(10)
    sendai.close()
    with pytest.raises(ClientClosedError):
        waiting.result(timeout=10)
    assert app.gone.wait(3)


def test_close_while_a_hook_waits_fails_that_call(sandbox: SandboxServer) -> None:
    """What close() leaves running on the loop is cancelled; no caller waits forever."""
    entered = threading.Event()

    async def stuck(_event: RequestEvent) -> None:
        entered.set()
        await asyncio.Event().wait()

    sendai = sync_client(sandbox, hooks=Hooks(on_request=[stuck]))
    waiting = in_daemon_thread(sendai.tasks.get, "task_000001", project_id=PROJECT)
    assert entered.wait(10)
    sendai.close()
    with pytest.raises(ClientClosedError):
        waiting.result(timeout=10)


def test_a_dropped_client_stops_its_loop_thread(sandbox: SandboxServer) -> None:
    sendai = sync_client(sandbox)
    sendai.tasks.get("task_000000", project_id=PROJECT)
    thread = sendai._loop_thread._thread
    assert thread is not None
    del sendai
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_with_options_view_shares_the_loop_thread_and_counters(
    client: SyncSendAI, sandbox: SandboxServer
) -> None:
    view = client.with_options(timeout=7, team_id="other_team")
    assert view.timeout.total == 7
    assert (view.team_id, client.team_id) == ("other_team", sandbox.team_id)
    assert view._loop_thread is client._loop_thread
    with pytest.raises(NotFoundError):  # the view's team does not exist
        view.tasks.get("task_000000", project_id=PROJECT)
    assert view.tasks.get("task_000000", project_id=PROJECT, team_id=sandbox.team_id).id
    assert client.requests == view.requests == 2
    assert isinstance(view.tasks.iter_many([], project_id=PROJECT), SyncIterator)
    view.close()  # closing either closes both, as with SendAI
    assert client.closed
