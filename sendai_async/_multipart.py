"""Upload bodies: files checked before any request, streamed from disk, replayable.

A multipart body is rebuilt for every attempt, and every file is sent from its start each
time: a path is opened again, a seekable file object is rewound to where it stood when it
was given. aiohttp's own file payloads close the file after sending, which would make a
retry after a 429 impossible and close the caller's file behind their back, so files go
through ``_FilePart``, which reads in chunks on a worker thread and never closes what it
did not open.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
import attrs
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from ._errors import ConfigurationError
from ._models import MetaItem
from ._paths import shown

MAX_FILES = 100
# The docs say "40 MB" without saying which megabyte; the larger reading is refused here,
# and anything between the two is the server's to decide (a typed 413).
MAX_FILE_BYTES = 40 * 1024 * 1024
_CHUNK = 256 * 1024

BinaryStream = IO[bytes] | io.RawIOBase | io.BufferedIOBase
FileSource = str | os.PathLike[str] | tuple[str, bytes | bytearray | memoryview | BinaryStream]
Files = FileSource | Sequence[FileSource]
Meta = Mapping[str, Any] | Sequence[Mapping[str, Any] | MetaItem]


@attrs.frozen
class _File:
    """One file to upload: where its bytes come from, and how many there are."""

    filename: str
    path: Path | None = None
    data: bytes | None = None
    stream: IO[bytes] | None = None
    start: int = 0
    size: int | None = None

    @property
    def replayable(self) -> bool:
        return self.path is not None or self.data is not None or self.size is not None

    @property
    def content_type(self) -> str:
        return mimetypes.guess_type(self.filename)[0] or "application/octet-stream"


class _FilePart(Payload):
    """A file part streamed in chunks from a path or a caller's file object."""

    def __init__(self, file: _File) -> None:
        super().__init__(file, filename=file.filename, content_type=file.content_type)
        self._size = file.size
        self._file = file

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # pragma: no cover
        """Refuse: an upload is never turned into text (aiohttp only asks for logging)."""
        return f"<file {self._file.filename}>"

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write the file from its start, a chunk at a time."""
        file = self._file
        loop = asyncio.get_running_loop()
        if file.path is not None:
            stream: IO[bytes] = await loop.run_in_executor(None, file.path.open, "rb")
        else:
            stream = file.stream  # type: ignore[assignment]
            if file.size is not None:  # seekable: every attempt starts where the caller was
                await loop.run_in_executor(None, stream.seek, file.start)
        try:
            while chunk := await loop.run_in_executor(None, stream.read, _CHUNK):
                await writer.write(chunk)
        finally:
            if file.path is not None:
                stream.close()


class Multipart:
    """The multipart body of an upload: form fields plus files, rebuilt per attempt."""

    def __init__(self, files: Sequence[_File], fields: Mapping[str, str]) -> None:
        self._files = files
        self._fields = fields

    @property
    def replayable(self) -> bool:
        """Whether every file can be sent again from its start."""
        return all(file.replayable for file in self._files)

    def form(self) -> aiohttp.MultipartWriter:
        """Build the body for one attempt."""
        writer = aiohttp.MultipartWriter("form-data")
        for file in self._files:
            part: Payload
            if file.data is not None:
                part = aiohttp.payload.BytesPayload(
                    file.data, filename=file.filename, content_type=file.content_type
                )
            else:
                part = _FilePart(file)
            part.set_content_disposition("form-data", name="file", filename=file.filename)
            writer.append_payload(part)
        for name, value in self._fields.items():
            field = writer.append(value, {"Content-Type": "text/plain; charset=utf-8"})
            field.set_content_disposition("form-data", name=name)
        return writer

    def close(self) -> None:
        """Release nothing: paths are opened and closed per attempt, streams are the caller's."""


def build_upload(
    files: Files,
    *,
    project_id: str,
    name: str | None,
    meta: Meta | None,
) -> Multipart:
    """Check an upload's files and fields and prepare its body; no request is made.

    Raises:
        ConfigurationError: no files, more than 100, a file over 40 MB, a missing path,
            a text-mode file, or bad ``meta``.

    """
    checked = [_check(source) for source in _as_list(files)]
    if not checked:
        raise ConfigurationError("an upload needs at least one file")
    if len(checked) > MAX_FILES:
        raise ConfigurationError(
            f"an upload takes at most {MAX_FILES} files (the API's limit), got {len(checked)}"
        )
    for file in checked:
        if file.size is not None and file.size > MAX_FILE_BYTES:
            raise ConfigurationError(
                f"file {shown(file.filename)} is {file.size} bytes, over the API's limit of "
                f"40 MB per file"
            )
    fields = {"projectId": project_id}
    if name is not None:
        if not isinstance(name, str):
            raise ConfigurationError(f"name must be a string, got {type(name).__name__}")
        fields["name"] = name
    if meta is not None:
        fields["meta"] = orjson.dumps(_meta_items(meta)).decode()
    return Multipart(checked, fields)


def _as_list(files: Files) -> list[Any]:
    if isinstance(files, (str, os.PathLike)) or _is_pair(files):
        return [files]
    if isinstance(files, Sequence):
        return list(files)
    raise ConfigurationError(
        "files must be a path, a (filename, bytes or binary file) pair, or a sequence of "
        f"those; got {type(files).__name__}"
    )


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and (isinstance(value[1], (bytes, bytearray, memoryview)) or hasattr(value[1], "read"))
    )


def _check(source: object) -> _File:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read file {shown(str(path))}: {exc.strerror}"
            ) from None
        if not path.is_file():
            raise ConfigurationError(f"{shown(str(path))} is not a regular file")
        return _File(filename=path.name, path=path, size=size)
    if not _is_pair(source):
        raise ConfigurationError(
            "each file must be a path or a (filename, bytes or binary file) pair, got "
            f"{type(source).__name__}"
        )
    filename: str = source[0]  # type: ignore[index]
    content: Any = source[1]  # type: ignore[index]
    if not filename:
        raise ConfigurationError("a file's name must not be empty")
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        return _File(filename=filename, data=data, size=len(data))
    if isinstance(content, io.TextIOBase):
        raise ConfigurationError(f"file {shown(filename)} is open in text mode; open it with 'rb'")
    return _stream_file(filename, content)


def _stream_file(filename: str, stream: IO[bytes]) -> _File:
    try:
        seekable = stream.seekable()
    except (AttributeError, ValueError, OSError):
        seekable = False
    if not seekable:
        # Sent once, chunk by chunk; its size is unknown, so it cannot be checked or replayed.
        return _File(filename=filename, stream=stream)
    start = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(start)
    return _File(filename=filename, stream=stream, start=start, size=end - start)


def _meta_items(meta: Meta) -> list[dict[str, Any]]:
    if isinstance(meta, Mapping):
        return [{"name": str(key), "value": value} for key, value in meta.items()]
    items: list[dict[str, Any]] = []
    entries: list[object] = list(meta)  # checked one by one: callers pass anything
    for item in entries:
        if isinstance(item, MetaItem):
            items.append({"name": item.name, "value": item.value})
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            items.append({"name": item["name"], "value": item.get("value")})
        else:
            raise ConfigurationError(
                "meta must be a mapping or a sequence of {'name': ..., 'value': ...} items"
            )
    return items
