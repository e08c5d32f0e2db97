"""msgspec Structs equivalent to the task model: the known limit for typed decoding."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class MMeta(msgspec.Struct, frozen=True):
    name: str
    value: Any


class MAnnotation(msgspec.Struct, frozen=True):
    id: str
    entity_id: str
    confidence: float
    content: str
    top: float | None = None
    left_of_line: float | None = None


class MCheckbox(msgspec.Struct, frozen=True):
    id: str
    confidence: float
    checked: bool
    coordinates: tuple[tuple[float, float], ...]


class MRegion(msgspec.Struct, frozen=True):
    id: str
    confidence: float
    coordinates: tuple[tuple[float, float], ...]


class MPage(msgspec.Struct, frozen=True):
    id: str
    width: float | None = None
    height: float | None = None
    annotations: tuple[MAnnotation, ...] = ()
    checkboxes: tuple[MCheckbox, ...] = ()
    segments: tuple[MRegion, ...] = ()
    signatures: tuple[MRegion, ...] = ()


class MTask(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: datetime
    meta: tuple[MMeta, ...] = ()
    status: str
    step_type: str
    upload_id: str
    project_id: str
    approved: bool
    exported_at: datetime | None = None
    export_failed_at: datetime | None = None
    last_opened_at: datetime | None = None
    pages: tuple[MPage, ...] = ()


class MEnvelope(msgspec.Struct, frozen=True):
    payload: MTask
