"""What sharing limits through Redis costs the bulk path: local vs ``RedisCoordinator``.

``python -m benchmarks.coordination [--quick]`` fetches small tasks at concurrency 64 from
the benchmark server with the default (in-process) coordinator and with a
``RedisCoordinator`` on a ``redis-server`` it starts itself, interleaved, and prints the
median rates and their ratio. With no rate limit set, the Redis path should cost no
round trip per request (the gate is read from a local copy, the budget from a lease), so
the ratio should be close to 1.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sendai_async import RedisCoordinator, RetryPolicy, SendAI

from ._contenders import KEY, PROJECT, TEAM
from .run import static_server

CONCURRENCY = 64


@contextmanager
def redis_server() -> Iterator[str]:
    """Start a throwaway ``redis-server``; yield its URL."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="sendai-bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def _fetch(base: str, ids: list[str], redis_url: str | None) -> float:
    coordinator = RedisCoordinator(redis_url) if redis_url else None
    async with SendAI(
        KEY,
        team_id=TEAM,
        base_url=base,
        max_connections=CONCURRENCY,
        retry=RetryPolicy(),
        coordinator=coordinator,
    ) as client:
        await client.tasks.get(ids[0], project_id=PROJECT)  # connect, start the listener
        started = time.perf_counter()
        count = 0
        async for result in client.tasks.iter_many(
            ids, project_id=PROJECT, concurrency=CONCURRENCY
        ):
            count += result.ok
        elapsed = time.perf_counter() - started
    if count != len(ids):
        raise RuntimeError(f"fetched {count} of {len(ids)}")
    return len(ids) / elapsed


def measure(quick: bool) -> dict[str, float]:
    """Return the median rates (tasks/s) of both coordinators and their ratio."""
    tasks, rounds = (1000, 3) if quick else (5000, 5)
    rates: dict[str, list[float]] = {"local": [], "redis": []}
    with static_server() as root, redis_server() as redis_url:
        base = f"{root}/small/0"
        ids = [f"task_{i:07d}" for i in range(tasks)]
        for _ in range(rounds):
            rates["local"].append(asyncio.run(_fetch(base, ids, None)))
            rates["redis"].append(asyncio.run(_fetch(base, ids, redis_url)))
    local, redis = statistics.median(rates["local"]), statistics.median(rates["redis"])
    return {"local": local, "redis": redis, "ratio": redis / local}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    result = measure(parser.parse_args().quick)
    print("| coordinator (small tasks, c=64) | tasks/s | × local |\n|---|---:|---:|")
    print(f"| local (default) | {result['local']:.0f} | 1.00 |")
    print(f"| RedisCoordinator | {result['redis']:.0f} | {result['ratio']:.2f} |")


if __name__ == "__main__":
    main()
