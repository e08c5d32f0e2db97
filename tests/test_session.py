"""The client across event loops, threads and forks, and its lifecycle."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import aiohttp
import pytest

from sendai_async import ClientClosedError, SendAI

from .conftest import CANARY_KEY, ScriptedServer


@pytest.fixture
def threaded_server() -> Iterator[ScriptedServer]:
    """A scripted server on its own thread and loop, for tests that run their own loops."""
    server = ScriptedServer()
    ready = threading.Event()
    stop: list[asyncio.Future[None]] = []

    async def serve() -> None:
        await server.start()
        stop.append(asyncio.get_running_loop().create_future())
        ready.set()
        await stop[0]
        await server.stop()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(5)
        loop.close()


def test_one_client_across_sequential_asyncio_runs(threaded_server: ScriptedServer) -> None:
    """A worker calling asyncio.run per job can keep one client; no "Event loop is closed"."""
    sendai = SendAI(CANARY_KEY, team_id="t", base_url=threaded_server.base_url)

    async def job() -> str:
        return (await sendai.tasks.get("task_1", project_id="p")).id

    assert asyncio.run(job()) == "task_abcdef123456"
    assert asyncio.run(job()) == "task_abcdef123456"
    asyncio.run(sendai.aclose())
    assert len(threaded_server.requests) == 2


def test_one_client_from_two_threads(threaded_server: ScriptedServer) -> None:
    sendai = SendAI(CANARY_KEY, team_id="t", base_url=threaded_server.base_url)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        async def job() -> None:
            for _ in range(3):
                task = await sendai.tasks.get("task_1", project_id="p")
                results.append(task.id)

        try:
            asyncio.run(job())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert len(results) == 6
    asyncio.run(sendai.aclose())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_connection(threaded_server: ScriptedServer) -> None:
    """After fork, the child opens its own connection instead of using the parent's socket."""
    sendai = SendAI(CANARY_KEY, team_id="t", base_url=threaded_server.base_url)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(sendai.tasks.get("task_1", project_id="p"))
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover -- the child reports through the pipe
            code = 1
            try:
                child_loop = asyncio.new_event_loop()
                task = child_loop.run_until_complete(sendai.tasks.get("task_1", project_id="p"))
                code = 0 if task.id == "task_abcdef123456" else 2
            finally:
                os.write(write_fd, bytes([code]))
                os._exit(0)
        os.close(write_fd)
        status = os.read(read_fd, 1)
        os.close(read_fd)
        os.waitpid(pid, 0)
        assert status == b"\x00"
        # The parent's pooled connection still works after the child used its own.
        loop.run_until_complete(sendai.tasks.get("task_1", project_id="p"))
        parent_first, child, parent_again = threaded_server.peers
        assert child != parent_first
        assert parent_again == parent_first
    finally:
        loop.run_until_complete(sendai.aclose())
        loop.close()


async def test_closed_client_raises_clear_error(server: ScriptedServer) -> None:
    sendai = SendAI(CANARY_KEY, team_id="t", base_url=server.base_url)
    await sendai.tasks.get("task_1", project_id="p")
    await sendai.aclose()
    assert sendai.closed
    with pytest.raises(ClientClosedError, match="create a new client"):
        await sendai.tasks.get("task_1", project_id="p")
    assert isinstance(ClientClosedError("x"), RuntimeError)


async def test_caller_session_is_left_open(server: ScriptedServer) -> None:
    async with aiohttp.ClientSession() as own:
        async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, session=own) as sendai:
            await sendai.tasks.get("task_1", project_id="p")
        assert not own.closed
        assert server.requests[0].headers["Authorization"] == f"Bearer {CANARY_KEY}"


async def test_construction_needs_no_loop_and_makes_no_request(server: ScriptedServer) -> None:
    def build() -> SendAI:
        return SendAI(CANARY_KEY, team_id="t", base_url=server.base_url)

    sendai = await asyncio.to_thread(build)  # a thread with no event loop
    assert server.requests == []
    await sendai.aclose()
