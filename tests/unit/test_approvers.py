"""Who may approve a build: a gate's approvers (people, teams, the service's owners) and its
four-eyes rule, as the release model says them, and what the gates count. No database."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from policy import ModelError, load_text
from policy.model import ReleaseModel
from policy.people import approval_refusal, approvers_of
from services.gates.decide import Build, BuildSnapshot, judge

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SHA = "a" * 64

MODEL_TEXT = """\
version: 1
environments:
  - name: dev
  - name: prod
    after: [dev]
teams:
  payments: {members: [alice, bob]}
  sre: {members: [carol]}
owners:
  checkout: {team: payments}
  search: {team: nobody-declared}
gates:
  dev:
    approvals: 1
  prod:
    approvals: 1
    approvers: [owners, team:sre, dave@example.com]
    four_eyes: true
"""


def model(text: str = MODEL_TEXT) -> ReleaseModel:
    return load_text(textwrap.dedent(text).encode()).model


def refused(text: str) -> ModelError:
    with pytest.raises(ModelError) as caught:
        load_text(textwrap.dedent(text).encode())
    return caught.value


def test_approvers_are_people_teams_and_the_services_owners() -> None:
    m = model()
    assert approvers_of(m, "prod", "checkout") == {"alice", "bob", "carol", "dave@example.com"}
    # an owner team the model gives no members adds nobody; a service with no owner neither
    assert approvers_of(m, "prod", "search") == {"carol", "dave@example.com"}
    assert approvers_of(m, "prod", "unowned") == {"carol", "dave@example.com"}
    assert approvers_of(m, "dev", "checkout") is None  # no approvers named: any person
    assert approvers_of(m, "staging", "checkout") is None  # no gate at all


def test_a_person_outside_the_approvers_and_the_changes_author_are_refused() -> None:
    m = model()
    assert approval_refusal(m, "prod", "checkout", "alice", author="erin") is None
    assert approval_refusal(m, "prod", "checkout", "carol", author="erin") is None
    assert approval_refusal(m, "prod", "checkout", "mallory", author="erin") == (
        "mallory is not an approver of checkout for prod (approvers: owners (payments: "
        "alice, bob); team:sre (carol); dave@example.com)"
    )
    assert approval_refusal(m, "prod", "checkout", "alice", author="alice") == (
        "alice authored this change; the gate of prod needs four eyes"
    )
    # the author as CI spells them is still the author
    for spelt in ("Alice", " alice ", "alice@example.com", "ALICE@corp.example"):
        assert "authored this change" in (
            approval_refusal(m, "prod", "checkout", "alice", author=spelt) or ""
        ), spelt
    # four eyes cannot be shown without an author: refused, saying how to fix it
    assert approval_refusal(m, "prod", "checkout", "alice", author=None) == (
        "the gate of prod needs four eyes and CI did not say who authored this build of "
        "checkout; publish it with --author"
    )
    # without approvers or four eyes, anyone with a key may approve, the author too
    assert approval_refusal(m, "dev", "checkout", "mallory", author="mallory") is None


def test_the_model_refuses_approvers_it_cannot_resolve_with_their_line() -> None:
    unknown_team = refused(MODEL_TEXT.replace("team:sre", "team:ops"))
    assert [(p.line, p.message) for p in unknown_team.problems] == [
        (17, "no team 'ops'; declared: payments, sre")
    ]
    bad = refused(MODEL_TEXT.replace("dave@example.com", "'dave smith'"))
    assert bad.problems[0].line == 17
    assert "'dave smith' is not an approver" in bad.problems[0].message
    no_approvals = refused(MODEL_TEXT.replace("    approvals: 1\n    approvers", "    approvers"))
    assert "approvers and four_eyes need approvals" in no_approvals.problems[0].message
    empty_team = refused(MODEL_TEXT.replace("sre: {members: [carol]}", "sre: {members: []}"))
    assert empty_team.problems[0].line == 8


BUILD = Build("checkout", "1.4.2", "sha256:" + "1" * 64, "pkg:oci/checkout@sha256:1", "alice")


def prod_of(snapshot: BuildSnapshot) -> tuple[str, list[str], dict[str, object]] | None:
    judged = judge(model(), SHA, snapshot, T0)
    for d in judged.decisions:
        if d.environment == "prod":
            [cond] = [c for c in d.result.conditions if c.criterion == "approval"]
            return d.result.result, [cond.reason], cond.measured
    return None


def test_the_gate_counts_only_the_people_it_lets_decide() -> None:
    deployed = {"dev": T0}
    # the author's approval and a stranger's do not count: prod waits
    assert prod_of(
        BuildSnapshot(BUILD, deployed=deployed, approvals={"prod": {"alice": "approved"}})
    ) is None  # fmt: skip
    # an approver who is not the author counts; the others are named as not counted
    snap = BuildSnapshot(
        BUILD,
        deployed=deployed,
        approvals={"prod": {"alice": "approved", "bob": "approved", "mallory": "approved"}},
    )
    result, reasons, measured = prod_of(snap) or ("none", [], {})
    assert result == "pass"
    assert measured["approvals"] == 1
    assert measured["not_counted"] == [
        "alice authored this change; the gate of prod needs four eyes",
        "mallory is not an approver of checkout for prod (approvers: owners (payments: "
        "alice, bob); team:sre (carol); dave@example.com)",
    ]
    assert reasons[0].startswith("not counted: alice authored this change")


def test_a_stranger_cannot_block_a_build_with_a_rejection() -> None:
    snap = BuildSnapshot(
        BUILD,
        deployed={"dev": T0},
        approvals={"prod": {"carol": "approved", "mallory": "rejected"}},
    )
    result, _, _ = prod_of(snap) or ("none", [], {})
    assert result == "pass"
    by_approver = replace(snap, approvals={"prod": {"carol": "approved", "bob": "rejected"}})
    result, reasons, _ = prod_of(by_approver) or ("none", [], {})
    assert (result, reasons) == ("fail", ["rejected by bob"])
