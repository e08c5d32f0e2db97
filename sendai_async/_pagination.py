"""Walking listings page by page: ``AsyncPaginator`` and the page strategies.

Send AI documents no list endpoint and no page format, so pagination is a hook: a
*strategy* turns a cursor into query parameters and a page body into items and the next
cursor. ``TokenPagination`` (the default) follows Send AI's public query library
(``limit`` and ``token`` parameters; ``{"count", "more", "paginationToken", "payload"}``
pages). A cursor is whatever the strategy needs to ask for a page (a token, an offset, a
page number); ``None`` always means the first page. Every page knows the cursor that
produced it, which is what makes a failed walk resumable.

The strategy owns the paging parameters. ``params=`` given to ``paginate`` may still name
the page size (``limit=5``): a strategy that declares ``page_size_param`` and
``with_page_size`` (the built-in ones do) is resized, so the walk and its end-of-listing
test use that size. ``params=`` may never name the cursor parameter (a start cursor there
would be overwritten from the second page on): that is ``resume_from=``'s job. A strategy
that declares neither is checked page by page: a parameter both it and ``params=`` set is a
``ConfigurationError`` rather than a silent override.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, overload

import attrs

from ._convert import converter, loads, structure_task
from ._errors import ConfigurationError, DecodeError, PaginationError, SendAIError
from ._http import Requester
from ._models import Task
from ._paths import listing_path, shown

T = TypeVar("T")

_MAX_EMPTY_PAGES = 10


class PageStrategy(Protocol):
    """How one listing pages: the three questions a paginator asks.

    A strategy may also declare the query parameters it owns, so that ``paginate(...,
    params=...)`` can honour a page size and refuse a cursor given there (the built-in
    strategies do; all three are optional and looked up with ``getattr``):

    * ``page_size_param: str``: the name of the page-size parameter (``"limit"``).
    * ``with_page_size(size: int) -> PageStrategy``: the same strategy with that page size.
    * ``cursor_param: str``: the name of the parameter that carries the cursor.
    """

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

    @property
    def page_size_param(self) -> str:
        """The page-size parameter's name (``limit_param``)."""
        return self.limit_param

    @property
    def cursor_param(self) -> str:
        """The cursor parameter's name (``token_param``)."""
        return self.token_param

    def with_page_size(self, size: int) -> TokenPagination:
        """Return this strategy asking for ``size`` items per page."""
        return attrs.evolve(self, limit=size)

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

    @property
    def page_size_param(self) -> str:
        """The page-size parameter's name (``limit_param``)."""
        return self.limit_param

    @property
    def cursor_param(self) -> str:
        """The cursor parameter's name (``offset_param``)."""
        return self.offset_param

    def with_page_size(self, size: int) -> OffsetPagination:
        """Return this strategy asking for ``size`` items per page."""
        return attrs.evolve(self, limit=size)

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

    @property
    def page_size_param(self) -> str:
        """The page-size parameter's name (``per_page_param``)."""
        return self.per_page_param

    @property
    def cursor_param(self) -> str:
        """The cursor parameter's name (``page_param``)."""
        return self.page_param

    def with_page_size(self, size: int) -> PageNumberPagination:
        """Return this strategy asking for ``size`` items per page."""
        return attrs.evolve(self, per_page=size)

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
        params: Mapping[str, Any] | None,
        item_type: type[T] | None,
        strategy: PageStrategy,
        resume_from: Any,
    ) -> None:
        self._requester = requester
        self._path = path
        self._strategy, self._params = _take_paging_params(strategy, dict(params or {}))
        self._item_type = item_type
        self._start = resume_from
        self.pages_fetched = 0
        # Fail at paginate() rather than mid-walk when the clash is already visible.
        self._query(resume_from)

    def __repr__(self) -> str:
        return f"<AsyncPaginator {shown(self._path)} strategy={type(self._strategy).__name__}>"

    async def first_page(self) -> ListingPage[T]:
        """Fetch and return the page at the starting cursor."""
        return await self._fetch(self._start)

    async def pages(self) -> AsyncIterator[ListingPage[T]]:
        """Yield whole pages until the listing ends.

        Raises:
            PaginationError: the server sent a cursor this walk had already followed (a
                loop, however long) or endless empty pages.

        """
        cursor = self._start
        seen = _SeenCursors(cursor)
        empty_run = 0
        while True:
            page = await self._fetch(cursor)
            yield page
            next_cursor = page.next_cursor
            if next_cursor is None:
                return
            if next_cursor == cursor:
                raise self._broken(f"the server returned the cursor it was given ({shown(cursor)})")
            if not seen.add(next_cursor):
                raise self._broken(
                    f"the server sent cursor {shown(next_cursor)}, which this walk already"
                    " followed: the listing loops"
                )
            empty_run = 0 if page.items else empty_run + 1
            if empty_run >= _MAX_EMPTY_PAGES:
                raise self._broken(
                    f"{empty_run} empty pages in a row that all claim more; giving up"
                )
            cursor = next_cursor

    async def __aiter__(self) -> AsyncIterator[T]:
        """Yield every item of every page, in order."""
        async for page in self.pages():
            for item in page.items:
                yield item

    async def ids(self, field: str = "id") -> AsyncIterator[str]:
        """Yield each item's ID, to feed ``tasks.iter_many`` as the listing streams.

        Raises:
            DecodeError: an item has no string ``field``; the message names the item's
                index and its page's cursor, and ``resume_from`` is that cursor.

        """
        async for page in self.pages():
            for index, item in enumerate(page.items):
                if isinstance(item, dict):
                    value = item.get(field, _MISSING)
                else:
                    value = getattr(item, field, _MISSING)
                if type(value) is not str:
                    raise self._bad_id(page, index, field, value)
                yield value

    def _bad_id(self, page: ListingPage[T], index: int, field: str, value: Any) -> DecodeError:
        problem = (
            f"has no {shown(field)} field"
            if value is _MISSING
            else f"has a {type(value).__name__} as {shown(field)}, not a string"
        )
        items_field = getattr(self._strategy, "items_field", None)
        error = DecodeError(
            f"{shown(self._path)}: item {index} of the page at cursor {shown(page.cursor)} "
            f"{problem}",
            path=f"{items_field}[{index}].{field}" if isinstance(items_field, str) else None,
        )
        error.resume_from = page.cursor
        return error

    def _broken(self, message: str) -> PaginationError:
        return PaginationError(f"{shown(self._path)}: {message}")

    def _query(self, cursor: Any) -> dict[str, Any]:
        own = self._strategy.params(cursor)
        clash = own.keys() & self._params.keys()
        if clash:
            name = type(self._strategy).__name__
            raise ConfigurationError(
                f"params sets {shown(sorted(clash))}, which {name} sets itself for every page;"
                " configure paging on the strategy (to start part-way, pass resume_from=)"
            )
        return {**self._params, **own}

    async def _fetch(self, cursor: Any) -> ListingPage[T]:
        query = self._query(cursor)
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


