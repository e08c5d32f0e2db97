"""The export's driver: plan chunks, dispatch them, watch the output directory, merge.

The driver holds no result backend: a chunk is done when its summary file
(``part-NNNNN.json``) exists, which is also what makes an interrupted export resumable.
``manifest.json`` records the export's settings and each chunk's IDs digest; running the
same command again skips finished chunks and dispatches the rest again (a chunk still
queued from the first run may then run twice, which is safe: chunks are idempotent).

A chunk message can also be lost for good: kombu's Redis transport pops a message off the
queue (BRPOP) before it records it as unacknowledged, so a worker killed between the two
takes it with it, and no visibility timeout brings it back. The driver covers that: when
no chunk has finished for ``redispatch_after`` seconds (by default 60, twice the export
app's visibility timeout, past any redelivery the broker would make), it sends each
pending chunk again, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import attrs
import orjson

from ._app import VISIBILITY_TIMEOUT
from ._chunk import Chunk, part_paths

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
_POLL = 0.2
REDISPATCH_AFTER = 2.0 * VISIBILITY_TIMEOUT


class ExportInputError(Exception):
    """The export cannot start or resume as asked (reported in one line, exit status 2)."""


class ExportStalledError(Exception):
    """No chunk finished for ``give_up_after`` seconds; the export can be resumed later."""


@attrs.define
class ExportSummary:
    """What an export run did, for the final report."""

    chunks: int = 0
    ids: int = 0
    fetched: int = 0
    failed: int = 0
    skipped_chunks: int = 0
    dispatched: int = 0
    redispatched: int = 0
    requests: int = 0
    retries: int = 0
    workers: set[str] = attrs.Factory(set)
    elapsed: float = 0.0

    def lines(self) -> list[str]:
        """Return the summary as printable lines."""
        rate = self.fetched / self.elapsed if self.elapsed > 0 else 0.0
        return [
            f"chunks    {self.chunks} ({self.skipped_chunks} already done, "
            f"{self.dispatched} dispatched, {self.redispatched} sent again)",
            f"fetched   {self.fetched}",
            f"failed    {self.failed}",
            f"requests  {self.requests} ({self.retries} retries) by {len(self.workers)} "
            "worker processes",
            f"elapsed   {self.elapsed:.1f} s ({rate:.0f} tasks/s)",
        ]


def _digest(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _write_json(path: Path, document: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


class Manifest:
    """``manifest.json``: the export's settings and chunks, rewritten atomically."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.chunks: dict[str, dict[str, Any]] = {}
        if path.exists():
            document = orjson.loads(path.read_bytes())
            if document.get("settings") != settings:
                raise ExportInputError(
                    f"{path} belongs to another export (different project, team or chunk "
                    "size); use a new --out directory"
                )
            self.chunks = document.get("chunks", {})

    def check(self, index: int, digest: str, size: int) -> None:
        """Record a chunk, refusing one whose IDs differ from the first run's."""
        known = self.chunks.get(str(index))
        if known is not None and known["digest"] != digest:
            raise ExportInputError(
                f"chunk {index} holds other IDs than when {self.path} was written: the "
                "input changed; use a new --out directory"
            )
        if known is None:
            self.chunks[str(index)] = {"digest": digest, "ids": size, "state": "planned"}

    def mark(self, index: int, state: str, **extra: Any) -> None:
        """Set a chunk's state."""
        self.chunks[str(index)].update(state=state, **extra)

    def save(self, **summary: Any) -> None:
        """Write the manifest."""
        document = {"settings": self.settings, "chunks": self.chunks, **summary}
        _write_json(self.path, document)


