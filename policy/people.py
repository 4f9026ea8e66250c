"""Who may approve a build for an environment, under a release model.

A gate that asks for approvals may name its ``approvers``: people, ``team:<name>`` (the
members of a team the model declares under ``teams``) and ``owners`` (the members of the team
that owns the service, ``owners.<service>.team``). A gate without approvers lets any person
approve; the person is who their key says (the signature on ``approval.updated``), not who
they claim to be. ``four_eyes`` refuses the change's author, as CI named it
(``lockstep publish artifact --author``); where CI named no author, nobody can be shown not to
be it, so a four-eyes gate refuses every approval of that build and says how to fix it.

The same rule answers for an approval (``approval_refusal``) and for a rejection: a person who
may not approve a build may not block it either.
"""

from __future__ import annotations

from policy.model import OWNERS, TEAM_PREFIX, ReleaseModel


def approvers_of(model: ReleaseModel, environment: str, service: str) -> frozenset[str] | None:
    """The people who may approve ``service`` for ``environment`` (None: any person)."""
    gate = model.gates.get(environment)
    if gate is None or not gate.approvers:
        return None
    people: set[str] = set()
    for approver in gate.approvers:
        if approver == OWNERS:
            owner = model.owners.get(service)
            team = model.teams.get(owner.team) if owner is not None else None
            people.update(team.members if team is not None else ())
        elif approver.startswith(TEAM_PREFIX):
            team = model.teams.get(approver.removeprefix(TEAM_PREFIX))
            people.update(team.members if team is not None else ())
        else:
            people.add(approver)
    return frozenset(people)


def approval_refusal(
    model: ReleaseModel, environment: str, service: str, who: str, author: str | None
) -> str | None:
    """Why ``who`` may not approve (or reject) ``service`` for ``environment``, whose change
    ``author`` made (None: CI did not say); None if they may."""
    gate = model.gates.get(environment)
    if gate is None:
        return None
    allowed = approvers_of(model, environment, service)
    if allowed is not None and who not in allowed:
        return (
            f"{who} is not an approver of {service} for {environment} "
            f"(approvers: {_listed(model, environment, service)})"
        )
    if gate.four_eyes:
        if author is None:
            return (
                f"the gate of {environment} needs four eyes and CI did not say who authored "
                f"this build of {service}; publish it with --author"
            )
        if _same_person(who, author):
            return f"{who} authored this change; the gate of {environment} needs four eyes"
    return None


def _same_person(who: str, author: str) -> bool:
    """Whether the approver is the author as CI wrote them: compared without case, and a
    mail address's local part counts as the name (``Alice`` or ``alice@example.com`` is
    alice), so a different spelling of one's own name does not pass as four eyes."""

    def plain(name: str) -> str:
        return name.strip().casefold()

    a, b = plain(who), plain(author)
    return a == b or a.split("@")[0] == b.split("@")[0]


def _listed(model: ReleaseModel, environment: str, service: str) -> str:
    said = []
    for approver in model.gates[environment].approvers:
        if approver == OWNERS:
            owner = model.owners.get(service)
            team = model.teams.get(owner.team) if owner is not None else None
            if owner is None:
                said.append(f"owners (none declared for {service})")
            elif team is None:
                said.append(f"owners (team {owner.team} declares no members)")
            else:
                said.append(f"owners ({owner.team}: {', '.join(team.members)})")
        elif approver.startswith(TEAM_PREFIX):
            team = model.teams.get(approver.removeprefix(TEAM_PREFIX))
            members = ", ".join(team.members) if team is not None else "no members"
            said.append(f"{approver} ({members})")
        else:
            said.append(approver)
    return "; ".join(said)
