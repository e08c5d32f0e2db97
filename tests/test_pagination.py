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

from .conftest import CANARY_KEY, ScriptedServer, json_response


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
    with SandboxServer(tasks=2_000).in_thread() as server:
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
    """2,000 listed tasks flow through iter_many with at most a page plus the pool pulled ahead.

    What is bounded is how far the pool reads ahead of what it reported, whatever the
    length of the listing: 40 pages show it as well as 100 did, in a fifth of the time.
    """
    limit, concurrency = 50, 16
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
    assert done == 2_000
    assert listing.pages_fetched == 40
    # IDs pulled but not yet reported: the workers' in-flight ones plus the bounded result queue.
    assert max_ahead <= 2 * concurrency + 1


# --- Loops of any length ---------------------------------------------------------------------


def _token_chain(chain: dict[str | None, str | None]) -> Any:
    """A token listing whose page at token ``t`` leads to ``chain[t]`` (``None``: the end)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        following = chain[token]
        return web.json_response(
            {
                "payload": [{"id": f"at_{token}"}],
                "more": following is not None,
                "paginationToken": following,
            }
        )

    return handler


@pytest.mark.parametrize(
    ("chain", "pages"),
    [
        pytest.param({None: "a", "a": "b", "b": "a"}, 3, id="a-b-a"),
        pytest.param({None: "a", "a": "b", "b": "c", "c": "a"}, 4, id="a-b-c-a"),
        pytest.param({None: "a", "a": "b", "b": "c", "c": "b"}, 4, id="tail-then-b-c-b"),
    ],
)
async def test_a_cursor_loop_of_any_length_is_detected(
    client: SendAI, server: ScriptedServer, chain: dict[str | None, str | None], pages: int
) -> None:
    """A cursor the walk already followed ends it with PaginationError before refetching."""
    server.play(_token_chain(chain))
    seen: list[str] = []

    async def walk() -> None:
        async for item in client.paginate("items"):
            seen.append(item["id"])  # noqa: PERF401 -- must keep what came before the error

    with pytest.raises(PaginationError, match="already followed"):
        await walk()
    assert len(server.requests) == pages
    assert len(seen) == pages  # each page was yielded once, none twice


async def test_a_loop_back_to_the_resume_cursor_is_detected(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(_token_chain({"a": "b", "b": "a"}))
    with pytest.raises(PaginationError, match="already followed"):
        _ = [item async for item in client.paginate("items", resume_from="a")]
    assert len(server.requests) == 2


async def test_long_cursors_are_told_apart_and_shortened_in_messages(
    client: SendAI, server: ScriptedServer
) -> None:
    """Kilobyte tokens differing only at the end are distinct; a repeated one is shown cut."""
    a, b, c = ("t" * 5000 + suffix for suffix in "abc")
    server.play(_token_chain({None: a, a: b, b: c, c: b}))
    with pytest.raises(PaginationError) as caught:
        _ = [item async for item in client.paginate("items")]
    assert len(server.requests) == 4
    assert len(str(caught.value)) < 400


# --- IDs of items ------------------------------------------------------------------------------


def _pages_of(*pages: list[dict[str, Any]]) -> Any:
    """A token listing serving the given pages; page n+1's token is ``p{n+1}``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        number = int(request.query.get("token", "p0")[1:])
        last = number == len(pages) - 1
        return web.json_response(
            {
                "payload": pages[number],
                "more": not last,
                "paginationToken": None if last else f"p{number + 1}",
            }
        )

    return handler


@pytest.mark.parametrize(
    ("bad_item", "problem"),
    [
        pytest.param({"name": "no id"}, "has no 'id' field", id="missing"),
        pytest.param({"id": None}, "NoneType as 'id'", id="null"),
        pytest.param({"id": 7}, "int as 'id'", id="number"),
        pytest.param("task_9", "has no 'id' field", id="not-an-object"),
    ],
)
async def test_an_item_without_an_id_is_a_decode_error_naming_item_and_page(
    client: SendAI, server: ScriptedServer, bad_item: Any, problem: str
) -> None:
    server.play(_pages_of([{"id": "t1"}, {"id": "t2"}], [{"id": "t3"}, bad_item]))
    got: list[str] = []

    async def walk() -> None:
        async for task_id in client.paginate("items").ids():
            got.append(task_id)  # noqa: PERF401 -- must keep what came before the error

    with pytest.raises(DecodeError) as caught:
        await walk()
    assert got == ["t1", "t2", "t3"]
    assert problem in str(caught.value)
    assert "item 1 of the page at cursor 'p1'" in str(caught.value)
    assert caught.value.resume_from == "p1"
    assert caught.value.path == "payload[1].id"


