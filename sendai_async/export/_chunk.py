"""One chunk of an export, as a worker process runs it: IDs in, three files out.

A chunk is idempotent, because the broker may deliver it twice (a worker died after
finishing it, or it outlived the visibility timeout): it writes
``part-NNNNN.jsonl`` (one ``{"task_id", "payload"}`` line per task fetched, exactly as
``sendai-async fetch`` writes them) and ``part-NNNNN.errors.jsonl`` (one line per ID that
failed) under temporary names, then renames them into place, and last renames the
summary ``part-NNNNN.json``, which marks the chunk as done. A chunk run twice leaves one
complete set of files; a torn or doubled part never exists under its final name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from .._client import SendAI
from .._config import RetryPolicy
from .._coordination import RateLimit
from .._errors import SendAIError
from .._gc import bulk_gc
from .._redis import RedisCoordinator
from ..cli._output import error_record

# One client and one event loop per worker process, made after the fork on first use.
_clients: dict[tuple[Any, ...], SendAI] = {}
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


@attrs.frozen(kw_only=True)
class Chunk:
    """What one chunk message carries."""

    index: int
    ids: tuple[str, ...]
    project_id: str
    team_id: str | None
    out_dir: str
    concurrency: int = 16
    rate_limit: float | None = None
    coordinator_url: str | None = None

    def to_message(self) -> dict[str, Any]:
        """Return the JSON-ready message."""
        return {**attrs.asdict(self), "ids": list(self.ids)}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Chunk:
        """Read a message (as ``to_message`` wrote it)."""
        return cls(**{**message, "ids": tuple(message["ids"])})


def part_paths(out_dir: Path, index: int) -> tuple[Path, Path, Path]:
    """Return a chunk's (tasks, errors, summary) paths."""
    stem = out_dir / f"part-{index:05d}"
    return stem.with_suffix(".jsonl"), Path(f"{stem}.errors.jsonl"), stem.with_suffix(".json")


def run_chunk(message: dict[str, Any], *, broker: str | None = None) -> dict[str, Any]:
    """Fetch one chunk and write its files; return its summary (the worker side)."""
    chunk = Chunk.from_message(message)
    out_dir = Path(chunk.out_dir)
    tasks_path, errors_path, summary_path = part_paths(out_dir, chunk.index)
    if summary_path.exists():  # delivered again after it finished: nothing to do
        summary: dict[str, Any] = orjson.loads(summary_path.read_bytes())
        return summary
    client = _client(chunk, chunk.coordinator_url or broker)
    suffix = f".tmp-{socket.gethostname()}-{os.getpid()}"
    tmp_tasks = tasks_path.with_name(tasks_path.name + suffix)
    tmp_errors = errors_path.with_name(errors_path.name + suffix)
    started = time.monotonic()
    requests, retries = client.requests, client.retries
    with tmp_tasks.open("wb") as tasks_file, tmp_errors.open("wb") as errors_file:
        with bulk_gc():  # the worker process is ours: see _gc.py
            fetched, failed = _event_loop().run_until_complete(
                _fetch(client, chunk, tasks_file, errors_file)
            )
        for stream in (tasks_file, errors_file):
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(tmp_errors, errors_path)
    os.replace(tmp_tasks, tasks_path)
    summary = {
        "chunk": chunk.index,
        "ids": len(chunk.ids),
        "fetched": fetched,
        "failed": failed,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "requests": client.requests - requests,
        "retries": client.retries - retries,
        "seconds": round(time.monotonic() - started, 3),
    }
    _write_atomically(summary_path, orjson.dumps(summary))
    return summary


async def _fetch(
    client: SendAI, chunk: Chunk, tasks_file: IO[bytes], errors_file: IO[bytes]
) -> tuple[int, int]:
    fetched = failed = 0
    pending = set(chunk.ids)
    results = client.tasks.iter_many_raw(
        chunk.ids,
        project_id=chunk.project_id,
        team_id=chunk.team_id,
        concurrency=chunk.concurrency,
        dedupe=False,  # the driver sends each ID once
    )
    try:
        async for result in results:
            pending.discard(result.task_id)
            if result.payload is not None:
                tasks_file.write(
                    orjson.dumps({"task_id": result.task_id, "payload": result.payload}) + b"\n"
                )
                fetched += 1
            elif result.error is not None:
                errors_file.write(orjson.dumps(error_record(result.task_id, result.error)) + b"\n")
                failed += 1
    except SendAIError as fatal:  # 401/403 stopped the chunk: every other ID fails with it
        failed += _record_all(errors_file, sorted(pending), fatal)
    return fetched, failed


def _record_all(errors_file: IO[bytes], ids: Iterable[str], error: SendAIError) -> int:
    count = 0
    for task_id in ids:
        errors_file.write(orjson.dumps(error_record(task_id, error)) + b"\n")
        count += 1
    return count


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def _event_loop() -> asyncio.AbstractEventLoop:
    """Return the worker process's event loop, kept across chunks (so are its connections)."""
    global _loop, _loop_pid  # noqa: PLW0603 -- one loop per worker process, by design
    if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        _loop_pid = os.getpid()
    return _loop


def _client(chunk: Chunk, coordinator_url: str | None) -> SendAI:
    """Return the process's client for the chunk's settings (key and URL from ``SENDAI_*``)."""
    key = (os.getpid(), chunk.rate_limit, coordinator_url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = SendAI(
            retry=RetryPolicy(max_attempts=6, backoff_max=4.0),
            coordinator=RedisCoordinator(coordinator_url) if coordinator_url else None,
            rate_limit=RateLimit(chunk.rate_limit, burst=5) if chunk.rate_limit else None,
        )
    return client
