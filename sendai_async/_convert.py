"""The one cattrs converter between the API's JSON and the models, and the task decoder.

Design notes:

* Scalars are checked strictly. cattrs' defaults call ``str()``, ``float()`` and ``bool()``,
  which would turn ``"pages": 5`` into nonsense instead of an error; the API's JSON types
  are documented, so a wrong type is a ``DecodeError`` naming the field.
* Numbers are passed through as the server sent them (``2480`` stays an ``int``,
  ``340.0`` a ``float``), so ``Task.to_dict()`` gives back the same JSON.
* Sequences are structured with a list comprehension (the fast path); only when an element
  fails do we walk the list again to find its index for the error message.
* Attrs classes use cattrs' detailed validation, so every error carries a field path. That
  path is the slow one: valid bodies go through the generated hooks of ``_fastpath``, and
  only a body those refuse (``FastPathMiss``, nothing else) is structured again here, to
  say where it is wrong. The two paths must agree on every body; a property test in
  ``tests/test_fastpath.py`` holds them to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, get_args

import orjson
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.preconf.orjson import make_converter
from cattrs.v import transform_error

from ._errors import DecodeError
from ._fastpath import FastPathMiss, HookFactory, point_hook
from ._models import (
    Point,
    StepType,
    Task,
    TaskStatus,
    Upload,
    _OpenEnum,
)

T = TypeVar("T")
_Hook = Callable[[Any, Any], Any]


def _json_type(value: object) -> str:
    """Name a decoded JSON value's type the way the API docs do."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {_json_type(value)}")


def _structure_number(value: Any, _: Any) -> float:
    # bool is an int subclass; `type(...) is` keeps true/false out.
    if type(value) is float or type(value) is int:
        return value
    raise TypeError(f"expected a number, got {_json_type(value)}")


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        return value
    raise TypeError(f"expected an integer, got {_json_type(value)}")


def _structure_bool(value: Any, _: Any) -> bool:
    if value is True or value is False:
        return value
    raise TypeError(f"expected a boolean, got {_json_type(value)}")


def _open_enum_hook(cls: type[_OpenEnum]) -> _Hook:
    members = cls._value2member_map_

    def structure(value: Any, _: Any) -> _OpenEnum:
        member = members.get(value) if type(value) is str else None
        if member is not None:
            return member  # type: ignore[return-value]
        if type(value) is str:
            return cls(value)  # an unknown value: kept, see _OpenEnum
        raise TypeError(f"expected a string, got {_json_type(value)}")

    return structure


# datetime.fromisoformat on 3.10 takes neither "Z" nor fractions other than 3 or 6 digits.
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


def parse_datetime(value: str) -> datetime:
    """Parse an ISO 8601 timestamp to an aware ``datetime`` (UTC when no offset is given).

    Raises:
        ValueError: ``value`` is not an ISO 8601 timestamp.

    """
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _parse_iso_fallback(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _parse_iso_fallback(value: str) -> datetime:
    match = _ISO_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:64]!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz: timezone | None = None
    if zulu:
        tz = timezone.utc
    elif sign:
        delta = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-delta if sign == "-" else delta)
    return datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tz
    )


def _structure_datetime(value: Any, _: Any) -> datetime:
    if type(value) is not str:
        raise TypeError(f"expected an ISO 8601 string, got {_json_type(value)}")
    return parse_datetime(value)


