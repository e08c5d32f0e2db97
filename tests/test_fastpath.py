"""The fast decode path: agrees with the detailed path, is really taken, and hides no bugs."""

from __future__ import annotations

import copy
import pickle
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendai_async import DecodeError, SendAI, Task, _convert
from sendai_async import _models as models
from sendai_async._convert import structure_task
from sendai_async._fastpath import (
    FastPathMiss,
    HookFactory,
    UnsupportedModelError,
    _twin_of,
    point_hook,
)
from sendai_async.testing import SandboxServer, synthetic_task

from .conftest import SEED_DOC, ScriptedServer, json_response

Path = tuple[str | int, ...]

# --- Mutated bodies -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

_NEAR_MISS_STRINGS = [
    "",
    "ARCHIVED",
    "COMPLETED",
    "2024-01-15",
    "2024-01-15T10:30:00+02:00",
    "2024-01-15T10:30:00.5z",
    "2024-01-15T10:30:00+24:00",
    "2024-13-45T99:99:99Z",
    "yesterday",
    "1",
]


def _near_misses(value: Any) -> list[Any]:
    """Values one step away from ``value``: same meaning, another JSON type, or a bad shape."""
    if value is None:
        return [0, "", [], {}]
    if isinstance(value, bool):
        return [int(value), float(value), str(value).lower(), not value]
    if isinstance(value, (int, float)):
        swapped = float(value) if isinstance(value, int) else int(value)
        return [swapped, True, False, str(value), -value, 2**70]
    if isinstance(value, str):
        return [*_NEAR_MISS_STRINGS, value.lower(), [value], 0]
    if isinstance(value, list):
        first = value[:1]
        return [[], value[:-1], [*value, *first], value[::-1], [[0, 0]] * 3, [[0, 0, 0]] * 4, {}]
    return [{}, [value], "x"]


def _nodes(doc: Any, path: Path = ()) -> list[Path]:
    """Every path below ``doc`` (not ``doc`` itself), parents before children."""
    found: list[Path] = []
    children = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, child in children:
        found.append((*path, key))
        found.extend(_nodes(child, (*path, key)))
    return found


def _get(doc: Any, path: Path) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _shown_path(path: Path) -> str:
    text = "payload"
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


@st.composite
def mutated_tasks(draw: st.DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
    """``base`` with 1-4 random mutations, and the paths they touched."""
    doc = copy.deepcopy(base)
    touched: list[Path] = []
    for _ in range(draw(st.integers(1, 4))):
        nodes = _nodes(doc)
        if not nodes:
            break
        path = draw(st.sampled_from(nodes))
        parent, key = _get(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["replace", "near-miss", "null", "drop", "add-unknown"]))
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "near-miss":
            parent[key] = draw(st.sampled_from(_near_misses(parent[key])))
        elif op == "null":
            parent[key] = None
        elif op == "drop":
            del parent[key]
            if isinstance(parent, list):
                path = path[:-1]  # later indices shift: the whole array changed
        else:
            target = parent[key] if isinstance(parent[key], dict) else parent
            if not isinstance(target, dict):
                continue
            target[draw(st.text(min_size=1, max_size=8).map(lambda k: f"x_{k}"))] = draw(
                json_values
            )
            continue  # an unknown field changes nothing: not a place an error may point to
        touched.append(path)
    return doc, touched


def _synthetic(seed: int) -> dict[str, Any]:
    return synthetic_task(f"task_{seed}", project_id="proj_1", seed=seed)


BASES = st.one_of(
    st.just(SEED_DOC["payload"]),
    st.integers(0, 50).map(_synthetic),
)


def _related(error_path: str, touched: list[Path]) -> bool:
    """Whether the error points at, into, or above a place the mutations changed."""
    for path in touched:
        shown = _shown_path(path)
        for a, b in ((error_path, shown), (shown, error_path)):
            if a == b or a.startswith((b + ".", b + "[")):
                return True
    return False


def _fast(payload: dict[str, Any]) -> Task | None:
    try:
        return _convert._fast_structure_task(payload)  # type: ignore[no-any-return]
    except FastPathMiss:
        return None


def _detailed(payload: dict[str, Any]) -> Task | None:
    try:
        return _convert._structure_task_hook(payload, Task)  # type: ignore[no-any-return]
    except Exception:
        return None


@settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=BASES.flatmap(mutated_tasks))
def test_fast_and_detailed_paths_agree_on_mutated_tasks(
    case: tuple[dict[str, Any], list[Path]],
) -> None:
    """On any mutated task both paths give the same Task, or both refuse where it was changed."""
    payload, touched = case
    fast, detailed = _fast(payload), _detailed(payload)
    assert (fast is None) == (detailed is None), (fast, detailed)
    if fast is not None:
        assert fast == detailed
        assert repr(fast) == repr(detailed)  # same types too: 1 stays 1, not 1.0 or True
        assert structure_task(payload) == fast
        return
    with pytest.raises(DecodeError) as caught:
        structure_task(payload)
    assert caught.value.path is not None
    assert _related(caught.value.path, touched), (caught.value.path, touched)


@pytest.mark.parametrize(
    "drop",
    [
        pytest.param(("meta",), id="meta"),
        pytest.param(("pages",), id="pages"),
        pytest.param(("exported_at",), id="nullable-datetime"),
        pytest.param(("pages", 0, "checkboxes"), id="page-checkboxes"),
        pytest.param(("pages", 0, "annotations"), id="page-annotations"),
        pytest.param(("pages", 0, "width"), id="page-width"),
        pytest.param(("pages", 0, "annotations", 0, "left_of_line"), id="annotation-left"),
    ],
)
def test_missing_defaulted_fields_take_the_default_on_the_fast_path(drop: Path) -> None:
    payload = copy.deepcopy(SEED_DOC["payload"])
    del _get(payload, drop[:-1])[drop[-1]]
    task = _fast(payload)
    assert task is not None
    assert task == _detailed(payload)


# --- The fast path is taken, and its bugs surface -------------------------------------------


@pytest.fixture
def detailed_path_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the detailed (cattrs) task hook fail the test if anything reaches it."""

    def forbidden(payload: Any, _cls: Any) -> Any:
        raise AssertionError("a valid body fell off the fast path")

    monkeypatch.setattr(_convert, "_structure_task_hook", forbidden)


@pytest.mark.usefixtures("detailed_path_forbidden")
async def test_valid_tasks_decode_on_the_fast_path_alone() -> None:
    """Sandbox tasks, fetched and listed through SendAI, never need the detailed path."""
    with SandboxServer(tasks=60).in_thread() as sandbox:
        async with SendAI(
            sandbox.api_key, team_id=sandbox.team_id, base_url=sandbox.base_url
        ) as sendai:
            task = await sendai.tasks.get(sandbox.task_ids[0], project_id=sandbox.project_id)
            listed = [
                item
                async for item in sendai.paginate(
                    f"project/{sandbox.project_id}/tasks", item_type=Task
                )
            ]
    assert task.id == sandbox.task_ids[0]
    assert len(listed) == 60


@pytest.mark.usefixtures("detailed_path_forbidden")
async def test_task_without_defaulted_arrays_decodes_on_the_fast_path(
    client: SendAI, server: ScriptedServer
) -> None:
    """A task that leaves out meta and a page's checkboxes still takes the fast path."""
    payload = copy.deepcopy(SEED_DOC["payload"])
    del payload["meta"]
    del payload["pages"][0]["checkboxes"]
    server.play(json_response(body={"payload": payload}))
    task = await client.tasks.get("task_1", project_id="proj_1")
    assert task.meta == ()
    assert task.pages[0].checkboxes == ()


@pytest.mark.parametrize("error", [NameError, AttributeError, TypeError, KeyError])
async def test_a_defect_in_the_fast_path_surfaces(
    client: SendAI,
    server: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
) -> None:
    """Only FastPathMiss falls back: a fast hook raising anything else is a bug, not a miss."""

    def broken(_payload: Any) -> Any:
        raise error("__set_id")

    monkeypatch.setattr(_convert, "_fast_structure_task", broken)
    server.play(json_response())
    with pytest.raises(error, match="__set_id"):
        await client.tasks.get("task_1", project_id="proj_1")


@attrs.frozen(kw_only=True)
class _Stamped:
    at: datetime
    label: str = "none"
    tags: Any = attrs.Factory(list)


