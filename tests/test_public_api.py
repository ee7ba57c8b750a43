"""Tests of the public surface: ``stableaudio_async.__all__`` is sorted, importable and complete
(every type a public signature names is exported), and its Literal names match the code."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

import stableaudio_async
from stableaudio_async import models
from stableaudio_async.errors import StableAudioError
from stableaudio_async.models import _ERRORS, JobStatus, Task
from stableaudio_async.providers import ADAPTERS

#: Reached from the job store's ``submitted(job_id, handle)``, but the vocabulary of adapters
#: and stores rather than of the engine's users: importable from ``stableaudio_async.models``.
NOT_AT_TOP_LEVEL = {
    models.RemoteHandle, models.Queued, models.Running, models.Ready, models.Succeeded,
    models.Failed, models.AudioURL, models.InlineAudio,
}


def test_all_is_sorted_and_unique() -> None:
    """__all__ is in sorted order with no name twice, so drift shows in a diff."""
    names = stableaudio_async.__all__
    assert names == sorted(set(names))


def test_every_exported_name_is_importable() -> None:
    """Each name in __all__ is an attribute of the package, and a star import gets them all."""
    namespace: dict[str, Any] = {}
    exec("from stableaudio_async import *", namespace)
    for name in stableaudio_async.__all__:
        assert getattr(stableaudio_async, name) is namespace[name], name


def _package_classes(annotation: Any, found: set[type]) -> None:
    if isinstance(annotation, type):
        if annotation.__module__.startswith("stableaudio_async."):
            found.add(annotation)
        return
    for arg in get_args(annotation):
        _package_classes(arg, found)


def _referenced(cls: type) -> set[type]:
    """The package's classes named by ``cls``'s fields and public methods (``__init__`` only
    for the engine: nothing else exported is built by its users from its parts)."""
    found: set[type] = set()
    if issubclass(cls, BaseModel):
        for info in cls.model_fields.values():
            _package_classes(info.annotation, found)
    elif dataclasses.is_dataclass(cls):
        for name, hint in typing.get_type_hints(cls).items():
            if not name.startswith("_"):
                _package_classes(hint, found)
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and not (name == "__init__" and cls is stableaudio_async.Engine):
            continue
        function = member.fget if isinstance(member, property) else member
        if (inspect.isfunction(function) or inspect.ismethod(function)) \
                and function.__module__.startswith("stableaudio_async."):
            for hint in typing.get_type_hints(function).values():
                _package_classes(hint, found)
    return found


def test_every_type_in_a_public_signature_is_exported() -> None:
    """What the engine's methods, the settings, the results and the job store name (and what
    those name in turn) can be imported from the package itself."""
    exported = {getattr(stableaudio_async, name) for name in stableaudio_async.__all__}
    seen: set[type] = set()
    todo = [stableaudio_async.Engine, stableaudio_async.Settings]
    while todo:
        cls = todo.pop()
        if cls in seen or cls in NOT_AT_TOP_LEVEL:
            continue
        seen.add(cls)
        todo.extend(_referenced(cls))
    missing = {f"{cls.__module__}.{cls.__qualname__}" for cls in seen - exported}
    assert missing == set()
    # The walk does reach the parts of the settings and the job store.
    assert {stableaudio_async.ProviderSettings, stableaudio_async.RateLimit,
            stableaudio_async.JobStore, stableaudio_async.JobRecord} <= seen


def test_every_error_of_the_package_is_exported() -> None:
    """Each StableAudioError subclass the package defines can be caught by its exported name."""
    def subclasses(cls: type) -> set[type]:
        return {cls}.union(*(subclasses(sub) for sub in cls.__subclasses__()))

    ours = {cls for cls in subclasses(StableAudioError)
            if cls.__module__.startswith("stableaudio_async.")}
    assert {cls.__name__ for cls in ours} <= set(stableaudio_async.__all__)


def test_literal_names_match_the_code() -> None:
    """The Literal aliases say exactly what the enums, the registry, the adapters and the
    error tree hold."""
    assert set(get_args(models.TaskName)) == {task.value for task in Task}
    assert set(get_args(models.StatusName)) == {status.value for status in JobStatus}
    assert set(get_args(models.ProviderName)) == set(ADAPTERS)
    assert set(get_args(models.ErrorType)) == set(_ERRORS) | {"InternalError"}
    formats = {fmt for adapter in ADAPTERS.values() for spec in adapter.models.values()
               for fmt in spec.formats}
    assert set(get_args(models.OutputFormat)) == formats


def _checker_init(cls_name: str) -> ast.FunctionDef:
    """The ``__init__`` a type checker sees for ``cls_name``: the one under TYPE_CHECKING."""
    tree = ast.parse(Path(models.__file__).read_text(encoding="utf-8"))
    cls = next(node for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name == cls_name)
    for node in cls.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            return next(item for item in node.body
                        if isinstance(item, ast.FunctionDef) and item.name == "__init__")
    raise AssertionError(f"{cls_name} has no TYPE_CHECKING __init__")


def test_the_typed_constructors_match_the_fields() -> None:
    """The keyword signatures Job and JobResult show a type checker have every field, each
    required exactly when the field is."""
    for model in (models.Job, models.JobResult):
        init = _checker_init(model.__name__)
        defaults = dict(zip((a.arg for a in init.args.kwonlyargs), init.args.kw_defaults,
                            strict=True))
        assert list(defaults) == list(model.model_fields), model.__name__
        required = {name for name, default in defaults.items() if default is None}
        assert required == {name for name, info in model.model_fields.items()
                            if info.is_required()}, model.__name__
