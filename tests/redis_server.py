"""The ``redis_server`` fixture: a real Redis for one test (see ``RedisServerProcess``).

Without a binary, tests that need it are skipped on a developer's machine with a hint, and
fail in CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sendai_async.testing import RedisServerProcess
from sendai_async.testing._redis_server import ENV_BINARY, redis_binary

RedisServer = RedisServerProcess


@pytest.fixture
def redis_server() -> Iterator[RedisServerProcess]:
    """A fresh Redis server for one test."""
    binary = redis_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Redis tests: .ci/run installs redis-server")
        pytest.skip(
            "no redis-server or valkey-server on PATH: `apt-get install redis-server`, "
            f"or point {ENV_BINARY} at one"
        )
    server = RedisServerProcess(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
