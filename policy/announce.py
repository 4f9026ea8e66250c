"""The event that puts a release model in force."""

from __future__ import annotations

from events import PolicyUpdated
from events.policy import PolicyContent, PolicySubject
from policy.loader import LoadedModel


def policy_updated(
    loaded: LoadedModel, *, updated_by: str, source: str | None = None, sender: str = "lockstep/cli"
) -> PolicyUpdated:
    """``policy.updated`` carrying the file as read, its sha256 (which decisions will cite)
    and the validated model."""
    return PolicyUpdated(
        context=PolicyUpdated.new_context(sender),
        subject=PolicySubject(
            id=loaded.sha256,
            content=PolicyContent(
                sha256=loaded.sha256,
                source=source or loaded.source,
                updated_by=updated_by,
                text=loaded.text,
                model=loaded.model.model_dump(mode="json"),
            ),
        ),
    )
