"""``sendai.uploads``: send documents (each file becomes a task), read and move uploads."""

from __future__ import annotations

from .._config import Timeout, coerce_timeout
from .._convert import decode_upload
from .._http import Requester
from .._models import Upload
from .._multipart import Files, Meta, build_upload
from .._paths import project_path


class Uploads:
    """Operations on uploads; reached as ``sendai.uploads``."""

    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    async def create(
        self,
        files: Files,
        *,
        project_id: str,
        name: str | None = None,
        meta: Meta | None = None,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Upload:
        """Upload 1 to 100 documents into a project; each file becomes a task.

        Files are streamed from disk, never read whole into memory. Everything is checked
        before any request. After a 429 or a refused connection the upload is sent again
        with every file from its start; after an ambiguous failure (reset, timeout, 5xx)
        it is not, since that could create the tasks twice: the error then has
        ``outcome_unknown`` set.

        Args:
            files: A path, a ``(filename, bytes | binary file)`` pair, or a sequence of
                those. The content type is guessed from each file name.
            project_id: The project to upload into (it must allow import via API).
            name: A name for the upload.
            meta: Metadata for the tasks: a mapping, or ``{"name", "value"}`` items.
            team_id: Overrides the client's team.
            timeout: Overrides the per-attempt ``Timeout``; large files need a long one.

        Raises:
            ConfigurationError: no files, more than 100, a file over 40 MB, an unreadable
                path or bad ``meta`` (before any request).
            ContentTooLargeError: the server refused the size (HTTP 413).

        """
        team = self._requester.team(team_id)
        path = project_path(team, project_id, "upload")
        body = build_upload(files, project_id=project_id, name=name, meta=meta)
        return await self._requester.request(
            "POST",
            path,
            decode=decode_upload,
            idempotent=False,
            files=body,
            timeout=coerce_timeout(timeout),
        )

    async def get(
        self,
        upload_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Upload:
        """Fetch one upload."""
        team = self._requester.team(team_id)
        return await self._requester.request(
            "GET",
            project_path(team, project_id, "upload", (upload_id, "upload_id")),
            decode=decode_upload,
            idempotent=True,
            timeout=coerce_timeout(timeout),
        )

    async def move(
        self,
        upload_id: str,
        folder_id: str,
        *,
        project_id: str,
        team_id: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> Upload:
        """Move an upload into a folder; returns it with the new ``folder_id``.

        Moving twice to the same folder ends in the same state, so this is retried like a
        read.
        """
        team = self._requester.team(team_id)
        path = project_path(
            team, project_id, "upload", (upload_id, "upload_id"), "move", (folder_id, "folder_id")
        )
        return await self._requester.request(
            "POST",
            path,
            decode=decode_upload,
            idempotent=True,
            timeout=coerce_timeout(timeout),
        )
