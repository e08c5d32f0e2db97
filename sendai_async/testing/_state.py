"""The sandbox's state machine: task actions, reports and uploads over the synthetic tasks.

Mutations are an overlay: a task nobody touched is served exactly as ``synthetic_task``
makes it, so payloads stay deterministic until a test changes them. Timed transitions
(PROCESSING to REVIEWING after an upload, to COMPLETED after ``complete``) are computed
lazily from a monotonic clock when a task is read, so the sandbox runs no background tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs

from ._synthetic import _iso

ACTIONS = ("complete", "discard", "approve", "disapprove")
"""The task actions that take no body: ``POST /task/{id}/{action}``."""

_UNSET = object()


class Refused(Exception):  # noqa: N818 -- a refusal, not a failure of the sandbox
    """A request the API's rules refuse: carries the HTTP status and the message to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.frozen
class SandboxFile:
    """One file of an upload, as the sandbox received it (its bytes are not kept).

    Attributes:
        name: The part's file name.
        content_type: The part's ``Content-Type`` (``application/octet-stream`` if none).
        size: How many bytes it had.
        sha256: The hex SHA-256 of its bytes, to check what a client sent.
        task_id: The task created for it.

    """

    name: str
    content_type: str
    size: int
    sha256: str
    task_id: str


@attrs.define
class SandboxUpload:
    """An upload the sandbox accepted, with one task per file.

    Attributes:
        id: ``upl_000000`` upwards, in order of creation.
        name: The form's ``name``, or the first file's name.
        project_id: The project it was made in.
        files: Its files, in the order they were sent.
        meta: The form's ``meta`` items (``[]`` if none).
        folder_id: Set by a move, ``None`` before.
        created_at: ISO 8601, UTC.
        updated_at: ISO 8601, UTC; a move updates it.

    """

    id: str
    name: str
    project_id: str
    files: tuple[SandboxFile, ...]
    meta: list[dict[str, Any]]
    folder_id: str | None
    created_at: str
    updated_at: str

    @property
    def task_ids(self) -> list[str]:
        """The IDs of the tasks created for its files, in file order."""
        return [file.task_id for file in self.files]


@attrs.define
class _Overlay:
    """Changes to one task; a pending status takes over once ``ready_at`` has passed."""

    fields: dict[str, Any] = attrs.Factory(dict)
    ready_at: float | None = None
    ready_status: str = "REVIEWING"

    def status(self, now: float) -> object:
        if self.ready_at is not None and now >= self.ready_at:
            return self.ready_status
        return self.fields.get("status", _UNSET)

    def settle(self, now: float) -> None:
        """Make a due transition permanent, before another change is made."""
        if self.ready_at is not None and now >= self.ready_at:
            self.fields["status"] = self.ready_status
            self.ready_at = None

    def wait(self, status: str, then: str, now: float, delay: float) -> None:
        self.fields["status"] = status
        self.ready_at = now + delay
        self.ready_status = then


