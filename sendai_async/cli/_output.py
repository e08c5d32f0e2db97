"""The JSONL files of ``fetch``: resumable, append-only, flushed per line.

``tasks.jsonl`` holds one ``{"task_id": ..., "payload": {...}}`` line per fetched task,
the payload exactly as the server sent it (every field, known or not). The errors file
holds one line per ID that failed in the latest run. Together they account for every ID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import orjson

from .._errors import APIStatusError, SendAIError


def scan_done(path: Path) -> set[str]:
    """Return the task IDs already in ``path``, cutting off a line half-written by a crash.

    A crash can leave at most the last line incomplete (lines are written whole and
    flushed one at a time). That tail is truncated away so the next append starts clean;
    its task is fetched again.
    """
    done: set[str] = set()
    if not path.exists():
        return done
    good_end = 0
    with path.open("rb") as stream:
        for line in stream:
            if not line.endswith(b"\n"):
                break
            try:
                record = orjson.loads(line)
                task_id = record["task_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                # A corrupt complete line: skip it; its task is fetched again.
                good_end += len(line)
                continue
            if isinstance(task_id, str):
                done.add(task_id)
            good_end += len(line)
    if good_end < path.stat().st_size:
        with path.open("r+b") as stream:
            stream.truncate(good_end)
    return done


class JsonlWriter:
    """Append one JSON document per line and flush it, so a kill loses no written line."""

    def __init__(self, path: Path, *, truncate: bool = False) -> None:
        self.path = path
        self._stream: IO[bytes] = path.open("wb" if truncate else "ab")

    def write(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line and flush it to the OS."""
        self._stream.write(orjson.dumps(record) + b"\n")
        self._stream.flush()

    def close(self) -> None:
        """Flush to disk and close."""
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()


def printable(text: str) -> str:
    """Return ``text`` with bytes that were not UTF-8 shown as backslash-x escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no byte decodes to: show its code point
        return text.encode("utf-8", "backslashreplace").decode()


def error_record(task_id: str, error: SendAIError) -> dict[str, Any]:
    """Describe one failed ID for the errors file."""
    return {
        "task_id": printable(task_id),
        "status": error.status_code if isinstance(error, APIStatusError) else None,
        "error": type(error).__name__,
        "message": str(error),
        "request_id": error.request_id if isinstance(error, APIStatusError) else None,
        "attempts": error.attempts,
    }
