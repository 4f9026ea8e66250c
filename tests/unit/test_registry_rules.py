"""The registry's rules, without a database."""

from __future__ import annotations

import pytest

from events import ArtifactRef
from services.artifacts import registry

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_a_new_version_is_registered() -> None:
    assert registry.decide(ArtifactRef("checkout", "1.4.2", A), None) == registry.Register()


def test_the_same_build_again_is_a_no_op() -> None:
    assert registry.decide(ArtifactRef("checkout", "1.4.2", A), A) == registry.AlreadyRegistered()


def test_another_digest_for_a_registered_version_is_a_conflict_that_says_what_to_do() -> None:
    decision = registry.decide(ArtifactRef("checkout", "1.4.2", B), A)
    assert isinstance(decision, registry.Conflict)
    assert decision.registered_digest == A
    assert f"checkout@1.4.2 already registered with digest {A}" in decision.reason
    assert B in decision.reason
    assert "immutable" in decision.reason
    assert "1.4.3" in decision.reason


@pytest.mark.parametrize(
    ("version", "hint"),
    [("1.4.2", "1.4.3"), ("2.0.9", "2.0.10"), ("1.4.2-rc1", "1.4.2-rc1-2"), ("7", "7-2")],
)
def test_next_version_hint(version: str, hint: str) -> None:
    assert registry.next_version_hint(version) == hint


def test_evidence_for_another_build_of_the_version_is_refused() -> None:
    assert registry.evidence_mismatch(None, "checkout@1.4.2", A) is None
    assert registry.evidence_mismatch(A, "checkout@1.4.2", A) is None
    reason = registry.evidence_mismatch(B, "checkout@1.4.2", A)
    assert reason is not None
    assert B in reason and A in reason and "another build" in reason
