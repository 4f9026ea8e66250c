"""Which Postgres role a service logs in as.

Each service of the mesh has a role of its own (``infra/lockstep-infra up`` makes them,
``lockstep_svc_<service>``), which owns the service's schema and nothing else; the DSN of
``LOCKSTEP_PG_DSN`` is the administrator's (the CLI's readers, tests' and benchmarks' set-up
and clean-up). A service's login is, first found:

1. ``LOCKSTEP_PG_DSN_<SERVICE>``: a whole DSN the operator gives (production);
2. its entry in the credentials file ``<credentials_dir>/postgres.json`` that ``up`` writes,
   ``{"<service>": {"user": ..., "password": ...}}``, at the host, port and database of
   ``LOCKSTEP_PG_DSN``;
3. else the administrator's DSN, and the service says at start-up that it runs with the
   administrator's rights.

Passwords are held as ``SecretStr`` and never put in a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

PG_CREDENTIALS_FILE = "postgres.json"
DSN_VARIABLE = "LOCKSTEP_PG_DSN_"  # + the service's name in capitals


@dataclass(frozen=True)
class PgLogin:
    """A service's way into Postgres."""

    dsn: SecretStr
    user: str | None  # None where the DSN does not say (an operator's DSN may leave it out)
    source: str  # where it came from, for messages: a variable's or a file's name
    own_role: bool  # False: the administrator's DSN, for want of a role


class CredentialsUnreadable(ValueError):
    """The credentials file is there but cannot be used; says which file and why, never what
    it holds."""


def read_credentials(path: Path) -> dict[str, tuple[str, SecretStr]]:
    """service -> (user, password) from ``path``; empty if there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsUnreadable(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CredentialsUnreadable(
            f"{path}: not JSON (line {getattr(exc, 'lineno', '?')})"
        ) from None
    if not isinstance(data, dict):
        raise CredentialsUnreadable(f"{path}: expected an object of services")
    found: dict[str, tuple[str, SecretStr]] = {}
    for service, entry in data.items():
        user = entry.get("user") if isinstance(entry, dict) else None
        password = entry.get("password") if isinstance(entry, dict) else None
        if not isinstance(user, str) or not user or not isinstance(password, str):
            raise CredentialsUnreadable(
                f'{path}: {service!r} needs a "user" and a "password" (strings)'
            )
        found[service] = (user, SecretStr(password))
    return found


def with_login(dsn: str, user: str, password: SecretStr) -> str:
    """``dsn`` (a ``postgresql://`` URL) with its user and password replaced: the same host,
    port, database and options."""
    parts = urlsplit(dsn)
    where = parts.netloc.rsplit("@", 1)[-1]
    login = f"{quote(user, safe='')}:{quote(password.get_secret_value(), safe='')}"
    return urlunsplit(parts._replace(netloc=f"{login}@{where}"))


def user_of(dsn: str) -> str | None:
    """The user a DSN names, if it names one."""
    parts = urlsplit(dsn)
    return parts.username or None


def login_for(
    service: str,
    *,
    admin_dsn: str,
    explicit: dict[str, SecretStr],
    credentials_dir: Path,
) -> PgLogin:
    """``service``'s login, by the precedence in this module's docstring."""
    given = explicit.get(service)
    if given is not None:
        dsn = given.get_secret_value()
        return PgLogin(given, user_of(dsn), DSN_VARIABLE + service.upper(), own_role=True)
    path = credentials_dir / PG_CREDENTIALS_FILE
    entry = read_credentials(path).get(service)
    if entry is not None:
        user, password = entry
        return PgLogin(SecretStr(with_login(admin_dsn, user, password)), user, str(path), True)
    return PgLogin(SecretStr(admin_dsn), user_of(admin_dsn), "LOCKSTEP_PG_DSN", own_role=False)
