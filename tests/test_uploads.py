"""Uploads against a real server on 127.0.0.1: multipart contents, limits, retries, memory."""

from __future__ import annotations

import email
import email.policy
import io
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from sendai_async import (
    ConfigurationError,
    ContentTooLargeError,
    DecodeError,
    MetaItem,
    SendAI,
    TransportError,
    Upload,
)

from .conftest import Handler, ScriptedServer, json_response, reset_before_response

CREATED = {
    "id": "upl_1",
    "name": "batch",
    "projectId": "proj_1",
    "status": "processing",
    "fileType": "application/pdf",
    "fileSize": 11,
    "createdAt": "2024-01-15T10:30:00Z",
    "updatedAt": "2024-01-15T10:30:00Z",
}
FETCHED = {
    "payload": {
        "id": "upl_1",
        "name": "batch",
        "status": "IN_REVIEW",
        "files": [{"name": "a.pdf"}],
        "meta": [{"name": "source", "value": "scanner"}],
        "folder_id": "fold_9",
        "created_at": "2024-01-15T10:30:00Z",
    }
}


def parts_of(body: bytes | None, content_type: str) -> list[dict[str, Any]]:
    """Parse a multipart body (with the standard library's parser): one dict per part."""
    assert body is not None
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert message.is_multipart()
    return [
        {
            "name": part.get_param("name", header="content-disposition"),
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "data": part.get_payload(decode=True),
        }
        for part in message.iter_parts()
    ]


async def test_create_sends_files_and_fields_as_multipart(
    client: SendAI, server: ScriptedServer, tmp_path: Path
) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(b"%PDF-1.7 one")
    stream = io.BytesIO(b"xxPNG-two")
    stream.seek(2)  # sent from where the caller left it
    server.play(json_response(200, CREATED))
    upload = await client.uploads.create(
        [path, ("scan.png", stream), ("notes.txt", b"three")],
        project_id="proj_1",
        name="batch",
        meta={"source": "scanner", "pages": 3},
    )
    request = server.requests[0]
    assert request.method == "POST"
    assert request.raw_path == "/v2/team_1/project/proj_1/upload"
    parts = parts_of(server.bodies[0], request.headers["Content-Type"])
    files = [p for p in parts if p["name"] == "file"]
    assert [(p["filename"], p["content_type"], p["data"]) for p in files] == [
        ("invoice.pdf", "application/pdf", b"%PDF-1.7 one"),
        ("scan.png", "image/png", b"PNG-two"),
        ("notes.txt", "text/plain", b"three"),
    ]
    fields = {p["name"]: p["data"] for p in parts if p["name"] != "file"}
    assert fields["projectId"] == b"proj_1"
    assert fields["name"] == b"batch"
    assert orjson.loads(fields["meta"]) == [
        {"name": "source", "value": "scanner"},
        {"name": "pages", "value": 3},
    ]
    assert not stream.closed  # the caller's file is the caller's to close
    assert upload == Upload(
        id="upl_1",
        name="batch",
        project_id="proj_1",
        status="processing",
        file_type="application/pdf",
        file_size=11,
        created_at=upload.created_at,
        updated_at=upload.updated_at,
    )
    assert upload.created_at is not None
    assert upload.created_at.tzinfo is not None


async def test_get_and_move_read_the_payload_shape(client: SendAI, server: ScriptedServer) -> None:
    server.play(json_response(200, FETCHED))
    upload = await client.uploads.get("upl_1", project_id="proj_1")
    assert upload.status == "IN_REVIEW"
    assert upload.folder_id == "fold_9"
    assert upload.meta == (MetaItem(name="source", value="scanner"),)
    assert upload.files == ({"name": "a.pdf"},)
    moved = await client.uploads.move("upl_1", "fold/9", project_id="proj_1")
    assert moved.id == "upl_1"
    assert server.requests[1].method == "POST"
    assert server.raw_paths[1] == "/v2/team_1/project/proj_1/upload/upl_1/move/fold%2F9"


