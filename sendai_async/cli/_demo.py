"""``sendai-async demo``: the main job against an in-process sandbox, no credentials needed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .._client import SendAI
from .._config import RetryPolicy
from ..testing import SandboxServer
from ._fetch import FetchSummary, fetch_to_files
from ._lifecycle import LifecycleReport, run_lifecycle


async def run_demo(
    *,
    tasks: int,
    fault_rate: float,
    concurrency: int,
    seed: int,
    out_dir: Path | None,
    progress: bool,
) -> tuple[FetchSummary, SandboxServer, Path, LifecycleReport]:
    """Start a sandbox with faults, list its project, bulk-fetch every task listed.

    Then run a user's whole loop against the same sandbox: upload, wait, fetch, act.
    """
    directory = out_dir or Path(tempfile.mkdtemp(prefix="sendai-demo-"))
    out = directory / "tasks.jsonl"
    out.unlink(missing_ok=True)  # the demo starts fresh each time; `fetch` is the resumable one
    async with SandboxServer(tasks=tasks, fault_rate=fault_rate, seed=seed) as sandbox:
        # Five attempts: a task must meet five faults in a row to fail at a few percent.
        retry = RetryPolicy(max_attempts=5, backoff_base=0.05, backoff_max=1.0)
        async with SendAI(
            sandbox.api_key,
            team_id=sandbox.team_id,
            base_url=sandbox.base_url,
            retry=retry,
            max_connections=max(concurrency, 100),
        ) as client:
            # List the project, then fetch everything it lists, as a real job starts.
            listing = client.paginate(f"project/{sandbox.project_id}/tasks")
            summary = await fetch_to_files(
                client,
                listing.ids(),
                project_id=sandbox.project_id,
                out=out,
                errors=directory / "errors.jsonl",
                concurrency=concurrency,
                total=tasks,
                progress=progress,
            )
            lifecycle = await run_lifecycle(client, sandbox)
    return summary, sandbox, out, lifecycle
