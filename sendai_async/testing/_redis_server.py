"""``RedisServerProcess``: a throwaway ``redis-server`` (or ``valkey-server``) on 127.0.0.1.

For tests and demos that need a real Redis: a free port, persistence off, started and
stopped (or SIGKILLed and started again) by pid. The binary is found on PATH, or named by
``SENDAI_TEST_REDIS_SERVER``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ENV_BINARY = "SENDAI_TEST_REDIS_SERVER"


def redis_binary() -> str | None:
    """Return the server binary to run (``SENDAI_TEST_REDIS_SERVER``, then PATH), or ``None``."""
    named = os.environ.get(ENV_BINARY)
    if named:
        return named
    return shutil.which("redis-server") or shutil.which("valkey-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServerProcess:
    """One ``redis-server`` process on 127.0.0.1; ``start``/``kill``/``restart`` by pid."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or redis_binary()
        if found is None:
            raise FileNotFoundError(
                "no redis-server or valkey-server on PATH: `apt-get install redis-server`, "
                f"or point {ENV_BINARY} at one"
            )
        self.binary = found
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sendai-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        # The binary is the caller's or the first on PATH; arguments are ours.
        self.process = subprocess.Popen(  # noqa: S603
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.binary} did not start on port {self.port}")

    def kill(self) -> None:
        """Kill the server (SIGKILL, by pid) and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
