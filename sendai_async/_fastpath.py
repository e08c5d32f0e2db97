"""Generated structuring hooks for the task models: the fast path of decoding.

cattrs' generated hooks are general: one function call per field, a ``res`` dict, then
``cls(**res)``, and (with detailed validation) a ``try`` block and notes per field. For a
large task (20 pages, 1,000 annotations, 1,360 points) that is most of the decoding time.
Here each model gets a hook generated from its fields that checks JSON types inline, fills
the slots of a new instance directly (frozen attrs classes otherwise pay for
``object.__setattr__`` through a bound method per field) and calls nested hooks only for
nested models.

These hooks only say *that* a body is wrong, not where: on any failure the caller re-runs
the converter's detailed-validation hooks, which name the field path. Valid bodies never pay
for that.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import attrs

from ._models import Point

Hook = Callable[[Any], Any]
LeafHook = Callable[..., Any]

_NUMBER = "(type({v}) is float or type({v}) is int)"
_CHECKS = {
    str: "type({v}) is str",
    float: _NUMBER,
    bool: "({v} is True or {v} is False)",
}


class FastPathMiss(Exception):  # noqa: N818 -- a signal, not an error users see
    """The fast path met something it will not decide; the detailed path takes over."""


def _fail() -> typing.NoReturn:
    raise FastPathMiss


def _optional_of(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0]
    return None


class HookFactory:
    """Generate and cache fast hooks for attrs model classes."""

    def __init__(self, leaf_hook: Callable[[Any], LeafHook]) -> None:
        # Where hooks for leaf types that are not inlined (datetime, open enums) come from:
        # the converter's own, which raise on bad input.
        self._leaf_hook = leaf_hook
        self._hooks: dict[type, Hook] = {}

    def register(self, cls: type, hook: Hook) -> None:
        """Use ``hook`` for ``cls`` instead of generating one."""
        self._hooks[cls] = hook

    def hook(self, cls: type) -> Hook:
        """Return the fast hook for ``cls``, generating it on first use."""
        hook = self._hooks.get(cls)
        if hook is None:
            hook = self._hooks[cls] = self._generate(cls)
        return hook

    def _generate(self, cls: type) -> Hook:
        hints = typing.get_type_hints(cls)
        names: dict[str, Any] = {"__new": object.__new__, "__cls": cls, "__fail": _fail}
        body = ["if type(o) is not dict: __fail()", "obj = __new(__cls)"]
        for field in attrs.fields(cls):
            name = field.name
            names[f"__set_{name}"] = cls.__dict__[name].__set__
            if field.default is not attrs.NOTHING:
                names[f"__default_{name}"] = field.default
                body.append(f"v = o.get({name!r}, __default_{name})")
            else:
                body.append(f"v = o[{name!r}]")  # KeyError: the detailed path reports it
            body.extend(self._convert(hints[name], name, names))
            body.append(f"__set_{name}(obj, v)")
        body.append("return obj")
        # Everything the body uses is bound as a default argument: a local, not a global.
        params = ", ".join(f"{key}={key}" for key in names)
        source = f"def structure_{cls.__name__}(o, {params}):\n" + "\n".join(
            "  " + line for line in body
        )
        namespace: dict[str, Any] = dict(names)
        exec(source, namespace)  # noqa: S102 -- our own generated source
        return namespace[f"structure_{cls.__name__}"]  # type: ignore[no-any-return]

    def _convert(self, tp: Any, name: str, names: dict[str, Any]) -> list[str]:
        """Lines that check (and if needed convert) ``v`` in place for type ``tp``."""
        inner = _optional_of(tp)
        if inner is not None:
            body = self._convert(inner, name, names)
            return ["if v is not None:", *("  " + line for line in body)]
        if tp in _CHECKS:
            return [f"if not {_CHECKS[tp].format(v='v')}: __fail()"]
        if tp is Any:
            return []
        if tp == tuple[Point, Point, Point, Point]:
            # Four points per region, often thousands per task: built inline, no calls.
            # Four points per region, often thousands per task: checked and built inline,
            # the eight coordinates' types in one C-level pass.
            names["__point_cls"] = Point
            names["__tuple_new"] = tuple.__new__
            names["__numbers"] = frozenset({int, float})
            return [
                "if type(v) is not list or len(v) != 4: __fail()",
                "a, b, c, d = v",
                "if not (type(a) is list and type(b) is list and type(c) is list"
                " and type(d) is list and len(a) == 2 and len(b) == 2 and len(c) == 2"
                " and len(d) == 2 and __numbers.issuperset(map(type, a + b + c + d))): __fail()",
                "v = (__tuple_new(__point_cls, a), __tuple_new(__point_cls, b),"
                " __tuple_new(__point_cls, c), __tuple_new(__point_cls, d))",
            ]
        if typing.get_origin(tp) is tuple:
            element = typing.get_args(tp)[0]
            names[f"__item_{name}"] = self.hook(element)
            return [
                "if type(v) is not list: __fail()",
                f"v = tuple(map(__item_{name}, v))",
            ]
        names[f"__leaf_{name}"] = self._leaf_hook(tp)
        return [f"v = __leaf_{name}(v, None)"]


def point_hook() -> Hook:
    """Return the fast hook for ``Point``, which arrives as ``[x, y]``."""
    new_tuple = tuple.__new__

    def structure_point(value: Any) -> Point:
        if type(value) is not list or len(value) != 2:
            _fail()
        x, y = value
        if not ((type(x) is float or type(x) is int) and (type(y) is float or type(y) is int)):
            _fail()
        return new_tuple(Point, value)

    return structure_point
