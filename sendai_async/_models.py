"""The typed task model: frozen, slotted attrs classes mirroring the API's JSON.

Every class is keyword-only so that adding a field later never reorders a signature.
Sequences are tuples: the models are frozen, and a frozen object holding a list would only
look immutable.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

import attrs

__all__ = [
    "Annotation",
    "Checkbox",
    "MetaItem",
    "Page",
    "Point",
    "ReportIssue",
    "Segment",
    "Signature",
    "StepType",
    "Task",
    "TaskStatus",
    "Upload",
]


class _OpenEnum(str, enum.Enum):
    """A string enum that keeps values it has never heard of.

    The server adds status values over time; a client that rejects a task because its status
    is new is broken for its users. An unknown value becomes a pseudo-member that compares
    equal to its string and reports ``is_known == False``.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @property
    def is_known(self) -> bool:
        """Whether this value is one the SDK was built with (``False`` for newer values)."""
        return self._name_ in type(self).__members__

    def __str__(self) -> str:
        return str(self.value)


class TaskStatus(_OpenEnum):
    """Where a task is in its life; unknown future values are kept, see ``is_known``."""

    PROCESSING = "PROCESSING"
    REVIEWING = "REVIEWING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DISCARDED = "DISCARDED"
    FILTERED = "FILTERED"


class StepType(_OpenEnum):
    """The processing step a task belongs to; unknown future values are kept."""

    EXTRACT = "EXTRACT"
    CLASSIFY = "CLASSIFY"
    SEGMENT = "SEGMENT"
    GROUP = "GROUP"


# Statuses a task never leaves by itself. REVIEWING is not among them: it waits for a person.
_TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.DISCARDED, TaskStatus.FILTERED}
)


class Point(NamedTuple):
    """A point on the page in pixels; the API sends it as ``[x, y]``.

    A named tuple rather than an attrs class, on purpose: a large task carries thousands of
    points, a tuple is the cheapest immutable object Python builds, it unpacks
    (``x, y = point``) and serialises back to ``[x, y]`` as it came.
    """

    x: float
    y: float


class _Model:
    """The base of every model: it holds the ``__weakref__`` slot the models share.

    attrs would give each class a ``__weakref__`` slot of its own; held here instead,
    every model keeps the layout of a plain twin class with the same field slots, which
    the generated decoders build and then turn into the model (see ``_fastpath``).
    """

    __slots__ = ("__weakref__",)


@attrs.frozen(kw_only=True)
class MetaItem(_Model):
    """One user-supplied metadata pair attached at upload time."""

    name: str
    value: Any


@attrs.frozen(kw_only=True)
class Annotation(_Model):
    """One extracted field value."""

    id: str
    entity_id: str
    confidence: float
    content: str
    top: float | None = None
    left_of_line: float | None = None


@attrs.frozen(kw_only=True)
class Checkbox(_Model):
    """A detected checkbox and whether it is ticked."""

    id: str
    confidence: float
    checked: bool
    coordinates: tuple[Point, Point, Point, Point]


@attrs.frozen(kw_only=True)
class Segment(_Model):
    """A detected region of a page."""

    id: str
    confidence: float
    coordinates: tuple[Point, Point, Point, Point]


@attrs.frozen(kw_only=True)
class Signature(_Model):
    """A detected signature."""

    id: str
    confidence: float
    coordinates: tuple[Point, Point, Point, Point]


@attrs.frozen(kw_only=True)
class Page(_Model):
    """One page of a task's document with what was found on it."""

    id: str
    width: float | None = None
    height: float | None = None
    annotations: tuple[Annotation, ...] = ()
    checkboxes: tuple[Checkbox, ...] = ()
    segments: tuple[Segment, ...] = ()
    signatures: tuple[Signature, ...] = ()


@attrs.frozen(kw_only=True)
class Task(_Model):
    """A Send AI task: one uploaded document and what was extracted from it.

    Fields follow the API's order, so ``to_dict()`` serialises to the same bytes.
    """

    id: str
    name: str
    created_at: datetime
    meta: tuple[MetaItem, ...] = ()
    status: TaskStatus
    step_type: StepType
    upload_id: str
    project_id: str
    approved: bool
    exported_at: datetime | None = None
    export_failed_at: datetime | None = None
    last_opened_at: datetime | None = None
    pages: tuple[Page, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """Whether the task is finished (COMPLETED, FAILED, DISCARDED or FILTERED).

        REVIEWING is not terminal (it waits for a reviewer) and neither is a status value
        the SDK does not know yet.
        """
        return self.status in _TERMINAL_STATUSES

    @property
    def meta_dict(self) -> dict[str, Any]:
        """Return the metadata as a ``{name: value}`` dict; a repeated name keeps its last value."""
        return {item.name: item.value for item in self.meta}

    def iter_annotations(self) -> Iterator[Annotation]:
        """Yield every annotation of every page, in page order."""
        for page in self.pages:
            yield from page.annotations

    def to_dict(self) -> dict[str, Any]:
        """Return the task in the API's JSON shape (the inverse of decoding a payload)."""
        # Imported here because _convert imports this module.
        from ._convert import unstructure_task  # noqa: PLC0415

        return unstructure_task(self)


@attrs.frozen(kw_only=True)
class ReportIssue(_Model):
    """One problem reported on a task with ``tasks.report``: a label and its value."""

    label: str
    value: str


@attrs.frozen(kw_only=True)
class Upload(_Model):
    """A batch of uploaded documents; each file becomes a task.

    Only ``id`` is always present: the API's create response is flat camelCase while get
    and move answer ``{"payload": ...}`` in snake_case, with different fields, and both are
    read into this one model. ``status`` is an open string (the docs show ``processing``
    and ``IN_REVIEW``). ``files`` holds the file entries as the server sent them.
    """

    id: str
    name: str | None = None
    status: str | None = None
    project_id: str | None = None
    folder_id: str | None = None
    files: tuple[Any, ...] = ()
    meta: tuple[MetaItem, ...] = ()
    file_type: str | None = None
    file_size: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
