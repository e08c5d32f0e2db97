"""Configuration: environment fallbacks, clear errors, and a key that never shows."""

from __future__ import annotations

import pytest

from sendai_async import ConfigurationError, RetryPolicy, SendAI, Timeout

from .conftest import CANARY_KEY


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="SENDAI_API_KEY"):
        SendAI()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDAI_API_KEY", CANARY_KEY)
    monkeypatch.setenv("SENDAI_TEAM_ID", "team_env")
    monkeypatch.setenv("SENDAI_BASE_URL", "http://127.0.0.1:8080/")
    sendai = SendAI()
    assert sendai.team_id == "team_env"
    assert sendai.base_url == "http://127.0.0.1:8080"


def test_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDAI_TEAM_ID", "team_env")
    sendai = SendAI(CANARY_KEY, team_id="team_arg")
    assert sendai.team_id == "team_arg"
    assert sendai.base_url == "https://api.send.ai"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://api.send.ai", id="plain-http-remote"),
        pytest.param("http://10.0.0.5:8080", id="plain-http-private"),
        pytest.param("ftp://api.send.ai", id="not-http"),
        pytest.param("https://user:pw@api.send.ai", id="credentials"),
        pytest.param("api.send.ai", id="no-scheme"),
    ],
)
def test_unsafe_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SendAI(CANARY_KEY, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1234", "http://localhost:1", "http://[::1]:80", "https://example.com"]
)
def test_loopback_http_and_any_https_are_accepted(url: str) -> None:
    SendAI(CANARY_KEY, base_url=url)


async def test_missing_team_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDAI_TEAM_ID", raising=False)
    async with SendAI(CANARY_KEY, base_url="http://127.0.0.1:9") as sendai:
        with pytest.raises(ConfigurationError, match="SENDAI_TEAM_ID"):
            await sendai.tasks.get("t", project_id="p")


@pytest.mark.parametrize("bad", ["", None, 42, b"bytes"])
async def test_bad_ids_fail_before_any_request(bad: object) -> None:
    async with SendAI(CANARY_KEY, team_id="t", base_url="http://127.0.0.1:9") as sendai:
        with pytest.raises(ConfigurationError, match="task_id"):
            await sendai.tasks.get(bad, project_id="p")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="project_id"):
            await sendai.tasks.get("t", project_id=bad)  # type: ignore[arg-type]


def test_repr_never_shows_the_key() -> None:
    sendai = SendAI(CANARY_KEY, team_id="t")
    assert CANARY_KEY not in repr(sendai)
    assert CANARY_KEY not in str(vars(sendai.tasks))
    assert "team_id='t'" in repr(sendai)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: Timeout(read=0), id="zero-read"),
        pytest.param(lambda: Timeout(connect=-1), id="negative-connect"),
        pytest.param(lambda: RetryPolicy(max_attempts=0), id="zero-attempts"),
        pytest.param(lambda: RetryPolicy(deadline=0), id="zero-deadline"),
        pytest.param(lambda: SendAI(CANARY_KEY, max_connections=0), id="zero-connections"),
    ],
)
def test_invalid_settings_are_configuration_errors(build: object) -> None:
    with pytest.raises(ConfigurationError):
        build()  # type: ignore[operator]


def test_key_with_newline_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SendAI(CANARY_KEY + "\n")
    assert CANARY_KEY not in str(caught.value)


@pytest.mark.parametrize("bad", [["list"], {"a": 1}])
async def test_unhashable_ids_are_configuration_errors(bad: object) -> None:
    async with SendAI(CANARY_KEY, team_id="t", base_url="http://127.0.0.1:9") as sendai:
        with pytest.raises(ConfigurationError, match="project_id"):
            await sendai.tasks.get("t", project_id=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="team_id"):
            await sendai.tasks.get("t", project_id="p", team_id=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="task_id"):
            await sendai.tasks.get(bad, project_id="p")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "used"),
    [
        pytest.param("https://api.send.ai/v2", "https://api.send.ai", id="with-version"),
        pytest.param("https://api.send.ai/v2/", "https://api.send.ai", id="with-version-slash"),
        pytest.param(
            "https://proxy.example/sendai/v2", "https://proxy.example/sendai", id="prefix"
        ),
        pytest.param("https://api.send.ai/", "https://api.send.ai", id="slash"),
        pytest.param("https://api.send.ai/v20", "https://api.send.ai/v20", id="not-the-version"),
    ],
)
def test_a_base_url_with_the_version_is_not_doubled(given: str, used: str) -> None:
    """Paths start with /v2, so a base URL copied with /v2 in it would call /v2/v2/..."""
    assert SendAI(CANARY_KEY, base_url=given).base_url == used