async def test_an_item_without_an_id_stops_iter_many_with_a_decode_error(
    client: SendAI, server: ScriptedServer
) -> None:
    """iter_many fed by ids() fails with the typed error, not a KeyError."""
    listing = _pages_of([{"id": "task_1"}, {"oops": True}])
    task = json_response()

    async def route(request: web.Request) -> web.StreamResponse:
        return await (listing if request.path.endswith("/items") else task)(request)

    server.play(route)
    with pytest.raises(DecodeError, match="item 1 of the page at cursor None") as caught:
        async for _result in client.tasks.iter_many(
            client.paginate("items").ids(), project_id="proj_1"
        ):
            pass
    assert caught.value.resume_from is None


# --- params= and the strategy's own parameters -------------------------------------------------


@pytest.mark.parametrize(("style", "strategy"), STRATEGIES)
@pytest.mark.parametrize("size", [5, "5"])
async def test_a_page_size_in_params_sets_the_page_size(
    client: SendAI, server: ScriptedServer, style: str, strategy: PageStrategy, size: int | str
) -> None:
    """params={"limit": 5} asks for pages of 5 and ends the walk by that size, not 50 or 3."""
    handler = _listing(12, style)
    server.play(handler)
    size_param = "per_page" if style == "page" else "limit"
    params = {size_param: size, "q": "x"}  # an int works too, though the type says str
    listing = client.paginate("items", strategy=strategy, params=params)  # type: ignore[arg-type]
    items = [item["n"] async for item in listing]
    assert items == list(range(12))
    assert [call[size_param] for call in handler.calls] == ["5", "5", "5"]
    assert all(call["q"] == "x" for call in handler.calls)


@pytest.mark.parametrize(
    ("strategy", "cursor_param"),
    [
        pytest.param(TokenPagination(), "token", id="token"),
        pytest.param(TokenPagination(token_param="after"), "after", id="token-renamed"),
        pytest.param(OffsetPagination(), "offset", id="offset"),
        pytest.param(PageNumberPagination(), "page", id="page-number"),
    ],
)
def test_a_cursor_in_params_points_at_resume_from(
    strategy: PageStrategy, cursor_param: str
) -> None:
    sendai = SendAI(CANARY_KEY, team_id="t")
    with pytest.raises(ConfigurationError, match="resume_from=") as caught:
        sendai.paginate("items", strategy=strategy, params={cursor_param: "2"})
    assert repr(cursor_param) in str(caught.value)


@pytest.mark.parametrize("size", ["0", "-1", "five", "", True, 0, "\uff15"])
def test_a_bad_page_size_in_params_is_refused(size: Any) -> None:
    sendai = SendAI(CANARY_KEY, team_id="t")
    with pytest.raises(ConfigurationError, match="positive integer"):
        sendai.paginate("items", params={"limit": size})


def test_a_huge_page_size_value_is_shown_shortened() -> None:
    sendai = SendAI(CANARY_KEY, team_id="t")
    with pytest.raises(ConfigurationError) as caught:
        sendai.paginate("items", params={"limit": "x" * 10_000})
    assert len(str(caught.value)) < 300


class _AfterPaging:
    """A user strategy with only the three protocol methods: ``?size=2&after=<last id>``."""

    def params(self, cursor: Any) -> dict[str, str]:
        return {"size": "2"} if cursor is None else {"size": "2", "after": str(cursor)}

    def items(self, body: Any) -> list[Any]:
        return list(body["data"])

    def next_cursor(self, body: Any, cursor: Any, item_count: int) -> Any:
        return body["data"][-1]["id"] if body["hasMore"] else None


def _after_listing(total: int) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        start = int(request.query.get("after", "-1")) + 1
        ids = list(range(start, min(start + size, total)))
        return web.json_response(
            {"data": [{"id": str(i)} for i in ids], "hasMore": bool(ids) and ids[-1] + 1 < total}
        )

    return handler


async def test_a_user_strategy_with_three_methods_still_works(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(_after_listing(5))
    listing = client.paginate("items", strategy=_AfterPaging(), params={"q": "x"})
    assert [task_id async for task_id in listing.ids()] == ["0", "1", "2", "3", "4"]
    assert all(request.query["q"] == "x" for request in server.requests)


@pytest.mark.parametrize(
    "param",
    [
        pytest.param("size", id="set-on-every-page"),
        pytest.param("after", id="set-from-the-second-page"),
    ],
)
async def test_a_user_strategy_param_also_in_params_is_refused(
    client: SendAI, server: ScriptedServer, param: str
) -> None:
    """Without declared roles, a parameter both sides set is an error, not a silent override."""
    server.play(_after_listing(5))

    async def walk() -> None:
        listing = client.paginate("items", strategy=_AfterPaging(), params={param: "0"})
        _ = [item async for item in listing]

    with pytest.raises(ConfigurationError, match=repr(param)):
        await walk()
