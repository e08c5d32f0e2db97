"""Generated structuring hooks for the task models: the fast path of decoding.

cattrs' generated hooks are general: one function call per field, a ``res`` dict, then
``cls(**res)``, and (with detailed validation) a ``try`` block and notes per field. For a
large task (20 pages, 1,000 annotations, 1,360 points) that is most of the decoding time.
Here each model gets a hook generated from its fields that checks JSON types inline and
calls nested hooks only for nested models, plus an array hook that runs the same body
inline in its loop (most objects of a large task are array elements). It builds the
object as an instance of a plain *twin* class with the model's slots, filled by ordinary
attribute stores, then switches the finished object's ``__class__`` to the model once
(see ``_twin_of``): frozen attrs classes refuse stores, and going through their slot
descriptors costs twice as much.
Known enum values are one dict lookup, and from Python 3.11 timestamps go straight to
``datetime.fromisoformat``; what that refuses still reaches the converter's full parser.

These hooks only say *that* a body is wrong, not where: they raise ``FastPathMiss`` and the
caller re-runs the converter's detailed-validation hooks, which name the field path. Valid
bodies never pay for that. ``FastPathMiss`` is the *only* exception that means "bad input":
a missing required key (``KeyError``) and a leaf hook's ``TypeError`` / ``ValueError`` are
turned into it where they can happen, with ``try`` blocks that cost nothing on 3.11+ when
nothing is raised. Anything else (``NameError``, ``AttributeError``, ...) is a bug in this
module and propagates instead of being hidden behind the slow path.

A generated hook must decide exactly what ``attrs`` + cattrs would: same values, same
defaults, same refusals (a property test holds the two paths to that). It bypasses
``__init__``, so attrs features that run code there cannot be mirrored, and generating a
hook for a class that uses them raises ``UnsupportedModelError`` at generation time (that is,
at import of ``_convert``): validators, converters, ``Factory(takes_self=True)``,
``init=False`` fields, ``__attrs_pre_init__`` / ``__attrs_post_init__``, non-slotted classes
and slots that are not fields (e.g. ``cache_hash``). Failing loudly at import beats a fast
path that silently skips a validator. A plain ``Factory(f)`` is supported: ``f()`` is called
for a missing key, as ``__init__`` would.
"""

from __future__ import annotations

import datetime
import enum
import sys
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


class UnsupportedModelError(TypeError):
    """A model uses an attrs feature a generated hook cannot mirror (see the module notes)."""


_MISSING: Any = object()

