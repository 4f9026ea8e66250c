"""Which key the command line signs a decision with: a person's decisions (an approval, a hold
released) with the person's key, a release model with the platform key, a flag change sent on
Kafka with an admin key. Missing: one line saying how to make it (``lockstep keys init``)."""

from __future__ import annotations

from cli.root import Root
from events import CDEvent
from events.signing import KeyStore, KeyStoreError, NoSigningKey, SigningKey, signers_of

# The roles the command line signs as, in the order it prefers them for a type.
CLI_ROLES = ("person", "platform", "admin")


def key_for(root: Root, event: CDEvent) -> SigningKey | None:
    """The key ``event`` is signed with from the command line; None: it is no decision."""
    roles = signers_of(event)
    if not roles:
        return None
    role = next((r for r in CLI_ROLES if r in roles), None)
    if role is None:
        raise root.fail(
            f"{event.context.type} is decided by the {' or '.join(sorted(roles))} service, "
            "not from the command line",
            one_line=True,
        )
    store = KeyStore(root.settings.key_dir)
    try:
        if role == "person":
            return store.person_key(root.settings.person)
        return store.signing_key(role)
    except (NoSigningKey, KeyStoreError) as exc:
        raise root.fail(str(exc), one_line=True) from None


def person(root: Root, claimed: str) -> SigningKey:
    """The person key to sign with, checked against who the command says acts (``claimed``;
    empty: whoever the key is of). Another person's name is refused here, before anything is
    sent: every verifier would refuse it as an impersonation."""
    store = KeyStore(root.settings.key_dir)
    try:
        try:  # LOCKSTEP_PERSON's key, else the claimed person's, else the only one here
            key = store.person_key(root.settings.person or claimed or None)
        except NoSigningKey:
            if root.settings.person or not claimed:
                raise
            key = store.person_key()
    except (NoSigningKey, KeyStoreError) as exc:
        raise root.fail(str(exc), one_line=True) from None
    if claimed and key.name != claimed:
        raise root.fail(
            f"--by {claimed}, but the person key here is {key.name}'s (LOCKSTEP_PERSON): you "
            "sign only for yourself",
            one_line=True,
        )
    return key


def acting_person(root: Root, claimed: str) -> str:
    """Who does what a command does for a person (an incident acknowledged, a flag changed):
    the name of the person key here, as for a signed decision (``person``). Holding the key
    is how the command line knows who you are; ``--by`` someone else is refused."""
    key = person(root, claimed)
    assert key.name is not None  # a person key always has one
    return key.name
