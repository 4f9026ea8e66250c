"""``lockstep keys init|create|list|retire|revoke``: the Ed25519 keys that sign decisions
(``events.signing``), kept in ``LOCKSTEP_KEY_DIR``: ``trust.json`` (public keys, their roles,
names and lives) and ``private/`` (one PEM file per private key, mode 0600).

Rotation: ``create`` a new key of the role (services sign with the newest from their next
start), then ``retire`` the old one: what it signed before still verifies for a day
(LOCKSTEP_RETIRED_KEY_GRACE_S). ``revoke`` is for a key that leaked: nothing it ever signed
verifies any more."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from cli.root import Root, of, whoami
from events.signing import KEY_ID_PREFIX, ROLES, KeyStore, KeyStoreError, NoSigningKey, TrustedKey

keys_app = typer.Typer(
    help="The keys that sign decisions: init, create, list, retire (rotation), revoke.",
    no_args_is_help=True,
)

T = TypeVar("T")


def _on_keys(root: Root, work: Callable[[KeyStore], T]) -> T:
    """``work`` on the key store the settings name; one that cannot be used is one line."""
    store = KeyStore(root.settings.key_dir)
    try:
        return work(store)
    except (KeyStoreError, OSError) as exc:
        raise root.fail(str(exc), one_line=True) from None


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help=f"What the key signs for: {', '.join(ROLES)}")],
    name: Annotated[
        str | None, typer.Option(help="The person, for a person key (required for that role)")
    ] = None,
) -> None:
    """Create a key for a role: its private half in the ring, its public half trusted. The
    role's running services sign with it within a second (the newest usable key of their
    role); older keys still verify. To rotate, create the new key, then retire the old."""
    root = of(ctx)
    key = _on_keys(root, lambda store: store.create(role, name=name))
    store = KeyStore(root.settings.key_dir)
    whose = f" of {key.name}" if key.name else ""
    root.err.print(
        f"{role} key{whose} created: private key {store.private_path(key.key_id)}, trusted in "
        f"{store.trust_path}",
        highlight=False,
        soft_wrap=True,
    )
    print(key.key_id)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every trusted key: its id, role, life, and whether its private half is here."""
    root = of(ctx)

    def rows(store: KeyStore) -> list[tuple[str, ...]]:
        return [
            (
                k.key_id,
                k.role,
                k.name or "",
                _when(k.created_at),
                _when(k.retired_at),
                _when(k.revoked_at),
                "yes" if store.has_private(k.key_id) else "",
            )
            for k in store.trust()
        ]

    found = _on_keys(root, rows)
    if not found:
        root.err.print("no keys yet: `lockstep keys init`", highlight=False)
        return
    table = Table(
        "key id", "role", "name", "created (UTC)", "retired (UTC)", "revoked (UTC)",
        "private key here",
    )  # fmt: skip
    for row in found:
        table.add_row(*row)
    root.out.print(table)


@keys_app.command("retire")
def keys_retire(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEYID", help="The key's id (keys list)")],
) -> None:
    """Retire a key from now: it signs nothing more; what it signed before still verifies,
    and an event it signed for a later time is refused."""
    root = of(ctx)
    wanted = key_id if key_id.startswith(KEY_ID_PREFIX) else KEY_ID_PREFIX + key_id
    key = _on_keys(root, lambda store: store.retire(wanted))
    when = f"{key.retired_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}" if key.retired_at else "now"
    grace = root.settings.retired_key_grace_s / 3600
    root.out.print(
        f"retired {key.key_id} ({key.role}) at {when}; what it signed before verifies for "
        f"{grace:g} h more (LOCKSTEP_RETIRED_KEY_GRACE_S)",
        highlight=False,
    )
    _say_if_none_left(root, key.role)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEYID", help="The key's id (keys list)")],
) -> None:
    """Revoke a key that leaked: nothing it signed verifies any more, whenever it was signed
    (services see it within a second, without a restart). Its private half is deleted."""
    root = of(ctx)
    wanted = key_id if key_id.startswith(KEY_ID_PREFIX) else KEY_ID_PREFIX + key_id
    key = _on_keys(root, lambda store: store.revoke(wanted))
    root.out.print(
        f"revoked {key.key_id} ({key.role}{' of ' + key.name if key.name else ''}) at "
        f"{_when(key.revoked_at)}Z; make a new {key.role} key: `lockstep keys create --role "
        f"{key.role}{' --name ' + key.name if key.name else ''}`",
        highlight=False,
        soft_wrap=True,
    )
    _say_if_none_left(root, key.role)


def _say_if_none_left(root: Root, role: str) -> None:
    """A warning when the role has no usable key left here: what it signs fails until one
    is made (a service's decisions are retried, never sent unsigned)."""
    if role == "person":
        return
    try:
        KeyStore(root.settings.key_dir).signing_key(role)
    except (NoSigningKey, KeyStoreError):
        root.err.print(
            f"warning: no usable {role} key is left here: what signs as {role} fails until "
            f"you run `lockstep keys create --role {role}`",
            highlight=False,
            soft_wrap=True,
        )


@keys_app.command("init")
def keys_init(
    ctx: typer.Context,
    person: Annotated[
        str | None, typer.Option(help="Whose person key to make (default: your login)")
    ] = None,
) -> None:
    """Make what an installation needs and does not have: a key of each service role, the
    platform and admin, and a person key for you. Run again, it makes nothing."""
    init_keys(of(ctx), person)


def init_keys(root: Root, person: str | None = None) -> list[TrustedKey]:
    """``keys init``'s work (``lockstep run all`` does it too), said on stderr."""
    made = _on_keys(root, lambda store: store.init(person or whoami()))
    where = root.settings.key_dir
    if not made:
        root.err.print(f"keys in {where}: every role has one already", highlight=False)
        return made
    for key in made:
        whose = f" of {key.name}" if key.name else ""
        root.err.print(f"created {key.role} key{whose}: {key.key_id}", highlight=False)
    root.err.print(f"keys in {where}", highlight=False, soft_wrap=True)
    return made


def _when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if moment is not None else ""
