"""Every service `lockstep run` knows: each package under ``services/`` with an ``app.py``
that declares ``SPEC`` (a ``ServiceSpec``). Found by looking, imported only when run, so
adding a service is adding its folder."""

from __future__ import annotations

import importlib
from pathlib import Path

from shared.service import ServiceSpec


def _discover() -> dict[str, str]:
    here = Path(__file__).resolve().parent
    found = sorted(p.name for p in here.iterdir() if (p / "app.py").is_file())
    return {name: f"services.{name}.app" for name in found}


SERVICES: dict[str, str] = _discover()


def spec(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    module = importlib.import_module(SERVICES[name])
    found: ServiceSpec = module.SPEC
    if found.name != name:
        raise KeyError(f"services/{name}/app.py declares the service {found.name!r}")
    return found
