"""Walking listings page by page: ``AsyncPaginator`` and the page strategies.

Send AI documents no list endpoint and no page format, so pagination is a hook: a
*strategy* turns a cursor into query parameters and a page body into items and the next
cursor. ``TokenPagination`` (the default) follows Send AI's public query library
(``limit`` and ``token`` parameters; ``{"count", "more", "paginationToken", "payload"}``
pages). A cursor is whatever the strategy needs to ask for a page (a token, an offset, a
page number); ``None`` always means the first page. Every page knows the cursor that
produced it, which is what makes a failed walk resumable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, overload

import attrs

from ._convert import converter, loads, structure_task
from ._errors import DecodeError, PaginationError, SendAIError
from ._http import Requester
from ._models import Task
from ._paths import listing_path

T = TypeVar("T")

_MAX_EMPTY_PAGES = 10


class PageStrategy(Protocol):
    """How one listing pages: the three questions a paginator asks."""

    def params(self, cursor: Any) -> dict[str, str]:
        """Return the query parameters that ask for the page at ``cursor`` (``None``: first)."""
        ...

    def items(self, body: Any) -> Sequence[Any]:
        """Return the items of a decoded page body."""
        ...

    def next_cursor(self, body: Any, cursor: Any, item_count: int) -> Any:
        """Return the cursor of the page after this one, or ``None`` when this is the last."""
        ...


def _field(body: Any, name: str) -> Any:
    if not isinstance(body, dict):
        raise DecodeError(f"expected a JSON object as the page body, got {type(body).__name__}")
    return body.get(name)


def _item_list(body: Any, name: str) -> Sequence[Any]:
    items = _field(body, name)
    if not isinstance(items, list):
        raise DecodeError(f'expected an array at "{name}" in the page body', path=name)
    return items


@attrs.frozen(kw_only=True)
class TokenPagination:
    """Cursor tokens, as in Send AI's query library: ``?limit=50&token=...``.

    The next page exists while the body says ``"more": true``; its cursor is the body's
    ``paginationToken``. Every name is configurable.
    """

    limit: int = 50
    limit_param: str = "limit"
    token_param: str = "token"  # noqa: S105 -- a parameter name, not a secret
    items_field: str = "payload"
    more_field: str = "more"
    token_field: str = "paginationToken"  # noqa: S105 -- a field name, not a secret

    def params(self, cursor: Any) -> dict[str, str]:
        """Ask for ``limit`` items after ``cursor``."""
        params = {self.limit_param: str(self.limit)}
        if cursor is not None:
            params[self.token_param] = str(cursor)
        return params

    def items(self, body: Any) -> Sequence[Any]:
        """Return the ``payload`` array."""
        return _item_list(body, self.items_field)

    def next_cursor(self, body: Any, cursor: Any, item_count: int) -> Any:
        """Return the ``paginationToken`` while ``more`` is true."""
        if _field(body, self.more_field) is not True:
            return None
        token = _field(body, self.token_field)
        if not isinstance(token, str) or not token:
            raise DecodeError(
                f'page says "{self.more_field}": true but has no "{self.token_field}"',
                path=self.token_field,
            )
        return token


@attrs.frozen(kw_only=True)
class OffsetPagination:
    """Offsets: ``?limit=50&offset=100``.

    The walk ends at a page shorter than ``limit``, or where the body's ``more_field`` (if
    present) is false.
    """

    limit: int = 50
    limit_param: str = "limit"
    offset_param: str = "offset"
    items_field: str = "payload"
    more_field: str = "more"

    def params(self, cursor: Any) -> dict[str, str]:
        """Ask for ``limit`` items from offset ``cursor`` (0 first)."""
        return {self.limit_param: str(self.limit), self.offset_param: str(cursor or 0)}

    def items(self, body: Any) -> Sequence[Any]:
        """Return the items array."""
        return _item_list(body, self.items_field)

    def next_cursor(self, body: Any, cursor: Any, item_count: int) -> Any:
        """Return the next offset, or ``None`` after a short (or ``more: false``) page."""
        more = _field(body, self.more_field)
        if more is False or (more is None and item_count < self.limit):
            return None
        return (cursor or 0) + item_count


@attrs.frozen(kw_only=True)
class PageNumberPagination:
    """Page numbers: ``?page=2&per_page=50`` (first page ``first_page``, usually 1).

    The walk ends at a page shorter than ``per_page``, or where the body's ``more_field``
    (if present) is false.
    """

    per_page: int = 50
    page_param: str = "page"
    per_page_param: str = "per_page"
    first_page: int = 1
    items_field: str = "payload"
    more_field: str = "more"

    def params(self, cursor: Any) -> dict[str, str]:
        """Ask for page ``cursor`` (``first_page`` first)."""
        page = self.first_page if cursor is None else cursor
        return {self.page_param: str(page), self.per_page_param: str(self.per_page)}

    def items(self, body: Any) -> Sequence[Any]:
        """Return the items array."""
        return _item_list(body, self.items_field)

    def next_cursor(self, body: Any, cursor: Any, item_count: int) -> Any:
        """Return the next page number, or ``None`` after the last page."""
        more = _field(body, self.more_field)
        if more is False or (more is None and item_count < self.per_page):
            return None
        return (self.first_page if cursor is None else cursor) + 1


@attrs.frozen(kw_only=True)
class ListingPage(Generic[T]):
    """One page of a listing.

    Attributes:
        items: The page's items (structured when the paginator has an ``item_type``).
        body: The decoded page body as the server sent it.
        cursor: The cursor that produced this page (``None`` for the first page).
        next_cursor: The cursor of the next page, or ``None`` if this is the last.

    """

    items: tuple[T, ...]
    body: Any
    cursor: Any
    next_cursor: Any


class AsyncPaginator(Generic[T]):
    """Lazily walk a listing: ``async for item in paginator`` or ``paginator.pages()``.

    No request is made before an item of a page is needed, and pages are fetched one at a
    time through the client's retrying request path. A failed page raises the usual typed
    error with ``error.resume_from`` set to the cursor that produced it; pass that to
    ``paginate(..., resume_from=...)`` to continue without repeating earlier pages.
    """

    def __init__(
        self,
        requester: Requester,
        path: str,
        *,
        params: Mapping[str, str] | None,
        item_type: type[T] | None,
        strategy: PageStrategy,
        resume_from: Any,
    ) -> None:
        self._requester = requester
        self._path = path
        self._params = dict(params or {})
        self._item_type = item_type
        self._strategy = strategy
        self._start = resume_from
        self.pages_fetched = 0

    def __repr__(self) -> str:
        return f"<AsyncPaginator {self._path!r} strategy={type(self._strategy).__name__}>"

    async def first_page(self) -> ListingPage[T]:
        """Fetch and return the page at the starting cursor."""
        return await self._fetch(self._start)

    async def pages(self) -> AsyncIterator[ListingPage[T]]:
        """Yield whole pages until the listing ends.

        Raises:
            PaginationError: the server repeated a cursor or sent endless empty pages.

        """
        cursor = self._start
        empty_run = 0
        while True:
            page = await self._fetch(cursor)
            yield page
            if page.next_cursor is None:
                return
            if page.next_cursor == cursor:
                raise self._broken(f"the server returned the cursor it was given ({cursor!r})")
            empty_run = 0 if page.items else empty_run + 1
            if empty_run >= _MAX_EMPTY_PAGES:
                raise self._broken(
                    f"{empty_run} empty pages in a row that all claim more; giving up"
                )
            cursor = page.next_cursor

    async def __aiter__(self) -> AsyncIterator[T]:
        """Yield every item of every page, in order."""
        async for page in self.pages():
            for item in page.items:
                yield item

    async def ids(self, field: str = "id") -> AsyncIterator[str]:
        """Yield each item's ID, to feed ``tasks.iter_many`` as the listing streams."""
        async for item in self:
            yield item[field] if isinstance(item, dict) else getattr(item, field)

    def _broken(self, message: str) -> PaginationError:
        return PaginationError(f"{self._path}: {message}")

    async def _fetch(self, cursor: Any) -> ListingPage[T]:
        query = {**self._params, **self._strategy.params(cursor)}
        try:
            body = await self._requester.request(
                "GET", self._path, params=query, decode=loads, idempotent=True
            )
            raw_items = self._strategy.items(body)
            next_cursor = self._strategy.next_cursor(body, cursor, len(raw_items))
            items = tuple(self._structure(item, index) for index, item in enumerate(raw_items))
        except SendAIError as exc:
            exc.resume_from = cursor
            raise
        self.pages_fetched += 1
        return ListingPage(items=items, body=body, cursor=cursor, next_cursor=next_cursor)

    def _structure(self, item: Any, index: int) -> T:
        if self._item_type is None:
            return item  # type: ignore[no-any-return]
        if self._item_type is Task:
            return structure_task(item, path=f"payload[{index}]")  # type: ignore[return-value]
        try:
            return converter.structure(item, self._item_type)  # type: ignore[no-any-return]
        except Exception as exc:
            raise DecodeError(f"item {index} is not a {self._item_type.__name__}: {exc}") from exc


@overload
def make_paginator(
    requester: Requester,
    path: str,
    *,
    params: Mapping[str, str] | None,
    item_type: None,
    strategy: PageStrategy | None,
    team_id: str | None,
    resume_from: Any,
) -> AsyncPaginator[dict[str, Any]]: ...
@overload
def make_paginator(
    requester: Requester,
    path: str,
    *,
    params: Mapping[str, str] | None,
    item_type: type[T],
    strategy: PageStrategy | None,
    team_id: str | None,
    resume_from: Any,
) -> AsyncPaginator[T]: ...
def make_paginator(
    requester: Requester,
    path: str,
    *,
    params: Mapping[str, str] | None,
    item_type: type[Any] | None,
    strategy: PageStrategy | None,
    team_id: str | None,
    resume_from: Any,
) -> AsyncPaginator[Any]:
    """Build the paginator behind ``SendAI.paginate``."""
    full_path = listing_path(requester.team(team_id), path)
    return AsyncPaginator(
        requester,
        full_path,
        params=params,
        item_type=item_type,
        strategy=strategy or TokenPagination(),
        resume_from=resume_from,
    )
