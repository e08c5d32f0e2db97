"""Deterministic synthetic tasks: the same ID and seed always give the same task."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

_STATUSES = ["PROCESSING", "REVIEWING", "COMPLETED", "FAILED", "DISCARDED", "FILTERED"]
_STATUS_WEIGHTS = [10, 30, 45, 5, 5, 5]
_STEP_TYPES = ["EXTRACT", "CLASSIFY", "SEGMENT", "GROUP"]
_STEP_WEIGHTS = [70, 15, 10, 5]
_ENTITIES = [
    "invoice_number", "invoice_date", "due_date", "total_amount", "vat_amount", "iban",
    "supplier_name", "supplier_vat", "customer_name", "po_number", "currency", "line_total",
]  # fmt: skip
_CATEGORIES = ["invoice", "receipt", "contract", "payslip", "bank_statement", "id_card"]
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


@attrs.frozen(kw_only=True)
class TaskShape:
    """How big synthetic tasks are: inclusive ``(low, high)`` ranges drawn per task/page."""

    pages: tuple[int, int] = (1, 3)
    annotations: tuple[int, int] = (0, 8)
    checkboxes: tuple[int, int] = (0, 2)
    segments: tuple[int, int] = (0, 2)
    signatures: tuple[int, int] = (0, 1)


SMALL = TaskShape()
LARGE = TaskShape(
    pages=(20, 20), annotations=(50, 50), checkboxes=(10, 10), segments=(5, 5), signatures=(2, 2)
)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _quad(rng: random.Random, width: int, height: int) -> list[list[int]]:
    left, top = rng.randrange(0, width - 200), rng.randrange(0, height - 100)
    right, bottom = left + rng.randrange(20, 200), top + rng.randrange(20, 100)
    return [[left, top], [right, top], [right, bottom], [left, bottom]]


def _page(rng: random.Random, task_id: str, number: int, shape: TaskShape) -> dict[str, Any]:
    width, height = (2480, 3508) if rng.random() < 0.8 else (1654, 2339)
    prefix = f"{task_id}_p{number}"
    return {
        "id": f"page_{number}",
        "width": width,
        "height": height,
        "annotations": [
            {
                "id": f"{prefix}_ann_{i}",
                "entity_id": rng.choice(_ENTITIES),
                "confidence": round(rng.uniform(0.5, 1.0), 3),
                "content": f"{rng.randrange(10, 99999)}.{rng.randrange(0, 99):02d}",
                "top": round(rng.uniform(0, height), 1),
                "left_of_line": round(rng.uniform(0, width), 1) if rng.random() < 0.7 else None,
            }
            for i in range(rng.randint(*shape.annotations))
        ],
        "checkboxes": [
            {
                "id": f"{prefix}_cb_{i}",
                "confidence": round(rng.uniform(0.5, 1.0), 3),
                "checked": rng.random() < 0.5,
                "coordinates": _quad(rng, width, height),
            }
            for i in range(rng.randint(*shape.checkboxes))
        ],
        "segments": [
            {
                "id": f"{prefix}_seg_{i}",
                "confidence": round(rng.uniform(0.5, 1.0), 3),
                "coordinates": _quad(rng, width, height),
            }
            for i in range(rng.randint(*shape.segments))
        ],
        "signatures": [
            {
                "id": f"{prefix}_sig_{i}",
                "confidence": round(rng.uniform(0.5, 1.0), 3),
                "coordinates": _quad(rng, width, height),
            }
            for i in range(rng.randint(*shape.signatures))
        ],
    }


def synthetic_task(
    task_id: str, *, project_id: str, seed: int = 0, shape: TaskShape = SMALL
) -> dict[str, Any]:
    """Return the task payload (the API's JSON shape) for ``task_id`` under ``seed``."""
    rng = random.Random(f"{seed}:{task_id}")  # noqa: S311 -- test data, not secrets
    created = _EPOCH + timedelta(seconds=rng.randrange(0, 300 * 86400))
    status = rng.choices(_STATUSES, _STATUS_WEIGHTS)[0]
    opened = created + timedelta(minutes=rng.randrange(1, 5000))
    exported = status == "COMPLETED" and rng.random() < 0.6
    return {
        "id": task_id,
        "name": f"{rng.choice(_CATEGORIES)}-{rng.randrange(1000, 9999)}.pdf",
        "created_at": _iso(created),
        "meta": [{"name": "category", "value": rng.choice(_CATEGORIES)}],
        "status": status,
        "step_type": rng.choices(_STEP_TYPES, _STEP_WEIGHTS)[0],
        "upload_id": f"upl_{rng.randrange(16**10):010x}",
        "project_id": project_id,
        "approved": status == "COMPLETED" and rng.random() < 0.8,
        "exported_at": _iso(opened + timedelta(hours=1)) if exported else None,
        "export_failed_at": None,
        "last_opened_at": _iso(opened) if status != "PROCESSING" else None,
        "pages": [_page(rng, task_id, n + 1, shape) for n in range(rng.randint(*shape.pages))],
    }
