r"""Keep the API key out of every server-controlled string the SDK repeats.

A hostile or broken server (or a proxy in front of it) may echo the Authorization header
back in a body, a header or a malformed status line, and not necessarily verbatim: JSON
escapes (``\\u0073k-...``), percent-encoding, HTML entities, base64, hex, UTF-16. Anything
we embed in an error, a log line or the CLI's output passes through ``Redactor.clean``,
*after* it was decoded (a JSON body is parsed first, then each string in it is cleaned), and
is bounded in length.
"""

from __future__ import annotations

import base64
import binascii
import html
from typing import Any
from urllib.parse import quote, unquote

REDACTED = "[redacted]"
_WHOLLY_REDACTED = "[redacted: the server echoed the API key]"
_MAX_TEXT = 4096
_MAX_DEPTH = 32


def _base64_cores(key: bytes) -> set[str]:
    """Return substrings found in any base64 (standard or URL-safe) text holding ``key``.

    Inside a longer text the key starts at one of three byte alignments. For each, the
    base64 characters whose six bits all come from the key are fixed, whatever surrounds
    it: those are the needles.
    """
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + key).decode()
        first = -(-8 * offset // 6)  # the first character made only of key bits
        end = 8 * (offset + len(key)) // 6  # past the last one
        core = encoded[first:end]
        if len(core) >= 8:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


class Redactor:
    """Replace an API key, in whatever encoding a server echoes it, in text and JSON."""

    __slots__ = ("_key", "_needles")

    def __init__(self, api_key: str) -> None:
        self._key = api_key
        raw = api_key.encode()
        needles = {api_key, quote(api_key, safe=""), quote(api_key)}
        needles |= {raw.hex(), raw.hex().upper()}
        needles |= _base64_cores(raw)
        # Longest first, so that a needle inside another is never replaced half-way.
        self._needles = sorted(needles, key=len, reverse=True)

    def clean(self, text: str, limit: int = _MAX_TEXT) -> str:
        """Return ``text`` without the key, cut to ``limit`` characters."""
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        if self._hidden_in(text):
            return _WHOLLY_REDACTED
        if len(text) > limit:
            text = text[:limit] + f"...({len(text) - limit} more characters)"
        return text

    def _hidden_in(self, text: str) -> bool:
        """Whether the key survives in a decoded form of ``text`` (escaped, entities, ...).

        Decodings are tried in combination, two levels deep, so that an echo escaped twice
        (JSON inside a JSON string, percent-encoded JSON) is found too.
        """
        forms = {text}
        for _ in range(2):
            forms = {decoded for form in forms for decoded in _decodings(form)}
            if any(self._key in form for form in forms):
                return True
        return False

    def clean_json(self, value: Any, _depth: int = 0) -> Any:
        """Return a decoded JSON value with every string (keys included) cleaned."""
        if isinstance(value, str):
            return self.clean(value)
        if _depth > _MAX_DEPTH:
            return REDACTED  # a deeply nested echo is not worth walking: drop it
        if isinstance(value, dict):
            return {self.clean(str(k)): self.clean_json(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.clean_json(item, _depth + 1) for item in value]
        return value

    def clean_bytes(self, body: bytes, limit: int = _MAX_TEXT) -> str:
        """Decode a non-JSON body as text (UTF-8, replacing bad bytes) and clean it."""
        return self.clean(body[: limit * 4].decode("utf-8", "replace"), limit)


def _decodings(text: str) -> set[str]:
    """Return ``text`` and what it reads as under each escaping a server might apply."""
    forms = {text}
    if "%" in text:
        forms.add(unquote(text))
    if "&" in text:
        forms.add(html.unescape(text))
    if "\\" in text:
        forms.add(_unescape(text))
    if "\0" in text:
        forms.add(text.replace("\0", ""))
    return forms


def _unescape(text: str) -> str:
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except (UnicodeDecodeError, binascii.Error):
        return text
