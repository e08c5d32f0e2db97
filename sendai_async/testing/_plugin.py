"""pytest plugin, registered through the ``pytest11`` entry point.

The fixtures are synchronous on purpose: the sandbox runs on its own thread and loop, so
they work with pytest-asyncio in any mode, with anyio, and in plain sync tests alike, and
the plugin imports nothing that a user's test environment may lack.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .._client import SendAI
from .._config import RetryPolicy
from ._sandbox import SandboxServer

# Retries as in production, minus the waiting: tests stay fast and still exercise them.
_TEST_RETRY = RetryPolicy(backoff_base=0.001, backoff_max=0.01, max_retry_after=1.0)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``sendai_sandbox`` marker."""
    config.addinivalue_line(
        "markers",
        "sendai_sandbox(**options): SandboxServer arguments for this test's sendai_sandbox "
        "(tasks, fault_rate, latency, seed, shape, ...)",
    )


@pytest.fixture
def sendai_sandbox_options() -> dict[str, Any]:
    """Return the ``SandboxServer`` arguments of ``sendai_sandbox``: 100 small tasks, no faults.

    Override this fixture in a ``conftest.py`` to change every test's sandbox, or mark one
    test with ``@pytest.mark.sendai_sandbox(tasks=500, fault_rate=0.05, latency=0.01)``.
    """
    return {"tasks": 100}


@pytest.fixture
def sendai_sandbox(
    request: pytest.FixtureRequest, sendai_sandbox_options: dict[str, Any]
) -> Iterator[SandboxServer]:
    """Run a ``SandboxServer`` for one test, configured as above.

    Change its behaviour in the test too: ``sendai_sandbox.script(task_id, [503, 200])`` or
    ``sendai_sandbox.fault_rate = 0.1``.
    """
    options = dict(sendai_sandbox_options)
    marker = request.node.get_closest_marker("sendai_sandbox")
    if marker is not None:
        options.update(marker.kwargs)
    with SandboxServer(**options).in_thread() as sandbox:
        yield sandbox


@pytest.fixture
def sendai_client(sendai_sandbox: SandboxServer) -> SendAI:
    """Return a ``SendAI`` client set up for ``sendai_sandbox``'s team, key and URL.

    Retries back off for milliseconds instead of seconds. Its connections close when the
    test's event loop shuts down.
    """
    return SendAI(
        sendai_sandbox.api_key,
        team_id=sendai_sandbox.team_id,
        base_url=sendai_sandbox.base_url,
        retry=_TEST_RETRY,
    )
