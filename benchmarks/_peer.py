"""The peer: an openai-style stack, httpx.AsyncClient + pydantic v2 models of the task."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class PMeta(_Frozen):
    name: str
    value: Any


class PAnnotation(_Frozen):
    id: str
    entity_id: str
    confidence: float
    content: str
    top: float | None = None
    left_of_line: float | None = None


class PCheckbox(_Frozen):
    id: str
    confidence: float
    checked: bool
    coordinates: tuple[tuple[float, float], ...]


class PRegion(_Frozen):
    id: str
    confidence: float
    coordinates: tuple[tuple[float, float], ...]


class PPage(_Frozen):
    id: str
    width: float | None = None
    height: float | None = None
    annotations: tuple[PAnnotation, ...] = ()
    checkboxes: tuple[PCheckbox, ...] = ()
    segments: tuple[PRegion, ...] = ()
    signatures: tuple[PRegion, ...] = ()


class PTask(_Frozen):
    id: str
    name: str
    created_at: datetime
    meta: tuple[PMeta, ...] = ()
    status: str
    step_type: str
    upload_id: str
    project_id: str
    approved: bool
    exported_at: datetime | None = None
    export_failed_at: datetime | None = None
    last_opened_at: datetime | None = None
    pages: tuple[PPage, ...] = ()


class PEnvelope(_Frozen):
    payload: PTask
