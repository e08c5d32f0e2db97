"""The sendai-async command line: get, resumable fetch (killed and resumed), demo, bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sendai_async.cli import main
from sendai_async.testing import SandboxServer

from .conftest import CANARY_KEY


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tasks=400, seed=5).in_thread() as server:
        yield server


@pytest.fixture
def api_env(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "SENDAI_API_KEY": sandbox.api_key,
        "SENDAI_TEAM_ID": sandbox.team_id,
        "SENDAI_BASE_URL": sandbox.base_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.mark.usefixtures("api_env")
def test_get_prints_the_payload_as_json(
    sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--loop", "asyncio", "get", "task_000007", "--project", sandbox.project_id]) == 0
    assert orjson.loads(capsys.readouterr().out) == sandbox.task("task_000007")


@pytest.mark.usefixtures("api_env")
def test_get_unknown_task_is_one_line_and_exit_1(
    sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["get", "task_999999", "--project", sandbox.project_id])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "NotFoundError" in err
    assert "Traceback" not in err


def test_fetch_killed_and_resumed_accounts_for_every_id_once(
    sandbox: SandboxServer, api_env: dict[str, str], tmp_path: Path
) -> None:
    """Kill a faulty bulk fetch part-way, tear its last line, resume: each ID exactly once."""
    sandbox.fault_rate = 0.05
    sandbox.latency = 0.003
    wanted = [*sandbox.task_ids, "task_999998", "task_999999", sandbox.task_ids[0]]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(wanted) + "\n")
    out, errors = tmp_path / "tasks.jsonl", tmp_path / "errors.jsonl"
    command = [
        sys.executable,
        "-m",
        "sendai_async",
        "--loop",
        "asyncio",
        "fetch",
        "--project",
        sandbox.project_id,
        "--ids",
        str(ids_file),
        "--out",
        str(out),
        "--errors",
        str(errors),
        "--concurrency",
        "4",
        "--no-progress",
    ]
    env = {**os.environ, **api_env}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (not out.exists() or out.read_bytes().count(b"\n") < 60) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    first_run = len(_lines(out))
    assert 60 <= first_run < 400, "the kill should land part-way"
    with out.open("ab") as stream:  # as if the kill had landed mid-write
        stream.write(b'{"task_id": "task_000399", "payl')

    resumed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert resumed.returncode == 1  # two IDs do not exist
    fetched = [str(line["task_id"]) for line in _lines(out)]
    failed = [str(line["task_id"]) for line in _lines(errors)]
    assert sorted(fetched + failed) == sorted(set(wanted))
    assert set(failed) == {"task_999998", "task_999999"}
    assert {line["status"] for line in _lines(errors)} == {404}
    for line in _lines(out):
        assert line["payload"] == sandbox.task(str(line["task_id"]))  # exactly as served
    skipped = int(resumed.stderr.split("skipped")[1].split()[0])
    assert skipped >= first_run  # the first run's lines were not fetched again
    assert sandbox.api_key not in resumed.stderr


def test_fetch_from_stdin(sandbox: SandboxServer, api_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "tasks.jsonl"
    command = [
        sys.executable,
        "-m",
        "sendai_async",
        "fetch",
        "--project",
        sandbox.project_id,
        "--ids",
        "-",
        "--out",
        str(out),
        "--no-progress",
    ]
    done = subprocess.run(
        command,
        env={**os.environ, **api_env},
        input="task_000001\ntask_000002\n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [line["task_id"] for line in _lines(out)] in (
        ["task_000001", "task_000002"],
        ["task_000002", "task_000001"],
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["fetch", "--project", "p", "--ids", "/nonexistent/ids.txt", "--out", "{tmp}/o.jsonl"],
            "--ids",
            id="unreadable-ids",
        ),
        pytest.param(
            ["fetch", "--project", "p", "--ids", "{tmp}/ids.txt", "--out", "{tmp}/missing/o.jsonl"],
            "does not exist",
            id="out-in-missing-dir",
        ),
        pytest.param(["get", "t", "--project", "p"], "SENDAI_API_KEY", id="missing-key"),
        pytest.param(
            ["get", "t", "--project", "p", "--base-url", "http://example.com"],
            "plain http",
            id="insecure-url",
        ),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "missing-key" not in message:
        monkeypatch.setenv("SENDAI_API_KEY", CANARY_KEY)
    if message == "SENDAI_API_KEY":
        monkeypatch.delenv("SENDAI_API_KEY", raising=False)
    monkeypatch.setenv("SENDAI_TEAM_ID", "t")
    (tmp_path / "ids.txt").write_text("a\n")
    with pytest.raises(SystemExit) as caught:
        main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert CANARY_KEY not in err


def test_rejected_key_never_printed(
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENDAI_API_KEY", CANARY_KEY)
    monkeypatch.setenv("SENDAI_BASE_URL", sandbox.base_url)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(sandbox.task_ids[:20]))
    code = main(
        [
            "fetch",
            "--project",
            sandbox.project_id,
            "--team",
            sandbox.team_id,
            "--ids",
            str(ids),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "AuthenticationError" in captured.err
    assert CANARY_KEY not in captured.err + captured.out


def test_demo_delivers_every_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "demo",
            "--tasks",
            "300",
            "--fault-rate",
            "0.05",
            "--out-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "every one of the 300 tasks was delivered" in out
    assert len(_lines(tmp_path / "tasks.jsonl")) == 300


def test_fetch_all_walks_the_listing_and_resumes(
    sandbox: SandboxServer, api_env: dict[str, str], tmp_path: Path
) -> None:
    """``--all`` fetches every listed task; a second run finds nothing left to fetch."""
    sandbox.fault_rate = 0.03
    out = tmp_path / "all.jsonl"
    argv = ["fetch", "--all", "--project", sandbox.project_id, "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert sorted(str(line["task_id"]) for line in _lines(out)) == sandbox.task_ids
    assert main(argv) == 0
    assert len(_lines(out)) == 400


def test_sandbox_command_prints_its_settings_and_serves() -> None:
    """``sendai-async sandbox`` prints ready-to-export settings and answers Get Task."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "sendai_async", "sandbox", "--port", str(port), "--tasks", "5"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        settings = dict(child.stdout.readline().strip().split("=", 1) for _ in range(3))
        assert settings["SENDAI_BASE_URL"] == f"http://127.0.0.1:{port}"
        base, team = settings["SENDAI_BASE_URL"], settings["SENDAI_TEAM_ID"]
        url = f"{base}/v2/{team}/project/proj_sandbox/task/task_000004"
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {settings['SENDAI_API_KEY']}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert orjson.loads(response.read())["payload"]["id"] == "task_000004"
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=10)  # also closes our end of its stdout
    assert child.returncode == 130


