"""Every service `lockstep run` knows, by name (imported only when run)."""

from __future__ import annotations

import importlib

from shared.service import ServiceSpec

SERVICES: dict[str, str] = {
    "artifacts": "services.artifacts.app",
    "gates": "services.gates.app",
    "promotion": "services.promotion.app",
    "flags": "services.flags.app",
    "incidents": "services.incidents.app",
}


def spec(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    module = importlib.import_module(SERVICES[name])
    found: ServiceSpec = module.SPEC
    return found
