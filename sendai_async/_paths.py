"""URL paths of the API, built in one place from opaque, percent-encoded IDs.

Every path parameter is an opaque string: whatever it holds (``/``, ``?``, ``..``, a
5,000-character ID), it stays one segment and never changes which endpoint is called.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

from ._errors import ConfigurationError

_SHOWN_ID_LIMIT = 80
# IDs as the API issues them (``task_abc123``) need no encoding: recognising them is about
# three times cheaper than running quote() on every ID of a bulk job. No dot is allowed,
# so a dot-only segment always takes the full path below.
_ALREADY_SAFE = re.compile(r"[A-Za-z0-9_~-]+").fullmatch


def shown(value: object) -> str:
    """Return ``repr(value)``, shortened so a hostile or huge ID cannot flood a message."""
    text = repr(value)
    if len(text) <= _SHOWN_ID_LIMIT:
        return text
    return f"{text[: _SHOWN_ID_LIMIT - 20]}...({len(text)} characters)"


def path_segment(value: object, name: str) -> str:
    """Percent-encode one path segment so that no ID can change the path.

    Nothing is left unencoded (``/``, ``?``, ``#``, ``%`` all are), and a segment made only
    of dots is encoded too, since ``.`` and ``..`` would otherwise be resolved as
    directory steps by URL normalisation.

    Raises:
        ConfigurationError: ``value`` is not a non-empty string that UTF-8 can encode.

    """
    if type(value) is str and _ALREADY_SAFE(value):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty string, got {shown(value)}")
    try:
        segment = quote(value, safe="")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. from a file decoded with surrogateescape) has no UTF-8 form.
        raise ConfigurationError(
            f"{name} {shown(value)} is not valid text (it holds a lone surrogate)"
        ) from None
    if segment.strip(".") == "":
        segment = segment.replace(".", "%2E")
    return segment


@functools.lru_cache(maxsize=256)
def _project_prefix(team: str, project_id: str) -> str:
    return f"/v2/{path_segment(team, 'team_id')}/project/{path_segment(project_id, 'project_id')}"


def project_path(team: str, project_id: object, *segments: tuple[object, str] | str) -> str:
    """Return ``/v2/{team}/project/{project}/...`` with every ID encoded.

    Each of ``segments`` is a literal path part (``"task"``) or a ``(value, name)`` pair for
    an ID, ``name`` being the argument to blame when the value is bad.

    Raises:
        ConfigurationError: an ID is not a non-empty string.

    """
    if not isinstance(project_id, str):
        # Refused here with a clear error: the cache below would raise TypeError on a list.
        raise ConfigurationError(f"project_id must be a non-empty string, got {shown(project_id)}")
    # Teams and projects repeat across every call of a batch: encode them once.
    parts = [s if isinstance(s, str) else path_segment(*s) for s in segments]
    return "/".join([_project_prefix(team, project_id), *parts])


def listing_path(team: str, path: str) -> str:
    """Build ``/v2/{team}/{path}``, refusing paths that would climb out of the team.

    Raises:
        ConfigurationError: ``path`` is empty or has a ``.`` or ``..`` segment.

    """
    segments = path.strip("/").split("/")
    if not path.strip("/") or any(s in ("", ".", "..") for s in segments):
        raise ConfigurationError(f"path must be relative to /v2/{{team_id}}, got {shown(path)}")
    encoded = "/".join(path_segment(s, "path") for s in segments)
    return f"/v2/{path_segment(team, 'team_id')}/{encoded}"
