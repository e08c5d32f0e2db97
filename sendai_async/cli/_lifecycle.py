"""The demo's second step: a Send AI user's whole loop, against the sandbox.

Upload 20 documents, wait for their tasks to be processed, fetch them, approve half and
complete the rest, wait for the completed ones, through the sandbox's random faults (the
actions are safe to retry: after a lost answer the task is read back).
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from pathlib import Path

import attrs

from .._client import SendAI
from .._models import TaskStatus
from ..testing import SandboxServer


@attrs.define
class LifecycleReport:
    """What the loop did, as printable lines, and whether everything went as expected."""

    lines: list[str] = attrs.Factory(list)
    ok: bool = True


async def run_lifecycle(client: SendAI, sandbox: SandboxServer, files: int = 20) -> LifecycleReport:
    """Run upload -> wait -> fetch -> approve/complete -> wait; report each step."""
    report = LifecycleReport()
    project = sandbox.project_id
    with tempfile.TemporaryDirectory(prefix="sendai-demo-docs-") as folder:
        paths = []
        for number in range(files):
            path = Path(folder) / f"invoice-{number:02d}.pdf"
            path.write_bytes(b"%PDF-1.7\n" + f"demo invoice {number}\n".encode() * 50)
            paths.append(path)
        # An upload is never sent twice after a lost answer (it could create every task
        # twice), so this one step runs without the sandbox's random faults.
        fault_rate, sandbox.fault_rate = sandbox.fault_rate, 0.0
        try:
            upload = await client.uploads.create(
                paths, project_id=project, name="demo batch", meta={"source": "demo"}
            )
        finally:
            sandbox.fault_rate = fault_rate
    report.lines.append(f"uploaded  {files} files as {upload.id} ({upload.status})")
    upload = await client.uploads.get(upload.id, project_id=project)
    task_ids = [str(entry["task_id"]) for entry in upload.files]  # the sandbox's own mapping

    wait = functools.partial(client.tasks.wait, project_id=project, poll_interval=0.05)
    reviewed = await asyncio.gather(*(wait(task_id) for task_id in task_ids))
    statuses = {str(task.status) for task in reviewed}
    report.lines.append(f"processed {len(reviewed)} tasks, now {', '.join(sorted(statuses))}")

    batch = await client.tasks.get_many(task_ids, project_id=project)
    report.lines.append(f"fetched   {len(batch.tasks)} tasks, {len(batch.errors)} errors")

    half = len(task_ids) // 2
    approve = functools.partial(client.tasks.approve, project_id=project)
    complete = functools.partial(client.tasks.complete, project_id=project)
    approved = [r async for r in client.map(approve, task_ids[:half], concurrency=8)]
    completed = [r async for r in client.map(complete, task_ids[half:], concurrency=8)]
    done = await asyncio.gather(
        *(wait(r.key, until=TaskStatus.COMPLETED) for r in completed if r.ok)
    )
    approved_ok = sum(r.ok and r.value is not None and r.value.approved for r in approved)
    completed_ok = sum(task.status is TaskStatus.COMPLETED for task in done)
    report.lines.append(f"approved  {approved_ok} of {half}")
    report.lines.append(f"completed {completed_ok} of {len(task_ids) - half}")
    report.ok = len(batch.tasks) == files and approved_ok == half and completed_ok == files - half
    return report
