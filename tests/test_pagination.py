"""Pagination: each strategy over 0, 1 and many pages, resuming, broken servers, streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from sendai_async import (
    ConfigurationError,
    DecodeError,
    OffsetPagination,
    PageNumberPagination,
    PageStrategy,
    PaginationError,
    RetryPolicy,
    SendAI,
    ServerError,
    Task,
    TokenPagination,
)
from sendai_async.testing import SandboxServer

from .conftest import CANARY_KEY, ScriptedServer


def _listing(total: int, style: str, *, fail_on: int | None = None) -> Any:
    """A handler serving items 0..total-1 in the given paging style, recording each call."""
    calls: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        calls.append(query)
        if fail_on is not None and len(calls) == fail_on:
            return web.json_response({"error": "boom"}, status=500)
        if style == "token":
            limit, start = int(query["limit"]), int(query.get("token", "0"))
        elif style == "offset":
            limit, start = int(query["limit"]), int(query["offset"])
        else:
            limit = int(query["per_page"])
            start = (int(query["page"]) - 1) * limit
        items = [{"id": f"item_{i}", "n": i} for i in range(start, min(start + limit, total))]
        end = start + len(items)
        body: dict[str, Any] = {"payload": items}
        if style == "token":
            body.update(
                count=len(items),
                more=end < total,
                paginationToken=str(end) if end < total else None,
            )
        return web.json_response(body)

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


STRATEGIES = [
    pytest.param("token", TokenPagination(limit=3), id="token"),
    pytest.param("offset", OffsetPagination(limit=3), id="offset"),
    pytest.param("page", PageNumberPagination(per_page=3), id="page-number"),
]


@pytest.mark.parametrize(("style", "strategy"), STRATEGIES)
@pytest.mark.parametrize("total", [0, 2, 3, 10])
async def test_each_strategy_walks_every_item_in_order(
    client: SendAI, server: ScriptedServer, style: str, strategy: PageStrategy, total: int
) -> None:
    handler = _listing(total, style)
    server.play(handler)
    paginator = client.paginate("project/proj_1/items", strategy=strategy)
    assert server.requests == []  # lazy: nothing before iteration
    items = [item async for item in paginator]
    assert [item["n"] for item in items] == list(range(total))
    assert all(raw.startswith("/v2/team_1/project/proj_1/items?") for raw in server.raw_paths)


async def test_pages_carry_their_cursor_and_body(client: SendAI, server: ScriptedServer) -> None:
    server.play(_listing(7, "token"))
    pages = [
        page
        async for page in client.paginate(
            "project/p/items", strategy=TokenPagination(limit=3)
        ).pages()
    ]
    assert [page.cursor for page in pages] == [None, "3", "6"]
    assert [page.next_cursor for page in pages] == ["3", "6", None]
    assert pages[0].body["more"] is True
    assert [len(page.items) for page in pages] == [3, 3, 1]


@pytest.mark.parametrize(("style", "strategy"), STRATEGIES)
async def test_failure_on_page_3_resumes_with_exactly_the_rest(
    server: ScriptedServer, sleeps: list[float], style: str, strategy: PageStrategy
) -> None:
    server.play(_listing(15, style, fail_on=3))
    seen: list[int] = []
    no_retries = RetryPolicy(max_attempts=1)
    async with SendAI(
        CANARY_KEY, team_id="t", base_url=server.base_url, retry=no_retries
    ) as sendai:

        async def walk() -> None:
            async for item in sendai.paginate("items", strategy=strategy):
                seen.append(item["n"])  # noqa: PERF401 -- must keep what came before the error

        with pytest.raises(ServerError) as caught:
            await walk()
        cursor = caught.value.resume_from
        resumed = sendai.paginate("items", strategy=strategy, resume_from=cursor)
        rest = [item["n"] async for item in resumed]
    assert seen == list(range(6))
    assert cursor is not None
    assert seen + rest == list(range(15))
    # Pages 1-3 (3 failed), then 3-5 again; without a "more" flag, offset and page-number
    # paging only learn that a full last page was the last from one more, empty, page.
    assert len(server.requests) == 6 + (style != "token")


async def test_repeated_cursor_is_detected(client: SendAI, server: ScriptedServer) -> None:
    async def stuck(_request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"payload": [{"id": "x"}], "more": True, "paginationToken": "same"}
        )

    server.play(stuck)
    with pytest.raises(PaginationError, match="cursor it was given"):
        _ = [item async for item in client.paginate("items")]
    assert len(server.requests) == 2


async def test_endless_empty_pages_are_detected(client: SendAI, server: ScriptedServer) -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        token = int(request.query.get("token", "0"))
        return web.json_response({"payload": [], "more": True, "paginationToken": str(token + 1)})

    server.play(empty)
    with pytest.raises(PaginationError, match="empty pages"):
        _ = [item async for item in client.paginate("items")]
    assert len(server.requests) == 10


async def test_more_without_token_is_a_decode_error(client: SendAI, server: ScriptedServer) -> None:
    async def broken(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"payload": [], "more": True})

    server.play(broken)
    with pytest.raises(DecodeError) as caught:
        await client.paginate("items").first_page()
    assert caught.value.resume_from is None


def test_paths_cannot_climb_out_of_the_team() -> None:
    sendai = SendAI(CANARY_KEY, team_id="t")
    for bad in ["", "/", "../other_team/x", "project/./x"]:
        with pytest.raises(ConfigurationError):
            sendai.paginate(bad)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tasks=10_000).in_thread() as server:
        yield server


async def test_sandbox_listing_structures_tasks_and_filters(sandbox: SandboxServer) -> None:
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
    ) as sendai:
        page = await sendai.paginate(
            f"project/{sandbox.project_id}/tasks", item_type=Task, params={"status": "FAILED"}
        ).first_page()
    assert page.items
    assert type(page.items[0]) is Task
    assert all(task.status == "FAILED" for task in page.items)


async def test_listing_streams_into_iter_many_in_bounded_memory(sandbox: SandboxServer) -> None:
    """10,000 listed tasks flow through iter_many with at most a page plus the pool pulled ahead."""
    limit, concurrency = 100, 16
    pulled = 0
    done = 0
    max_ahead = 0
    async with SendAI(
        sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
    ) as sendai:
        listing = sendai.paginate(
            f"project/{sandbox.project_id}/tasks", strategy=TokenPagination(limit=limit)
        )

        async def counted() -> AsyncIterator[str]:
            nonlocal pulled
            async for task_id in listing.ids():
                pulled += 1
                yield task_id

        async for result in sendai.tasks.iter_many(
            counted(), project_id=sandbox.project_id, concurrency=concurrency, dedupe=False
        ):
            assert result.ok
            done += 1
            max_ahead = max(max_ahead, pulled - done)
    assert done == 10_000
    assert listing.pages_fetched == 100
    # IDs pulled but not yet reported: the workers' in-flight ones plus the bounded result queue.
    assert max_ahead <= 2 * concurrency + 1
