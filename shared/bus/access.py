"""Who may do what on Kafka: infra/access.toml, read and checked, and the ACLs it means for
one namespace.

The file names principals (a SCRAM user each) and, per principal, the logical topics it may
read and write and the consumer-group prefixes it may use; ``admin`` is the one super user
(the broker's ``super.users``). ``namespace_acls`` turns it into Kafka ACL bindings, LITERAL
on ``<namespace>.<topic>`` and PREFIXED on ``<namespace>.<group>``, which
``shared.bus.admin.ensure_topics`` creates with the namespace's topics and
``delete_namespace_topics`` removes with them. Users made with ``lockstep infra principal
add NAME --as P`` (recorded with their principal in the credentials file) get P's rights.

aiokafka 0.14's admin client has no ACL methods, but its protocol module has the CreateAcls
and DeleteAcls requests (v1, which Kafka 4 still takes): they are sent as they are, a whole
namespace's bindings in one request."""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest,
    CreateAclsRequest_v1,
    DeleteAclsRequest,
    DeleteAclsRequest_v1,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from events import topics
from shared.settings import Settings, read_kafka_users

DEPLOYER = "deployer"
ADMIN = "admin"
_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
PrincipalName = Annotated[str, StringConstraints(pattern=_NAME)]
GroupName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,99}$")]


class AccessFileError(ValueError):
    """The access file is not what it must be: ``str()`` names the file, line and field."""


class Principal(BaseModel):
    """One principal's rights (topics by logical name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    super_user: bool = False
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    groups: tuple[GroupName, ...] = ()

    @field_validator("read", "write")
    @classmethod
    def _known_topics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in topics.ALL:
                raise ValueError(f"{name!r} is not a topic; one of: {', '.join(topics.ALL)}")
        return value


class AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    principals: dict[PrincipalName, Principal] = Field(min_length=1)

    @field_validator("principals")
    @classmethod
    def _one_super_user(cls, value: dict[str, Principal]) -> dict[str, Principal]:
        supers = sorted(n for n, p in value.items() if p.super_user)
        if supers != [ADMIN]:
            raise ValueError(
                f"exactly one super user, '{ADMIN}' (the broker's super.users), not {supers}"
            )
        return value


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line of ``[principals.<name>]`` or of its key ``loc[2]``."""
    if len(loc) < 2 or loc[0] != "principals":
        return None
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\s*principals\.{re.escape(str(loc[1]))}\s*\]")
    for i, line in enumerate(lines):
        if header.match(line):
            if len(loc) >= 3:
                key = re.compile(rf"^\s*{re.escape(str(loc[2]))}\s*=")
                for j in range(i + 1, len(lines)):
                    if lines[j].lstrip().startswith("["):
                        break
                    if key.match(lines[j]):
                        return j + 1
            return i + 1
    return None


