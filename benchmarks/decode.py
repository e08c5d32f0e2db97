"""Decode micro-benchmark: bytes -> typed task, small and large, against the references.

Run: ``python -m benchmarks.decode``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from sendai_async._convert import decode_task

from ._bodies import large_body, small_body


def _contenders() -> dict[str, Callable[[bytes], Any]]:
    contenders: dict[str, Callable[[bytes], Any]] = {
        "orjson.loads (floor)": orjson.loads,
        "sendai_async (cattrs)": decode_task,
    }
    try:
        import msgspec

        from ._msgspec_models import MEnvelope

        decoder = msgspec.json.Decoder(MEnvelope)
        contenders["msgspec Structs"] = decoder.decode
    except ImportError:
        pass
    try:
        from ._peer import PEnvelope

        contenders["pydantic v2"] = PEnvelope.model_validate_json
    except ImportError:
        pass
    return contenders


def _time_per_call(fn: Callable[[bytes], Any], body: bytes, budget: float) -> float:
    """Median microseconds per call over several timed batches."""
    number = 1
    while True:  # find a batch size that takes ~10 ms
        started = time.perf_counter()
        for _ in range(number):
            fn(body)
        if time.perf_counter() - started > 0.01:
            break
        number *= 2
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or len(samples) < 5:
        gc.collect()  # every batch starts from the same collector state
        started = time.perf_counter()
        for _ in range(number):
            fn(body)
        samples.append((time.perf_counter() - started) / number * 1e6)
    return statistics.median(samples)


def run(budget: float = 0.5) -> list[dict[str, Any]]:
    """Time every contender on both bodies, interleaved; return rows with ratios to the floor."""
    rows: list[dict[str, Any]] = []
    for size, body in (("small", small_body()), ("large", large_body())):
        contenders = _contenders()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(3):  # interleave rounds so drift hits every contender alike
            for name, fn in contenders.items():
                times[name].append(_time_per_call(fn, body, budget / 3))
        floor = statistics.median(times["orjson.loads (floor)"])
        for name, samples in times.items():
            median = statistics.median(samples)
            rows.append(
                {"size": size, "contender": name, "us_per_call": median, "x_floor": median / floor}
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Render rows as a markdown table."""
    lines = ["| body | decoder | µs per task | × orjson.loads |", "|---|---|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['contender']} | {row['us_per_call']:.1f} | {row['x_floor']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