_MISSING: Any = object()


def _take_paging_params(
    strategy: PageStrategy, params: dict[str, Any]
) -> tuple[PageStrategy, dict[str, Any]]:
    """Move a page size given in ``params`` into the strategy; refuse a cursor given there.

    Only strategies that declare ``page_size_param`` / ``with_page_size`` / ``cursor_param``
    are handled here; for others, ``AsyncPaginator._query`` refuses any parameter that both
    ``params`` and the strategy set.

    Raises:
        ConfigurationError: ``params`` names the cursor, or a page size that is not a
            positive integer.

    """
    name = type(strategy).__name__
    cursor_param = getattr(strategy, "cursor_param", None)
    if isinstance(cursor_param, str) and cursor_param in params:
        raise ConfigurationError(
            f"params must not set {shown(cursor_param)}: {name} sets it from the cursor."
            " To start part-way through the listing, pass the cursor as resume_from="
            " (a failed walk's error.resume_from is one)"
        )
    size_param = getattr(strategy, "page_size_param", None)
    resize = getattr(strategy, "with_page_size", None)
    if isinstance(size_param, str) and callable(resize) and size_param in params:
        params = dict(params)
        size = _page_size(params.pop(size_param), size_param)
        strategy = resize(size)
    return strategy, params


def _page_size(value: Any, name: str) -> int:
    """Read a page size given in ``params`` (``5`` or ``"5"``).

    Raises:
        ConfigurationError: ``value`` is not a positive integer.

    """
    if isinstance(value, str) and value.isascii() and value.isdigit():
        size = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        size = 0
    if size < 1:
        raise ConfigurationError(
            f"params[{shown(name)}] is the page size and must be a positive integer,"
            f" got {shown(value)}"
        )
    return size


_DIGEST: Any = object()  # tags digest keys, so no cursor can equal one


class _SeenCursors:
    """Every cursor a walk has followed, to catch a listing that loops (a -> b -> a).

    A set, so any repeat is caught before its page is fetched again, however long the loop.
    It grows by one entry per page. A long string cursor (opaque tokens can run to
    kilobytes) is kept as its 16-byte BLAKE2b digest, which bounds an entry to about 150
    bytes: a million pages cost ~150 MB at worst, next to the items they streamed.
    Unhashable cursors (a custom strategy's dicts, say) are kept in a list and compared
    with ``==``.
    """

    __slots__ = ("_hashable", "_unhashable")

    _DIGEST_OVER = 64

    def __init__(self, first: Any) -> None:
        self._hashable: set[Hashable] = set()
        self._unhashable: list[Any] = []
        self.add(first)

    def add(self, cursor: Any) -> bool:
        """Remember ``cursor``; return ``False`` if it was already seen."""
        key: Hashable = cursor
        if isinstance(cursor, str) and len(cursor) > self._DIGEST_OVER:
            data = cursor.encode(errors="surrogatepass")
            key = (_DIGEST, hashlib.blake2b(data, digest_size=16).digest())
        try:
            if key in self._hashable:
                return False
            self._hashable.add(key)
        except TypeError:  # unhashable (isinstance(x, Hashable) misses a tuple holding a list)
            if cursor in self._unhashable:
                return False
            self._unhashable.append(cursor)
        return True


@overload
def make_paginator(
    requester: Requester,
    path: str,
    *,
    params: Mapping[str, Any] | None,
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
    params: Mapping[str, Any] | None,
    item_type: type[T],
    strategy: PageStrategy | None,
    team_id: str | None,
    resume_from: Any,
) -> AsyncPaginator[T]: ...
def make_paginator(
    requester: Requester,
    path: str,
    *,
    params: Mapping[str, Any] | None,
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
