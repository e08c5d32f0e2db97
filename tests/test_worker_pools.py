"""The sync client in a real Celery prefork worker, with the same Redis as broker and limits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendai_async import NotFoundError
from sendai_async.testing import SandboxServer

from .redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tasks=50, fault_rate=0.05, seed=4).in_thread() as server:
        yield server


@pytest.fixture
def celery_worker(
    sandbox: SandboxServer,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[object]:
    env = {
        **os.environ,
        "SENDAI_TEST_BROKER": redis_server.url,
        "SENDAI_API_KEY": sandbox.api_key,
        "SENDAI_BASE_URL": sandbox.base_url,
        "SENDAI_TEAM_ID": sandbox.team_id,
    }
    for name in ("SENDAI_TEST_BROKER", "SENDAI_API_KEY", "SENDAI_BASE_URL", "SENDAI_TEAM_ID"):
        monkeypatch.setenv(name, env[name])
    command = [sys.executable, "-m", "celery", "-A", "tests.celery_jobs", "worker"]
    command += ["--pool=prefork", "--concurrency=2", "--without-gossip", "--without-mingle"]
    with (tmp_path / "celery.log").open("wb") as log:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        from tests import celery_jobs  # noqa: PLC0415 -- needs the variables set above

        yield celery_jobs
        celery_jobs.sendai.close()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        sys.modules.pop("tests.celery_jobs", None)


def test_a_prefork_worker_runs_sync_client_tasks(
    celery_worker: object, sandbox: SandboxServer
) -> None:
    """Tasks in forked pool children fetch through their own loop threads; errors keep class."""
    jobs = celery_worker.status  # type: ignore[attr-defined]
    pending = [jobs.delay(task_id, sandbox.project_id) for task_id in sandbox.task_ids[:20]]
    results = [job.get(timeout=60) for job in pending]
    assert [r["id"] for r in results] == sandbox.task_ids[:20]
    assert len({r["pid"] for r in results}) >= 1
    missing = jobs.delay("task_999999", sandbox.project_id)
    with pytest.raises(NotFoundError) as caught:
        missing.get(timeout=60)
    assert caught.value.status_code == 404
