"""``sendai.tasks``: fetch one task, or many through the worker pool."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._batch import (
    BatchResult,
    ProgressCallback,
    RawTaskResult,
    TaskIds,
    TaskResult,
    run_pool,
)
from ._config import Timeout
from ._convert import decode_payload_object, decode_task
from ._errors import ConfigurationError, DecodeError, SendAIError
from ._models import Task

if TYPE_CHECKING:
    from ._client import SendAI


def path_segment(value: object, name: str) -> str:
    """Percent-encode one path segment so that no ID can change the path.

    Nothing is left unencoded (``/``, ``?``, ``#``, ``%`` all are), and a segment made only
    of dots is encoded too, since ``.`` and ``..`` would otherwise be resolved as
    directory steps by URL normalisation.

    Raises:
        ConfigurationError: ``value`` is not a non-empty string.

    """
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    segment = quote(value, safe="")
    if segment.strip(".") == "":
        segment = segment.replace(".", "%2E")
    return segment


@functools.lru_cache(maxsize=256)
def _task_prefix(team: str, project_id: str) -> str:
    # Teams and projects repeat across every call of a batch: encode them once.
    return (
        f"/v2/{path_segment(team, 'team_id')}/project/{path_segment(project_id, 'project_id')}"
        "/task/"
    )


class Tasks:
    """Operations on tasks; reached as ``sendai.tasks``."""

    def __init__(self, client: SendAI) -> None:
        self._client = client

    def _path(self, task_id: object, project_id: object, team_id: str | None) -> str:
        team = self._client._team(team_id)
        return (
            f"/v2/{path_segment(team, 'team_id')}/project/{path_segment(project_id, 'project_id')}"
            f"/task/{path_segment(task_id, 'task_id')}"
        )

    async def get(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | None = None,
    ) -> Task:
        """Fetch one task.

        Args:
            task_id: The task's ID.
            project_id: The project it belongs to.
            team_id: Overrides the client's team for this call.
            timeout: Overrides the client's per-attempt ``Timeout`` for this call.

        Returns:
            The task.

        Raises:
            ConfigurationError: an ID is empty or not a string (before any request).
            APIStatusError: the server answered non-2xx (``NotFoundError`` for 404, ...).
            TransportError: no complete response after all attempts.
            DecodeError: the 2xx body is not a task.

        """
        response = await self._client._http.request(
            "GET", self._path(task_id, project_id, team_id), timeout=timeout
        )
        try:
            return decode_task(response.body)
        except DecodeError as exc:
            _stamp(exc, response.url, response.attempts)
            raise

    async def get_raw(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """Fetch one task's payload as decoded JSON, without structuring it.

        The lossless path: every field the server sent is kept, including ones this SDK
        does not know yet. Errors are as for ``get``.
        """
        response = await self._client._http.request(
            "GET", self._path(task_id, project_id, team_id), timeout=timeout
        )
        try:
            return decode_payload_object(response.body)
        except DecodeError as exc:
            _stamp(exc, response.url, response.attempts)
            raise

    def iter_many(
        self,
        task_ids: TaskIds,
        *,
        project_id: str,
        team_id: str | None = None,
        concurrency: int = 16,
        dedupe: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> AsyncGenerator[TaskResult, None]:
        """Fetch many tasks; yield a ``TaskResult`` per distinct ID as each finishes.

        ``task_ids`` may be any iterable or async iterable of strings; it is pulled lazily
        by ``concurrency`` workers. Concurrency is capped at the client's
        ``max_connections`` so no request waits for a pooled connection.

        Args:
            task_ids: The IDs to fetch.
            project_id: The project they belong to.
            team_id: Overrides the client's team.
            concurrency: Requests in flight at most.
            dedupe: Fetch and report a repeated ID once. Costs one set entry per distinct
                ID; pass ``False`` for sources known to be unique to keep memory constant.
            on_progress: Called as ``on_progress(done, failed, total)`` after each ID;
                ``total`` is ``None`` when ``task_ids`` has no length.

        Raises:
            AuthenticationError: a 401 stopped the batch (after yielding what finished).
            PermissionDeniedError: a 403 stopped the batch (likewise).

        """

        async def fetch(task_id: str) -> Task:
            return await self.get(task_id, project_id=project_id, team_id=team_id)

        return run_pool(
            task_ids,
            fetch,
            _task_result,
            concurrency=self._client._pool_width(concurrency),
            dedupe=dedupe,
            on_progress=on_progress,
        )

    def iter_many_raw(
        self,
        task_ids: TaskIds,
        *,
        project_id: str,
        team_id: str | None = None,
        concurrency: int = 16,
        dedupe: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> AsyncGenerator[RawTaskResult, None]:
        """Like ``iter_many``, yielding each payload as decoded JSON (see ``get_raw``)."""

        async def fetch(task_id: str) -> dict[str, Any]:
            return await self.get_raw(task_id, project_id=project_id, team_id=team_id)

        return run_pool(
            task_ids,
            fetch,
            _raw_result,
            concurrency=self._client._pool_width(concurrency),
            dedupe=dedupe,
            on_progress=on_progress,
        )

    async def get_many(
        self,
        task_ids: TaskIds,
        *,
        project_id: str,
        team_id: str | None = None,
        concurrency: int = 16,
        on_progress: ProgressCallback | None = None,
    ) -> BatchResult:
        """Fetch many tasks and account for every ID, in input order.

        One bad ID never sinks the batch: its error is in ``BatchResult.errors``.

        Raises:
            AuthenticationError: a 401 stopped the batch early; ``error.batch`` holds the
                partial ``BatchResult`` of what had finished.
            PermissionDeniedError: a 403, likewise.

        """

        async def fetch(task_id: str) -> Task:
            return await self.get(task_id, project_id=project_id, team_id=team_id)

        collected: list[tuple[int, TaskResult]] = []
        pool = run_pool(
            task_ids,
            fetch,
            _indexed_result,
            concurrency=self._client._pool_width(concurrency),
            on_progress=on_progress,
        )
        try:
            async for pair in pool:
                collected.append(pair)  # noqa: PERF401 -- keeps what finished if one fails
        except SendAIError as exc:
            exc.batch = _in_order(collected)
            raise
        finally:
            await pool.aclose()
        return _in_order(collected)


def _task_result(
    _index: int, task_id: str, task: Task | None, error: SendAIError | None
) -> TaskResult:
    return TaskResult(task_id=task_id, task=task, error=error)


def _raw_result(
    _index: int, task_id: str, payload: dict[str, Any] | None, error: SendAIError | None
) -> RawTaskResult:
    return RawTaskResult(task_id=task_id, payload=payload, error=error)


def _indexed_result(
    index: int, task_id: str, task: Task | None, error: SendAIError | None
) -> tuple[int, TaskResult]:
    return index, TaskResult(task_id=task_id, task=task, error=error)


def _in_order(collected: list[tuple[int, TaskResult]]) -> BatchResult:
    collected.sort(key=lambda pair: pair[0])
    return BatchResult(tuple(result for _, result in collected))


def _stamp(exc: SendAIError, url: str, attempts: int) -> None:
    exc.method, exc.url, exc.attempts = "GET", url, attempts
