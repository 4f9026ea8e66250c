"""What holds a build back, and the words it is told in. Time is passed in: nothing sleeps."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from policy import load_text
from services.promotion.holds import (
    dependency_holds,
    previous_environment_hold,
    stop_the_line_hold,
    train_departure_hold,
    train_hold,
    train_of,
    window_hold,
)

BERLIN = ZoneInfo("Europe/Berlin")

MODEL = load_text(
    textwrap.dedent("""\
        version: 1
        environments:
          - name: staging
          - name: prod-eu
            after: [staging]
            region: eu
          - name: prod-us
            after: [staging]
            region: us
        windows:
          - name: business hours
            kind: allow
            environments: [prod-eu]
            rrule: FREQ=WEEKLY;BYDAY=MO,TU,WE,TH;BYHOUR=9;BYMINUTE=0
            duration: 8h
            timezone: Europe/Berlin
          - name: holiday freeze
            kind: deny
            regions: [eu, us]
            start: 2026-12-21T00:00:00
            end: 2027-01-04T09:00:00
            timezone: Europe/Berlin
        trains:
          - name: shop
            services: [checkout, payments, cart]
            environments: [prod-eu]
        dependencies:
          checkout:
            - service: payments
              version: ">=2.3"
        stop_the_line:
          active: true
          reason: payments outage INC-42
          hotfixes: [payments@2.3.1]
        """).encode()
).model


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def test_inside_an_allow_window_nothing_holds() -> None:
    assert window_hold(MODEL, "prod-eu", at("2026-11-26T10:30")) is None  # a Thursday


def test_outside_the_allow_windows_the_hold_says_when_the_next_opens() -> None:
    hold = window_hold(MODEL, "prod-eu", at("2026-11-27T10:30"))  # a Friday
    assert hold is not None and hold.kind == "window"
    assert hold.reason == (
        "prod-eu is outside its deployment windows; next opens 2026-11-30 09:00 Europe/Berlin "
        "(business hours)"
    )
    assert hold.until == at("2026-11-30T09:00")
    assert window_hold(MODEL, "prod-eu", at("2026-11-26T17:00")) is not None  # 8 h are up


def test_a_deny_window_wins_over_an_allow_window_and_says_until_when() -> None:
    hold = window_hold(MODEL, "prod-eu", at("2026-12-21T10:00"))  # a Monday, in business hours
    assert hold is not None
    assert hold.reason == "prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)"
    assert hold.until == at("2027-01-04T09:00")


def test_windows_follow_the_region_and_the_time_zone() -> None:
    # prod-us has no allow windows; the freeze names its region; the instant is the same
    assert window_hold(MODEL, "prod-us", datetime(2026, 11, 27, 9, 30, tzinfo=UTC)) is None
    assert window_hold(MODEL, "prod-us", datetime(2026, 12, 22, 12, 0, tzinfo=UTC)) is not None
    assert window_hold(MODEL, "staging", datetime(2026, 12, 22, 12, 0, tzinfo=UTC)) is None


def test_stop_the_line_holds_all_but_the_listed_hotfixes() -> None:
    hold = stop_the_line_hold(MODEL, "checkout@1.4.2")
    assert hold is not None
    assert hold.reason == "the line is stopped: payments outage INC-42 (only listed hotfixes move)"
    assert stop_the_line_hold(MODEL, "payments@2.3.1") is None


def test_a_build_goes_on_from_where_it_runs() -> None:
    hold = previous_environment_hold(MODEL, "prod-eu", "checkout@1.4.2", runs_in=set())
    assert hold is not None and hold.reason == "checkout@1.4.2 does not run in staging yet"
    assert previous_environment_hold(MODEL, "prod-eu", "checkout@1.4.2", {"staging"}) is None


def test_a_dependency_names_what_is_needed_and_what_is_there() -> None:
    [hold] = dependency_holds(MODEL, "checkout", "prod-eu", {"payments": "2.2.9"})
    assert hold.reason == "needs payments>=2.3 in prod-eu, has 2.2.9"
    [none] = dependency_holds(MODEL, "checkout", "prod-eu", {})
    assert none.reason == "needs payments>=2.3 in prod-eu, has none"
    assert dependency_holds(MODEL, "checkout", "prod-eu", {"payments": "2.3.0"}) == []
    assert dependency_holds(MODEL, "payments", "prod-eu", {}) == []


def test_a_train_waits_for_every_member() -> None:
    train = train_of(MODEL, "checkout", "prod-eu")
    assert train is not None and train.name == "shop"
    assert train_of(MODEL, "checkout", "prod-us") is None
    hold = train_hold(train, "prod-eu", ready={"checkout", "cart"})
    assert hold is not None and hold.reason == "train shop to prod-eu waiting for payments"
    assert train_hold(train, "prod-eu", ready={"checkout", "cart", "payments"}) is None


def test_a_train_with_a_cut_off_leaves_at_the_first_cut_off_after_all_are_ready() -> None:
    train = load_text(
        textwrap.dedent("""\
            version: 1
            environments: [{name: prod-eu}]
            trains:
              - name: shop
                services: [checkout, payments]
                environments: [prod-eu]
                cutoff: FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=0
                timezone: Europe/Berlin
            """).encode()
    ).model.trains[0]
    ready = at("2026-11-30T15:00")  # a Monday
    hold = train_departure_hold(train, "prod-eu", ready, now=at("2026-12-02T09:00"))
    assert hold is not None
    assert hold.reason == "train shop to prod-eu leaves 2026-12-03 12:00 Europe/Berlin (cut-off)"
    assert hold.until == at("2026-12-03T12:00")
    assert train_departure_hold(train, "prod-eu", ready, now=at("2026-12-03T12:00")) is None
    # ready after Thursday's cut-off: the next week's train
    late = train_departure_hold(
        train, "prod-eu", at("2026-12-03T12:05"), now=at("2026-12-04T10:00")
    )
    assert late is not None and late.until == at("2026-12-10T12:00")
