"""The Celery side of the distributed export: the app's settings and the chunk task.

Delivery is at-least-once and tuned so that a dead worker's chunks run again within
about a minute (not the Redis transport's default hour):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a chunk is acknowledged only when
  it finished, and a pool child killed mid-chunk sends it back to the queue;
* ``worker_prefetch_multiplier=1``: a worker holds one chunk per process, so a killed
  worker strands as few chunks as possible;
* broker ``visibility_timeout=30`` s with restore sweeps every 5 s
  (``unacked_restore_interval=5``, ``unacked_restore_throttle=1``): when a whole worker is
  SIGKILLed, the chunks it held unacknowledged are delivered again 30-35 s later. A chunk
  that runs longer than the visibility timeout may also be delivered twice; that is safe,
  because a chunk is idempotent (``_chunk.py``).

Messages are JSON only (Celery refuses pickle when run as root, and JSON is all a chunk
needs: IDs and settings).
"""

from __future__ import annotations

from typing import Any

from celery import Celery  # type: ignore[import-untyped]  # Celery ships no type hints

QUEUE = "sendai-export"
TASK_NAME = "sendai_async.export.chunk"
VISIBILITY_TIMEOUT = 30
RESTORE_INTERVAL = 5

CELERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_ignore_result": True,  # progress is read from the output directory
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": RESTORE_INTERVAL,
        "unacked_restore_throttle": 1,
    },
    "worker_hijack_root_logger": False,
    "worker_send_task_events": False,
}


def make_app(broker: str) -> Celery:
    """Return a Celery app for ``broker`` with the export task registered."""
    app = Celery("sendai_async.export", broker=broker, set_as_current=False)
    app.conf.update(CELERY_SETTINGS)
    register_export_task(app)
    return app


def register_export_task(app: Celery) -> Any:
    """Register the export's chunk task on your own Celery app; return the task.

    Your app keeps its own settings; the delivery guarantees above need
    ``task_acks_late``, ``task_reject_on_worker_lost`` and the broker transport options
    of ``CELERY_SETTINGS`` (copy what your app does not set). The task is routed to the
    ``sendai-export`` queue: start workers with ``-Q sendai-export``.
    """
    from ._chunk import run_chunk  # noqa: PLC0415 -- imported where the worker runs

    def export_chunk(self: Any, chunk: dict[str, Any]) -> dict[str, Any]:
        # Shared limits default to the broker's Redis, so the fleet shares one gate.
        return run_chunk(chunk, broker=self.app.conf.broker_url)

    # Celery ships no type hints: decorating by call keeps mypy's strict checks on the body.
    return app.task(
        name=TASK_NAME, queue=QUEUE, acks_late=True, reject_on_worker_lost=True, bind=True
    )(export_chunk)
