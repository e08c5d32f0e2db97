"""Path segments: the fast path for plain IDs and the full encoding agree on every string."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sendai_async import ConfigurationError
from sendai_async._paths import path_segment


def _reference(value: str) -> str:
    """The encoding every segment must get: all reserved characters, dot-only segments."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment


_ID_ALPHABET = st.sampled_from("abcXYZ019_-~./%?#é \x00")


@given(st.text(_ID_ALPHABET, min_size=1, max_size=12) | st.text(min_size=1, max_size=12))
def test_every_id_is_encoded_like_the_reference(value: str) -> None:
    try:
        expected = _reference(value)
    except UnicodeEncodeError:
        with pytest.raises(ConfigurationError):
            path_segment(value, "task_id")
        return
    assert path_segment(value, "task_id") == expected


@pytest.mark.parametrize("value", [".", "..", "...", "a/b", "a%2Fb", "ta sk", "tâsk"])
def test_ids_that_need_encoding_do_not_take_the_fast_path(value: str) -> None:
    assert path_segment(value, "task_id") == _reference(value)
    assert path_segment(value, "task_id") != value


@pytest.mark.parametrize("value", ["", None, 5, b"task_1"])
def test_non_strings_and_empty_ids_are_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="task_id must be a non-empty string"):
        path_segment(value, "task_id")
