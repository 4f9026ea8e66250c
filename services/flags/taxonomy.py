"""What Lockstep adds to a flagd flag, in its ``metadata``: the flag's type from a shared
taxonomy (which sets how long it is expected to live), the team that owns it, and the
release (``service@version``) it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from events import ArtifactRef, ArtifactRefError

TYPE_KEY: Final = "type"
OWNER_KEY: Final = "owner"
RELEASE_KEY: Final = "release"

# How long a flag of each type is expected to live; None: for as long as the code does.
LIFETIMES: Final[dict[str, timedelta | None]] = {
    "release": timedelta(days=30),  # ship dark, roll out, then delete the flag
    "experiment": timedelta(days=90),  # until the experiment has its answer
    "operational": timedelta(days=365),  # a tuning knob: revisit yearly
    "kill-switch": None,  # kept to turn a feature off in an incident
    "permission": None,  # who may see a feature
}


@dataclass(frozen=True)
class Taxonomy:
    type: str
    owner: str
    release: str | None  # service@version

    @property
    def lifetime(self) -> timedelta | None:
        return LIFETIMES[self.type]

    @property
    def service(self) -> str | None:
        return self.release.split("@", 1)[0] if self.release else None


def problems(metadata: Any) -> list[tuple[str, str]]:
    """(metadata key, reason) for each way ``metadata`` misses the taxonomy."""
    if not isinstance(metadata, dict):
        return [("", "Lockstep needs flag metadata with type and owner")]
    found: list[tuple[str, str]] = []
    kind = metadata.get(TYPE_KEY)
    if kind not in LIFETIMES:
        found.append((TYPE_KEY, f"type must be one of {', '.join(LIFETIMES)} (got {kind!r})"))
    owner = metadata.get(OWNER_KEY)
    if not isinstance(owner, str) or not owner.strip():
        found.append((OWNER_KEY, "owner must name the team that owns the flag"))
    release = metadata.get(RELEASE_KEY)
    if release is not None and not _is_label(release):
        found.append((RELEASE_KEY, f"release must be service@version (got {release!r})"))
    return found


def _is_label(release: Any) -> bool:
    """service@version, as the artifact contract reads one."""
    if not isinstance(release, str):
        return False
    try:
        ArtifactRef.parse_label(release)
    except ArtifactRefError:
        return False
    return True


def of(metadata: dict[str, Any]) -> Taxonomy:
    """The taxonomy of a flag whose metadata passed ``problems``."""
    release = metadata.get(RELEASE_KEY)
    return Taxonomy(
        type=str(metadata[TYPE_KEY]),
        owner=str(metadata[OWNER_KEY]),
        release=str(release) if release is not None else None,
    )
