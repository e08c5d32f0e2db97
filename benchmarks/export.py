"""Export throughput with 1, 2 and 4 worker processes, against a single-process fetch.

``python -m benchmarks.export [--tasks N]`` serves large tasks (20 pages, where decoding
costs CPU) from the benchmark server, starts a throwaway ``redis-server``, and exports
the same IDs with one Celery worker running 1, 2 and 4 pool processes; it prints tasks/s
and the speed-up over ``fetch`` (one process) on the same machine. On a 2-core machine the
server and the workers share the cores, so more than two processes cannot help there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sendai_async import RetryPolicy, SendAI, bulk_gc
from sendai_async.cli._fetch import fetch_to_files
from sendai_async.export import QUEUE, TASK_NAME, make_app, run_export
from sendai_async.testing import RedisServerProcess

from ._contenders import KEY, PROJECT, TEAM
from .run import static_server


async def _fetch(base: str, ids: list[str], work: Path) -> float:
    async with SendAI(KEY, team_id=TEAM, base_url=base, retry=RetryPolicy()) as client:
        started = time.monotonic()
        summary = await fetch_to_files(
            client,
            ids,
            project_id=PROJECT,
            out=work / "fetch.jsonl",
            errors=work / "fetch.errors.jsonl",
            concurrency=16,
            progress=False,
        )
        elapsed = time.monotonic() - started
    if summary.fetched != len(ids):
        raise RuntimeError(f"fetch got {summary.fetched} of {len(ids)}")
    return len(ids) / elapsed


async def _export(broker: str, ids: list[str], out: Path) -> float:
    app = make_app(broker)
    started = time.monotonic()
    summary = await run_export(
        lambda message: app.send_task(TASK_NAME, args=[message], queue=QUEUE),
        ids,
        project_id=PROJECT,
        team_id=TEAM,
        out_dir=out,
        chunk_size=100,
        rate_limit=None,
        coordinator_url=broker,
        give_up_after=120,
    )
    elapsed = time.monotonic() - started
    if summary.fetched != len(ids):
        raise RuntimeError(f"export got {summary.fetched} of {len(ids)}")
    return len(ids) / elapsed


def measure(tasks: int) -> list[tuple[str, float]]:
    """Return (contender, tasks/s) rows: fetch, then export with 1, 2 and 4 processes."""
    work = Path(tempfile.mkdtemp(prefix="sendai-bench-export-"))
    ids = [f"task_{i:07d}" for i in range(tasks)]
    rows: list[tuple[str, float]] = []
    try:
        with static_server() as root, RedisServerProcess() as redis:
            base = f"{root}/large/0"
            with bulk_gc():  # as `sendai-async fetch` runs it, and as the workers do
                rows.append(("fetch (1 process)", asyncio.run(_fetch(base, ids, work))))
            env = {**os.environ, "SENDAI_API_KEY": KEY, "SENDAI_BASE_URL": base}
            for processes in (1, 2, 4):
                command = [sys.executable, "-m", "sendai_async", "worker", "--broker", redis.url]
                command += ["--concurrency", str(processes)]
                worker = subprocess.Popen(
                    command, env=env, stdout=subprocess.DEVNULL, start_new_session=True
                )
                try:
                    time.sleep(3)  # the pool processes start and connect
                    out = work / f"export-{processes}"
                    out.mkdir()
                    rate = asyncio.run(_export(redis.url, ids, out))
                    rows.append((f"export, {processes} worker processes", rate))
                finally:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    rows = measure(parser.parse_args().tasks)
    fetch_rate = rows[0][1]
    print("| large tasks | tasks/s | × fetch |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {rate / fetch_rate:.2f} |")


if __name__ == "__main__":
    main()