async def test_a_bad_upload_body_names_the_field(client: SendAI, server: ScriptedServer) -> None:
    server.play(json_response(200, {"payload": {"id": "upl_1", "file_size": "big"}}))
    with pytest.raises(DecodeError) as caught:
        await client.uploads.get("upl_1", project_id="proj_1")
    assert caught.value.path == "payload.file_size"
    assert caught.value.attempts == 1


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param([], "at least one file", id="none"),
        pytest.param([("a.pdf", b"x")] * 101, "at most 100", id="101-files"),
        pytest.param("/no/such/file.pdf", "cannot read", id="missing-path"),
        pytest.param(("a.txt", io.StringIO("text")), "text mode", id="text-stream"),
        pytest.param(42, "files must be", id="not-a-file"),
    ],
)
async def test_bad_files_are_refused_before_any_request(
    client: SendAI, server: ScriptedServer, files: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await client.uploads.create(files, project_id="proj_1")
    assert server.requests == []


async def test_a_file_over_40_mb_is_refused_naming_it(
    client: SendAI, server: ScriptedServer, tmp_path: Path
) -> None:
    big = tmp_path / "huge.pdf"
    with big.open("wb") as stream:
        stream.truncate(41 * 1024 * 1024)  # sparse: no 41 MB written
    with pytest.raises(ConfigurationError, match=r"huge\.pdf.*40 MB"):
        await client.uploads.create(big, project_id="proj_1")
    assert server.requests == []


async def test_413_is_a_typed_error(client: SendAI, server: ScriptedServer) -> None:
    server.play(json_response(413, {"error": "file exceeds 40 MB"}))
    with pytest.raises(ContentTooLargeError, match="40 MB"):
        await client.uploads.create(("a.pdf", b"x"), project_id="proj_1")
    assert len(server.requests) == 1


async def test_429_resends_every_file_from_its_start(
    client: SendAI, server: ScriptedServer, tmp_path: Path
) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"from disk")
    stream = io.BytesIO(b"from a stream")
    server.play(
        json_response(429, {"error": "slow"}, headers={"retry-after-ms": "5"}),
        json_response(200, CREATED),
    )
    await client.uploads.create([path, ("b.pdf", stream)], project_id="proj_1")
    assert len(server.requests) == 2
    first, second = (
        parts_of(body, r.headers["Content-Type"])
        for body, r in zip(server.bodies, server.requests, strict=True)
    )
    assert [p["data"] for p in first] == [p["data"] for p in second]
    assert [p["data"] for p in second if p["name"] == "file"] == [b"from disk", b"from a stream"]


async def test_an_ambiguous_failure_is_not_retried_and_says_so(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(reset_before_response(), json_response(200, CREATED))
    with pytest.raises(TransportError) as caught:
        await client.uploads.create(("a.pdf", b"x"), project_id="proj_1")
    assert len(server.requests) == 1
    assert caught.value.outcome_unknown
    assert "outcome unknown" in str(caught.value)


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


async def test_a_non_seekable_stream_is_sent_once_and_never_replayed(
    client: SendAI, server: ScriptedServer
) -> None:
    server.play(
        json_response(429, {"error": "slow"}, headers={"retry-after-ms": "5"}),
        json_response(200, CREATED),
    )
    with pytest.raises(TransportError, match="non-seekable"):
        await client.uploads.create(("pipe.pdf", _Unseekable(b"once")), project_id="proj_1")
    assert len(server.requests) == 1


def _discarding_server() -> Handler:
    """Read the upload in chunks and forget it, as a server streaming to storage would."""

    async def handler(request: web.Request) -> web.StreamResponse:
        while await request.content.read(256 * 1024):
            pass
        return await json_response(200, CREATED)(request)

    return handler


async def test_a_30_mb_upload_is_streamed_not_read_into_memory(
    client: SendAI, server: ScriptedServer, tmp_path: Path
) -> None:
    path = tmp_path / "big.pdf"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as stream:
        for _ in range(30):
            stream.write(chunk)
    server.play(_discarding_server())
    await client.uploads.create(("warm.pdf", b"x"), project_id="proj_1")  # open the pool first
    tracemalloc.start()
    try:
        await client.uploads.create(path, project_id="proj_1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.requests[-1].content_length is not None
    assert server.requests[-1].content_length > 30 * 1024 * 1024
    assert peak < 8 * 1024 * 1024