def format_datetime(value: datetime) -> str:
    """Format a datetime the way the API does: ISO 8601 with ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _structure_point(value: Any, _: Any) -> Point:
    if type(value) is list and len(value) == 2:
        x, y = value
        return Point(_structure_number(x, None), _structure_number(y, None))
    raise TypeError(f"expected a point [x, y], got {_json_type(value)}")


def _structure_quad(value: Any, _: Any) -> tuple[Point, Point, Point, Point]:
    if type(value) is list and len(value) == 4:
        a, b, c, d = value
        return (
            _structure_point(a, None),
            _structure_point(b, None),
            _structure_point(c, None),
            _structure_point(d, None),
        )
    raise TypeError(f"expected four points [[x, y], ...], got {_json_type(value)}")


def _sequence_hook(element_type: Any, element_hook: _Hook) -> _Hook:
    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {_json_type(value)}")
        try:
            return tuple([element_hook(item, element_type) for item in value])
        except Exception as exc:  # noqa: BLE001 -- re-walked below to find the failing index
            first_failure = exc
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                element_hook(item, element_type)
            except Exception as exc:  # noqa: BLE001 -- collected into the group below
                note = IterableValidationNote(f"@ index {index}", index, element_type)
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
                errors.append(exc)
        raise IterableValidationError("invalid array elements", errors, tuple) from first_failure

    return structure


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = get_args(tp)
    return getattr(tp, "__origin__", None) is tuple and len(args) == 2 and args[1] is Ellipsis


def _build_converter() -> Any:
    converter = make_converter(detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(float, _structure_number)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_structure_hook(Point, _structure_point)
    quad = tuple[Point, Point, Point, Point]
    converter.register_structure_hook_func(lambda tp: tp == quad, _structure_quad)
    for enum_cls in (TaskStatus, StepType):
        converter.register_structure_hook(enum_cls, _open_enum_hook(enum_cls))
    converter.register_structure_hook_factory(
        _is_homogeneous_tuple,
        lambda tp: _sequence_hook(get_args(tp)[0], converter.get_structure_hook(get_args(tp)[0])),
    )

    converter.register_unstructure_hook(datetime, format_datetime)
    converter.register_unstructure_hook(Point, list)
    converter.register_unstructure_hook_func(
        lambda tp: tp == quad, lambda points: [list(p) for p in points]
    )
    converter.register_unstructure_hook_func(
        lambda tp: isinstance(tp, type) and issubclass(tp, _OpenEnum), lambda e: e.value
    )
    return converter


converter = _build_converter()
_structure_task_hook = converter.get_structure_hook(Task)
_structure_upload_hook = converter.get_structure_hook(Upload)

_fast_hooks = HookFactory(converter.get_structure_hook)
_fast_hooks.register(Point, point_hook())
_fast_structure_task = _fast_hooks.hook(Task)
_unstructure_task_hook = converter.get_unstructure_hook(Task)


def _error_description(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc) or type(exc).__name__


def structure_task(payload: Any, *, path: str = "payload") -> Task:
    """Structure a decoded task payload into a ``Task``.

    Raises:
        DecodeError: the payload is not a task; the message and ``path`` name the first bad
            field, e.g. ``payload.pages[0].width``.

    """
    if type(payload) is not dict:
        raise DecodeError(f"expected a task object at {path}, got {_json_type(payload)}", path=path)
    try:
        return _fast_structure_task(payload)  # type: ignore[no-any-return]
    except FastPathMiss:
        # Refused, not broken: the detailed path decides and says where. Any other
        # exception is a bug in the generated code and must not hide behind this one.
        pass
    try:
        return _structure_task_hook(payload, Task)  # type: ignore[no-any-return]
    except Exception as exc:
        raise _described(exc, path, "task") from exc


def _described(exc: Exception, path: str, what: str) -> DecodeError:
    """Turn a detailed-validation failure into a ``DecodeError`` naming the first bad field."""
    problems = transform_error(exc, path=path, format_exception=_error_description)
    first = problems[0] if problems else f"invalid {what} @ {path}"
    description, _, where = first.rpartition(" @ ")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return DecodeError(f"{description} at {where}{more}", path=where)


def loads(body: bytes) -> Any:
    """Decode a JSON body with orjson.

    Raises:
        DecodeError: the body is not valid JSON.

    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"response body is not valid JSON: {exc}") from exc


def payload_of(document: Any) -> Any:
    """Return the ``payload`` member of a decoded response body.

    Raises:
        DecodeError: the body is not a JSON object with a ``payload`` field.

    """
    if type(document) is not dict:
        raise DecodeError(
            f'expected a JSON object with a "payload" field at $, got {_json_type(document)}',
            path="$",
        )
    try:
        return document["payload"]
    except KeyError:
        raise DecodeError("required field missing at payload", path="payload") from None


def decode_payload_object(body: bytes) -> dict[str, Any]:
    """Decode a response body's ``payload`` as a JSON object, without structuring it.

    Raises:
        DecodeError: the body is not JSON, has no ``payload``, or it is not an object.

    """
    payload = payload_of(loads(body))
    if type(payload) is not dict:
        raise DecodeError(
            f"expected a task object at payload, got {_json_type(payload)}", path="payload"
        )
    return payload


def decode_task(body: bytes) -> Task:
    """Decode a Get Task response body (``{"payload": {...}}``) into a ``Task``.

    Raises:
        DecodeError: the body is not JSON, has no ``payload``, or the payload is not a task.

    """
    return structure_task(payload_of(loads(body)))


def unstructure_task(task: Task) -> dict[str, Any]:
    """Turn a ``Task`` back into the API's JSON shape."""
    return _unstructure_task_hook(task)  # type: ignore[no-any-return]


# The documented create response is flat camelCase; get and move are snake_case.
_UPLOAD_FIELD_ALIASES = {
    "projectId": "project_id",
    "folderId": "folder_id",
    "fileType": "file_type",
    "fileSize": "file_size",
    "createdAt": "created_at",
    "updatedAt": "updated_at",
}


def decode_upload(body: bytes) -> Upload:
    """Decode an upload response, ``{"payload": {...}}`` or the flat create shape.

    Raises:
        DecodeError: the body is not JSON or not an upload; the message names the field.

    """
    document = loads(body)
    path = "$"
    if type(document) is dict and type(document.get("payload")) is dict:
        document, path = document["payload"], "payload"
    if type(document) is not dict:
        raise DecodeError(
            f"expected an upload object at {path}, got {_json_type(document)}", path=path
        )
    fields = {_UPLOAD_FIELD_ALIASES.get(key, key): value for key, value in document.items()}
    try:
        return _structure_upload_hook(fields, Upload)  # type: ignore[no-any-return]
    except Exception as exc:
        raise _described(exc, path, "upload") from exc


def upload_to_dict(upload: Upload) -> dict[str, Any]:
    """Turn an ``Upload`` into JSON-ready data (snake_case, ISO 8601 timestamps)."""
    return converter.unstructure(upload)  # type: ignore[no-any-return]
