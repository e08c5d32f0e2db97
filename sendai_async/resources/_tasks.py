"""``sendai.tasks``: read tasks (one or many), act on them, report them, wait for them.

Typed and raw reads share one code path: the decoder is an argument (``decode_task`` or
``decode_payload_object``), so ``get_raw`` and ``iter_many_raw`` are thin views.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncGenerator, Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .. import _retry
from .._batch import (
    BatchResult,
    ProgressCallback,
    RawTaskResult,
    TaskIds,
    TaskResult,
    run_pool,
)
from .._config import RetryPolicy, Timeout, coerce_timeout
from .._convert import decode_payload_object, decode_task
from .._errors import APIStatusError, ConfigurationError, SendAIError, WaitTimeoutError
from .._http import Decode, RawResponse, Requester
from .._models import ReportIssue, Task, TaskStatus
from .._paths import project_path

T = TypeVar("T")
R = TypeVar("R")

_WAIT_INTERVAL_CAP = 30.0
_WAIT_GROWTH = 1.5


def _body(body: bytes) -> bytes:
    return body


class Tasks:
    """Operations on tasks; reached as ``sendai.tasks``."""

    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def _path(self, task_id: object, project_id: object, team_id: str | None, *action: str) -> str:
        team = self._requester.team(team_id)
        return project_path(team, project_id, "task", (task_id, "task_id"), *action)

    # -- reading ------------------------------------------------------------------------

    def _get(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None,
        timeout: Timeout | float | None,
        decode: Decode[T],
        retry: RetryPolicy | None = None,
    ) -> Coroutine[Any, Any, T]:
        # Returns the request's coroutine rather than awaiting it: one coroutine level less
        # per read. A bad ID raises ConfigurationError at the call.
        return self._requester.request(
            "GET",
            self._path(task_id, project_id, team_id),
            decode=decode,
            idempotent=True,
            timeout=coerce_timeout(timeout),
            retry=retry,
        )

    def _respond(
        self, task_id: str, *, project_id: str, team_id: str | None, timeout: Timeout | None
    ) -> Coroutine[Any, Any, RawResponse]:
        # The bulk pool's fetch: the request's own coroutine (one level less per ID), its
        # body left for the pool to decode. A bad ID raises ConfigurationError at the call,
        # which the pool reports as that ID's error.
        return self._requester.respond(
            "GET", self._path(task_id, project_id, team_id), idempotent=True, timeout=timeout
        )

    async def get(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Fetch one task.

        Args:
            task_id: The task's ID.
            project_id: The project it belongs to.
            team_id: Overrides the client's team for this call.
            timeout: Overrides the client's per-attempt ``Timeout`` (a number: seconds).

        Returns:
            The task.

        Raises:
            ConfigurationError: an ID is empty or not a string (before any request).
            APIStatusError: the server answered non-2xx (``NotFoundError`` for 404, ...).
            TransportError: no complete response after all attempts.
            DecodeError: the 2xx body is not a task.

        """
        return await self._get(
            task_id, project_id=project_id, team_id=team_id, timeout=timeout, decode=decode_task
        )

    async def get_raw(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> dict[str, Any]:
        """Fetch one task's payload as decoded JSON, without structuring it.

        The lossless path: every field the server sent is kept, including ones this SDK
        does not know yet. Errors are as for ``get``.
        """
        return await self._get(
            task_id,
            project_id=project_id,
            team_id=team_id,
            timeout=timeout,
            decode=decode_payload_object,
        )

    def _pool(
        self,
        task_ids: TaskIds,
        make: Callable[[int, str, Any, SendAIError | None], R],
        decode: Decode[Any],
        *,
        project_id: str,
        team_id: str | None,
        concurrency: int,
        dedupe: bool,
        on_progress: ProgressCallback | None,
        timeout: Timeout | float | None,
    ) -> AsyncGenerator[R, None]:
        # Workers only fetch; the pool decodes on the consumer's side (see _batch).
        fetch = functools.partial(
            self._respond, project_id=project_id, team_id=team_id, timeout=coerce_timeout(timeout)
        )
        return run_pool(
            task_ids,
            fetch,
            functools.partial(self._requester.decoded, decode=decode),
            make,
            concurrency=self._requester.transport.pool_width(concurrency),
            dedupe=dedupe,
            on_progress=on_progress,
        )

    def iter_many(
        self,
        task_ids: TaskIds,
        *,
        project_id: str,
        team_id: str | None = None,
        concurrency: int = 16,
        dedupe: bool = True,
        on_progress: ProgressCallback | None = None,
        timeout: Timeout | float | None = None,
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
            on_progress: Called as ``on_progress(done, failed, total)`` as each ID's
                result is handed on (decoded: a body that does not decode counts as
                failed); ``total`` is ``None`` when ``task_ids`` has no length.
            timeout: Overrides the per-attempt ``Timeout`` of every request.

        Raises:
            AuthenticationError: a 401 stopped the batch (after yielding what finished).
            PermissionDeniedError: a 403 stopped the batch (likewise).

        """
        return self._pool(
            task_ids,
            _task_result,
            decode_task,
            project_id=project_id,
            team_id=team_id,
            concurrency=concurrency,
            dedupe=dedupe,
            on_progress=on_progress,
            timeout=timeout,
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
        timeout: Timeout | float | None = None,
    ) -> AsyncGenerator[RawTaskResult, None]:
        """Like ``iter_many``, yielding each payload as decoded JSON (see ``get_raw``)."""
        return self._pool(
            task_ids,
            _raw_result,
            decode_payload_object,
            project_id=project_id,
            team_id=team_id,
            concurrency=concurrency,
            dedupe=dedupe,
            on_progress=on_progress,
            timeout=timeout,
        )

    async def get_many(
        self,
        task_ids: TaskIds,
        *,
        project_id: str,
        team_id: str | None = None,
        concurrency: int = 16,
        dedupe: bool = True,
        on_progress: ProgressCallback | None = None,
        timeout: Timeout | float | None = None,
    ) -> BatchResult:
        """Fetch many tasks and account for every ID, in input order.

        One bad ID never sinks the batch: its error is in ``BatchResult.errors``. With
        ``dedupe`` (the default) a repeated ID is fetched once and has one result, where
        it was first seen, so there can be fewer results than inputs: look results up by
        ID with ``batch.by_id()`` rather than by position.

        Raises:
            AuthenticationError: a 401 stopped the batch early; ``error.batch`` holds the
                partial ``BatchResult`` of what had finished.
            PermissionDeniedError: a 403, likewise.

        """
        collected: list[tuple[int, TaskResult]] = []
        pool = self._pool(
            task_ids,
            _indexed_result,
            decode_task,
            project_id=project_id,
            team_id=team_id,
            concurrency=concurrency,
            dedupe=dedupe,
            on_progress=on_progress,
            timeout=timeout,
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

    # -- actions ------------------------------------------------------------------------

    async def _act(
        self,
        action: str,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None,
        timeout: Timeout | float | None,
        took_effect: Callable[[dict[str, Any]], bool],
    ) -> Task:
        """POST an action; after an ambiguous failure, read the task back to decide."""
        attempt_timeout = coerce_timeout(timeout)
        path = self._path(task_id, project_id, team_id, action)

        async def read_back() -> bytes | None:
            body = await self._get(
                task_id,
                project_id=project_id,
                team_id=team_id,
                timeout=attempt_timeout,
                decode=_body,
            )
            return body if took_effect(decode_payload_object(body)) else None

        return await self._requester.request(
            "POST",
            path,
            decode=decode_task,
            idempotent=False,
            timeout=attempt_timeout,
            recover=read_back,
        )

    async def complete(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Complete a task under review; it comes back PROCESSING, then turns COMPLETED.

        Safe to retry: after an ambiguous failure (reset, timeout, 5xx) the task is read
        back, and the action is sent again only if the task is still REVIEWING.

        Raises:
            ConflictError: the server refused (the task is not in REVIEWING); likewise
                ``BadRequestError`` or ``UnprocessableEntityError``, whichever it sends.

        """
        return await self._act(
            "complete",
            task_id,
            project_id=project_id,
            team_id=team_id,
            timeout=timeout,
            took_effect=lambda task: task.get("status") not in (None, TaskStatus.REVIEWING),
        )

    async def discard(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Discard a task under review (status DISCARDED); retried safely like ``complete``."""
        return await self._act(
            "discard",
            task_id,
            project_id=project_id,
            team_id=team_id,
            timeout=timeout,
            took_effect=lambda task: task.get("status") == TaskStatus.DISCARDED,
        )

    async def approve(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Approve a task (``approved`` true); retried safely like ``complete``.

        The server refuses while the task is PROCESSING or already approved.
        """
        return await self._act(
            "approve",
            task_id,
            project_id=project_id,
            team_id=team_id,
            timeout=timeout,
            took_effect=lambda task: task.get("approved") is True,
        )

    async def disapprove(
        self,
        task_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Withdraw a task's approval (``approved`` false); retried safely like ``complete``."""
        return await self._act(
            "disapprove",
            task_id,
            project_id=project_id,
            team_id=team_id,
            timeout=timeout,
            took_effect=lambda task: task.get("approved") is False,
        )

    async def report(
        self,
        task_id: str,
        *,
        project_id: str,
        issues: Sequence[ReportIssue | Mapping[str, str]],
        message: str | None = None,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Report problems with a task; returns the task.

        A report cannot be checked afterwards, so it is never sent twice: after an
        ambiguous failure (reset, timeout, 5xx) the error has ``outcome_unknown`` set.
        Refusals that provably changed nothing (connection refused, 429) are retried.

        Args:
            task_id: The task's ID.
            project_id: The project it belongs to.
            issues: ``ReportIssue(label=..., value=...)`` or ``{"label", "value"}``
                mappings; at least one.
            message: An optional free-text note.
            team_id: Overrides the client's team.
            timeout: Overrides the per-attempt ``Timeout``.

        Raises:
            ConfigurationError: ``issues`` is empty or malformed (before any request).

        """
        body: dict[str, Any] = {"issues": _report_issues(issues)}
        if message is not None:
            if not isinstance(message, str):
                raise ConfigurationError(f"message must be a string, got {type(message).__name__}")
            body["message"] = message
        return await self._requester.request(
            "POST",
            self._path(task_id, project_id, team_id, "report"),
            decode=decode_task,
            idempotent=False,
            json=body,
            timeout=coerce_timeout(timeout),
        )

    # -- waiting ------------------------------------------------------------------------

    async def wait(
        self,
        task_id: str,
        *,
        project_id: str,
        until: TaskStatus | str | Collection[TaskStatus | str] | None = None,
        max_wait: float = 600.0,
        poll_interval: float = 1.0,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Task:
        """Poll a task until its status is in ``until`` or terminal; return it.

        Polls start ``poll_interval`` apart and grow by half each time up to 30 s, with
        jitter so that many waiters spread out; a server's ``Retry-After`` sets the next
        wait. Transient failures (429, 5xx, resets) are polled through until ``max_wait``;
        a 404 or 401 ends the wait at once.

        Args:
            task_id: The task's ID.
            project_id: The project it belongs to.
            until: A status or collection of statuses to wait for; by default, anything
                but PROCESSING. A terminal status (COMPLETED, FAILED, DISCARDED,
                FILTERED) always ends the wait.
            max_wait: Seconds to wait at most.
            poll_interval: Seconds before the second poll.
            team_id: Overrides the client's team.
            timeout: Overrides the per-attempt ``Timeout`` of each poll.

        Raises:
            WaitTimeoutError: ``max_wait`` passed; ``error.last`` is the last task seen.
            ConfigurationError: a bad argument (before any request).

        """
        wanted = _statuses(until)
        if not max_wait > 0 or not poll_interval > 0:
            raise ConfigurationError("max_wait and poll_interval must be positive")
        self._path(task_id, project_id, team_id)  # a bad ID fails before the first poll
        attempt_timeout = coerce_timeout(timeout)
        policy = self._requester.options.retry
        deadline = _retry._clock() + max_wait
        interval = poll_interval
        last: Task | None = None
        last_error: SendAIError | None = None
        polls = 0
        while True:
            left = deadline - _retry._clock()
            try:
                polls += 1
                last = await self._get(
                    task_id,
                    project_id=project_id,
                    team_id=team_id,
                    timeout=attempt_timeout,
                    decode=decode_task,
                    retry=attrs.evolve(policy, deadline=max(left, 0.001)),
                )
            except SendAIError as exc:
                if not _retry.is_retryable(exc, policy):
                    raise
                last_error, server_wait = exc, _server_wait(exc)
            else:
                if _reached(last, wanted):
                    return last
                last_error, server_wait = None, None
            left = deadline - _retry._clock()
            if left <= 0:
                status = f"status {last.status}" if last is not None else "no successful poll"
                raise WaitTimeoutError(
                    f"task {task_id!r} did not reach the awaited status within {max_wait} s "
                    f"({polls} polls; last seen: {status})",
                    last=last,
                    attempts=polls,
                ) from last_error
            pause = server_wait if server_wait is not None else _jittered(interval)
            await _retry._sleep(min(pause, left))
            interval = min(interval * _WAIT_GROWTH, _WAIT_INTERVAL_CAP)


def _jittered(interval: float) -> float:
    return interval * random.uniform(0.8, 1.2)  # noqa: S311 -- jitter, not cryptography


def _server_wait(exc: SendAIError) -> float | None:
    return exc.retry_after if isinstance(exc, APIStatusError) else None


def _statuses(until: object) -> frozenset[str] | None:
    if until is None:
        return None
    items = [until] if isinstance(until, str) else until
    if not isinstance(items, Collection) or not items:
        raise ConfigurationError("until must be a status or a non-empty collection of statuses")
    wanted = set()
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"until holds {item!r}, which is not a status")
        wanted.add(str(TaskStatus(item).value))
    return frozenset(wanted)


def _reached(task: Task, wanted: frozenset[str] | None) -> bool:
    if task.is_terminal:
        return True
    if wanted is None:
        return task.status != TaskStatus.PROCESSING
    return task.status.value in wanted


def _report_issues(issues: object) -> list[dict[str, str]]:
    if isinstance(issues, (str, Mapping)) or not isinstance(issues, Sequence):
        raise ConfigurationError(
            "issues must be a sequence of ReportIssue or {'label': ..., 'value': ...} items"
        )
    if not issues:
        raise ConfigurationError("a report needs at least one issue")
    result = []
    for item in issues:
        label: object = None
        value: object = None
        if isinstance(item, ReportIssue):
            label, value = item.label, item.value
        elif isinstance(item, Mapping):
            label, value = item.get("label"), item.get("value")
        if not isinstance(label, str) or not isinstance(value, str):
            raise ConfigurationError(f"each issue needs a string label and value, got {item!r:.80}")
        result.append({"label": label, "value": value})
    return result


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
