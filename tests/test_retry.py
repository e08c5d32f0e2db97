"""Retry decisions: Retry-After parsing, backoff bounds, and the client-wide retry budget."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from sendai_async import RetryPolicy, SendAI, ServerError
from sendai_async._retry import RetryBudget, backoff, parse_retry_after

from .conftest import CANARY_KEY, ScriptedServer, json_response

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def frozen_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sendai_async._retry._wall_clock", NOW.timestamp)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, None, id="none"),
        pytest.param({"retry-after": "7"}, 7.0, id="seconds"),
        pytest.param({"retry-after": " 2.5 "}, 2.5, id="fraction-and-spaces"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="ms"),
        pytest.param({"retry-after-ms": "1500", "retry-after": "9"}, 1.5, id="ms-wins"),
        pytest.param({"retry-after-ms": "junk", "retry-after": "9"}, 9.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after": "-3"}, None, id="negative"),
        pytest.param({"retry-after": "soon"}, None, id="garbage"),
        pytest.param({"retry-after": "inf"}, None, id="infinite"),
        pytest.param({"retry-after": "nan"}, None, id="nan"),
        pytest.param({"retry-after": "Sat, 28 Nov 2026 12:00:30 GMT"}, 30.0, id="imf-fixdate"),
        pytest.param({"retry-after": "Saturday, 28-Nov-26 12:00:30 GMT"}, 30.0, id="rfc850"),
        pytest.param({"retry-after": "Sat Nov 28 12:00:30 2026"}, 30.0, id="asctime-is-utc"),
        pytest.param({"retry-after": "Sat, 28 Nov 2026 11:00:00 GMT"}, 0.0, id="date-in-past"),
    ],
)
@pytest.mark.usefixtures("frozen_wall_clock")
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


@pytest.mark.usefixtures("frozen_wall_clock")
def test_http_date_round_trip() -> None:
    header = format_datetime(NOW + timedelta(seconds=12), usegmt=True)
    assert parse_retry_after({"retry-after": header}) == 12.0


def test_backoff_is_full_jitter_under_a_capped_ceiling() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=8)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (30, 8.0)]:
        draws = [backoff(attempt, policy) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling / 2  # jitter spreads across the range


def test_budget_accounting() -> None:
    budget = RetryBudget(12)
    assert budget.acquire(5)
    assert budget.acquire(5)
    assert not budget.acquire(5)  # 2 left
    budget.release(1)
    assert budget.tokens == 3
    budget.release(100)
    assert budget.tokens == 12  # never above capacity


async def test_empty_budget_stops_retries_and_says_so(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    """With a budget for two retries, an all-503 run retries twice in total, not per call."""
    server.play(json_response(503))
    policy = RetryPolicy(max_attempts=3, budget_capacity=10)
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        errors = []
        for _ in range(4):
            with pytest.raises(ServerError) as caught:
                await sendai.tasks.get("task_1", project_id="p")
            errors.append(caught.value)
    assert len(server.requests) == 3 + 1 + 1 + 1  # first call retried twice, then budget is empty
    assert [e.retry_budget_exhausted for e in errors] == [False, True, True, True]
    assert "retry budget is exhausted" in str(errors[-1])


async def test_success_refills_the_budget(server: ScriptedServer, sleeps: list[float]) -> None:
    server.play(json_response(503), json_response())
    policy = RetryPolicy(budget_capacity=20)
    async with SendAI(CANARY_KEY, team_id="t", base_url=server.base_url, retry=policy) as sendai:
        budget = sendai._requester.transport.limits.budget
        assert isinstance(budget, RetryBudget)
        await sendai.tasks.get("task_1", project_id="p")  # one retry, then success: repaid
        assert budget.tokens == 20
        budget.acquire(5)
        await sendai.tasks.get("task_1", project_id="p")  # first-try success earns 1
        assert budget.tokens == 16
