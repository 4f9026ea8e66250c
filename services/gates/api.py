"""The gates service's public face: what people tell it. A person's decision on a build for
an environment whose gate asks for approval is an ``approval.updated`` event; build it here
and publish it (``shared.bus``). The gates service judges it with the rest of the evidence."""

from __future__ import annotations

from events import ApprovalUpdated

__all__ = ["ApprovalUpdated", "approval"]


def approval(
    service: str,
    version: str,
    *,
    environment: str,
    by: str,
    approved: bool,
    source: str = "lockstep/cli",
) -> ApprovalUpdated:
    """``by`` approves (or rejects) ``service@version`` for ``environment``."""
    return ApprovalUpdated.build(
        service=service, version=version, environment=environment, by=by,
        decision="approved" if approved else "rejected", source=source,
    )  # fmt: skip
