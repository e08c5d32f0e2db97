"""Client settings: timeouts, the retry policy, and what is read from the environment."""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._errors import ConfigurationError

DEFAULT_BASE_URL = "https://api.send.ai"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

ENV_API_KEY = "SENDAI_API_KEY"
ENV_TEAM_ID = "SENDAI_TEAM_ID"
ENV_BASE_URL = "SENDAI_BASE_URL"


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeout:
    """Time limits for one attempt, in seconds.

    Args:
        total: The whole attempt: waiting for a pooled connection, connecting, sending and
            reading the full body. ``None`` leaves only the other limits (and the
            ``RetryPolicy.deadline``) in force.
        connect: Opening a new TCP (and TLS) connection.
        read: The longest silence between two reads of the response. Always set: a server
            that stops sending mid-body must not hang a worker forever.

    """

    total: float | None = attrs.field(default=60.0, validator=_positive)
    connect: float = attrs.field(default=5.0, validator=_positive)
    read: float = attrs.field(default=30.0, validator=_positive)


RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """What is retried, how long to wait between attempts, and when to give up.

    Waits are capped exponential backoff with full jitter: before attempt ``n + 1`` the
    client sleeps a random time in ``[0, min(backoff_max, backoff_base * 2 ** (n - 1))]``,
    or exactly what the server asked for in ``Retry-After`` / ``retry-after-ms``.

    Args:
        max_attempts: Requests made at most per call; ``1`` disables retries.
        backoff_base: The first backoff ceiling, in seconds.
        backoff_max: The largest backoff ceiling, in seconds.
        max_retry_after: The longest server-requested wait we honour; a longer one fails the
            call at once with ``RateLimitError.retry_after`` set.
        deadline: Seconds the whole call may take, all attempts and waits included. No
            wait starts that would end past it.
        retry_statuses: HTTP statuses that are retried.
        budget_capacity: Size of the client-wide retry budget (a token bucket shared by all
            calls of one client; a retry costs 5 tokens, one after a timeout 10, one after a
            429 with ``Retry-After`` 1 (the client's gate already holds every request back
            until then), and a call that succeeds at once returns 1). ``None`` disables the
            budget.

    """

    max_attempts: int = attrs.field(default=3)
    backoff_base: float = attrs.field(default=0.5, validator=_positive)
    backoff_max: float = attrs.field(default=8.0, validator=_positive)
    max_retry_after: float = attrs.field(default=60.0, validator=_positive)
    deadline: float = attrs.field(default=120.0, validator=_positive)
    retry_statuses: frozenset[int] = attrs.field(default=RETRYABLE_STATUSES, converter=frozenset)
    budget_capacity: int | None = 500

    @max_attempts.validator
    def _check_attempts(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {value!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_base_url(base_url: str | None) -> str:
    """Return the base URL to use, without a trailing slash.

    Raises:
        ConfigurationError: the URL is not http(s), has no host, carries credentials, or
            is plain http to a host that is not loopback.

    """
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not contain credentials; pass api_key instead")
    if parts.query or parts.fragment:
        raise ConfigurationError("base_url must not contain a query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {url!r} uses plain http to a non-loopback host; the API key would "
            "cross the network in clear text. Use https."
        )
    url = url.rstrip("/")
    # Paths are built as /v2/...: a base URL copied with the version in it would give
    # /v2/v2/... and a bare 404, so the version is dropped here.
    return url.removesuffix("/v2") if parts.path.rstrip("/").endswith("/v2") else url


def resolve_api_key(api_key: str | None) -> str:
    """Return the API key from the argument or ``SENDAI_API_KEY``.

    Raises:
        ConfigurationError: neither is set (the message names the variable, never a value).

    """
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if not key:
        raise ConfigurationError(
            f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
        )
    if any(ch in key for ch in "\r\n\0") or key != key.strip():
        raise ConfigurationError("the API key contains whitespace or control characters")
    return key


def resolve_team_id(team_id: str | None) -> str | None:
    """Return the default team from the argument or ``SENDAI_TEAM_ID`` (may be ``None``)."""
    return team_id if team_id is not None else (os.environ.get(ENV_TEAM_ID) or None)


def coerce_timeout(value: object, *, name: str = "timeout") -> Timeout | None:
    """Return ``value`` as a ``Timeout``: a number means seconds for the whole attempt.

    ``None`` stays ``None`` (use the default). Checked where it is given, so a wrong type
    fails at the call that passed it rather than deep inside the first request.

    Raises:
        ConfigurationError: ``value`` is neither ``None``, a ``Timeout`` nor a positive number.

    """
    if value is None or isinstance(value, Timeout):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0:
            raise ConfigurationError(f"{name} must be positive, got {value!r}")
        return Timeout(total=float(value))
    raise ConfigurationError(
        f"{name} must be a Timeout or a number of seconds, got {type(value).__name__}"
    )


def coerce_retry(value: object, *, name: str = "retry") -> RetryPolicy | None:
    """Return ``value`` as a ``RetryPolicy`` (``None`` stays ``None``: use the default).

    Raises:
        ConfigurationError: ``value`` is not a ``RetryPolicy``; the message shows the fix.

    """
    if value is None or isinstance(value, RetryPolicy):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise ConfigurationError(
            f"{name} must be a RetryPolicy; for {value} attempts pass "
            f"{name}=RetryPolicy(max_attempts={value})"
        )
    raise ConfigurationError(f"{name} must be a RetryPolicy, got {type(value).__name__}")