def _leaf_raising(exc: Exception) -> Callable[[Any], Callable[..., Any]]:
    def leaf_hook(_tp: Any) -> Callable[..., Any]:
        def hook(_value: Any, _type: Any) -> Any:
            raise exc

        return hook

    return leaf_hook


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(TypeError("bad"), id="TypeError"),
        pytest.param(ValueError("bad"), id="ValueError"),
    ],
)
def test_a_leaf_hook_refusing_input_is_a_miss(exc: Exception) -> None:
    hook = HookFactory(_leaf_raising(exc)).hook(_Stamped)
    with pytest.raises(FastPathMiss):
        # A lowercase "z" is beyond datetime.fromisoformat: the leaf hook decides.
        hook({"at": "2024-01-01T00:00:00z"})


def test_a_leaf_hook_bug_propagates() -> None:
    hook = HookFactory(_leaf_raising(AttributeError("no such thing"))).hook(_Stamped)
    with pytest.raises(AttributeError, match="no such thing"):
        hook({"at": "2024-01-01T00:00:00z"})


def test_missing_required_key_is_a_miss_and_plain_factories_run() -> None:
    hook = HookFactory(_convert.converter.get_structure_hook).hook(_Stamped)
    with pytest.raises(FastPathMiss):
        hook({"label": "x"})
    first, second = hook({"at": "2024-01-01T00:00:00Z"}), hook({"at": "2024-01-01T00:00:00Z"})
    assert (first.label, first.tags) == ("none", [])
    assert first.tags is not second.tags  # called per instance, as __init__ would


@attrs.frozen
class _Polyline:
    points: tuple[models.Point, ...] = ()


def test_arrays_of_a_registered_hook_map_it_and_refuse_what_it_refuses() -> None:
    """A class with a hand-written hook (``Point``) still gets a checked array hook."""
    factory = HookFactory(_convert.converter.get_structure_hook)
    factory.register(models.Point, point_hook())
    hook = factory.hook(_Polyline)
    line = hook({"points": [[1, 2], [3.5, 4]]})
    assert line.points == (models.Point(1, 2), models.Point(3.5, 4))
    assert all(type(point) is models.Point for point in line.points)
    assert hook({}).points == ()
    bad_bodies: list[dict[str, Any]] = [
        {"points": [[1, 2], [3]]},
        {"points": {}},  # mapped without the list check, a dict would give ()
        {"points": [[1, "2"]]},
    ]
    for bad in bad_bodies:
        with pytest.raises(FastPathMiss):
            hook(bad)


@pytest.mark.parametrize("count", [0, 1, 2, 7])
def test_arrays_of_models_keep_every_element_in_order(count: int) -> None:
    """The array hook runs the model's body inline: one element, none and many alike."""
    factory = HookFactory(_convert.converter.get_structure_hook)
    annotations = [
        {"id": f"a{i}", "entity_id": "e", "confidence": i / 10, "content": str(i)}
        for i in range(count)
    ]
    page = factory.hook(models.Page)({"id": "p", "annotations": annotations})
    assert [a.id for a in page.annotations] == [f"a{i}" for i in range(count)]
    assert all(type(a) is models.Annotation for a in page.annotations)
    assert type(page.annotations) is tuple
    with pytest.raises(FastPathMiss):
        factory.hook(models.Page)({"id": "p", "annotations": [*annotations, {"id": "x"}]})


# --- Models the generator refuses -----------------------------------------------------------


@attrs.frozen
class _Validated:
    name: str = attrs.field(validator=attrs.validators.min_len(1))


@attrs.frozen
class _Converted:
    name: str = attrs.field(converter=str)


@attrs.frozen
class _SelfFactory:
    name: str
    upper: str = attrs.field(default=attrs.Factory(lambda self: self.name.upper(), takes_self=True))


@attrs.frozen
class _NotInit:
    name: str
    derived: str = attrs.field(init=False, default="x")


@attrs.frozen
class _PostInit:
    name: str

    def __attrs_post_init__(self) -> None:
        pass


@attrs.define(slots=False)
class _NotSlotted:
    name: str


@attrs.frozen(cache_hash=True)
class _CachedHash:
    name: str


@attrs.frozen
class _NestedValidated:
    inner: tuple[_Validated, ...] = ()


