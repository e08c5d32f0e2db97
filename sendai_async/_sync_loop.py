"""The sync client's engine: one private event loop on a daemon thread, and calls into it.

``SyncSendAI`` does not reimplement the API. Each blocking method creates the async
client's coroutine, hands it to a private loop with ``run_coroutine_threadsafe`` and waits
for the result. One loop thread per client (its ``with_options`` views share it), started
on first use, rather than ``asyncio.run`` per call, because:

* the async client keeps a connection pool per loop, so one long-lived loop means
  keep-alive connections reused by every call from every thread;
* it works where ``asyncio.run`` cannot: inside a running event loop (a notebook);
* a call costs one cross-thread round trip, not a loop (or a thread) per call.

The edge cases, and why they are handled as they are:

* **Reentrancy.** A hook runs on the loop thread; a sync call from there would wait for the
  loop it is blocking. It raises ``ReentrantCallError`` at once instead.
* **Ctrl-C.** ``KeyboardInterrupt`` arrives in the calling thread while it waits; the
  coroutine is cancelled on the loop thread (closing its connection, as ``await`` being
  cancelled would) and the interrupt propagates.
* **Closing.** ``close()`` closes the async client on its loop, stops the loop, cancels
  what is still running (so no waiting caller hangs; it gets ``ClientClosedError``), closes
  open async generators as ``asyncio.run`` does, and joins the thread.
* **Forgotten clients.** A client dropped without ``close()`` is closed by a finaliser
  that only schedules the shutdown (finalisers may run on any thread, the loop's included).
* **Exit.** The thread is a daemon, and an ``atexit`` hook closes live clients first, so
  connection pools close cleanly and nothing warns.
* **fork().** The child never touches the parent's loop or thread (its self-pipe and
  sockets are shared with the parent); it keeps references to them so nothing is finalised
  in the child, and starts a loop of its own on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._errors import ClientClosedError, ReentrantCallError
from ._logging import logger

T = TypeVar("T")

_CLOSE_TIMEOUT = 10.0
_EXIT_TIMEOUT = 2.0
_CLOSED = "this SyncSendAI client is closed; create a new client to make more requests"
_REENTRANT = (
    "a SyncSendAI method was called from the client's own event-loop thread (from a hook?), "
    "which would deadlock; use the async client there: "
    "await sync_client.async_client.tasks.get(...) in an async hook"
)

# Every loop thread of this process, for the exit and fork hooks (weakly: a dropped client
# is closed by its finaliser).
_loop_threads: weakref.WeakSet[LoopThread] = weakref.WeakSet()
# Loops and threads inherited across a fork: never used, never closed in the child.
_inherited: list[Any] = []


class LoopThread:
    """A private event loop on a daemon thread, started on first use; runs coroutines there.

    Args:
        aclose: Closes the async client; awaited on the loop by ``close()``.

    """

    __slots__ = (
        "__weakref__",
        "_aclose",
        "_closing",
        "_finalizer",
        "_lock",
        "_loop",
        "_thread",
        "_thread_id",
    )

    def __init__(self, aclose: Callable[[], Awaitable[None]]) -> None:
        self._aclose = aclose
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closing = False
        _loop_threads.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closing else "running" if self._loop else "not started"
        return f"<LoopThread {state}>"

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or the client was collected)."""
        return self._closing

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return threading.get_ident() == self._thread_id

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and return its result, or raise its exception.

        Raises:
            ReentrantCallError: called from the loop thread itself.
            ClientClosedError: the client is (or got) closed.

        """
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closing:  # cancelled by close() while waiting
                raise ClientClosedError(_CLOSED) from None
            raise
        except BaseException:
            # Interrupted while waiting (Ctrl-C): cancel the coroutine where it runs, which
            # drops its connection. A no-op when the coroutine itself raised.
            future.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop thread (starting it if needed); do not wait."""
        if threading.get_ident() == self._thread_id:
            coro.close()
            raise ReentrantCallError(_REENTRANT)
        # The lock makes "not closed, so schedule" atomic with respect to close(): anything
        # scheduled before close() runs or is cancelled by the shutdown, never left waiting.
        with self._lock:
            if self._closing:
                coro.close()
                raise ClientClosedError(_CLOSED)
            loop = self._loop if self._loop is not None else self._start()
            try:
                return asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError:  # the loop died (a BaseException escaped on it)
                coro.close()
                raise ClientClosedError(_CLOSED) from None

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_serve, args=(loop,), name="sendai-sync-loop", daemon=True)
        thread.start()
        self._loop, self._thread, self._thread_id = loop, thread, thread.ident
        # The finaliser must not reference self: it fires when self is collected.
        self._finalizer = weakref.finalize(self, _stop_soon, loop, self._aclose)
        self._finalizer.atexit = False  # exit is handled by _close_at_exit, which waits
        logger.debug("started the sync client's event-loop thread %s", thread.name)
        return loop

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Close the async client on the loop, stop the loop and join its thread.

        Idempotent. Calls waiting meanwhile get ``ClientClosedError``.

        Raises:
            ReentrantCallError: called from the loop thread itself.

        """
        if self.on_loop_thread():
            raise ReentrantCallError(_REENTRANT)
        with self._lock:
            done: concurrent.futures.Future[None] | None = None
            if not self._closing:
                self._closing = True
                # Started even if never used: the async client may hold sessions on other
                # loops (used through async_client), which aclose() closes.
                loop = self._loop if self._loop is not None else self._start()
                if self._finalizer is not None:
                    self._finalizer.detach()
                done = asyncio.run_coroutine_threadsafe(_shutdown(self._aclose), loop)
            thread = self._thread
        try:
            if done is not None:
                done.result(timeout)
        except concurrent.futures.TimeoutError:
            logger.warning("the sync client's event loop did not close within %s s", timeout)
        finally:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held mid-fork
        if self._finalizer is not None:
            self._finalizer.detach()  # it would wake the parent's loop through the self-pipe
            self._finalizer = None
        if self._loop is not None:
            _inherited.append((self._loop, self._thread))
        self._loop = self._thread = self._thread_id = None


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop until stopped, then leave nothing running and close it."""
    try:
        loop.run_forever()
    finally:
        try:
            _drain(loop)
        finally:
            loop.close()


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    # Cancel what is left, so that no caller waits forever (it gets ClientClosedError), then
    # close open async generators (iterators never closed) and the executor, as asyncio.run.
    while tasks := asyncio.all_tasks(loop):
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())


async def _shutdown(aclose: Callable[[], Awaitable[None]]) -> None:
    try:
        await aclose()
    finally:
        asyncio.get_running_loop().stop()


def _stop_soon(loop: asyncio.AbstractEventLoop, aclose: Callable[[], Awaitable[None]]) -> None:
    """Close a forgotten client's loop without waiting: a finaliser may run on any thread."""
    coro = _shutdown(aclose)
    try:
        asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop is already closed
        coro.close()


def _close_at_exit() -> None:
    for loop_thread in list(_loop_threads):
        if loop_thread._loop is None or loop_thread.closed:
            continue
        try:
            loop_thread.close(timeout=_EXIT_TIMEOUT)
        except Exception:  # noqa: BLE001 -- exit goes on; say why the pool did not close
            logger.warning("could not close a SyncSendAI client at exit", exc_info=True)


def _forget_parent_loops() -> None:
    for loop_thread in list(_loop_threads):
        loop_thread._forget_after_fork()


atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_loops)
