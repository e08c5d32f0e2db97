"""Test support for code that uses sendai_async: a local sandbox server and a pytest plugin.

``SandboxServer`` speaks the Send AI API on 127.0.0.1 (every documented endpoint, with the
documented state rules) over deterministic synthetic tasks, with faults on demand. The
pytest plugin (installed with the package) provides the ``sendai_sandbox`` and
``sendai_client`` fixtures, so your tests need no mocks::

    async def test_my_report(sendai_client, sendai_sandbox):
        task = await sendai_client.tasks.get(
            sendai_sandbox.task_ids[0], project_id=sendai_sandbox.project_id
        )
"""

from ._redis_server import RedisServerProcess
from ._sandbox import FAULTS, SCRIPT_STEPS, SandboxServer, SandboxStats
from ._state import SandboxFile, SandboxUpload
from ._synthetic import LARGE, SMALL, TaskShape, synthetic_task
from ._window import RateLimitWindow

__all__ = [
    "FAULTS",
    "LARGE",
    "SCRIPT_STEPS",
    "SMALL",
    "RateLimitWindow",
    "RedisServerProcess",
    "SandboxFile",
    "SandboxServer",
    "SandboxStats",
    "SandboxUpload",
    "TaskShape",
    "synthetic_task",
]