def test_ids_that_are_not_utf8_are_reported_not_fatal(
    sandbox: SandboxServer, api_env: dict[str, str], tmp_path: Path
) -> None:
    """A line of invalid UTF-8 is that ID's error; every other ID is still fetched."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"task_000001\nbad\xff\xfeid\ntask_000002\ntask_000001\n")
    out, errors = tmp_path / "tasks.jsonl", tmp_path / "errors.jsonl"
    argv = ["fetch", "--project", sandbox.project_id, "--ids", str(ids), "--out", str(out)]
    code = main([*argv, "--errors", str(errors), "--no-progress"])
    assert code == 1
    assert sorted(str(line["task_id"]) for line in _lines(out)) == ["task_000001", "task_000002"]
    (failure,) = _lines(errors)
    assert failure["task_id"] == "bad\\xff\\xfeid"
    assert failure["error"] == "ConfigurationError"


def test_repeated_ids_are_counted_once_in_the_summary(
    sandbox: SandboxServer,
    api_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("task_000001\ntask_000001\ntask_000002\ntask_000001\n")
    out = tmp_path / "tasks.jsonl"
    argv = ["fetch", "--project", sandbox.project_id, "--ids", str(ids), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "fetched   2" in err
    assert "2 repeated IDs" in err


def test_ctrl_c_prints_the_partial_summary_and_how_to_resume(
    sandbox: SandboxServer, api_env: dict[str, str], tmp_path: Path
) -> None:
    sandbox.latency = 0.02
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(sandbox.task_ids))
    out = tmp_path / "tasks.jsonl"
    command = [sys.executable, "-m", "sendai_async", "--loop", "asyncio", "fetch"]
    command += ["--project", sandbox.project_id, "--ids", str(ids), "--out", str(out)]
    child = subprocess.Popen(
        [*command, "--concurrency", "2", "--no-progress"],
        env={**os.environ, **api_env},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while (not out.exists() or out.read_bytes().count(b"\n") < 10) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert "fetched" in err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("api_env")
def test_task_commands_act_on_the_sandbox(
    sandbox: SandboxServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """upload prints the upload; wait, approve and complete print the task as JSON."""
    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF-1.7 invoice")
    project = ["--project", sandbox.project_id]
    assert main(["upload", str(document), *project, "--name", "n", "--meta", "k=v"]) == 0
    upload = orjson.loads(capsys.readouterr().out)
    (task_id,) = sandbox.uploads[upload["id"]].task_ids
    assert sandbox.uploads[upload["id"]].meta == [{"name": "k", "value": "v"}]
    assert main(["wait", task_id, *project, "--poll-interval", "0.05"]) == 0
    assert orjson.loads(capsys.readouterr().out)["status"] == "REVIEWING"
    assert main(["approve", task_id, *project]) == 0
    assert orjson.loads(capsys.readouterr().out)["approved"] is True
    assert main(["complete", task_id, *project]) == 0
    assert orjson.loads(capsys.readouterr().out)["status"] == "PROCESSING"
    with pytest.raises(SystemExit) as caught:  # already approved: the server refuses
        main(["approve", task_id, *project])
    assert caught.value.code == 1
    assert "ConflictError" in capsys.readouterr().err


def test_upload_meta_must_be_name_equals_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENDAI_API_KEY", CANARY_KEY)
    document = tmp_path / "a.pdf"
    document.write_bytes(b"x")
    with pytest.raises(SystemExit) as caught:
        main(["upload", str(document), "--project", "p", "--team", "t", "--meta", "novalue"])
    assert caught.value.code == 2
    assert "NAME=VALUE" in capsys.readouterr().err
