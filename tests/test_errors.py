"""Errors cross process boundaries intact: every public error pickles with its attributes."""

from __future__ import annotations

import concurrent.futures
import inspect
import multiprocessing
import pickle

import pytest

import sendai_async
from sendai_async import (
    APIStatusError,
    BatchResult,
    NotFoundError,
    SendAIError,
    TaskResult,
    TransportError,
    WaitTimeoutError,
)

PUBLIC_ERRORS = [
    obj
    for obj in vars(sendai_async).values()
    if inspect.isclass(obj) and issubclass(obj, SendAIError)
]


def _sample(cls: type[SendAIError]) -> SendAIError:
    if issubclass(cls, APIStatusError):
        error: SendAIError = cls(
            "HTTP 404: no such task",
            status_code=404,
            request_id="req_1",
            body={"error": "no such task"},
            retry_after=1.5,
            method="GET",
            url="https://api.send.ai/v2/t/project/p/task/x",
            attempts=2,
        )
    elif issubclass(cls, TransportError):
        error = cls("reset", retryable=False, method="POST", url="u", attempts=3)
    elif cls is WaitTimeoutError:
        error = cls("too slow", attempts=4)
    else:
        error = cls("something", method="GET", url="u", attempts=1)
    error.request_sent = True
    error.outcome_unknown = True
    error.retry_budget_exhausted = True
    error.resume_from = "cursor_7"
    return error


@pytest.mark.parametrize("cls", PUBLIC_ERRORS, ids=lambda cls: cls.__name__)
def test_every_public_error_round_trips_through_pickle(cls: type[SendAIError]) -> None:
    error = _sample(cls)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert vars(copy) == vars(error)
    assert str(copy) == str(error)
    assert copy.args == error.args


def test_a_batch_travels_with_its_error() -> None:
    error = NotFoundError("HTTP 404", status_code=404)
    error.batch = BatchResult((TaskResult(task_id="a", error=NotFoundError("x", status_code=404)),))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.batch is not None
    (result,) = copy.batch.results
    assert result.task_id == "a"
    assert isinstance(result.error, NotFoundError)


def _job_that_raises() -> None:
    raise NotFoundError("HTTP 404: task gone", status_code=404, request_id="req_9", attempts=1)


def test_a_process_pool_job_raises_not_found_with_its_class() -> None:
    """One 404 in a worker process reaches the parent as NotFoundError; the pool survives."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with pytest.raises(NotFoundError) as caught:
            pool.submit(_job_that_raises).result(timeout=60)
        assert pool.submit(int, "7").result(timeout=60) == 7  # not a BrokenProcessPool
    assert caught.value.status_code == 404
    assert caught.value.request_id == "req_9"