# From 3.11 on, datetime.fromisoformat accepts "Z" and any number of fraction digits.
_FROMISOFORMAT_TAKES_Z = sys.version_info >= (3, 11)


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
        self._array_hooks: dict[type, Hook] = {}

    def register(self, cls: type, hook: Hook) -> None:
        """Use ``hook`` for ``cls`` instead of generating one; arrays of ``cls`` map it."""
        self._hooks[cls] = hook
        self._array_hooks[cls] = _mapped(hook)

    def hook(self, cls: type) -> Hook:
        """Return the fast hook for ``cls``, generating it on first use."""
        hook = self._hooks.get(cls)
        if hook is None:
            hook, self._array_hooks[cls] = self._generate(cls)
            self._hooks[cls] = hook
        return hook

    def array_hook(self, cls: type) -> Hook:
        """Return the fast hook for a JSON array of ``cls`` (to a tuple), generating it once."""
        if cls not in self._array_hooks:
            self.hook(cls)
        return self._array_hooks[cls]

    def _generate(self, cls: type) -> tuple[Hook, Hook]:
        """Return the hook for one ``cls`` and the hook for an array of them.

        Both run the same generated body; the array hook runs it inline in its loop, which
        spares a Python call per element (most of the objects in a large task are array
        elements: annotations, regions, pages).
        """
        _check_supported(cls)
        hints = typing.get_type_hints(cls)
        names: dict[str, Any] = {
            "__new": object.__new__,
            "__cls": cls,
            "__fail": _fail,
            "__missing": _MISSING,
        }
        twin = _twin_of(cls)
        if twin is not None:
            names["__twin"] = twin
            body = ["if type(o) is not dict: __fail()", "obj = __new(__twin)"]
        else:
            body = ["if type(o) is not dict: __fail()", "obj = __new(__cls)"]
        for field in attrs.fields(cls):
            name = field.name
            if twin is not None:
                store = f"obj.{name} = v"
            else:
                names[f"__set_{name}"] = _slot(cls, name).__set__
                store = f"__set_{name}(obj, v)"
            convert = self._convert(hints[name], name, names)
            if field.default is attrs.NOTHING:
                # A missing key is bad input: the detailed path reports it.
                body += ["try:", f"  v = o[{name!r}]", "except KeyError:", "  __fail()", *convert]
            elif field.default is None and _optional_of(hints[name]) is not None:
                # The common case, one lookup: a missing key gives None, which passes as is.
                body += [f"v = o.get({name!r})", *convert]
            else:
                # A missing key takes the default, as __init__ would; only a given value is
                # checked, so a default never has to pass the JSON checks (``()`` is no list).
                if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                    names[f"__factory_{name}"] = field.default.factory
                    default = f"__factory_{name}()"
                else:
                    names[f"__default_{name}"] = field.default
                    default = f"__default_{name}"
                body += [
                    f"v = o.get({name!r}, __missing)",
                    "if v is __missing:",
                    f"  v = {default}",
                ]
                if convert:
                    body += ["else:", *("  " + line for line in convert)]
            body.append(store)
        if twin is not None:
            body.append("obj.__class__ = __cls")  # the finished object becomes the model
        one = [*body, "return obj"]
        many = [
            "if type(a_) is not list: __fail()",
            # One-element arrays (a single page, one annotation) are common: the body runs
            # once and the tuple is built directly, without the list.
            "if len(a_) == 1:",
            "  o = a_[0]",
            *("  " + line for line in body),
            "  return (obj,)",
            "out = []",
            "append = out.append",
            "for o in a_:",
            *("  " + line for line in body),
            "  append(obj)",
            "return tuple(out)",
        ]
        hook = _compile(f"structure_{cls.__name__}", "o", one, names)
        array_hook = _compile(f"structure_{cls.__name__}_array", "a_", many, names)
        return hook, array_hook

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
                " and len(d) == 2): __fail()",
                # Unpacked and checked one by one: cheaper than concatenating the lists.
                "ax, ay = a",
                "bx, by = b",
                "cx, cy = c",
                "dx, dy = d",
                "if not (type(ax) in __numbers and type(ay) in __numbers"
                " and type(bx) in __numbers and type(by) in __numbers"
                " and type(cx) in __numbers and type(cy) in __numbers"
                " and type(dx) in __numbers and type(dy) in __numbers): __fail()",
                "v = (__tuple_new(__point_cls, a), __tuple_new(__point_cls, b),"
                " __tuple_new(__point_cls, c), __tuple_new(__point_cls, d))",
            ]
        if typing.get_origin(tp) is tuple:
            names[f"__array_{name}"] = self.array_hook(typing.get_args(tp)[0])
            return [f"v = __array_{name}(v)"]
        return self._leaf(tp, name, names)

    def _leaf(self, tp: Any, name: str, names: dict[str, Any]) -> list[str]:
        """Lines for a type the converter's own leaf hook decides (enums, timestamps)."""
        # Leaf hooks (the converter's) say "bad input" with TypeError or ValueError, which
        # is also what cattrs reports on the detailed path; nothing else is caught.
        names[f"__leaf_{name}"] = self._leaf_hook(tp)
        leaf = [
            "try:",
            f"  v = __leaf_{name}(v, None)",
            "except (TypeError, ValueError):",
            "  __fail()",
        ]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            # A known value is one dict lookup; anything else goes to the leaf hook, which
            # keeps unknown strings (open enums) and refuses other types.
            names[f"__members_{name}"] = tp._value2member_map_
            return [
                f"m = __members_{name}.get(v) if type(v) is str else None",
                "if m is None:",
                *("  " + line for line in leaf),
                "else:",
                "  v = m",
            ]
        if tp is datetime.datetime and _FROMISOFORMAT_TAKES_Z:
            # datetime.fromisoformat reads the API's timestamps ("...Z") itself from 3.11
            # on; the leaf hook's full parser only sees what it refuses.
            names["__fromiso"] = datetime.datetime.fromisoformat
            names["__utc"] = datetime.timezone.utc
            return [
                "if type(v) is not str: __fail()",
                "try:",
                "  d = __fromiso(v)",
                "except ValueError:",
                *("  " + line for line in leaf),
                "else:",
                "  v = d if d.tzinfo is not None else d.replace(tzinfo=__utc)",
            ]
        return leaf


