"""``lockstep approve`` and ``lockstep reject``: a person's decision on a build for an
environment whose gate asks for approval (through the gates service's public face)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.publish import Label, publish_and_say
from cli.root import of


def _decide(ctx: typer.Context, artifact: str, env: str, by: str, approved: bool) -> None:
    from cli.signing import person
    from services.gates.api import approval

    root = of(ctx)
    ref = root.parse_label(artifact)
    key = person(root, by)  # signed as the person: their key, their name
    assert key.name is not None
    event = approval(ref.service, ref.version, environment=env, by=key.name, approved=approved)
    publish_and_say(root, event, None, signing_key=key, principal="person")


def approve(
    ctx: typer.Context,
    artifact: Label,
    env: Annotated[str, typer.Option(help="The environment the build is approved for")],
    by: Annotated[str, typer.Option(help="Who approves (default: whose person key is here)")] = "",
) -> None:
    """Approve a build for an environment whose gate asks for approval."""
    _decide(ctx, artifact, env, by, approved=True)


def reject(
    ctx: typer.Context,
    artifact: Label,
    env: Annotated[str, typer.Option(help="The environment the build is rejected for")],
    by: Annotated[str, typer.Option(help="Who rejects (default: whose person key is here)")] = "",
) -> None:
    """Reject a build for an environment: its gate fails, naming who."""
    _decide(ctx, artifact, env, by, approved=False)
