"""``sendai-async demo --workers N``: the distributed export, with its faults, on one machine.

Starts a throwaway ``redis-server``, the sandbox and N ``sendai-async worker`` processes;
measures a single-process ``fetch`` and a clean export of the same tasks; then runs the
export again through random faults, a 3-second 429 window, and a worker killed with
SIGKILL half way, and checks that every task was delivered exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from .._client import SendAI
from .._config import RetryPolicy
from ..testing import RedisServerProcess, SandboxServer
from ._fetch import fetch_to_files


@contextmanager
def _workers(count: int, broker: str, env: dict[str, str], log_dir: Path) -> Iterator[list[int]]:
    """Run ``count`` workers (2 processes each), each in its own process group."""
    pids: list[int] = []
    try:
        for number in range(count):
            command = [sys.executable, "-m", "sendai_async", "worker", "--broker", broker]
            command += ["--concurrency", "2", "--hostname", f"demo{number}@%h"]
            with (log_dir / f"worker{number}.log").open("wb") as log:
                process = subprocess.Popen(  # noqa: S603 -- our own command line
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            pids.append(process.pid)
        yield pids
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _delivered_once(out: Path) -> tuple[int, int]:
    """Return (distinct IDs delivered, IDs delivered more than once) across every part."""
    seen: set[str] = set()
    doubled = 0
    for part in out.glob("part-*.jsonl"):
        if part.name.endswith(".errors.jsonl"):
            continue
        for line in part.read_bytes().splitlines():
            task_id = orjson.loads(line)["task_id"]
            doubled += task_id in seen
            seen.add(task_id)
    return len(seen), doubled


async def _export(broker: str, sandbox: SandboxServer, out: Path, kill: int | None) -> float:
    """Export every sandbox task; SIGKILL worker group ``kill`` half way; return seconds."""
    from ..export import QUEUE, TASK_NAME, make_app, run_export  # noqa: PLC0415

    app = make_app(broker)
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            if len(list(out.glob("part-*.json"))) * 500 >= sandbox.tasks // 2:
                os.killpg(kill, signal.SIGKILL)  # type: ignore[arg-type]
                print("  killed worker 0 (SIGKILL, whole process group) half way")
                return
            time.sleep(0.05)

    if kill is not None:
        threading.Thread(target=killer, daemon=True).start()
    started = time.monotonic()
    try:
        await run_export(
            lambda message: app.send_task(TASK_NAME, args=[message], queue=QUEUE),
            sandbox.task_ids,
            project_id=sandbox.project_id,
            team_id=sandbox.team_id,
            out_dir=out,
            chunk_size=500,
            rate_limit=None,
            coordinator_url=broker,
            give_up_after=120,
        )
    finally:
        done.set()
    return time.monotonic() - started


async def run_cluster_demo(*, tasks: int, workers: int, fault_rate: float) -> int:
    """Run the demo; return the exit status."""
    work = Path(tempfile.mkdtemp(prefix="sendai-cluster-demo-"))
    with RedisServerProcess() as redis, SandboxServer(tasks=tasks, seed=7).in_thread() as sandbox:
        broker = redis.url
        env = {
            **os.environ,
            "SENDAI_API_KEY": sandbox.api_key,
            "SENDAI_BASE_URL": sandbox.base_url,
            "SENDAI_TEAM_ID": sandbox.team_id,
        }
        print(f"redis-server {broker}, sandbox {sandbox.base_url}, {workers} workers x 2")
        async with SendAI(
            sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url, retry=RetryPolicy()
        ) as client:
            started = time.monotonic()
            summary = await fetch_to_files(
                client,
                sandbox.task_ids,
                project_id=sandbox.project_id,
                out=work / "fetch.jsonl",
                errors=work / "fetch.errors.jsonl",
                concurrency=32,
                progress=False,
            )
            fetch_rate = summary.fetched / (time.monotonic() - started)
        print(f"single-process fetch: {fetch_rate:.0f} tasks/s")
        with _workers(workers, broker, env, work) as pids:
            await asyncio.sleep(2)  # let the workers connect
            clean = work / "clean"
            clean.mkdir()
            export_rate = tasks / await _export(broker, sandbox, clean, None)
            print(f"export, {workers} workers: {export_rate:.0f} tasks/s")
            print(
                f"now with {fault_rate:.0%} random faults, a 3 s 429 window and a killed "
                "worker (its chunks come back after the broker's 30 s visibility timeout)"
            )
            sandbox.fault_rate = fault_rate
            before = sandbox.stats.requests
            window = sandbox.rate_limit_window(after_requests=before + tasks // 4, seconds=3.0)
            chaos = work / "chaos"
            chaos.mkdir()
            elapsed = await _export(broker, sandbox, chaos, pids[0])
        delivered, doubled = _delivered_once(chaos)
        late = [
            t
            for t in sandbox.stats.arrivals
            if window.first_429 is not None
            and window.end is not None
            and window.first_429 + 0.05 < t < window.end
        ]
        manifest = orjson.loads((chaos / "manifest.json").read_bytes())
        requests = sandbox.stats.requests - before
        print(f"delivered {delivered} of {tasks} tasks, {doubled} twice, in {elapsed:.1f} s")
        print(f"requests  {requests} ({requests - tasks} more than tasks: retries of faults)")
        print(f"429 window: {window.limited} 429s, {len(late)} requests sent inside it after")
        print(f"          the first 429 (+50 ms); manifest state {manifest['state']!r}")
        print(f"speed-up  export x{export_rate / fetch_rate:.2f} over fetch on this machine")
        print(f"files     {work}")
        ok = delivered == tasks and doubled == 0 and not late
        print("OK: every task delivered exactly once." if ok else "FAILED: see above.")
        return 0 if ok else 1
