"""The bulk fetch behind ``sendai-async fetch`` and ``demo``: IDs in, JSONL files out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path

import attrs

from .._client import SendAI
from .._errors import SendAIError
from ._output import JsonlWriter, error_record, scan_done
from ._progress import Progress


@attrs.define
class FetchSummary:
    """What one ``fetch`` run did."""

    fetched: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    retries: int = 0
    requests: int = 0
    elapsed: float = 0.0
    stopped_by: SendAIError | None = None

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def lines(self) -> list[str]:
        """Return the summary as printable lines."""
        lines = [
            f"fetched   {self.fetched}",
            f"failed    {self.failed}",
            f"skipped   {self.skipped} (already in the output file)"
            + (f", {self.duplicates} repeated IDs" if self.duplicates else ""),
            f"retries   {self.retries}",
            f"requests  {self.requests} in {self.elapsed:.1f} s ({self.rate:.0f} req/s)",
        ]
        if self.stopped_by is not None:
            lines.append(
                f"stopped   {type(self.stopped_by).__name__}: {self.stopped_by.message}; "
                "the remaining IDs were not attempted (run again to resume)"
            )
        return lines


async def _without_done(
    ids: Iterable[str] | AsyncIterable[str],
    done: set[str],
    summary: FetchSummary,
    bar: Progress,
) -> AsyncIterator[str]:
    """Yield each new ID once: not empty, not already fetched, not seen earlier in this run.

    De-duplicating here rather than in the pool lets the progress total drop by one per
    line skipped, so the bar ends at 100%.
    """
    seen: set[str] = set()

    async def each() -> AsyncIterator[str]:
        if isinstance(ids, AsyncIterable):
            async for item in ids:
                yield item
        else:
            for item in ids:
                yield item

    async for raw in each():
        task_id = raw.strip()
        if not task_id:
            continue
        if task_id in seen:
            summary.duplicates += 1
        elif task_id in done:
            summary.skipped += 1
        else:
            seen.add(task_id)
            yield task_id
            continue
        bar.discount()


async def fetch_to_files(
    client: SendAI,
    ids: Iterable[str] | AsyncIterable[str],
    *,
    project_id: str,
    out: Path,
    errors: Path,
    team_id: str | None = None,
    concurrency: int = 16,
    total: int | None = None,
    progress: bool = True,
    summary: FetchSummary | None = None,
) -> FetchSummary:
    """Fetch every ID not already in ``out``; append payloads to ``out``, failures to ``errors``.

    ``errors`` is rewritten per run: IDs that failed before are tried again, so after a
    finished run each ID is in exactly one of the two files. ``total`` counts the input
    lines (repeats and IDs already fetched included); ``summary`` is filled in as the run
    goes, so that an interrupted run can still report it.
    """
    summary = summary or FetchSummary()
    done = scan_done(out)
    started = time.monotonic()
    requests_before, retries_before = client.requests, client.retries
    writer = JsonlWriter(out)
    error_writer = JsonlWriter(errors, truncate=True)
    try:
        with Progress(total, enabled=progress) as bar:
            pending = _without_done(ids, done, summary, bar)
            results = client.tasks.iter_many_raw(
                pending,
                project_id=project_id,
                team_id=team_id,
                concurrency=concurrency,
                dedupe=False,  # _without_done yields each ID once
            )
            try:
                async for result in results:
                    if result.payload is not None:
                        writer.write({"task_id": result.task_id, "payload": result.payload})
                        summary.fetched += 1
                    elif result.error is not None:
                        error_writer.write(error_record(result.task_id, result.error))
                        summary.failed += 1
                    bar.update(summary.fetched, summary.failed)
            except SendAIError as exc:  # 401/403: the batch stopped early
                summary.stopped_by = exc
    finally:
        writer.close()
        error_writer.close()
        summary.elapsed = time.monotonic() - started
        summary.requests = client.requests - requests_before
        summary.retries = client.retries - retries_before
    return summary
