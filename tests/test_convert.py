"""Decoding task bodies: exact structuring, round trips, forward compatibility, clear errors."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aioresponses import aioresponses
from hypothesis import given, settings
from hypothesis import strategies as st

from sendai_async import (
    DecodeError,
    Point,
    SendAI,
    StepType,
    Task,
    TaskStatus,
)
from sendai_async._convert import (
    _parse_iso_fallback,
    decode_task,
    parse_datetime,
    structure_task,
)

from .conftest import CANARY_KEY, SEED_BODY, SEED_DOC

URL = "https://api.send.ai/v2/team_123456/project/proj_123456/task/task_abcdef123456"


async def test_seed_example_structures_exactly(mock_api: aioresponses) -> None:
    """The Get Task page's example response becomes exactly the documented task."""
    mock_api.get(URL, body=SEED_BODY, content_type="application/json")
    async with SendAI(CANARY_KEY, team_id="team_123456") as sendai:
        task = await sendai.tasks.get("task_abcdef123456", project_id="proj_123456")
    assert task.id == "task_abcdef123456"
    assert task.name == "Document Analysis Task"
    assert task.created_at == datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)
    assert task.meta_dict == {"category": "invoice"}
    assert task.status is TaskStatus.REVIEWING
    assert task.step_type is StepType.EXTRACT
    assert (task.upload_id, task.project_id, task.approved) == (
        "upl_123456789",
        "proj_123456",
        False,
    )
    assert task.exported_at is None
    assert task.export_failed_at is None
    assert task.last_opened_at == datetime(2024, 1, 15, 11, 45, tzinfo=timezone.utc)
    page = task.pages[0]
    assert (page.id, page.width, page.height) == ("page_1", 2480, 3508)
    annotation = page.annotations[0]
    assert (annotation.entity_id, annotation.content, annotation.confidence) == (
        "total_amount",
        "$1,234.56",
        0.98,
    )
    assert (annotation.top, annotation.left_of_line) == (120.5, 340.0)
    assert page.checkboxes[0].checked is True
    assert page.checkboxes[0].coordinates == (
        Point(x=100, y=100),
        Point(x=120, y=100),
        Point(x=120, y=120),
        Point(x=100, y=120),
    )
    assert page.segments[0].coordinates[2] == Point(x=400, y=200)
    assert page.signatures[0].confidence == 0.83
    assert list(task.iter_annotations()) == [annotation]
    assert not task.is_terminal


def test_to_dict_round_trips_seed_byte_for_byte() -> None:
    """Structuring the seed and unstructuring it gives back the same JSON."""
    task = decode_task(SEED_BODY)
    assert task.to_dict() == SEED_DOC["payload"]
    assert orjson.dumps(task.to_dict()) == orjson.dumps(SEED_DOC["payload"])


def _payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(SEED_DOC["payload"])
    payload.update(changes)
    return payload


def test_unknown_fields_are_ignored() -> None:
    task = structure_task(_payload(brand_new_field={"x": 1}))
    assert task.id == "task_abcdef123456"


@pytest.mark.parametrize(
    ("field", "value", "enum_cls"),
    [
        pytest.param("status", "ARCHIVED", TaskStatus, id="status-archived"),
        pytest.param("step_type", "TRANSLATE", StepType, id="step-translate"),
    ],
)
def test_unknown_enum_values_are_kept(
    field: str, value: str, enum_cls: type[TaskStatus] | type[StepType]
) -> None:
    """A status the SDK has never heard of structures fine and says it is unknown."""
    task = structure_task(_payload(**{field: value}))
    member: TaskStatus | StepType = getattr(task, field)
    assert isinstance(member, enum_cls)
    assert member.value == value
    assert not member.is_known
    assert member == value
    assert task.to_dict()[field] == value
    assert TaskStatus.COMPLETED.is_known


