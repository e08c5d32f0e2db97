"""The ``sendai-async`` command line: tasks, uploads, bulk fetch, the sandbox and the demo.

Exit status: 0 when everything asked for was done, 1 when some IDs failed or the server
refused, 2 for a usage mistake (missing key, unreadable file, ...), 130 on Ctrl-C. A user
mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import orjson

from .._client import SendAI
from .._config import ENV_API_KEY
from .._convert import upload_to_dict
from .._errors import ConfigurationError, SendAIError
from .._gc import bulk_gc
from .._models import TaskStatus

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_DEMO_TASKS, _CLUSTER_DEMO_TASKS = 3000, 20_000


class UsageError(Exception):
    """A mistake in how the command was called; reported in one line, exit status 2."""


def _run(coro: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``coro`` on uvloop when asked for (or, with ``auto``, when installed)."""
    if loop != "asyncio":
        try:
            import uvloop  # noqa: PLC0415 -- optional, from the cli extra
        except ImportError:
            if loop == "uvloop":
                coro.close()
                raise UsageError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _client(args: argparse.Namespace) -> SendAI:
    if not os.environ.get(ENV_API_KEY):
        # The library's message suggests api_key=...; the CLI takes the key from the
        # environment only, so that it never lands in shell history.
        raise UsageError(f"no API key: set the {ENV_API_KEY} environment variable")
    return SendAI(team_id=args.team, base_url=args.base_url)


# -- get ------------------------------------------------------------------------------