@pytest.mark.parametrize(
    ("cls", "why"),
    [
        pytest.param(_Validated, "validator", id="validator"),
        pytest.param(_Converted, "converter", id="converter"),
        pytest.param(_SelfFactory, "takes_self", id="factory-takes-self"),
        pytest.param(_NotInit, "init=False", id="init-false"),
        pytest.param(_PostInit, "__attrs_post_init__", id="post-init"),
        pytest.param(_NotSlotted, "slot", id="not-slotted"),
        pytest.param(_CachedHash, "slots that are not fields", id="cache-hash"),
        pytest.param(_NestedValidated, "validator", id="nested-validator"),
    ],
)
def test_models_whose_init_does_more_are_refused_at_generation(cls: type, why: str) -> None:
    """A hook that skips __init__ cannot mirror validators, converters and the like: refuse."""
    factory = HookFactory(_convert.converter.get_structure_hook)
    with pytest.raises(UnsupportedModelError, match=why):
        factory.hook(cls)


# --- Building models through a twin class ---------------------------------------------------

_MODELS = [
    models.MetaItem,
    models.Annotation,
    models.Checkbox,
    models.Segment,
    models.Signature,
    models.Page,
    models.Task,
]


@pytest.mark.parametrize("cls", _MODELS, ids=lambda cls: cls.__name__)
def test_every_task_model_is_built_through_a_twin(cls: type) -> None:
    """The cheap build (plain stores, then one class switch) serves every task model."""
    assert _twin_of(cls) is not None


def test_a_decoded_task_is_a_real_frozen_task() -> None:
    task = _convert.decode_task(orjson.dumps(SEED_DOC))
    built = _convert.converter.structure(SEED_DOC["payload"], Task)  # through __init__
    page = task.pages[0]
    assert type(task) is Task
    assert type(page) is models.Page
    assert type(page.annotations[0]) is models.Annotation
    assert task == built
    assert hash(task.pages[0].annotations[0]) == hash(built.pages[0].annotations[0])
    assert repr(task) == repr(built)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.name = "changed"  # type: ignore[misc]
    assert weakref.ref(task)() is task  # models stay weak-referenceable
    assert pickle.loads(pickle.dumps(task)) == task
    assert attrs.evolve(task, name="renamed").name == "renamed"


@attrs.frozen(kw_only=True)
class _FrozenBase:
    id: str


@attrs.frozen(kw_only=True)
class _FromFrozenBase(_FrozenBase):
    size: float


def test_classes_the_twin_cannot_serve_keep_the_descriptor_path() -> None:
    """Own ``__weakref__`` slot (attrs' default), or a frozen base: a working hook anyway."""
    assert _twin_of(_Stamped) is None
    assert _twin_of(_FromFrozenBase) is None
    factory = HookFactory(_convert.converter.get_structure_hook)
    stamped = factory.hook(_Stamped)({"at": "2024-01-01T00:00:00Z", "label": "x"})
    assert stamped == _Stamped(at=datetime(2024, 1, 1, tzinfo=timezone.utc), label="x")
    assert type(stamped) is _Stamped
    derived = factory.hook(_FromFrozenBase)({"id": "a", "size": 2})
    assert derived == _FromFrozenBase(id="a", size=2)


# --- Timestamps: the inlined fromisoformat and the full parser agree -------------------------

_TIMESTAMP_PARTS = st.sampled_from(
    [
        "2024",
        "-",
        "01",
        "15",
        "T",
        " ",
        "10",
        ":",
        "30",
        "00",
        ".",
        ",",
        "5",
        "123456789",
        "Z",
        "z",
        "+",
        "-",
        "05:30",
        "0530",
        "00:00",
        "W03",
        "24",
        "99",
        "x",
    ]
)


@given(
    st.lists(_TIMESTAMP_PARTS, max_size=12).map("".join)
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.datetimes().map(lambda d: d.isoformat() + "Z")
)
def test_timestamps_decode_as_the_full_parser_reads_them(text: str) -> None:
    hook = HookFactory(_convert.converter.get_structure_hook).hook(_Stamped)
    try:
        expected = _convert.parse_datetime(text)
    except ValueError:
        with pytest.raises(FastPathMiss):
            hook({"at": text})
        return
    got = hook({"at": text}).at
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()
    assert got.tzinfo is not None
