"""A bulk export spread over many processes and machines, on Celery with a Redis broker.

``sendai-async worker --broker URL`` runs workers; ``sendai-async export ... --broker URL``
plans the work as chunks of IDs, dispatches them and waits. Users with their own Celery
app register the chunk task on it with ``register_export_task(app)``. Needs the
``celery`` extra (``pip install 'sendai-async[celery]'``).
"""

from ._app import CELERY_SETTINGS, QUEUE, TASK_NAME, make_app, register_export_task
from ._chunk import Chunk, part_paths, run_chunk
from ._driver import ExportInputError, ExportStalledError, ExportSummary, run_export

__all__ = [
    "CELERY_SETTINGS",
    "QUEUE",
    "TASK_NAME",
    "Chunk",
    "ExportInputError",
    "ExportStalledError",
    "ExportSummary",
    "make_app",
    "part_paths",
    "register_export_task",
    "run_chunk",
    "run_export",
]