def _compile(function: str, argument: str, body: list[str], names: dict[str, Any]) -> Hook:
    """Compile a generated function of ``argument`` whose body uses ``names``."""
    # Everything the body uses is bound as a default argument: a local, not a global.
    params = ", ".join(f"{key}={key}" for key in names)
    source = f"def {function}({argument}, {params}):\n" + "\n".join("  " + line for line in body)
    namespace: dict[str, Any] = dict(names)
    exec(source, namespace)  # noqa: S102 -- our own generated source
    return namespace[function]  # type: ignore[no-any-return]


def _mapped(hook: Hook) -> Hook:
    """Return an array hook that applies ``hook`` to each element (for registered hooks)."""

    def structure_array(value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            _fail()
        return tuple(map(hook, value))

    return structure_array


def _twin_of(cls: type) -> type | None:
    """Return a plain class ``cls`` instances can be built as, or ``None`` if there is none.

    A frozen attrs class refuses attribute stores, so filling a new instance costs a call
    to a slot descriptor per field. A twin with the same slots and bases but no
    ``__setattr__`` of its own takes plain stores (which CPython specialises for slots),
    and one ``__class__`` assignment at the end turns the finished object into a ``cls``:
    about half the cost for a six-field object. CPython allows that assignment only
    between classes of one layout; a class holding its own ``__weakref__`` slot (attrs'
    default) has none, which is why the models share a base that holds it. Whether the
    swap works is tried here once, so a class it cannot serve keeps the descriptor path.
    """
    slots = vars(cls).get("__slots__")
    if not isinstance(slots, tuple):
        return None
    try:
        twin = type(f"_{cls.__name__}Twin", cls.__bases__, {"__slots__": slots})
        probe: Any = object.__new__(twin)
        for field in attrs.fields(cls):
            setattr(probe, field.name, None)
        probe.__class__ = cls
    except (TypeError, AttributeError):  # a different layout, or a frozen base class
        return None
    return twin


def _slot(cls: type, name: str) -> Any:
    """Return the class attribute ``name`` (a slot descriptor), wherever in the MRO it is."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _check_supported(cls: type) -> None:
    """Refuse a class whose ``__init__`` does more than store its arguments.

    Raises:
        UnsupportedModelError: ``cls`` uses an attrs feature the generated hook would skip.

    """

    def refuse(why: str) -> typing.NoReturn:
        raise UnsupportedModelError(f"cannot generate a fast hook for {cls.__qualname__}: {why}")

    if not attrs.has(cls):
        refuse("not an attrs class")
    for hook_name in ("__attrs_pre_init__", "__attrs_post_init__"):
        if hasattr(cls, hook_name):
            refuse(f"it defines {hook_name}, which the hook would not run")
    fields = attrs.fields(cls)
    for field in fields:
        where = f"field {field.name!r}"
        if field.validator is not None:
            refuse(f"{where} has a validator")
        if field.converter is not None:
            refuse(f"{where} has a converter")
        if not field.init:
            refuse(f"{where} is init=False")
        if isinstance(field.default, attrs.Factory) and field.default.takes_self:  # type: ignore[arg-type]
            refuse(f"{where} has a Factory(takes_self=True)")
        if not isinstance(_slot(cls, field.name), types.MemberDescriptorType):
            refuse(f"{where} is not a slot (the class must be slotted)")
    # Slots that are not fields (attrs' hash cache, say) would stay unset without __init__.
    slots: set[str] = set()
    for klass in cls.__mro__:
        declared = vars(klass).get("__slots__", ())
        slots.update((declared,) if isinstance(declared, str) else declared)
    extra = slots - {field.name for field in fields} - {"__weakref__"}
    if extra:
        refuse(f"it has slots that are not fields: {sorted(extra)}")


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