def test_unknown_status_is_not_terminal() -> None:
    assert not structure_task(_payload(status="ARCHIVED")).is_terminal
    assert structure_task(_payload(status="COMPLETED")).is_terminal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2024-01-15T10:30:00Z", datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc), id="zulu"
        ),
        pytest.param(
            "2024-01-15T10:30:00.5Z",
            datetime(2024, 1, 15, 10, 30, 0, 500000, tzinfo=timezone.utc),
            id="one-digit-fraction",
        ),
        pytest.param(
            "2024-01-15T10:30:00.123456789Z",
            datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=timezone.utc),
            id="nanoseconds",
        ),
        pytest.param(
            "2024-01-15T12:30:00+02:00",
            datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc),
            id="offset",
        ),
        pytest.param(
            "2024-01-15T10:30:00",
            datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc),
            id="naive-is-utc",
        ),
    ],
)
def test_parse_datetime_gives_aware_datetimes(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_parse_datetime_fallback_handles_what_310_cannot() -> None:
    """The regex fallback (used on 3.10) reads Z, short fractions and +HHMM offsets."""
    assert _parse_iso_fallback("2024-01-15T10:30:00.5Z") == datetime(
        2024, 1, 15, 10, 30, 0, 500000, tzinfo=timezone.utc
    )
    assert _parse_iso_fallback("2024-01-15T10:30:00-0130").utcoffset() == -timedelta(
        hours=1, minutes=30
    )


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param(b"<html>oops</html>", None, id="not-json"),
        pytest.param(b"[]", "$", id="not-an-object"),
        pytest.param(b'{"data": {}}', "payload", id="no-payload"),
        pytest.param(b'{"payload": null}', "payload", id="null-payload"),
        pytest.param(
            orjson.dumps({"payload": _payload(pages="x")}), "payload.pages", id="pages-string"
        ),
        pytest.param(
            orjson.dumps({"payload": _payload(pages=[{"id": "p", "width": "x"}])}),
            "payload.pages[0].width",
            id="width-string",
        ),
        pytest.param(
            orjson.dumps({"payload": {k: v for k, v in _payload().items() if k != "id"}}),
            "payload.id",
            id="missing-id",
        ),
        pytest.param(
            orjson.dumps({"payload": _payload(approved="yes")}),
            "payload.approved",
            id="approved-string",
        ),
        pytest.param(
            orjson.dumps({"payload": _payload(created_at="yesterday")}),
            "payload.created_at",
            id="bad-date",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "payload": _payload(
                        pages=[
                            {
                                "id": "p",
                                "segments": [{"id": "s", "confidence": 1, "coordinates": [[0, 0]]}],
                            }
                        ]
                    )
                }
            ),
            "payload.pages[0].segments[0].coordinates",
            id="three-points-short",
        ),
    ],
)
def test_bad_bodies_raise_decode_error_naming_the_field(body: bytes, path: str | None) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_task(body)
    assert caught.value.path == path
    if path is not None:
        assert path in str(caught.value)


def test_nullable_fields_accept_null() -> None:
    task = structure_task(_payload(pages=[{"id": "p", "width": None, "height": None}]))
    assert task.pages[0].width is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _dumps(value: Any) -> bytes:
    # The stdlib encoder, so bodies may hold integers beyond 64 bits, as a server's may.
    return json.dumps(value).encode()


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    """Task payloads with random fields replaced by arbitrary JSON."""
    fields = list(SEED_DOC["payload"])
    return st.dictionaries(st.sampled_from(fields), json_values, max_size=4).map(
        lambda m: _payload(**m)
    )


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        json_values.map(_dumps),
        _mutations().map(lambda p: _dumps({"payload": p})),
        st.binary(max_size=32),
    )
)
def test_any_body_gives_a_task_or_a_decode_error(body: bytes) -> None:
    """Arbitrary bodies produce either a Task or a DecodeError, never anything else."""
    try:
        result = decode_task(body)
    except DecodeError:
        return
    assert isinstance(result, Task)