async def _unique(ids: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    seen: set[str] = set()
    if isinstance(ids, AsyncIterable):
        async for raw in ids:
            task_id = raw.strip()
            if task_id and task_id not in seen:
                seen.add(task_id)
                yield task_id
    else:
        for raw in ids:
            task_id = raw.strip()
            if task_id and task_id not in seen:
                seen.add(task_id)
                yield task_id


async def run_export(
    send: Any,
    ids: Iterable[str] | AsyncIterable[str],
    *,
    project_id: str,
    team_id: str | None,
    out_dir: Path,
    chunk_size: int,
    rate_limit: float | None,
    coordinator_url: str | None,
    progress: Any = None,
    give_up_after: float | None = None,
    redispatch_after: float | None = REDISPATCH_AFTER,
) -> ExportSummary:
    """Plan and dispatch chunks as IDs arrive, then wait for every chunk to finish.

    ``send(message)`` dispatches one chunk message (Celery's ``send_task`` in production).
    IDs are de-duplicated (one set entry per distinct ID); chunks are dispatched as soon
    as they fill up; besides that set the driver holds the messages of unfinished chunks.
    With ``give_up_after``, waiting stops with ``ExportStalledError`` when no chunk
    finished for that many seconds (no worker running, say); by default it waits.
    With ``redispatch_after`` (``None``: never), pending chunks are sent again, each at most
    once, when no chunk finished for that long (see the module notes); chunks are
    idempotent. The driver keeps each pending chunk's message for that.
    """
    summary = ExportSummary()
    started = time.monotonic()
    settings = {"project_id": project_id, "team_id": team_id, "chunk_size": chunk_size}
    manifest = Manifest(out_dir / MANIFEST, settings)
    pending: dict[int, dict[str, Any]] = {}  # index -> its message, until it is done

    def dispatch(index: int, chunk_ids: list[str]) -> None:
        manifest.check(index, _digest(chunk_ids), len(chunk_ids))
        summary.chunks += 1
        summary.ids += len(chunk_ids)
        if part_paths(out_dir, index)[2].exists():
            summary.skipped_chunks += 1
            return
        chunk = Chunk(
            index=index,
            ids=tuple(chunk_ids),
            project_id=project_id,
            team_id=team_id,
            out_dir=str(out_dir.resolve()),
            rate_limit=rate_limit,
            coordinator_url=coordinator_url,
        )
        message = chunk.to_message()
        send(message)
        manifest.mark(index, "dispatched")
        summary.dispatched += 1
        pending[index] = message

    batch: list[str] = []
    index = 0
    async for task_id in _unique(ids):
        batch.append(task_id)
        if len(batch) == chunk_size:
            dispatch(index, batch)
            index, batch = index + 1, []
            manifest.save(state="dispatching")
    if batch:
        dispatch(index, batch)
    manifest.save(state="running")
    await _wait(
        out_dir, pending, manifest, summary, progress, give_up_after, send, redispatch_after
    )
    summary.elapsed = time.monotonic() - started
    _merge_errors(out_dir, summary.chunks)
    manifest.save(
        state="complete",
        fetched=summary.fetched,
        failed=summary.failed,
        ids=summary.ids,
    )
    return summary


async def _wait(
    out_dir: Path,
    pending: dict[int, dict[str, Any]],
    manifest: Manifest,
    summary: ExportSummary,
    progress: Any,
    give_up_after: float | None,
    send: Any,
    redispatch_after: float | None,
) -> None:
    """Poll for chunk summaries until every chunk is done; tally them all."""
    for key in manifest.chunks:
        index = int(key)
        if index not in pending:
            _tally(part_paths(out_dir, index)[2], summary, manifest, index)
    last_progress = last_sent = time.monotonic()
    sent_again: set[int] = set()
    while pending:
        for index in sorted(pending):
            summary_path = part_paths(out_dir, index)[2]
            if summary_path.exists():
                del pending[index]
                _tally(summary_path, summary, manifest, index)
                last_progress = time.monotonic()
        now = time.monotonic()
        if give_up_after is not None and now - last_progress > give_up_after:
            manifest.save(state="stalled")
            raise ExportStalledError(
                f"no chunk finished for {give_up_after:.0f} s ({len(pending)} of "
                f"{summary.chunks} still pending); are workers running? Run the same "
                "command again to resume"
            )
        if redispatch_after is not None and now - max(last_progress, last_sent) > redispatch_after:
            # Nothing finished for longer than any redelivery takes: a message may be lost.
            # Each chunk is sent again at most once, so chunks that are only slow (a tight
            # rate limit) cost at most one extra message and one duplicate run each.
            again = [index for index in pending if index not in sent_again]
            for index in again:
                send(pending[index])
            sent_again.update(again)
            summary.redispatched += len(again)
            last_sent = now
        if progress is not None:
            progress.update(summary.fetched, summary.failed)
        if pending:
            await asyncio.sleep(_POLL)
    manifest.save(state="running")


def _tally(path: Path, summary: ExportSummary, manifest: Manifest, index: int) -> None:
    if not path.exists():
        return
    done = orjson.loads(path.read_bytes())
    summary.fetched += done["fetched"]
    summary.failed += done["failed"]
    summary.requests += done.get("requests", 0)
    summary.retries += done.get("retries", 0)
    summary.workers.add(done.get("worker", "?"))
    manifest.mark(index, "done", fetched=done["fetched"], failed=done["failed"])


def _merge_errors(out_dir: Path, chunks: int) -> None:
    """Write ``errors.jsonl``: every chunk's failures, in chunk order."""
    target = out_dir / ERRORS
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as merged:
        for index in range(chunks):
            errors_path = part_paths(out_dir, index)[1]
            if errors_path.exists():
                merged.write(errors_path.read_bytes())
    os.replace(tmp, target)