async def _cmd_get(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        payload = await client.tasks.get_raw(args.task_id, project_id=args.project)
    sys.stdout.buffer.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    return EXIT_OK


def _print_json(document: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


async def _cmd_action(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        act = getattr(client.tasks, args.command)
        task = await act(args.task_id, project_id=args.project)
    _print_json(task.to_dict())
    return EXIT_OK


async def _cmd_wait(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        task = await client.tasks.wait(
            args.task_id,
            project_id=args.project,
            until=args.until or None,
            max_wait=args.max_wait,
            poll_interval=args.poll_interval,
        )
    _print_json(task.to_dict())
    return EXIT_OK


def _meta_pairs(pairs: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--meta {pair!r}: expected NAME=VALUE")
        meta[name] = value
    return meta


async def _cmd_upload(args: argparse.Namespace) -> int:
    meta = _meta_pairs(args.meta) if args.meta else None
    async with _client(args) as client:
        upload = await client.uploads.create(
            [Path(name) for name in args.files],
            project_id=args.project,
            name=args.name,
            meta=meta,
            timeout=args.timeout,
        )
    _print_json(upload_to_dict(upload))
    return EXIT_OK


# -- fetch ----------------------------------------------------------------------------


def _check_writable(path: Path, flag: str) -> None:
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")


def _id_lines(stream: IO[bytes]) -> Iterator[str]:
    """Yield each line as text; bytes that are not UTF-8 survive as lone surrogates.

    Such an ID is then refused by the SDK as that ID's own ``ConfigurationError`` and lands
    in the errors file with its bytes shown, instead of a traceback that loses the run.
    """
    for raw in stream:
        yield raw.decode("utf-8", "surrogateescape")


def _id_file_lines(path: Path) -> Iterator[str]:
    with path.open("rb") as stream:
        yield from _id_lines(stream)


def _count_lines(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(1 for line in stream if line.strip())


async def _cmd_fetch(args: argparse.Namespace) -> int:
    from ._fetch import FetchSummary, fetch_to_files  # noqa: PLC0415 -- keeps `get` fast

    out = Path(args.out)
    errors = Path(args.errors) if args.errors else out.with_name(out.name + ".errors.jsonl")
    _check_writable(out, "--out")
    _check_writable(errors, "--errors")
    if args.all:
        ids: Any = None  # filled from the listing below, once the client exists
        total = None
    elif args.ids == "-":
        ids = _id_lines(sys.stdin.buffer)
        total = None
    else:
        path = Path(args.ids)
        try:
            total = _count_lines(path)
        except OSError as exc:
            raise UsageError(f"--ids {path}: cannot read it ({exc.strerror})") from None
        ids = _id_file_lines(path)
    summary = args.summary = FetchSummary()  # main() prints it if Ctrl-C stops the run
    async with _client(args) as client:
        if args.all:
            listing = client.paginate(f"project/{args.project}/tasks", team_id=args.team)
            ids = listing.ids()
        await fetch_to_files(
            client,
            ids,
            project_id=args.project,
            team_id=args.team,
            out=out,
            errors=errors,
            concurrency=args.concurrency,
            total=total,
            progress=not args.no_progress,
            summary=summary,
        )
    for line in summary.lines():
        print(line, file=sys.stderr)
    print(f"output    {out}\nerrors    {errors}", file=sys.stderr)
    return EXIT_OK if summary.failed == 0 and summary.stopped_by is None else EXIT_FAILED


# -- distributed export ----------------------------------------------------------------


def _broker(url: str) -> str:
    """Check a broker URL: a redis:// URL whose server answers; else a usage error."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise UsageError(f"--broker {url!r}: expected redis://HOST:PORT/DB")
    try:
        import redis  # noqa: PLC0415 -- from the celery extra
    except ImportError:
        raise UsageError(
            "the export needs the celery extra: pip install 'sendai-async[celery]'"
        ) from None
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, OSError) as exc:
        raise UsageError(f"--broker: cannot reach the broker ({type(exc).__name__})") from None
    return url


def _cmd_worker(args: argparse.Namespace) -> int:
    from ..export import QUEUE, make_app  # noqa: PLC0415 -- needs the celery extra

    app = make_app(_broker(args.broker))
    argv = [
        "worker",
        f"--concurrency={args.concurrency}",
        "--pool=prefork",
        f"--queues={QUEUE}",
        f"--loglevel={args.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Check everything a user can get wrong before dispatching anything; then export."""
    out_dir = Path(args.out)
    if not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: not a directory (create it; every worker must see it)")
    if args.ids not in (None, "-") and not Path(args.ids).is_file():
        raise UsageError(f"--ids {args.ids}: cannot read it")
    return _export(args, out_dir, _broker(args.broker))


async def _export(args: argparse.Namespace, out_dir: Path, broker: str) -> int:
    from ..export import (  # noqa: PLC0415 -- needs the celery extra
        QUEUE,
        TASK_NAME,
        ExportInputError,
        ExportStalledError,
        make_app,
        run_export,
    )
    from ..export._driver import REDISPATCH_AFTER  # noqa: PLC0415
    from ._progress import Progress  # noqa: PLC0415

    app = make_app(broker)

    def send(message: dict[str, Any]) -> None:
        app.send_task(TASK_NAME, args=[message], queue=QUEUE)

    ids: Any
    client: SendAI | None = None
    if args.all:
        client = _client(args)
        ids = client.paginate(f"project/{args.project}/tasks", team_id=args.team).ids()
    elif args.ids == "-":
        ids = _id_lines(sys.stdin.buffer)
    else:
        ids = _id_file_lines(Path(args.ids))
    try:
        with Progress(None, enabled=not args.no_progress) as bar:
            summary = await run_export(
                send,
                ids,
                project_id=args.project,
                team_id=args.team,
                out_dir=out_dir,
                chunk_size=args.chunk_size,
                rate_limit=args.rate_limit,
                coordinator_url=broker,
                progress=bar,
                give_up_after=args.give_up_after,
                redispatch_after=args.redispatch_after or REDISPATCH_AFTER,
            )
    except ExportInputError as exc:
        raise UsageError(str(exc)) from None
    except ExportStalledError as exc:
        print(f"sendai-async: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if client is not None:
            await client.aclose()
    for line in summary.lines():
        print(line, file=sys.stderr)
    print(f"output    {out_dir}/part-*.jsonl, errors.jsonl, manifest.json", file=sys.stderr)
    return EXIT_OK if summary.failed == 0 else EXIT_FAILED


# -- sandbox and demo ---------------------------------------------------------------


async def _cmd_sandbox(args: argparse.Namespace) -> int:
    from ..testing import LARGE, SMALL, SandboxServer  # noqa: PLC0415

    sandbox = SandboxServer(
        tasks=args.tasks,
        seed=args.seed,
        fault_rate=args.fault_rate,
        latency=args.latency / 1000,
        host=args.host,
        port=args.port,
        shape=LARGE if args.large else SMALL,
        api_key=args.key,
    )
    async with sandbox:
        print(f"SENDAI_BASE_URL={sandbox.base_url}")
        print(f"SENDAI_API_KEY={sandbox.api_key}")
        print(f"SENDAI_TEAM_ID={sandbox.team_id}")
        print(
            f"# project: {sandbox.project_id}; tasks task_000000..{sandbox.task_id(args.tasks - 1)}"
        )
        print("# serving until interrupted (Ctrl-C)", flush=True)
        await asyncio.Event().wait()
    return EXIT_OK  # pragma: no cover -- only left by an interrupt


async def _cmd_demo(args: argparse.Namespace) -> int:
    if args.workers:
        return await _cluster_demo(args)
    from ._demo import run_demo  # noqa: PLC0415

    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir}: not a directory")
    print(
        f"sendai-async demo: bulk-fetching {args.tasks} tasks from a local sandbox that "
        f"injects faults into {args.fault_rate:.0%} of responses",
        file=sys.stderr,
    )
    summary, sandbox, out, lifecycle = await run_demo(
        tasks=args.tasks,
        fault_rate=args.fault_rate,
        concurrency=args.concurrency,
        seed=args.seed,
        out_dir=out_dir,
        progress=not args.no_progress,
    )
    faults = ", ".join(f"{kind} x{count}" for kind, count in sorted(sandbox.stats.faults.items()))
    for line in summary.lines()[:2] + summary.lines()[3:]:
        print(line)
    print(f"faults    {sum(sandbox.stats.faults.values())} injected ({faults or 'none'})")
    print(f"output    {out}")
    delivered = summary.fetched == args.tasks and summary.failed == 0
    if delivered:
        print(f"OK: every one of the {args.tasks} tasks was delivered despite the faults.")
    else:
        print(f"INCOMPLETE: {summary.failed} tasks failed; see {out.with_name('errors.jsonl')}")
    print("\nthe whole loop: upload, wait, fetch, approve half, complete the rest")
    for line in lifecycle.lines:
        print(line)
    print("OK: the loop went through." if lifecycle.ok else "INCOMPLETE: see above.")
    return EXIT_OK if delivered and lifecycle.ok else EXIT_FAILED


async def _cluster_demo(args: argparse.Namespace) -> int:
    from ..testing._redis_server import ENV_BINARY, redis_binary  # noqa: PLC0415
    from ._cluster_demo import run_cluster_demo  # noqa: PLC0415

    if redis_binary() is None:
        raise UsageError(
            "the cluster demo needs a redis-server (or valkey-server) binary: "
            f"`apt-get install redis-server`, or point {ENV_BINARY} at one"
        )
    tasks = args.tasks if args.tasks != _DEMO_TASKS else _CLUSTER_DEMO_TASKS
    return await run_cluster_demo(tasks=tasks, workers=args.workers, fault_rate=args.fault_rate)


# -- parsing --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _api_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--project", required=True, help="project ID")
    command.add_argument("--team", help="team ID (default: SENDAI_TEAM_ID)")
    command.add_argument("--base-url", help="API root (default: SENDAI_BASE_URL or api.send.ai)")


def _add_task_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the one-task commands: the four actions, ``wait`` and ``upload``."""
    for action, summary in [
        ("approve", "approve a task"),
        ("disapprove", "withdraw a task's approval"),
        ("complete", "complete a task under review"),
        ("discard", "discard a task under review"),
    ]:
        command = commands.add_parser(action, help=f"{summary}; print the task as JSON")
        command.add_argument("task_id")
        _api_options(command)
        command.set_defaults(handler=_cmd_action)

    wait = commands.add_parser("wait", help="poll a task until it leaves PROCESSING")
    wait.add_argument("task_id")
    _api_options(wait)
    wait.add_argument(
        "--until",
        action="append",
        choices=[status.value for status in TaskStatus],
        help="status to wait for (repeatable; default: anything but PROCESSING)",
    )
    wait.add_argument("--max-wait", type=_positive_float, default=600.0, help="seconds")
    wait.add_argument("--poll-interval", type=_positive_float, default=1.0, help="seconds")
    wait.set_defaults(handler=_cmd_wait)

    upload = commands.add_parser("upload", help="upload documents; print the upload as JSON")
    upload.add_argument("files", nargs="+", metavar="FILE")
    _api_options(upload)
    upload.add_argument("--name", help="a name for the upload")
    upload.add_argument(
        "--meta", action="append", metavar="NAME=VALUE", help="metadata (repeatable)"
    )
    upload.add_argument(
        "--timeout", type=_positive_float, default=300.0, help="seconds per attempt"
    )
    upload.set_defaults(handler=_cmd_upload)


def _add_export_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker`` and ``export``: the distributed export on Celery."""
    worker = commands.add_parser("worker", help="run a Celery worker for distributed exports")
    worker.add_argument("--broker", required=True, help="redis://HOST:PORT/DB")
    worker.add_argument("--concurrency", type=_positive_int, default=2, help="processes")
    worker.add_argument("--hostname", help="Celery node name (default: celery@HOST)")
    worker.add_argument("--loglevel", default="WARNING")
    worker.set_defaults(handler=_cmd_worker)

    export = commands.add_parser("export", help="bulk-fetch through Celery workers (resumable)")
    _api_options(export)
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--ids", help="file of task IDs, one per line, or - for stdin")
    source.add_argument("--all", action="store_true", help="every task the listing yields")
    export.add_argument("--out", required=True, help="directory every worker can write to")
    export.add_argument("--broker", required=True, help="redis://HOST:PORT/DB")
    export.add_argument("--chunk-size", type=_positive_int, default=500)
    export.add_argument("--rate-limit", type=_positive_float, help="requests/s, fleet-wide")
    export.add_argument(
        "--give-up-after",
        type=_positive_float,
        metavar="SECONDS",
        help="stop waiting (exit 1, resumable) when no chunk finished for this long",
    )
    export.add_argument(
        "--redispatch-after",
        type=_positive_float,
        metavar="SECONDS",
        help="send unfinished chunks again when none finished for this long (a worker "
        "killed at the wrong moment can lose its chunk's message), each at most once; "
        "default 60",
    )
    export.add_argument("--no-progress", action="store_true")
    export.set_defaults(handler=_cmd_export)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendai-async",
        description="Fetch Send AI tasks. The API key is read from SENDAI_API_KEY.",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (auto: uvloop when installed)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    get = commands.add_parser("get", help="print one task's payload as JSON")
    get.add_argument("task_id")
    _api_options(get)
    get.set_defaults(handler=_cmd_get)

    _add_task_commands(commands)

    fetch = commands.add_parser("fetch", help="bulk-fetch tasks to JSONL (resumable)")
    _api_options(fetch)
    source = fetch.add_mutually_exclusive_group(required=True)
    source.add_argument("--ids", help="file of task IDs, one per line, or - for stdin")
    source.add_argument(
        "--all",
        action="store_true",
        help="every task the project's listing yields (GET .../project/P/tasks, token-paged)",
    )
    fetch.add_argument("--out", required=True, help="JSONL output; re-running resumes it")
    fetch.add_argument("--errors", help="JSONL of failed IDs (default: OUT.errors.jsonl)")
    fetch.add_argument("--concurrency", type=_positive_int, default=16)
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=_cmd_fetch)

    _add_export_commands(commands)

    sandbox = commands.add_parser("sandbox", help="run the local sandbox server")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--tasks", type=_positive_int, default=1000)
    sandbox.add_argument("--fault-rate", type=_rate, default=0.0)
    sandbox.add_argument("--latency", type=float, default=0.0, help="milliseconds per response")
    sandbox.add_argument("--seed", type=int, default=0)
    sandbox.add_argument("--large", action="store_true", help="20-page tasks")
    sandbox.add_argument("--key", help="API key to accept (default: random)")
    sandbox.set_defaults(handler=_cmd_sandbox)

    demo = commands.add_parser("demo", help="bulk-fetch from a faulty local sandbox")
    demo.add_argument(
        "--tasks",
        type=_positive_int,
        default=_DEMO_TASKS,
        help=f"{_DEMO_TASKS}; {_CLUSTER_DEMO_TASKS} with --workers",
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        help="run the distributed export demo with this many Celery workers",
    )
    demo.add_argument("--fault-rate", type=_rate, default=0.03)
    demo.add_argument("--concurrency", type=_positive_int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out-dir", help="where to write tasks.jsonl (default: a temp dir)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _fail(message: str, code: int) -> NoReturn:
    print(f"sendai-async: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return its exit status."""
    args = _parser().parse_args(argv)
    # The command line owns its process: the startup heap is never garbage (freeze it out
    # of every collection), and bulk commands build objects faster than the default
    # collector thresholds suit (see _gc.py). Both are undone on return, for callers that
    # run main() inside a longer-lived process (tests, scripts).
    gc.freeze()
    try:
        return _main(args)
    finally:
        gc.unfreeze()


def _main(args: argparse.Namespace) -> int:
    try:
        with bulk_gc():
            outcome = args.handler(args)
            # Most commands are coroutines; `worker` blocks in Celery's own loop.
            code: int = outcome if isinstance(outcome, int) else _run(outcome, args.loop)
    except (UsageError, ConfigurationError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except SendAIError as exc:
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        summary = getattr(args, "summary", None)
        if summary is not None:  # a fetch: say what was done and how to go on
            for line in summary.lines():
                print(line, file=sys.stderr)
            print(
                "interrupted: run the same command again to resume (IDs already in the "
                "output file are skipped; failed ones are retried)",
                file=sys.stderr,
            )
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
