"""One aiohttp ``ClientSession`` per event loop, created lazily, closed with its loop.

aiohttp sessions belong to the loop that made them. Worker pools call ``asyncio.run`` per
job, run a loop per thread, or fork; a client that kept a single session would fail there
with "Event loop is closed" or, after a fork, share the parent's sockets. So the manager
keeps a session per loop:

* A session is made the first time a loop asks for one.
* Each session has a tiny async generator parked on its ``yield``. Event loops finalise
  their async generators on shutdown (``asyncio.run`` and ``asyncio.Runner`` call
  ``shutdown_asyncgens``), and the generator's ``finally`` closes the session there, while
  the loop still runs. Without this every ``asyncio.run`` would leak a connection pool.
* After ``os.fork()`` the child forgets the parent's sessions without touching them (their
  sockets are the parent's); it keeps references so their finalisers never run in the child.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from ._errors import ClientClosedError
from ._logging import logger

# Sessions inherited across a fork: never used, never closed, never collected in the child.
_inherited: list[Any] = []
_managers: weakref.WeakSet[SessionManager] = weakref.WeakSet()


def _forget_parent_sessions() -> None:
    for manager in list(_managers):
        manager._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_sessions)


class _LoopSession:
    __slots__ = ("closer", "loop", "session")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        session: aiohttp.ClientSession,
        closer: AsyncGenerator[None, None],
    ) -> None:
        self.loop = loop
        self.session = session
        self.closer = closer


async def _close_on_loop_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await session.close()


class SessionManager:
    """Hand out the calling loop's ``ClientSession``; close them all on ``aclose()``."""

    def __init__(
        self,
        factory: Callable[[], aiohttp.ClientSession],
        external: aiohttp.ClientSession | None = None,
    ) -> None:
        self._factory = factory
        self._external = external
        self._by_loop: dict[asyncio.AbstractEventLoop, _LoopSession] = {}
        self._lock = threading.Lock()
        self._closed = False
        _managers.add(self)

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    def current(self) -> aiohttp.ClientSession | None:
        """Return the running loop's open session, or ``None`` when ``get()`` must make one.

        The synchronous fast path of ``get()``: no coroutine per request once a loop has
        its session.
        """
        if self._closed:
            return None
        if self._external is not None:
            return self._external
        entry = self._by_loop.get(asyncio.get_running_loop())
        return entry.session if entry is not None and not entry.session.closed else None

    async def get(self) -> aiohttp.ClientSession:
        """Return the session for the running loop, creating it on first use.

        Raises:
            ClientClosedError: the manager was closed.

        """
        if self._closed:
            raise ClientClosedError(
                "this SendAI client is closed; create a new client to make more requests"
            )
        return self.current() or await self._open(asyncio.get_running_loop())

    async def _open(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        session = self._factory()
        closer = _close_on_loop_shutdown(session)
        # Advancing it once registers it with this loop's async-generator finaliser.
        await closer.__anext__()
        with self._lock:
            # Loops that have closed took their sessions with them (see module docstring).
            for old in [lp for lp in self._by_loop if lp.is_closed()]:
                del self._by_loop[old]
            self._by_loop[loop] = _LoopSession(loop, session, closer)
        logger.debug("opened an HTTP session for event loop %#x", id(loop))
        return session

    async def aclose(self) -> None:
        """Close every session this manager created; leave a caller's session open."""
        self._closed = True
        with self._lock:
            entries = list(self._by_loop.values())
            self._by_loop.clear()
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover -- aclose is a coroutine, a loop runs
            current = None
        for entry in entries:
            if entry.loop is current:
                await entry.closer.aclose()
            elif entry.loop.is_running() and not entry.loop.is_closed():
                # Another thread's loop: close it there, where its transports live.
                future = asyncio.run_coroutine_threadsafe(entry.closer.aclose(), entry.loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), timeout=5)
                except (TimeoutError, asyncio.TimeoutError):  # pragma: no cover
                    logger.warning("timed out closing a session on another event loop")

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's lock may have been held mid-fork
        _inherited.extend(self._by_loop.values())
        self._by_loop = {}
