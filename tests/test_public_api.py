"""The public surface: one sorted, complete __all__; the error tree; version from metadata."""

from __future__ import annotations

import inspect
import types
from importlib.metadata import version

import sendai_async


def test_all_is_sorted_and_importable() -> None:
    names = [n for n in sendai_async.__all__ if not n.startswith("__")]
    assert names == sorted(names)
    for name in sendai_async.__all__:
        assert hasattr(sendai_async, name), name


def test_all_is_complete() -> None:
    """Every public name the package exposes is in __all__ (as httpx checks its own)."""
    exposed = {
        name
        for name, value in vars(sendai_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exposed - set(sendai_async.__all__) == set()


def test_version_comes_from_package_metadata() -> None:
    assert sendai_async.__version__ == version("sendai-async")


def test_error_tree_matches_the_contract() -> None:
    s = sendai_async
    parents = {
        s.ConfigurationError: (s.SendAIError, ValueError),
        s.ClientClosedError: (s.SendAIError, RuntimeError),
        s.ReentrantCallError: (s.SendAIError, RuntimeError),
        s.CoordinatorError: (s.SendAIError,),
        s.TransportError: (s.SendAIError,),
        s.RequestTimeoutError: (s.TransportError, TimeoutError),
        s.ResponseTooLargeError: (s.TransportError,),
        s.APIStatusError: (s.SendAIError,),
        s.BadRequestError: (s.APIStatusError,),
        s.AuthenticationError: (s.APIStatusError,),
        s.PermissionDeniedError: (s.APIStatusError,),
        s.NotFoundError: (s.APIStatusError,),
        s.ConflictError: (s.APIStatusError,),
        s.ContentTooLargeError: (s.APIStatusError,),
        s.UnprocessableEntityError: (s.APIStatusError,),
        s.RateLimitError: (s.APIStatusError,),
        s.ServerError: (s.APIStatusError,),
        s.DecodeError: (s.SendAIError, ValueError),
        s.PaginationError: (s.SendAIError,),
        s.WaitTimeoutError: (s.SendAIError, TimeoutError),
        s.BatchError: (s.SendAIError,),
    }
    public_errors = {
        value
        for value in vars(s).values()
        if inspect.isclass(value)
        and issubclass(value, s.SendAIError)
        and value is not s.SendAIError
    }
    assert public_errors == set(parents)  # a new public error must be placed in the tree
    for cls, bases in parents.items():
        for base in bases:
            assert issubclass(cls, base), (cls, base)
