"""The response bodies every contender decodes: the seed's small task and a large one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from sendai_async.testing import LARGE, synthetic_task

_SEED = Path(__file__).resolve().parents[1] / "tests" / "data" / "seed_get_task.json"


def small_body() -> bytes:
    """The Get Task reference example, compact."""
    return orjson.dumps(orjson.loads(_SEED.read_bytes()))


def large_body() -> bytes:
    """20 pages x 50 annotations, 10 checkboxes, 5 segments, 2 signatures."""
    payload: dict[str, Any] = synthetic_task("task_large", project_id="proj_bench", shape=LARGE)
    return orjson.dumps({"payload": payload})
