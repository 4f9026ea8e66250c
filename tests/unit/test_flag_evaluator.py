"""Flag evaluation as flagd does it: every operator, every reason and error code, and the
fractional split's distribution and stability, checked against flagd's own engine."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from services.flags.evaluator import (
    DEFAULT,
    DISABLED,
    FLAG_NOT_FOUND,
    GENERAL,
    INVALID_CONTEXT,
    PARSE_ERROR,
    SPLIT,
    STATIC,
    TARGETING_KEY_MISSING,
    TARGETING_MATCH,
    TYPE_MISMATCH,
    ContextError,
    FlagSet,
    check_context,
)

BOOL = {"on": True, "off": False}


def flag(targeting: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"state": "ENABLED", "variants": BOOL, "defaultVariant": "off"}
    if targeting is not None:
        body["targeting"] = targeting
    body.update(extra)
    return body


def one(definition: dict[str, Any], context: dict[str, Any] | None = None, **kw: Any) -> Any:
    return FlagSet({"flags": {"f": definition}}).evaluate("f", context, **kw)


def when(rule: Any) -> dict[str, Any]:
    return flag({"if": [rule, "on", "off"]})


# --- reasons --------------------------------------------------------------------------------


def test_a_flag_without_targeting_is_static() -> None:
    e = one(flag())
    assert (e.reason, e.variant, e.value) == (STATIC, "off", False)


def test_targeting_that_picks_a_variant_is_a_targeting_match() -> None:
    e = one(when({"==": [{"var": "tier"}, "gold"]}), {"tier": "gold"})
    assert (e.reason, e.variant, e.value) == (TARGETING_MATCH, "on", True)


def test_targeting_that_returns_null_serves_the_default() -> None:
    e = one(flag({"if": [{"==": [{"var": "tier"}, "gold"]}, "on", None]}), {"tier": "tin"})
    assert (e.reason, e.variant, e.value) == (DEFAULT, "off", False)


def test_no_default_variant_means_the_callers_default() -> None:
    e = one({"state": "ENABLED", "variants": BOOL, "defaultVariant": None})
    assert (e.reason, e.variant, e.value, e.error_code) == (DEFAULT, None, None, None)


def test_a_disabled_flag_serves_the_callers_default() -> None:
    e = one(flag(state="DISABLED"))
    assert (e.reason, e.variant, e.value, e.error_code) == (DISABLED, None, None, None)


def test_a_fractional_choice_is_a_split() -> None:
    e = one(flag({"fractional": [["on", 50], ["off", 50]]}), {"targetingKey": "user-1"})
    assert e.reason == SPLIT and e.variant in ("on", "off")


def test_a_rule_around_a_split_that_chose_otherwise_is_a_targeting_match() -> None:
    rule = {"if": [{"==": [{"var": "beta"}, True]}, "on", {"fractional": [["on", 0], ["off", 1]]}]}
    assert one(flag(rule), {"targetingKey": "u", "beta": True}).reason == TARGETING_MATCH
    assert one(flag(rule), {"targetingKey": "u", "beta": False}).reason == SPLIT


# --- error codes ----------------------------------------------------------------------------


def test_an_unknown_flag_is_flag_not_found() -> None:
    e = FlagSet({"flags": {}}).evaluate("nope")
    assert (e.reason, e.error_code) == ("ERROR", FLAG_NOT_FOUND)
    assert "nope" in (e.error_details or "")


def test_a_split_without_targeting_key_says_so() -> None:
    e = one(flag({"fractional": [["on", 50], ["off", 50]]}), {"email": "a@b.c"})
    assert e.error_code == TARGETING_KEY_MISSING


def test_a_split_on_an_explicit_value_needs_no_targeting_key() -> None:
    e = one(flag({"fractional": [{"var": "email"}, ["on", 50], ["off", 50]]}), {"email": "a@b"})
    assert e.reason == SPLIT


def test_targeting_that_names_a_missing_variant_is_general() -> None:
    e = one(flag({"if": [True, "purple", "off"]}))
    assert e.error_code == GENERAL and "purple" in (e.error_details or "")


def test_a_malformed_context_is_invalid_context() -> None:
    for bad in (["a", "list"], "text", {"targetingKey": 42}):
        assert one(when({"==": [1, 1]}), bad).error_code == INVALID_CONTEXT
    # a value the rule cannot compute with is the context's fault too
    e = one(when({">": [{"/": [100, {"var": "sessions"}]}, 5]}), {"sessions": 0})
    assert e.error_code == INVALID_CONTEXT


def test_jsonlogic_compares_leniently_as_flagd_does() -> None:
    # JsonLogic follows JavaScript: an object is not less than 18, so the rule is false
    e = one(when({"<": [{"var": "age"}, 18]}), {"age": {"years": 3}})
    assert (e.reason, e.variant) == (TARGETING_MATCH, "off")


def test_a_malformed_context_is_refused_before_evaluation() -> None:
    with pytest.raises(ContextError, match="JSON object"):
        check_context(["not", "an", "object"])
    with pytest.raises(ContextError, match="targetingKey must be a string"):
        check_context({"targetingKey": 42})
    assert check_context(None) == {}


def test_targeting_that_cannot_run_is_a_parse_error() -> None:
    e = one(when({"no_such_operator": [1]}))
    assert e.error_code == PARSE_ERROR


def test_a_value_of_another_type_is_a_type_mismatch() -> None:
    e = one(flag()).as_type("string")
    assert (e.error_code, e.reason) == (TYPE_MISMATCH, "ERROR")
    assert one(flag()).as_type("boolean").error_code is None
    number = {"state": "ENABLED", "variants": {"a": 1, "b": 2.5}, "defaultVariant": "a"}
    assert one(number).as_type("integer").value == 1
    assert one(number).as_type("float").value == 1
    assert one(flag()).as_type("integer").error_code == TYPE_MISMATCH  # a bool is no int


# --- operators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "context", "expected"),
    [
        ({"starts_with": [{"var": "email"}, "admin@"]}, {"email": "admin@x.io"}, "on"),
        ({"starts_with": [{"var": "email"}, "admin@"]}, {"email": "bob@x.io"}, "off"),
        ({"ends_with": [{"var": "email"}, "@acme.com"]}, {"email": "a@acme.com"}, "on"),
        ({"ends_with": [{"var": "email"}, "@acme.com"]}, {"email": "a@other.com"}, "off"),
        ({"sem_ver": [{"var": "v"}, "=", "1.2.3"]}, {"v": "1.2.3"}, "on"),
        ({"sem_ver": [{"var": "v"}, "!=", "1.2.3"]}, {"v": "1.2.3"}, "off"),
        ({"sem_ver": [{"var": "v"}, ">", "1.2.3"]}, {"v": "1.10.0"}, "on"),
        ({"sem_ver": [{"var": "v"}, "<", "1.2.3"]}, {"v": "1.2.3-rc.1"}, "on"),
        ({"sem_ver": [{"var": "v"}, ">=", "2.0.0"]}, {"v": "1.9.9"}, "off"),
        ({"sem_ver": [{"var": "v"}, "<=", "2.0.0"]}, {"v": "2.0.0"}, "on"),
        ({"sem_ver": [{"var": "v"}, "~", "1.2.0"]}, {"v": "1.2.9"}, "on"),
        ({"sem_ver": [{"var": "v"}, "~", "1.2.0"]}, {"v": "1.3.0"}, "off"),
        ({"sem_ver": [{"var": "v"}, "^", "1.2.0"]}, {"v": "1.9.0"}, "on"),
        ({"sem_ver": [{"var": "v"}, "^", "1.2.0"]}, {"v": "2.0.0"}, "off"),
        ({"in": [{"var": "region"}, ["eu-1", "eu-2"]]}, {"region": "eu-2"}, "on"),
        ({"==": [{"var": "$flagd.flagKey"}, "f"]}, {}, "on"),
        ({"and": [{">=": [{"var": "age"}, 18]}, {"!": {"var": "banned"}}]}, {"age": 30}, "on"),
    ],
)
def test_operators(rule: Any, context: dict[str, Any], expected: str) -> None:
    assert one(when(rule), context).variant == expected


def test_flagd_timestamp_is_the_evaluation_time() -> None:
    launch = 1_800_000_000
    rule = when({">=": [{"var": "$flagd.timestamp"}, launch]})
    assert one(rule, now=launch - 1).variant == "off"
    assert one(rule, now=launch).variant == "on"


def test_evaluators_are_shared_by_ref() -> None:
    flags = FlagSet(
        {
            "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@lockstep.dev"]}},
            "flags": {"f": when({"$ref": "staff"})},
        }
    )
    assert flags.evaluate("f", {"email": "ann@lockstep.dev"}).variant == "on"
    assert flags.evaluate("f", {"email": "ann@else.dev"}).variant == "off"


def test_set_metadata_and_flag_metadata_are_merged_flag_first() -> None:
    doc = {
        "metadata": {"flagSetId": "prod-eu", "owner": "platform"},
        "flags": {"f": flag(metadata={"owner": "payments"})},
    }
    assert FlagSet(doc).evaluate("f").metadata == {"flagSetId": "prod-eu", "owner": "payments"}


# --- fractional: same variants as flagd, spread evenly, stable ---------------------------------

SPLIT_FLAG = flag(
    {"fractional": [["on", 25], ["off", 75]]},
)
THREE_WAYS = {
    "state": "ENABLED",
    "variants": {"red": "r", "green": "g", "blue": "b"},
    "defaultVariant": "red",
    "targeting": {"fractional": [["red", 1], ["green", 1], ["blue", 2]]},
}


def test_variants_match_flagds_own_engine_for_every_key() -> None:
    doc = {"flags": {"split": SPLIT_FLAG, "colours": THREE_WAYS}}
    ours = FlagSet(doc)
    flagd = FlagdCore()
    flagd.set_flags(doc)
    for i in range(2000):
        key = f"user-{i}"
        ctx = EvaluationContext(targeting_key=key)
        assert ours.evaluate("split", {"targetingKey": key}).variant == (
            flagd.resolve_boolean_value("split", False, ctx).variant
        )
        assert ours.evaluate("colours", {"targetingKey": key}).variant == (
            flagd.resolve_string_value("colours", "x", ctx).variant
        )


def test_fractional_spreads_keys_by_weight() -> None:
    flags = FlagSet({"flags": {"colours": THREE_WAYS}})
    n = 40_000
    counts = Counter(flags.evaluate("colours", {"targetingKey": f"k{i}"}).variant for i in range(n))
    expected = {"red": 0.25, "green": 0.25, "blue": 0.5}
    for variant, share in expected.items():
        assert abs(counts[variant] / n - share) < 0.01, counts
    # and no hot buckets: 100 groups of keys each land near the expected share
    shares = [
        sum(
            flags.evaluate("colours", {"targetingKey": f"g{g}-{i}"}).variant == "blue"
            for i in range(400)
        )
        / 400
        for g in range(100)
    ]
    assert abs(statistics.mean(shares) - 0.5) < 0.02


def test_the_same_key_always_gets_the_same_variant() -> None:
    flags = FlagSet({"flags": {"colours": THREE_WAYS}})
    first = [flags.evaluate("colours", {"targetingKey": f"k{i}"}).variant for i in range(500)]
    again = FlagSet({"flags": {"colours": THREE_WAYS}})
    for _ in range(3):
        assert [again.evaluate("colours", {"targetingKey": f"k{i}"}).variant
                for i in range(500)] == first  # fmt: skip


def test_a_growing_rollout_keeps_everyone_it_already_had() -> None:
    def on_at(percent: int) -> set[str]:
        flags = FlagSet(
            {"flags": {"f": flag({"fractional": [["on", percent], ["off", 100 - percent]]})}}
        )
        return {
            f"k{i}" for i in range(3000) if flags.evaluate("f", {"targetingKey": f"k{i}"}).value
        }

    ten, twenty_five = on_at(10), on_at(25)
    assert ten < twenty_five
    assert 0.08 < len(ten) / 3000 < 0.12
