"""People may decide only their part, on the real Kafka and Postgres: a production gate that
names its approvers and asks for four eyes counts an owner's approval, and answers a
stranger's and the change's author's with ``approval.refused``, saying why, while the build
waits."""

from __future__ import annotations

import textwrap

import pytest

from events import ApprovalRefused, ApprovalUpdated, ArtifactPackaged, GatePassed
from policy import load_text, policy_updated
from services.gates.app import SPEC as GATES
from tests.integration.conftest import NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration


def model_for(service: str) -> bytes:
    return textwrap.dedent(f"""\
        version: 1
        environments:
          - name: dev
          - name: prod
            after: [dev]
        teams:
          payments: {{members: [alice, bob]}}
        owners:
          {service}: {{team: payments}}
        gates:
          prod:
            approvals: 1
            approvers: [owners]
            four_eyes: true
        """).encode()


async def test_only_an_owner_who_is_not_the_author_can_approve_production(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    service = unique_service()
    loaded = load_text(model_for(service))

    def refusals() -> list[ApprovalRefused]:
        return [
            e for e in ns.log.events(ApprovalRefused) if isinstance(e, ApprovalRefused)
            and e.custom_data.service == service
        ]  # fmt: skip

    def prod_decisions() -> list[GatePassed]:
        return [
            e for e in ns.log.events(GatePassed) if isinstance(e, GatePassed)
            and e.subject.content.service == service and e.subject.content.environment == "prod"
        ]  # fmt: skip

    def registered() -> list[GatePassed]:
        return [
            e for e in ns.log.events(GatePassed) if isinstance(e, GatePassed)
            and e.subject.content.service == service and e.subject.content.environment == "dev"
        ]  # fmt: skip

    def approve(by: str) -> ApprovalUpdated:
        return ApprovalUpdated.build(
            service=service, version="1.0.0", environment="prod", by=by, decision="approved"
        )

    async with ns.service(), ns.service(GATES):
        await ns.publish(
            policy_updated(loaded, updated_by="platform", source="t", sender="t"),
            signed_as="platform",
        )
        await ns.publish(
            ArtifactPackaged.build(
                service=service, version="1.0.0", digest=digest(service), commit="c0ffee",
                author="alice",
            )
        )  # fmt: skip
        await ns.log.wait_for(registered)  # people approve a build they can see
        for n, person in enumerate(["mallory", "alice"], start=1):
            await ns.publish(approve(person), signed_as="person")
            await ns.log.wait_for(lambda n=n: len(refusals()) >= n)  # type: ignore[misc]
        assert prod_decisions() == []  # neither counts: production still waits

        await ns.publish(approve("bob"), signed_as="person")
        [passed] = await ns.log.wait_for(prod_decisions)

    mallory, alice = refusals()
    assert (mallory.subject.content.who, mallory.subject.content.reason) == (
        "mallory",
        f"mallory is not an approver of {service} for prod (approvers: owners (payments: "
        "alice, bob))",
    )
    assert (alice.subject.content.who, alice.subject.content.reason) == (
        "alice",
        "alice authored this change; the gate of prod needs four eyes",
    )
    assert {r.subject.content.policy_sha256 for r in refusals()} == {loaded.sha256}
    [approval] = [c for c in passed.subject.content.conditions if c.criterion == "approval"]
    assert approval.verdict == "pass"
    assert approval.measured == {
        "approvals": 1,
        "not_counted": [
            "alice authored this change; the gate of prod needs four eyes",
            f"mallory is not an approver of {service} for prod (approvers: owners (payments: "
            "alice, bob))",
        ],
    }
    assert len(refusals()) == 2  # bob's approval was counted, not refused