def parse_access(text: str, where: str) -> AccessFile:
    """The access file in ``text`` (``where`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AccessFileError(f"{where}: not valid TOML: {exc}") from None
    try:
        return AccessFile.model_validate(data)
    except ValidationError as exc:
        said = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p != "[key]")  # a bad key: said below
            field = ".".join(str(p) for p in loc if not isinstance(p, int))
            index = "".join(f"[{p}]" for p in loc if isinstance(p, int))
            line = _line_of(text, loc)
            at = f"{where}:{line}" if line else where
            message = str(error["msg"]).removeprefix("Value error, ")
            if "[key]" in error["loc"]:
                message = "not a principal name (1-64 of a-z, 0-9, '_' and '-', from a letter)"
            said.append(f"{at}: {field or '(top)'}{index}: {message}")
        raise AccessFileError("; ".join(said)) from None


def load_access(path: Path) -> AccessFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AccessFileError(f"cannot read the access file {path}: {exc}") from None
    return parse_access(text, str(path))


@functools.cache
def _principals_in(path: Path, mtime_ns: int) -> frozenset[str]:
    return frozenset(load_access(path).principals)


def service_settings(settings: Settings, service: str) -> Settings:
    """The settings of a running service: logged in as the principal of its name. A service
    the access file does not name runs only as a login named for it (LOCKSTEP_KAFKA_PRINCIPAL
    or LOCKSTEP_KAFKA_USER, as a test names admin for its own); otherwise ``AccessFileError``
    says to add it: it must not fall back to the default principal, admin."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return settings
    path = settings.access_file
    try:
        known = _principals_in(path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise AccessFileError(f"cannot read the access file {path}: {exc}") from None
    if service in known:
        return settings.as_principal(service)
    if settings.kafka_user is not None or "kafka_principal" in settings.model_fields_set:
        return settings  # whoever runs it named its login
    raise AccessFileError(
        f"service {service!r} is no principal of {path}: add [principals.{service}] there "
        "(what it reads and writes, its group), or name its login (LOCKSTEP_KAFKA_PRINCIPAL)"
    )


def extra_users(credentials_file: Path) -> dict[str, str]:
    """Users made with ``principal add`` (name -> the principal whose rights they have),
    from the credentials file ``infra/lockstep-infra`` keeps; none if there is no file."""
    try:
        users = read_kafka_users(credentials_file)
    except (OSError, ValueError):
        return {}
    return {
        name: str(user["role"])
        for name, user in users.items()
        if user.get("role") not in (None, name)
    }


class Resource(IntEnum):
    TOPIC = 2
    GROUP = 3


class Pattern(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    ANY = 1
    READ = 3
    WRITE = 4


ANY_PERMISSION = 1
ALLOW = 3
ANY_RESOURCE = 1


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: ``user`` may ``operation`` the resource, from any host."""

    resource: Resource
    name: str
    pattern: Pattern
    user: str
    operation: Operation

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


def namespace_acls(
    access: AccessFile, namespace: str, extras: dict[str, str] | None = None
) -> list[Acl]:
    """Every binding the access file means for ``namespace`` (``extras``: more users, each
    with the rights of the principal named)."""
    users: dict[str, list[str]] = {name: [name] for name in access.principals}
    for user, role in sorted((extras or {}).items()):
        if role in users and role != ADMIN:
            users[role].append(user)
    acls: set[Acl] = set()
    for name, principal in access.principals.items():
        for user in users[name]:
            for t in principal.read:
                acls.add(Acl(Resource.TOPIC, f"{namespace}.{t}", Pattern.LITERAL, user,
                             Operation.READ))  # fmt: skip
            for t in principal.write:
                acls.add(Acl(Resource.TOPIC, f"{namespace}.{t}", Pattern.LITERAL, user,
                             Operation.WRITE))  # fmt: skip
            for g in principal.groups:
                # A deployer user added beside the default one joins only groups named after
                # it (<ns>.deployer.<user>…: its agents are named after it), so one agent's
                # login cannot commit past another agent's promotions.
                group = (
                    f"{namespace}.{g}.{user}"
                    if name == DEPLOYER and user != name
                    else (f"{namespace}.{g}")
                )
                acls.add(Acl(Resource.GROUP, group, Pattern.PREFIXED, user, Operation.READ))
    return sorted(acls)


class _CreateAcls(CreateAclsRequest):  # type: ignore[misc]
    """CreateAcls with many bindings in one request (aiokafka's takes one)."""

    def __init__(self, acls: list[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class is not CreateAclsRequest_v1:
            raise KafkaAclError("the broker does not take CreateAcls v1")
        return request_struct_class(
            [(a.resource, a.name, a.pattern, a.principal, "*", a.operation, ALLOW)
             for a in self._acls]
        )  # fmt: skip


class _DeleteAcls(DeleteAclsRequest):  # type: ignore[misc]
    """DeleteAcls with many filters in one request."""

    def __init__(self, filters: list[tuple[Resource, str, Pattern]]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class is not DeleteAclsRequest_v1:
            raise KafkaAclError("the broker does not take DeleteAcls v1")
        return request_struct_class(
            [(r, name, p, None, None, Operation.ANY, ANY_PERMISSION)
             for r, name, p in self._filters]
        )  # fmt: skip


class KafkaAclError(RuntimeError):
    pass


async def create_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Create ``acls`` (those that exist already stay as they are)."""
    if not acls:
        return
    response = await admin._send_request(_CreateAcls(acls))
    for acl, (code, message) in zip(acls, response.creation_responses, strict=True):
        if code:
            error = for_code(code)
            raise KafkaAclError(f"ACL {acl} refused: {error.__name__}: {message}")


async def delete_acls(
    admin: AIOKafkaAdminClient, namespace: str, access: AccessFile, logical: list[str]
) -> None:
    """Remove every binding on the namespace's topics and on its groups' prefixes."""
    groups = sorted({g for p in access.principals.values() for g in p.groups})
    filters = [(Resource.TOPIC, f"{namespace}.{t}", Pattern.LITERAL) for t in logical] + [
        (Resource.GROUP, f"{namespace}.{g}", Pattern.PREFIXED) for g in groups
    ]
    response = await admin._send_request(_DeleteAcls(filters))
    for code, message, _matching in response.filter_responses:
        if code:
            raise KafkaAclError(f"deleting ACLs: {for_code(code).__name__}: {message}")
