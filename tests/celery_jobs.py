"""A Celery app for the worker-pool tests: tasks that use one ``SyncSendAI`` per process.

Started by ``tests/test_worker_pools.py`` as ``celery -A tests.celery_jobs worker``. The
client is made at import, in the parent, before the prefork pool forks its children:
each child must get its own event-loop thread and connections.
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]  # Celery ships no type hints

from sendai_async import RedisCoordinator, SyncSendAI

BROKER = os.environ["SENDAI_TEST_BROKER"]

app = Celery("tests.celery_jobs", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],  # the worker takes JSON only (Celery refuses pickle as root)
    result_serializer="pickle",  # results may carry our errors, which pickle intact
    result_accept_content=["json", "pickle"],
    worker_hijack_root_logger=False,
)
sendai = SyncSendAI(coordinator=RedisCoordinator(BROKER))


def task_status(task_id: str, project_id: str) -> dict[str, object]:
    """Fetch a task with the process's sync client; say which process did it."""
    task = sendai.tasks.get(task_id, project_id=project_id)
    return {"id": task.id, "status": task.status.value, "pid": os.getpid()}


status = app.task(name="tests.status")(task_status)