class SandboxState:
    """What requests changed: task overlays, uploads and reports.

    Args:
        processing_delay: Seconds a task stays PROCESSING after an upload or ``complete``.
        clock: The monotonic clock transitions are timed with.

    """

    def __init__(
        self, *, processing_delay: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.processing_delay = processing_delay
        self.clock = clock
        self.uploads: dict[str, SandboxUpload] = {}
        self.reports: dict[str, list[dict[str, Any]]] = {}
        self.uploaded_tasks: list[str] = []
        self._uploaded: set[str] = set()
        self._overlays: dict[str, _Overlay] = {}

    def is_uploaded(self, task_id: str) -> bool:
        """Return whether ``task_id`` was created by an upload."""
        return task_id in self._uploaded

    def current(self, base: dict[str, Any]) -> dict[str, Any]:
        """Return ``base`` (a synthetic payload) with this task's changes applied.

        Without changes ``base`` itself comes back, untouched.
        """
        overlay = self._overlays.get(base["id"])
        if overlay is None:
            return base
        payload = {**base, **overlay.fields}
        status = overlay.status(self.clock())
        if status is not _UNSET:
            payload["status"] = status
        return payload

    def act(self, action: str, task: Mapping[str, Any]) -> None:
        """Apply ``action`` to ``task`` (its current payload) if the rules allow it.

        Raises:
            Refused: 409, with a message naming the task's current state.

        """
        task_id, status, approved = task["id"], task["status"], task["approved"]
        if action in {"complete", "discard"} and status != "REVIEWING":
            raise Refused(409, f"task {task_id!r} is {status}; {action} needs REVIEWING")
        if action in {"approve", "disapprove"}:
            if status == "PROCESSING":
                raise Refused(409, f"task {task_id!r} is PROCESSING; {action} must wait")
            if approved is (action == "approve"):
                raise Refused(409, f"task {task_id!r} is already {action}d (status {status})")
        now = self.clock()
        overlay = self._overlays.setdefault(task_id, _Overlay())
        overlay.settle(now)
        if action == "complete":
            overlay.wait("PROCESSING", "COMPLETED", now, self.processing_delay)
        elif action == "discard":
            overlay.fields["status"] = "DISCARDED"
        else:
            overlay.fields["approved"] = action == "approve"

    def report(self, task_id: str, issues: list[dict[str, str]], message: str | None) -> None:
        """Store a report of ``issues`` on ``task_id``."""
        self.reports.setdefault(task_id, []).append({"issues": issues, "message": message})

    def create_upload(
        self,
        files: Sequence[tuple[str, str, int, str]],
        *,
        name: str | None,
        meta: list[dict[str, Any]],
        project_id: str,
        first_task: int,
    ) -> SandboxUpload:
        """Record an upload of ``files`` (name, content type, size, sha256): one task each.

        New tasks are numbered from ``first_task`` plus the tasks uploaded before, and
        start in PROCESSING, to reach REVIEWING ``processing_delay`` seconds later.
        """
        now, stamp = self.clock(), _iso(datetime.now(timezone.utc))
        upload_id = f"upl_{len(self.uploads):06d}"
        stored: list[SandboxFile] = []
        for filename, content_type, size, sha256 in files:
            task_id = f"task_{first_task + len(self.uploaded_tasks):06d}"
            self.uploaded_tasks.append(task_id)
            self._uploaded.add(task_id)
            overlay = _Overlay(
                fields={
                    "name": filename,
                    "upload_id": upload_id,
                    "approved": False,
                    "meta": [dict(item) for item in meta],
                    "created_at": stamp,
                    "exported_at": None,
                    "export_failed_at": None,
                    "last_opened_at": None,
                }
            )
            overlay.wait("PROCESSING", "REVIEWING", now, self.processing_delay)
            self._overlays[task_id] = overlay
            stored.append(SandboxFile(filename, content_type, size, sha256, task_id))
        upload = SandboxUpload(
            id=upload_id,
            name=name if name is not None else stored[0].name,
            project_id=project_id,
            files=tuple(stored),
            meta=meta,
            folder_id=None,
            created_at=stamp,
            updated_at=stamp,
        )
        self.uploads[upload_id] = upload
        return upload

    def move(self, upload_id: str, folder_id: str) -> SandboxUpload:
        """Move an upload to ``folder_id``."""
        upload = self.uploads[upload_id]
        upload.folder_id = folder_id
        upload.updated_at = _iso(datetime.now(timezone.utc))
        return upload

    def upload_status(self, upload: SandboxUpload) -> str:
        """Return ``processing`` while any of its tasks is PROCESSING, then ``IN_REVIEW``."""
        now = self.clock()
        for task_id in upload.task_ids:
            if self._overlays[task_id].status(now) == "PROCESSING":
                return "processing"
        return "IN_REVIEW"
