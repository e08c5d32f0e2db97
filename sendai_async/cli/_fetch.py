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
            f"skipped   {self.skipped} (already in the output file)",
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
    ids: Iterable[str] | AsyncIterable[str], done: set[str], summary: FetchSummary
) -> AsyncIterator[str]:
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
        if task_id in done:
            summary.skipped += 1
            continue
        yield task_id


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
) -> FetchSummary:
    """Fetch every ID not already in ``out``; append payloads to ``out``, failures to ``errors``.

    ``errors`` is rewritten per run: IDs that failed before are tried again, so after a
    finished run each ID is in exactly one of the two files.
    """
    summary = FetchSummary()
    done = scan_done(out)
    started = time.monotonic()
    requests_before, retries_before = client.requests, client.retries
    remaining = None if total is None else max(0, total - len(done))
    writer = JsonlWriter(out)
    error_writer = JsonlWriter(errors, truncate=True)
    try:
        with Progress(remaining, enabled=progress) as bar:
            pending = _without_done(ids, done, summary)
            results = client.tasks.iter_many_raw(
                pending,
                project_id=project_id,
                team_id=team_id,
                concurrency=concurrency,
                dedupe=True,
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
