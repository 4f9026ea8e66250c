"""``lockstep keys create|list|retire``: the Ed25519 keys that sign decisions
(``events.signing``), kept in ``LOCKSTEP_KEY_DIR``: ``trust.json`` (public keys, their roles
and lives) and ``private/`` (one PEM file per private key, mode 0600)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from cli.root import Root, of
from events.signing import KEY_ID_PREFIX, ROLES, KeyStore, KeyStoreError

keys_app = typer.Typer(help="The keys that sign decisions: create, list, retire (rotation).",
                       no_args_is_help=True)  # fmt: skip

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
) -> None:
    """Create a key for a role: its private half in the ring, its public half trusted. The
    role's services sign with their newest key from then on; older keys still verify."""
    root = of(ctx)
    key = _on_keys(root, lambda store: store.create(role))
    store = KeyStore(root.settings.key_dir)
    root.err.print(
        f"{role} key created: private key {store.private_path(key.key_id)}, trusted in "
        f"{store.trust_path}",
        highlight=False,
        soft_wrap=True,
    )
    print(key.key_id)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every trusted key: its id, role, life, and whether its private half is here."""
    root = of(ctx)

    def rows(store: KeyStore) -> list[tuple[str, str, str, str, str]]:
        return [
            (
                k.key_id,
                k.role,
                f"{k.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                f"{k.retired_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if k.retired_at else "",
                "yes" if store.has_private(k.key_id) else "",
            )
            for k in store.trust()
        ]

    found = _on_keys(root, rows)
    if not found:
        root.err.print("no keys yet: `lockstep keys create --role ROLE`", highlight=False)
        return
    table = Table("key id", "role", "created (UTC)", "retired (UTC)", "private key here")
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
    root.out.print(f"retired {key.key_id} ({key.role}) at {when}", highlight=False)
