"""The registry fills itself: a model that sets ``TYPE`` is an event type the moment its class
is defined; a shared base without one is not; two models never claim one type."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import events
from events import EVENT_TYPES, CDEvent, known_types, model_for
from events import _registry as registry
from events.deployments import ServiceDeployed

TEST_TYPE = "dev.cdeventsx.lockstep-registrytest.happened.0.1.0"


@pytest.fixture
def forget() -> Iterator[list[type[CDEvent]]]:
    """Models a test defines, taken out of the registry again afterwards."""
    defined: list[type[CDEvent]] = []
    before = list(EVENT_TYPES)
    yield defined
    for model in defined:
        registry._unregister(f"{model.__module__}.{model.__qualname__}")
    assert list(EVENT_TYPES) == before


def test_every_module_of_the_contract_is_loaded_and_every_model_exported() -> None:
    for info in pkgutil.walk_packages(events.__path__, "events."):
        importlib.import_module(info.name)
    assert len(EVENT_TYPES) >= 28
    for model in EVENT_TYPES:
        assert getattr(events, model.__name__, None) is model, (
            f"{model.__name__} is not imported by events/__init__.py: import it there (and add "
            "it to __all__) so it is loaded, and registered, whenever events is"
        )
        assert model.__name__ in events.__all__
    assert known_types() == [m.TYPE for m in EVENT_TYPES]


def test_shared_bases_are_not_event_types() -> None:
    names = {m.__name__ for m in EVENT_TYPES}
    assert not {"CDEvent", "_GateDecision", "_RunsIn", "_AboutArtifact", "_IncidentEvent"} & names


def test_a_model_that_sets_type_registers_itself(forget: list[type[CDEvent]]) -> None:
    class RegistryTestHappened(CDEvent):
        TYPE: ClassVar[str] = TEST_TYPE
        TOPIC: ClassVar[str] = events.topics.SIGNALS

    forget.append(RegistryTestHappened)

    class RegistryTestSubclass(RegistryTestHappened):  # inherits TYPE: not a new type
        pass

    assert EVENT_TYPES[-1] is RegistryTestHappened
    assert RegistryTestSubclass not in EVENT_TYPES
    assert model_for(TEST_TYPE) is RegistryTestHappened
    assert model_for(TEST_TYPE.replace("0.1.0", "0.4.2")) is RegistryTestHappened  # newer minor
    assert model_for(TEST_TYPE.replace("0.1.0", "1.0.0")) is None  # another major
    assert TEST_TYPE in known_types()


def test_a_module_defined_again_replaces_its_models(forget: list[type[CDEvent]]) -> None:
    def define() -> type[CDEvent]:
        class RegistryTestHappened(CDEvent):
            TYPE: ClassVar[str] = TEST_TYPE
            TOPIC: ClassVar[str] = events.topics.SIGNALS

        return RegistryTestHappened

    first = define()
    second = define()  # as importlib.reload would: same module, same qualified name
    forget.append(second)
    assert first is not second
    assert model_for(TEST_TYPE) is second
    assert first not in EVENT_TYPES


@pytest.mark.parametrize(
    ("attributes", "says"),
    [
        ({"TYPE": ServiceDeployed.TYPE.replace("0.3.0", "0.4.0")}, "one model per type"),
        ({"TYPE": "dev.lockstep.registrytest.happened.0.1.0"}, "an event type is"),
        ({"TYPE": TEST_TYPE, "TOPIC": "nowhere"}, "events.topics.ALL"),
    ],
)
def test_a_model_that_cannot_be_told_apart_is_refused(
    attributes: dict[str, Any], says: str, forget: list[type[CDEvent]]
) -> None:
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__annotations__": {"TYPE": "ClassVar[str]", "TOPIC": "ClassVar[str]"},
        "TOPIC": events.topics.DEPLOYMENTS,
        **attributes,
    }
    metaclass: Any = type(CDEvent)  # pydantic's, which builds the model and calls the hook
    with pytest.raises(TypeError, match=says):
        metaclass("RegistryTestRefused", (CDEvent,), namespace)
    assert model_for(ServiceDeployed.TYPE) is ServiceDeployed


def test_two_models_of_one_name_are_refused(forget: list[type[CDEvent]]) -> None:
    with pytest.raises(TypeError, match="share the name 'ServiceDeployed'"):

        class ServiceDeployed(CDEvent):  # another module's model of another type, same name
            TYPE: ClassVar[str] = TEST_TYPE
            TOPIC: ClassVar[str] = events.topics.DEPLOYMENTS

    assert TEST_TYPE not in known_types()
