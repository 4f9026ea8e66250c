"""The rules of the registry, free of I/O: a version is bound to one digest forever."""

from __future__ import annotations

from dataclasses import dataclass

from events import ArtifactRef


@dataclass(frozen=True)
class Register:
    pass


@dataclass(frozen=True)
class AlreadyRegistered:
    """The same build again: nothing to do."""


@dataclass(frozen=True)
class Conflict:
    registered_digest: str
    reason: str


Decision = Register | AlreadyRegistered | Conflict


def decide(ref: ArtifactRef, registered_digest: str | None) -> Decision:
    assert ref.digest is not None
    if registered_digest is None:
        return Register()
    if registered_digest == ref.digest:
        return AlreadyRegistered()
    return Conflict(
        registered_digest=registered_digest,
        reason=(
            f"artifact {ref.label} already registered with digest {registered_digest}; "
            f"this build has {ref.digest}. A version is immutable: publish a new version "
            f"(e.g. {next_version_hint(ref.version)}) for the new build"
        ),
    )


def evidence_mismatch(
    evidence_digest: str | None, label: str, registered_digest: str
) -> str | None:
    """Why evidence naming ``evidence_digest`` cannot attach to the registered build, if so."""
    if evidence_digest is None or evidence_digest == registered_digest:
        return None
    return (
        f"evidence names {label} with digest {evidence_digest}, but {label} is registered with "
        f"{registered_digest}; the evidence is about another build: re-run it against "
        f"{registered_digest} or name the version that build was published as"
    )


def next_version_hint(version: str) -> str:
    """``1.4.2`` -> ``1.4.3``; a version whose last part is not a number gets ``-2``."""
    head, dot, last = version.rpartition(".")
    if dot and last.isdigit():
        return f"{head}.{int(last) + 1}"
    return f"{version}-2"
