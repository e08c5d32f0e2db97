"""Run every benchmark and print a markdown report with ratios to the floor.

``python -m benchmarks.run --quick`` takes about a minute; without ``--quick``, a few.
The server runs in a separate process; contenders run interleaved (A B C A B C ...) and the
report gives medians and paired ratios, which drift far less than absolute numbers on a
shared machine. Raw numbers go to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import decode
from ._contenders import available, run_measured, run_one

RESULTS = Path(__file__).with_name("results")


@contextmanager
def static_server() -> Iterator[str]:
    """Start ``benchmarks._server`` in its own process; yield its root URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("benchmark server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def scenarios(quick: bool) -> list[dict[str, Any]]:
    """The bulk scenarios: (body, server latency, task count, concurrency)."""
    n, n_latency, n_large = (1000, 600, 200) if quick else (5000, 2000, 1000)
    return [
        {"name": "small c=1", "size": "small", "latency_ms": 0, "tasks": n // 5, "concurrency": 1},
        {"name": "small c=16", "size": "small", "latency_ms": 0, "tasks": n, "concurrency": 16},
        {"name": "small c=64", "size": "small", "latency_ms": 0, "tasks": n, "concurrency": 64},
        {
            "name": "50 ms c=64",
            "size": "small",
            "latency_ms": 50,
            "tasks": n_latency,
            "concurrency": 64,
        },
        {
            "name": "50 ms c=256",
            "size": "small",
            "latency_ms": 50,
            "tasks": n_latency,
            "concurrency": 256,
        },
        {
            "name": "large c=16",
            "size": "large",
            "latency_ms": 0,
            "tasks": n_large,
            "concurrency": 16,
        },
    ]


def bulk(
    root: str, quick: bool, rounds: int, loop: str, only: set[str] | None = None
) -> list[dict[str, Any]]:
    """Run the bulk scenarios, contenders interleaved; return one row per scenario."""
    contenders = available()
    if only is not None:
        contenders = {k: v for k, v in contenders.items() if k in only}
    rows = []
    for scenario in scenarios(quick):
        base = f"{root}/{scenario['size']}/{scenario['latency_ms']}"
        ids = [f"task_{i:07d}" for i in range(scenario["tasks"])]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        run_one(contenders["floor"], base, ids[:50], scenario["concurrency"], loop)  # warm up
        for _ in range(rounds):
            for name, contender in contenders.items():
                elapsed, used = run_measured(contender, base, ids, scenario["concurrency"], loop)
                times[name].append(elapsed)
                cpu[name].append(used)
        row: dict[str, Any] = {**scenario, "loop": loop}
        for name, samples in times.items():
            row[f"{name}_rate"] = len(ids) / statistics.median(samples)
            # Paired: each round's contender against the floor of the same round.
            row[f"{name}_x_floor"] = statistics.median(
                f / s for f, s in zip(times["floor"], samples, strict=True)
            )
            # The client's own CPU per task (the server is another process): steadier than
            # throughput on a shared machine, and what the SDK's code costs.
            row[f"{name}_cpu_us"] = statistics.median(cpu[name]) / len(ids) * 1e6
            row[f"{name}_cpu_x_floor"] = statistics.median(
                f / c for f, c in zip(cpu["floor"], cpu[name], strict=True)
            )
        if scenario["latency_ms"]:
            ideal = scenario["concurrency"] / (scenario["latency_ms"] / 1000)
            for name in contenders:
                row[f"{name}_efficiency"] = row[f"{name}_rate"] / ideal
        rows.append(row)
        print(
            f"  {scenario['name']}: "
            + ", ".join(
                f"{name} {row[f'{name}_rate']:.0f}/s ({row[f'{name}_x_floor']:.2f}x)"
                for name in contenders
            ),
            file=sys.stderr,
        )
    return rows


def memory(root: str, counts: list[int]) -> list[dict[str, Any]]:
    """Peak RSS of a process that streams N IDs through ``iter_many``."""
    rows = []
    for dedupe in (False, True):
        for count in counts:
            output = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks._memory",
                    f"{root}/small/0",
                    str(count),
                    str(int(dedupe)),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            rows.append(
                {
                    "ids": count,
                    "dedupe": dedupe,
                    "peak_rss_mib": int(output.stdout.split()[-1]) / 1024,
                }
            )
    return rows


def import_time(repeats: int) -> dict[str, float]:
    """Median wall time of a fresh interpreter importing each module, minus a bare start."""

    def timed(code: str) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    bare = timed("pass")
    return {
        "aiohttp_ms": timed("import aiohttp") - bare,
        "sendai_async_ms": timed("import sendai_async") - bare,
    }


def report(results: dict[str, Any]) -> str:
    """Render the results as markdown."""
    out = [f"Machine: {results['machine']}", ""]
    contenders = ("floor", "typed", "typed+gc", "raw", "peer")
    names = [n for n in contenders if f"{n}_rate" in results["bulk"][0]]
    out.append(
        "| scenario | "
        + " | ".join(f"{n} tasks/s" for n in names)
        + " | typed × floor | typed+gc × floor | raw × floor | floor × peer |"
    )
    out.append("|---|" + "---:|" * (len(names) + 4))
    for row in results["bulk"]:
        cells = [f"{row[f'{n}_rate']:.0f}" for n in names]
        peer = f"{1 / row['peer_x_floor']:.1f}" if "peer_x_floor" in row else "n/a"
        out.append(
            f"| {row['name']} | "
            + " | ".join(cells)
            + f" | {row['typed_x_floor']:.2f} | {row['typed+gc_x_floor']:.2f}"
            + f" | {row['raw_x_floor']:.2f} | {peer} |"
        )
    out += [
        "",
        "| client CPU µs per task | "
        + " | ".join(names)
        + " | floor CPU ÷ typed | floor CPU ÷ typed+gc | floor CPU ÷ raw |",
        "|---|" + "---:|" * (len(names) + 3),
    ]
    for row in results["bulk"]:
        out.append(
            f"| {row['name']} | "
            + " | ".join(f"{row[f'{n}_cpu_us']:.0f}" for n in names)
            + f" | {row['typed_cpu_x_floor']:.2f} | {row['typed+gc_cpu_x_floor']:.2f}"
            + f" | {row['raw_cpu_x_floor']:.2f} |"
        )
    latency_rows = [r for r in results["bulk"] if r["latency_ms"]]
    if latency_rows:
        out += [
            "",
            "| 50 ms latency | " + " | ".join(f"{n} efficiency" for n in names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for row in latency_rows:
            out.append(
                f"| c={row['concurrency']} | "
                + " | ".join(f"{row[f'{n}_efficiency']:.2f}" for n in names)
                + " |"
            )
    if results.get("uvloop"):
        out += [
            "",
            "| CLI path (raw), uvloop vs asyncio | raw tasks/s asyncio | raw tasks/s uvloop | gain |",
            "|---|---:|---:|---:|",
        ]
        for plain, fast in results["uvloop"]:
            out.append(
                f"| {plain['name']} | {plain['raw_rate']:.0f} | {fast['raw_rate']:.0f} | {fast['raw_rate'] / plain['raw_rate']:.2f}× |"
            )
    out += ["", decode.table(results["decode"])]
    if results.get("memory"):
        out += ["", "| iter_many over a generator | peak RSS |", "|---|---:|"]
        for row in results["memory"]:
            out.append(
                f"| {row['ids']:,} IDs, dedupe={row['dedupe']} | {row['peak_rss_mib']:.1f} MiB |"
            )
    imports = results["import_time"]
    out += [
        "",
        f"Import time over a bare interpreter: aiohttp {imports['aiohttp_ms']:.0f} ms, "
        f"sendai_async {imports['sendai_async_ms']:.0f} ms.",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds (~1 minute)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 5
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}",
        "quick": args.quick,
    }
    with static_server() as root:
        print("bulk (asyncio loop):", file=sys.stderr)
        results["bulk"] = bulk(root, args.quick, rounds, "asyncio")
        try:
            import uvloop  # noqa: F401

            print("CLI path under uvloop:", file=sys.stderr)
            fast = bulk(root, args.quick, rounds, "uvloop", only={"floor", "raw"})
            plain = [r for r in results["bulk"] if r["concurrency"] >= 64]
            results["uvloop"] = [
                (p, f)
                for p, f in zip(plain, [r for r in fast if r["concurrency"] >= 64], strict=True)
            ]
        except ImportError:
            results["uvloop"] = []
        print("memory:", file=sys.stderr)
        results["memory"] = memory(root, [10_000, 30_000] if args.quick else [10_000, 100_000])
    print("decode:", file=sys.stderr)
    results["decode"] = decode.run(budget=0.3 if args.quick else 1.0)
    results["import_time"] = import_time(5 if args.quick else 15)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(report(results))


if __name__ == "__main__":
    main()
