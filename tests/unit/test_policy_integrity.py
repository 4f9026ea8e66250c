"""A policy update is put in force only if it is the model its sha256 names: the event carries
the file's text, the text hashes to the sha256, and it reads (validated) as the model carried.
The trust issue: a forged ``policy.updated`` with a made-up sha256 and a model without the
staging gate was put in force."""

from __future__ import annotations

import hashlib
import json
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from events import PolicyUpdated, decode, encode
from events.policy import PolicyContent
from events.testing import RELEASE_MODEL, sample
from policy import in_force, load_text, policy_updated
from policy.in_force import PolicyRefused, check_update

MODEL = textwrap.dedent("""\
    version: 1
    environments:
      - name: dev
      - name: staging
        after: [dev]
    gates:
      staging:
        criteria:
          - evidence: tests
            key: true
    """)
LOADED = load_text(MODEL.encode())
GOOD = LOADED.model.model_dump(mode="json")
NO_STAGING_GATE = {**GOOD, "gates": {}}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_published_file_is_accepted() -> None:
    assert check_update(LOADED.sha256, GOOD, MODEL) == LOADED.model


def test_a_model_equal_once_validated_is_accepted() -> None:
    # The model as validated (defaults written out) and the file (defaults left out) are one.
    raw = {"version": 1, "environments": [{"name": "dev"}, {"name": "staging", "after": ["dev"]}]}
    raw["gates"] = {"staging": {"criteria": [{"evidence": "tests", "key": True}]}}
    assert check_update(LOADED.sha256, raw, MODEL) == LOADED.model


def test_a_text_that_does_not_hash_to_the_sha256_is_refused() -> None:
    made_up = "0" * 64
    with pytest.raises(PolicyRefused, match=f"its text hashes to {LOADED.sha256}, not to"):
        check_update(made_up, GOOD, MODEL)


def test_a_model_that_is_not_what_the_text_reads_as_is_refused() -> None:
    # the real file and its real hash, and a model without the staging gate
    with pytest.raises(PolicyRefused, match=r"not the one its text .* differ at gates\.staging"):
        check_update(LOADED.sha256, NO_STAGING_GATE, MODEL)


def test_an_update_without_its_text_is_refused() -> None:
    with pytest.raises(PolicyRefused, match="carries no text"):
        check_update(LOADED.sha256, GOOD, None)


def test_a_text_that_is_no_release_model_is_refused() -> None:
    text = "version: 1\nenvironments: [{name: dev, after: [nowhere]}]\n"
    with pytest.raises(PolicyRefused, match="its text is not a valid release model"):
        check_update(sha(text), GOOD, text)


def test_a_model_that_does_not_validate_is_refused() -> None:
    with pytest.raises(PolicyRefused, match="its model is not a valid release model"):
        check_update(LOADED.sha256, {**GOOD, "gatez": {}}, MODEL)


def test_the_event_carries_the_file_and_keep_sees_it() -> None:
    event = policy_updated(LOADED, updated_by="platform")
    content = event.subject.content
    assert content.text == MODEL and content.sha256 == LOADED.sha256
    # what a handler hands to keep: the model and the text it came with, after the wire too
    read = decode(encode(event, topic="t")).event
    assert isinstance(read, PolicyUpdated)
    c = read.subject.content
    assert c.text == MODEL
    assert check_update(c.sha256, c.model, c.text) == LOADED.model
    assert json.loads(read.to_json())["subject"]["content"]["model"] == GOOD  # a plain mapping


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sha256": LOADED.sha256, "source": "x", "updatedBy": "platform", "text": MODEL,
        "model": GOOD,
    }  # fmt: skip
    return {**base, **changes}


def test_the_contract_refuses_a_sha256_that_is_not_the_texts_hash() -> None:
    with pytest.raises(ValidationError, match="is not the hash of the text carried"):
        PolicyContent.model_validate(fields(sha256="ab" * 32))
    with pytest.raises(ValidationError, match="text\n  Field required"):
        PolicyContent.model_validate({k: v for k, v in fields().items() if k != "text"})
    with pytest.raises(ValidationError, match="lone surrogate"):
        PolicyContent.model_validate(fields(text="\ud800"))


def test_the_sample_is_an_update_keep_accepts() -> None:
    event = sample(PolicyUpdated)
    assert isinstance(event, PolicyUpdated)
    c = event.subject.content
    check_update(c.sha256, c.model, c.text)
    assert c.model == RELEASE_MODEL


class Untouchable:
    """A connection a refused update must never reach."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the connection was used ({name}) for a refused update")


async def test_keep_refuses_before_anything_is_in_force_or_cached() -> None:
    forged_sha = sha(MODEL + "# another file\n")
    conn: Any = Untouchable()
    with pytest.raises(PolicyRefused, match="carries no text"):
        await in_force.keep(conn, forged_sha, NO_STAGING_GATE, "mallory", None)
    with pytest.raises(PolicyRefused, match=r"differ at gates\.staging"):
        await in_force.keep(conn, LOADED.sha256, NO_STAGING_GATE, "mallory", MODEL)
    assert forged_sha not in in_force._PARSED
    assert in_force._PARSED.get(LOADED.sha256) in (None, LOADED.model)  # never the forged model
