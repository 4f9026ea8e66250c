"""What promotion decides when it looks at a service in an environment, from a snapshot of
what is known there: the newest build goes unless something holds it, trains leave together
and in dependency order, holds are told once. No database: time and facts are passed in."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from policy import load_text
from policy.model import ReleaseModel
from services.promotion.decide import (
    BadVersion,
    Candidate,
    IncidentHold,
    Look,
    Running,
    Snapshot,
    Tell,
    dependency_order,
    look_at,
    newest_first,
    weighs,
)
from services.promotion.holds import Hold

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=BERLIN)  # a Tuesday, before the freeze


def model(extra: str = "") -> ReleaseModel:
    return load_text(
        (
            textwrap.dedent("""\
            version: 1
            environments:
              - name: dev
              - name: staging
                after: [dev]
              - name: prod-eu
                after: [staging]
            windows:
              - name: holiday freeze
                kind: deny
                environments: [prod-eu]
                start: 2026-12-21T00:00:00
                end: 2027-01-04T09:00:00
                timezone: Europe/Berlin
            dependencies:
              checkout:
                - service: payments
                  version: ">=2.3"
            """)
            + textwrap.dedent(extra)
        ).encode()
    ).model


PLAIN = model()
TRAIN = model("""\
    trains:
      - name: shop
        services: [checkout, payments, cart]
        environments: [staging]
    """)
WEEKLY = model("""\
    trains:
      - name: weekly
        services: [checkout, payments]
        environments: [staging]
        cutoff: FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=0
        timezone: Europe/Berlin
    """)


def candidate(
    label: str,
    environment: str = "staging",
    *,
    state: str = "waiting",
    at: datetime = T0,
    told: list[str] | None = None,
) -> Candidate:
    service, version = label.split("@")
    return Candidate(
        service=service, version=version, environment=environment,
        digest=f"sha256:{version}", purl=f"pkg:oci/{service}@{version}", state=state,
        holds=[{"kind": "x", "reason": r, "until": None} for r in told or []], created_at=at,
    )  # fmt: skip


def running(version: str) -> Running:
    return Running(version, f"sha256:{version}", T0 - timedelta(days=1))


def snapshot(*found: Candidate, environment: str = "staging", **known: object) -> Snapshot:
    waiting: dict[str, list[Candidate]] = {}
    failed: dict[str, list[Candidate]] = {}
    for c in found:
        (waiting if c.state == "waiting" else failed).setdefault(c.service, []).append(c)
    runs_in = known.pop("runs_in", None)
    if runs_in is None:  # by default every build runs where it came from
        runs_in = {(c.service, c.version): {"dev", "staging"} for c in found}
    return Snapshot(environment, waiting, failed, runs_in=runs_in, **known)  # type: ignore[arg-type]


def held(look: Look) -> list[tuple[str, list[str]]]:
    return [(t.candidate.label, [h.reason for h in t.holds]) for t in look.held]


def approved(look: Look) -> list[tuple[str, str | None]]:
    return [(a.candidate.label, a.train) for a in look.approved]


def test_weighs_the_service_or_its_whole_train_and_nothing_outside_the_model() -> None:
    assert weighs(PLAIN, "checkout", "staging") == ["checkout"]
    assert weighs(TRAIN, "cart", "staging") == ["checkout", "payments", "cart"]
    assert weighs(TRAIN, "cart", "prod-eu") == ["cart"]  # the train does not go there
    assert weighs(PLAIN, "checkout", "qa") is None


def test_the_newest_build_goes_and_older_waiting_ones_are_superseded() -> None:
    snap = snapshot(
        candidate("payments@2.3.0", at=T0),
        candidate("payments@2.10.0", at=T0 - timedelta(hours=1)),  # a version, not a string
        candidate("payments@2.4.0", at=T0 + timedelta(hours=1)),
        running={"payments": running("2.2.0")},
    )
    look = look_at(PLAIN, "payments", "staging", snap, T0)
    assert approved(look) == [("payments@2.10.0", None)]
    assert look.approved[0].previous == running("2.2.0")
    assert {c.label for c in look.superseded} == {"payments@2.3.0", "payments@2.4.0"}
    assert look.held == []


def test_versions_that_do_not_parse_rank_below_those_that_do_then_by_arrival() -> None:
    ordered = newest_first([
        candidate("x@nightly", at=T0 + timedelta(hours=2)),
        candidate("x@1.0.0", at=T0),
        candidate("x@snapshot", at=T0 + timedelta(hours=1)),
    ])  # fmt: skip
    assert [c.version for c in ordered] == ["1.0.0", "nightly", "snapshot"]


def test_nothing_waiting_decides_nothing() -> None:
    snap = snapshot(candidate("payments@2.3.0", state="gate-failed"))
    assert look_at(PLAIN, "payments", "staging", snap, T0) == Look()


def test_a_freeze_holds_until_it_lifts_and_says_when_to_look_again() -> None:
    c = candidate("payments@2.3.0", "prod-eu")
    snap = snapshot(c, environment="prod-eu", runs_in={("payments", "2.3.0"): {"staging"}})
    frozen = look_at(PLAIN, "payments", "prod-eu", snap, datetime(2026, 12, 22, tzinfo=BERLIN))
    assert held(frozen) == [
        ("payments@2.3.0", ["prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)"])
    ]
    [tell] = frozen.held
    assert tell.next_check == datetime(2027, 1, 4, 9, 0, tzinfo=BERLIN)
    assert tell.views == [
        {
            "kind": "window",
            "reason": "prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)",
            "until": "2027-01-04T09:00:00+01:00",
        }
    ]
    lifted = look_at(PLAIN, "payments", "prod-eu", snap, datetime(2027, 1, 4, 9, 30, tzinfo=BERLIN))
    assert approved(lifted) == [("payments@2.3.0", None)]


def test_a_hold_is_news_only_when_its_reasons_change() -> None:
    hold = Hold("window", "frozen", T0)
    assert Tell(candidate("a@1.0.0"), [hold]).news
    assert not Tell(candidate("a@1.0.0", told=["frozen"]), [hold]).news
    assert Tell(candidate("a@1.0.0", told=["frozen"]), [hold, Hold("dependency", "needs")]).news
    assert Tell(candidate("a@1.0.0", told=["frozen"]), [hold]).next_check == T0
    assert Tell(candidate("a@1.0.0"), [Hold("dependency", "needs")]).next_check is None


def test_a_build_goes_on_only_from_where_it_runs() -> None:
    c = candidate("payments@2.3.0", "prod-eu")
    snap = snapshot(c, environment="prod-eu", runs_in={("payments", "2.3.0"): {"dev"}})
    assert held(look_at(PLAIN, "payments", "prod-eu", snap, T0)) == [
        ("payments@2.3.0", ["payments@2.3.0 does not run in staging yet"])
    ]


def test_a_dependency_is_met_only_by_what_runs_in_the_environment() -> None:
    c = candidate("checkout@1.0.0")
    none = look_at(PLAIN, "checkout", "staging", snapshot(c), T0)
    assert held(none) == [("checkout@1.0.0", ["needs payments>=2.3 in staging, has none"])]
    old = snapshot(c, running={"payments": running("2.2.9")})
    assert held(look_at(PLAIN, "checkout", "staging", old, T0)) == [
        ("checkout@1.0.0", ["needs payments>=2.3 in staging, has 2.2.9"])
    ]
    ok = snapshot(c, running={"payments": running("2.3.0")})
    assert approved(look_at(PLAIN, "checkout", "staging", ok, T0)) == [("checkout@1.0.0", None)]


def test_the_stopped_line_holds_all_but_its_hotfixes_and_holds_come_in_order() -> None:
    stopped = model("""\
        stop_the_line:
          active: true
          reason: INC-42
          hotfixes: [payments@2.3.1]
        """)
    snap = snapshot(candidate("checkout@1.0.0"), runs_in={})
    assert held(look_at(stopped, "checkout", "staging", snap, T0)) == [
        ("checkout@1.0.0", [
            "the line is stopped: INC-42 (only listed hotfixes move)",
            "checkout@1.0.0 does not run in dev yet",
            "needs payments>=2.3 in staging, has none",
        ])
    ]  # fmt: skip
    hotfix = snapshot(candidate("payments@2.3.1"))
    assert approved(look_at(stopped, "payments", "staging", hotfix, T0)) == [
        ("payments@2.3.1", None)
    ]


def test_a_rollback_holds_the_service_and_its_bad_version_oldest_first() -> None:
    c = candidate("payments@2.3.0")
    incident = IncidentHold("payments", "INC-7", "error rate", T0)
    elsewhere = IncidentHold("cart", "INC-8", "not ours", T0 - timedelta(days=1))
    bad = (
        "payments@2.3.0 was rolled back in prod-eu (INC-7: error rate); "
        "release it to promote it again"
    )
    marked = BadVersion("payments", "2.3.0", "prod-eu", "INC-7", "error rate", T0)
    other_version = BadVersion("payments", "2.2.0", "prod-eu", "INC-1", "older", T0)
    at_once = snapshot(
        c, incident_holds=[incident, elsewhere], bad_versions=[marked, other_version]
    )
    assert held(look_at(PLAIN, "payments", "staging", at_once, T0)) == [
        ("payments@2.3.0", ["incident INC-7: error rate (until it is resolved or released)", bad])
    ]  # an incident first when they came at once
    earlier = replace(marked, marked_at=T0 - timedelta(hours=1))
    assert held(
        look_at(PLAIN, "payments", "staging", replace(at_once, bad_versions=[earlier]), T0)
    ) == [
        ("payments@2.3.0", [bad, "incident INC-7: error rate (until it is resolved or released)"])
    ]
    released = snapshot(c, bad_versions=[other_version])
    assert approved(look_at(PLAIN, "payments", "staging", released, T0)) == [
        ("payments@2.3.0", None)
    ]


def test_a_train_waits_for_a_member_whose_gate_failed_and_tells_every_cleared_member() -> None:
    snap = snapshot(
        candidate("checkout@1.0.0", told=["old news"]),
        candidate("cart@1.0.0"),
        candidate("payments@2.3.0", state="gate-failed"),
        candidate("payments@2.2.0", state="gate-failed"),
    )
    look = look_at(TRAIN, "cart", "staging", snap, T0)
    why = (
        "train shop to staging waiting for checkout, payments (checkout@1.0.0: needs "
        "payments>=2.3 in staging, has none; payments@2.3.0 failed its gate)"
    )
    assert held(look) == [("cart@1.0.0", [why])]  # checkout is held by its dependency
    assert look.approved == []


def test_a_train_member_held_by_its_own_holds_hears_those_first() -> None:
    snap = snapshot(candidate("cart@1.0.0", "staging"), runs_in={})
    assert held(look_at(TRAIN, "cart", "staging", snap, T0)) == [
        ("cart@1.0.0", ["cart@1.0.0 does not run in dev yet"])
    ]


def test_a_member_without_any_build_is_named() -> None:
    snap = snapshot(candidate("cart@1.0.0"), candidate("payments@2.3.0"))
    look = look_at(TRAIN, "cart", "staging", snap, T0)
    why = "train shop to staging waiting for checkout (checkout: no build has passed its gate)"
    # every cleared member hears it, in the train's order
    assert held(look) == [("payments@2.3.0", [why]), ("cart@1.0.0", [why])]


def test_a_full_train_leaves_in_dependency_order_riding_together() -> None:
    snap = snapshot(
        candidate("cart@1.0.0"),
        candidate("checkout@1.0.0"),
        candidate("payments@2.3.0"),
        candidate("payments@2.2.0"),  # an older build of another member is not superseded
        running={"checkout": running("0.9.0")},
    )
    look = look_at(TRAIN, "cart", "staging", snap, T0)
    # checkout's dependency is met by the payments riding along
    assert approved(look) == [
        ("payments@2.3.0", "shop"),
        ("checkout@1.0.0", "shop"),
        ("cart@1.0.0", "shop"),
    ]
    assert [a.previous for a in look.approved] == [None, running("0.9.0"), None]
    assert look.superseded == []
    assert dependency_order(TRAIN, ["checkout", "payments", "cart"]) == [
        "payments",
        "checkout",
        "cart",
    ]


def test_a_train_with_a_cut_off_leaves_at_its_first_cut_off_after_all_were_ready() -> None:
    ready_at = datetime(2026, 12, 2, 9, 0, tzinfo=BERLIN)  # a Wednesday
    snap = snapshot(
        candidate("payments@2.3.0", at=ready_at - timedelta(days=1)),
        candidate("checkout@1.0.0", at=ready_at),
    )
    waiting = look_at(WEEKLY, "checkout", "staging", snap, ready_at + timedelta(hours=1))
    leaves = "train weekly to staging leaves 2026-12-03 12:00 Europe/Berlin (cut-off)"
    assert held(waiting) == [("checkout@1.0.0", [leaves]), ("payments@2.3.0", [leaves])]
    assert waiting.held[0].next_check == datetime(2026, 12, 3, 12, 0, tzinfo=BERLIN)
    gone = look_at(WEEKLY, "checkout", "staging", snap, datetime(2026, 12, 3, 12, 1, tzinfo=BERLIN))
    assert approved(gone) == [("payments@2.3.0", "weekly"), ("checkout@1.0.0", "weekly")]


def test_time_is_only_what_is_passed_in() -> None:
    snap = snapshot(candidate("payments@2.3.0", "prod-eu"), environment="prod-eu")
    at = datetime(2026, 12, 25, 12, 0, tzinfo=UTC)
    assert look_at(PLAIN, "payments", "prod-eu", snap, at) == look_at(
        PLAIN, "payments", "prod-eu", snap, at
    )
    assert held(look_at(PLAIN, "payments", "prod-eu", snap, at))[0][1][0].startswith(
        "prod-eu frozen"
    )
