"""Definitions are refused with the JSON Pointer of the offending node: schema violations,
unknown $ref, mixed variant types, weights that cannot split, missing taxonomy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from services.flags.definitions import DefinitionError, SchemaMissing, check_flag_set
from shared.settings import Settings

SCHEMAS = Settings().flagd_schema_dir
META = {"type": "release", "owner": "payments", "release": "checkout@1.4.2"}
GOOD: dict[str, Any] = {
    "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@lockstep.dev"]}},
    "metadata": {"flagSetId": "prod-eu"},
    "flags": {
        "new-checkout": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {
                "if": [{"$ref": "staff"}, "on", {"fractional": [["on", 10], ["off", 90]]}]
            },
            "metadata": META,
        },
        "banner": {
            "state": "DISABLED",
            "variants": {"a": "Hello", "b": "Hi"},
            "defaultVariant": "a",
            "metadata": {"type": "experiment", "owner": "growth"},
        },
    },
}


def problems_of(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        check_flag_set(doc, SCHEMAS)
    return [(p.path, p.reason) for p in caught.value.problems]


def broken(path: list[str], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def test_a_good_flag_set_passes() -> None:
    check_flag_set(GOOD, SCHEMAS)


def test_a_wrong_state_names_the_state() -> None:
    found = problems_of(broken(["flags", "banner", "state"], "ON"))
    assert found[0][0] == "/flags/banner/state"
    assert "'ON'" in found[0][1]


def test_a_missing_default_variant_is_named() -> None:
    found = problems_of(broken(["flags", "banner", "defaultVariant"], KeyError))
    assert found[0][0] == "/flags/banner"
    assert "defaultVariant" in found[0][1]


def test_mixed_variant_types_name_the_variant_that_breaks_the_type() -> None:
    found = problems_of(broken(["flags", "banner", "variants", "b"], 3))
    assert found == [
        (
            "/flags/banner/variants/b",
            "variant 'b' is a number but 'a' is a string: all variants of a flag have one type",
        )
    ]


def test_an_unknown_ref_names_the_ref() -> None:
    doc = broken(["flags", "new-checkout", "targeting"], {"if": [{"$ref": "stafff"}, "on", "off"]})
    found = problems_of(doc)
    assert found == [
        (
            "/flags/new-checkout/targeting/if/0/$ref",
            "no evaluator named 'stafff' in $evaluators ('staff')",
        )
    ]


def test_a_default_that_is_not_a_variant_is_refused() -> None:
    found = problems_of(broken(["flags", "banner", "defaultVariant"], "c"))
    assert found[0][0] == "/flags/banner/defaultVariant"


@pytest.mark.parametrize(
    ("buckets", "where", "says"),
    [
        ([["on", -10], ["off", 110]], "/0/1", "cannot be negative"),
        ([["on", 0], ["off", 0]], "", "sum to 0"),
        ([["on", 2.5], ["off", 97.5]], "/0/1", "whole number"),
        ([["onn", 10], ["off", 90]], "/0/0", "not one of the flag's variants"),
        ([["on", 10], ["on", 90]], "/1/0", "two buckets"),
        ([], "", "at least one"),
    ],
)
def test_fractional_weights_that_make_no_sense(buckets: Any, where: str, says: str) -> None:
    doc = broken(["flags", "new-checkout", "targeting"], {"fractional": buckets})
    found = problems_of(doc)
    assert any(
        path.startswith("/flags/new-checkout/targeting/fractional" + where) and says in reason
        for path, reason in found
    ), found


def test_the_taxonomy_is_required() -> None:
    found = problems_of(broken(["flags", "banner", "metadata"], {"owner": "growth"}))
    assert found[0][0] == "/flags/banner/metadata/type"
    found = problems_of(broken(["flags", "banner", "metadata"], {"type": "fad", "owner": ""}))
    assert [p for p, _ in found] == ["/flags/banner/metadata/owner", "/flags/banner/metadata/type"]
    release = {**META, "release": "checkout"}
    found = problems_of(broken(["flags", "new-checkout", "metadata"], release))
    assert found[0] == (
        "/flags/new-checkout/metadata/release",
        "release must be service@version (got 'checkout') (Lockstep's flag taxonomy: "
        "metadata.type, metadata.owner, optional metadata.release)",
    )


def test_a_targeting_rule_the_schema_refuses_is_named() -> None:
    doc = broken(["flags", "new-checkout", "targeting"], {"starts_with": [{"var": "email"}]})
    found = problems_of(doc)
    assert found[0][0].startswith("/flags/new-checkout/targeting")


def test_not_an_object_at_all() -> None:
    assert problems_of(["flags"])[0][0] == ""
    assert problems_of({"flags": []})[0][0] == "/flags"


def test_missing_schemas_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(SchemaMissing, match="lockstep-infra up"):
        check_flag_set(GOOD, tmp_path)
