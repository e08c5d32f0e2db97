"""The public surface: one sorted __all__, everything importable, version from metadata."""

from __future__ import annotations

from importlib.metadata import version

import sendai_async


def test_all_is_sorted_and_importable() -> None:
    assert sendai_async.__all__ == sorted(sendai_async.__all__)
    for name in sendai_async.__all__:
        assert hasattr(sendai_async, name), name


def test_version_comes_from_package_metadata() -> None:
    assert sendai_async.__version__ == version("sendai-async")


def test_error_tree_matches_the_contract() -> None:
    s = sendai_async
    assert issubclass(s.ConfigurationError, ValueError)
    assert issubclass(s.DecodeError, ValueError)
    assert issubclass(s.RequestTimeoutError, TimeoutError)
    assert issubclass(s.RequestTimeoutError, s.TransportError)
    for cls in (
        s.BadRequestError,
        s.AuthenticationError,
        s.PermissionDeniedError,
        s.NotFoundError,
        s.ConflictError,
        s.RateLimitError,
        s.ServerError,
    ):
        assert issubclass(cls, s.APIStatusError)
    for base in (
        s.ConfigurationError,
        s.TransportError,
        s.APIStatusError,
        s.DecodeError,
        s.PaginationError,
    ):
        assert issubclass(base, s.SendAIError)
