"""Every event type Lockstep knows, looked up by its type string (any version of one major).

The registry fills itself: defining a subclass of ``CDEvent`` that sets ``TYPE`` registers it
(``CDEvent.__pydantic_init_subclass__`` calls ``register``). Bases that share behaviour and set
no ``TYPE`` of their own (``_GateDecision``) are not event types and are not registered. Every
module with event models is imported by ``events/__init__.py``, so importing anything from
``events`` loads them all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from events import topics
from events._base import CDEvent, split_type

_MODELS: list[type[CDEvent]] = []
_BY_NAME_AND_MAJOR: dict[tuple[str, int], type[CDEvent]] = {}


def _where(model: type[CDEvent]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


def register(model: type[CDEvent]) -> None:
    """Add ``model`` (a class that sets ``TYPE``); refuse a type or a name already taken."""
    parts = split_type(model.TYPE)
    if parts is None:
        raise TypeError(
            f"{_where(model)}.TYPE is {model.TYPE!r}: an event type is "
            "dev.cdevents.<subject>.<predicate>.<M.m.p> or "
            "dev.cdeventsx.lockstep-<subject>.<predicate>.<M.m.p>"
        )
    if getattr(model, "TOPIC", None) not in topics.ALL:
        raise TypeError(
            f"{_where(model)}.TOPIC is {getattr(model, 'TOPIC', None)!r}; "
            f"it must be one of events.topics.ALL: {', '.join(topics.ALL)}"
        )
    # a module imported again (importlib.reload) defines the same class anew: replace it
    _unregister(_where(model))
    taken = _BY_NAME_AND_MAJOR.get(parts)
    if taken is not None:
        raise TypeError(
            f"{_where(model)} and {_where(taken)} both read {parts[0]} major {parts[1]} "
            f"({model.TYPE}, {taken.TYPE}); one model per type and major version"
        )
    named = next((m for m in _MODELS if m.__name__ == model.__name__), None)
    if named is not None:
        raise TypeError(
            f"{_where(model)} and {_where(named)} share the name {model.__name__!r}, which "
            "names the message in the AsyncAPI document; give the new model another name"
        )
    _MODELS.append(model)
    _BY_NAME_AND_MAJOR[parts] = model


def _unregister(where: str) -> None:
    for old in [m for m in _MODELS if _where(m) == where]:
        _MODELS.remove(old)
        _BY_NAME_AND_MAJOR.pop(next(k for k, v in _BY_NAME_AND_MAJOR.items() if v is old))


class _EventTypes(Sequence[type[CDEvent]]):
    """A read-only, live view of the registered models, in the order they were defined."""

    @overload
    def __getitem__(self, index: int) -> type[CDEvent]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[type[CDEvent]]: ...
    def __getitem__(self, index: int | slice) -> type[CDEvent] | Sequence[type[CDEvent]]:
        return tuple(_MODELS)[index]

    def __len__(self) -> int:
        return len(_MODELS)

    def __iter__(self) -> Iterator[type[CDEvent]]:
        return iter(tuple(_MODELS))

    def __repr__(self) -> str:
        return f"EVENT_TYPES({', '.join(m.__name__ for m in _MODELS)})"


EVENT_TYPES: Sequence[type[CDEvent]] = _EventTypes()


def model_for(event_type: str) -> type[CDEvent] | None:
    """The model reading ``event_type``. A newer minor or patch version of a known type is read
    by the model we have (versions only add optional fields; unknown fields are ignored)."""
    parts = split_type(event_type)
    return None if parts is None else _BY_NAME_AND_MAJOR.get(parts)


def known_types() -> list[str]:
    return [model.TYPE for model in _MODELS]
