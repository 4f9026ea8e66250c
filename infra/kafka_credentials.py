"""The local Kafka's SCRAM users and their passwords, for `infra/lockstep-infra`.

Standard library only (it runs before any virtualenv exists). The passwords live in
``<state dir>/credentials/kafka.json`` (mode 0600, never in the repository)::

    {"mechanism": "SCRAM-SHA-512",
     "controller_password": "…",            # the brokers' own login to the controller listener
     "users": {"admin": {"password": "…", "role": "admin"},
               "ci-jenkins": {"password": "…", "role": "ci"}, …}}

Every principal of ``infra/access.toml`` gets a user of its own name; ``add NAME ROLE`` makes
one more user with a principal's rights (a second CI system, another deployer agent).

    kafka_credentials.py ensure ACCESS_TOML CREDENTIALS   make what is missing; reuse the rest
    kafka_credentials.py add CREDENTIALS NAME ROLE ACCESS_TOML
    kafka_credentials.py remove CREDENTIALS NAME          forget a user made by `add`
    kafka_credentials.py users CREDENTIALS                one "name password" line per user
    kafka_credentials.py controller CREDENTIALS           the controller listener's password
    kafka_credentials.py dotenv CREDENTIALS               the same as an .env for docker compose
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def _roles(access: Path) -> list[str]:
    with access.open("rb") as f:
        data = tomllib.load(f)
    principals = data.get("principals")
    if not isinstance(principals, dict) or not principals:
        sys.exit(f"{access}: no [principals.<name>] tables")
    return list(principals)


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"mechanism": "SCRAM-SHA-512", "users": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    data.setdefault("users", {})
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _password() -> str:
    # Letters and digits only: it goes into JAAS lines and kafka-storage's --add-scram.
    return secrets.token_hex(24)


def ensure(access: Path, path: Path) -> None:
    data = _load(path)
    changed = not path.exists()
    if "controller_password" not in data:
        data["controller_password"] = _password()
        changed = True
    for role in _roles(access):
        if role not in data["users"]:
            data["users"][role] = {"password": _password(), "role": role}
            changed = True
    if changed:
        _save(path, data)
    elif (path.stat().st_mode & 0o077) != 0:
        os.chmod(path, 0o600)


def add(path: Path, name: str, role: str, access: Path) -> None:
    if not NAME_RE.match(name):
        sys.exit(f"principal name {name!r}: 1-64 of a-z, 0-9, '_' and '-', starting with a letter")
    roles = _roles(access)
    if role == "admin":  # super.users is the broker's own list: an added user gets no rights
        sys.exit("a second admin is not made this way: use the admin's own login")
    if role not in roles:
        sys.exit(
            f"no principal {role!r} in {access} to copy the rights of; one of: {', '.join(roles)}"
        )
    data = _load(path)
    user = data["users"].get(name)
    if user is not None and user.get("role") != role:
        sys.exit(f"{name!r} already exists with the rights of {user.get('role')!r}")
    if user is None:
        data["users"][name] = {"password": _password(), "role": role}
        _save(path, data)


def remove(path: Path, name: str) -> None:
    data = _load(path)
    user = data["users"].get(name)
    if user is None:
        sys.exit(f"no user {name!r} in {path}")
    if user.get("role") == name:
        sys.exit(f"{name!r} is a principal of the access file; remove it there")
    del data["users"][name]
    _save(path, data)


def main(argv: list[str]) -> None:
    match argv:
        case ["ensure", access, creds]:
            ensure(Path(access), Path(creds))
        case ["add", creds, name, role, access]:
            add(Path(creds), name, role, Path(access))
        case ["remove", creds, name]:
            remove(Path(creds), name)
        case ["users", creds]:
            for name, user in sorted(_load(Path(creds))["users"].items()):
                print(name, user["password"])
        case ["controller", creds]:
            print(_load(Path(creds))["controller_password"])
        case ["dotenv", creds]:
            data = _load(Path(creds))
            users = ",".join(f"{n}:{u['password']}" for n, u in sorted(data["users"].items()))
            print("# Made by infra/kafka_credentials.py dotenv; never commit it (git ignores it)")
            print(f"LOCKSTEP_KAFKA_ADMIN_PASSWORD={data['users']['admin']['password']}")
            print(f"LOCKSTEP_KAFKA_CONTROLLER_PASSWORD={data['controller_password']}")
            print(f"LOCKSTEP_KAFKA_SCRAM_USERS={users}")
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
