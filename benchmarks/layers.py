"""Where the time goes: the bulk path with one layer added at a time, against the floor.

``python -m benchmarks.layers`` fetches small tasks at concurrency 64, interleaved, with:

1. ``floor``: raw aiohttp + ``resp.read()`` + ``orjson.loads``;
2. ``floor+config``: the floor with our aiohttp settings (a read timeout armed on every
   request, URLs passed pre-encoded, no redirects);
3. ``exchange``: our single HTTP exchange (size limit, error mapping) + ``orjson.loads``;
4. ``request``: plus retries, deadline, rate-limit gate, hooks, budget (decoding with
   ``orjson.loads`` as the decoder);
5. ``get_raw``: plus path building and the payload check;
6. ``iter_many_raw``: plus the worker pool and its result outbox (the CLI path);
7. ``iter_many``: plus structuring into ``Task`` objects.

Every layer decodes the body as the floor does, so each row differs from the one above by
exactly the layer it names. Besides throughput, the table gives the client process's CPU
time per task (the server is another process): on a shared machine it is the steadier
figure, and the difference between two rows is what that layer costs.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Awaitable, Callable
from functools import partial

import aiohttp
import orjson
from yarl import URL

from ._contenders import (
    KEY,
    PROJECT,
    TEAM,
    _client,
    _pool,
    _task_url,
    floor,
    raw,
    run_measured,
    typed,
)
from .run import static_server

TASKS = 3000
CONCURRENCY = 64
ROUNDS = 7


async def floor_configured(base: str, ids: list[str], concurrency: int) -> int:
    decoded = 0
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def fetch(task_id: str) -> None:
            nonlocal decoded
            url = URL(_task_url(base, task_id), encoded=True)
            async with session.get(url, timeout=timeout, allow_redirects=False) as response:
                body = await response.read()
            orjson.loads(body)["payload"]
            decoded += 1

        await _pool(ids, concurrency, fetch)
    return decoded


async def _with_client(
    base: str, ids: list[str], concurrency: int, step: Callable[..., Awaitable[object]]
) -> int:
    done = 0
    async with _client(base, concurrency) as client:

        async def fetch(task_id: str) -> None:
            nonlocal done
            await step(client, base, task_id)
            done += 1

        await _pool(ids, concurrency, fetch)
    return done


async def _exchange(client: object, base: str, task_id: str) -> None:
    requester = client._requester  # type: ignore[attr-defined]
    transport = requester.transport
    session = await transport.sessions.get()
    url = URL(_task_url(base, task_id), encoded=True)
    timeout = transport.client_timeout(requester.options.timeout, 1e9)
    _, _, body = await transport.exchange(
        session, "GET", url, timeout, transport.request_headers, None
    )
    orjson.loads(body)["payload"]


async def _request(client: object, _base: str, task_id: str) -> None:
    path = f"/v2/{TEAM}/project/{PROJECT}/task/{task_id}"
    requester = client._requester  # type: ignore[attr-defined]
    (await requester.request("GET", path, decode=orjson.loads, idempotent=True))["payload"]


async def _get_raw(client: object, _base: str, task_id: str) -> None:
    await client.tasks.get_raw(task_id, project_id=PROJECT)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description="Where the bulk path's time goes, by layer.")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds")
    rounds = parser.parse_args().rounds
    steps = {
        "floor": floor,
        "floor+config": floor_configured,
        "exchange": partial(_with_client, step=_exchange),
        "request": partial(_with_client, step=_request),
        "get_raw": partial(_with_client, step=_get_raw),
        "iter_many_raw": raw,
        "iter_many": typed,
    }
    with static_server() as root:
        base = f"{root}/small/0"
        ids = [f"task_{i:07d}" for i in range(TASKS)]
        rates: dict[str, list[float]] = {name: [] for name in steps}
        cpu: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(rounds):
            for name, step in steps.items():
                elapsed, used = run_measured(step, base, ids, CONCURRENCY, "asyncio")  # type: ignore[arg-type]
                rates[name].append(TASKS / elapsed)
                cpu[name].append(used / TASKS * 1e6)
    print(table(rates, cpu))


def table(rates: dict[str, list[float]], cpu: dict[str, list[float]]) -> str:
    """Render the layer table: throughput and client CPU per task, each against the floor.

    Ratios are medians of per-round pairs with the floor of the same round.
    """
    lines = [
        "| layer | tasks/s | × floor | client CPU µs/task | Δ µs vs layer above | CPU × floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    previous: float | None = None
    for name, samples in rates.items():
        rate = statistics.median(samples)
        x_floor = statistics.median(r / f for r, f in zip(samples, rates["floor"], strict=True))
        micros = statistics.median(cpu[name])
        cpu_x = statistics.median(f / c for c, f in zip(cpu[name], cpu["floor"], strict=True))
        delta = "" if previous is None else f"{micros - previous:+.1f}"
        lines.append(
            f"| {name} | {rate:.0f} | {x_floor:.2f} | {micros:.1f} | {delta} | {cpu_x:.2f} |"
        )
        previous = micros
    return "\n".join(lines)


if __name__ == "__main__":
    main()
