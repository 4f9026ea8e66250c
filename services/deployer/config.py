"""The agent's own configuration: where Kafka is and how it logs in (SCRAM user and
password), which Lockstep installation (namespace), which agent this is (its consumer group),
where it keeps its journal, and the trust store it verifies promotions against
(``trust_store``: by default ``trust.json`` in Lockstep's default key directory, as
``LOCKSTEP_KEY_DIR`` defaults).

An agent runs outside Lockstep, so it does not take Lockstep's runtime settings; ``from_env``
reads the same ``LOCKSTEP_*`` variables, so one environment serves both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from events import DEFAULT_MAX_EVENT_BYTES, topics
from events.signing import DEFAULT_RETIRED_GRACE, TRUST_FILE

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_AGENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEPLOYER_PRINCIPAL = "deployer"  # infra/access.toml


class ConfigError(ValueError):
    """A setting the agent cannot run with; the message says which and what to write."""


class LockstepSettings(Protocol):
    """What an agent takes from Lockstep's own settings object, if it is given one."""

    @property
    def namespace(self) -> str: ...
    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def max_event_bytes(self) -> int: ...
    @property
    def key_dir(self) -> Path: ...
    @property
    def retired_key_grace_s(self) -> float: ...
    def as_principal(self, principal: str) -> Any: ...


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/lockstep/deployer``, else ``~/.local/state/lockstep/deployer``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lockstep" / "deployer"


def default_trust_store() -> Path:
    """``trust.json`` in Lockstep's default key directory (``$XDG_STATE_HOME/lockstep/keys``,
    else ``~/.local/state/lockstep/keys``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lockstep" / "keys" / TRUST_FILE


@dataclass(frozen=True)
class AgentConfig:
    agent: str
    bootstrap_servers: str = "127.0.0.1:9092"
    namespace: str = topics.DEFAULT_NAMESPACE
    state_dir: Path | None = None  # None: default_state_dir()
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    # The public keys a promotion's signature is checked against (events.signing).
    trust_store: Path = field(default_factory=default_trust_store)
    retired_grace: timedelta = DEFAULT_RETIRED_GRACE
    # Lockstep's Kafka takes SCRAM-SHA-512 logins; PLAINTEXT only for a broker without security.
    security_protocol: str = "SASL_PLAINTEXT"
    kafka_user: str = DEPLOYER_PRINCIPAL
    kafka_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _AGENT_RE.match(self.agent):
            raise ConfigError(
                f"agent name {self.agent!r} is not usable: 1-100 characters of letters, digits, "
                "'.', '_' and '-', starting with a letter or digit (it names the consumer group "
                "and the source of every report)"
            )
        if not _NAMESPACE_RE.match(self.namespace):
            raise ConfigError(
                f"namespace {self.namespace!r} is not usable: 1-40 characters of a-z, 0-9 and "
                "'_', starting with a letter (LOCKSTEP_NAMESPACE)"
            )
        if not self.bootstrap_servers.strip():
            raise ConfigError("no Kafka bootstrap servers: set LOCKSTEP_KAFKA_BOOTSTRAP=host:port")
        if self.max_event_bytes < 1024:
            raise ConfigError(
                f"max_event_bytes {self.max_event_bytes} is below 1024 (LOCKSTEP_MAX_EVENT_BYTES)"
            )
        if self.security_protocol not in ("SASL_PLAINTEXT", "PLAINTEXT"):
            raise ConfigError(
                f"LOCKSTEP_KAFKA_SECURITY_PROTOCOL={self.security_protocol!r}: SASL_PLAINTEXT "
                "(the default) or PLAINTEXT (a broker without security)"
            )
        if self.security_protocol != "PLAINTEXT" and not self.kafka_password:
            raise ConfigError(
                f"no Kafka password for user {self.kafka_user!r}: set LOCKSTEP_KAFKA_PASSWORD "
                "(`lockstep infra up` keeps the local users' in .lockstep/credentials/kafka.json)"
            )

    @classmethod
    def from_env(
        cls, *, agent: str, state_dir: Path | None = None, env: Mapping[str, str] | None = None
    ) -> AgentConfig:
        """``LOCKSTEP_KAFKA_BOOTSTRAP``, ``LOCKSTEP_NAMESPACE``, ``LOCKSTEP_MAX_EVENT_BYTES``,
        ``LOCKSTEP_KAFKA_SECURITY_PROTOCOL``, ``LOCKSTEP_KAFKA_USER`` (default ``deployer``),
        ``LOCKSTEP_KAFKA_PASSWORD`` (the names Lockstep itself reads),
        ``LOCKSTEP_DEPLOYER_STATE_DIR`` and ``LOCKSTEP_DEPLOYER_TRUST_STORE`` (default:
        ``trust.json`` in ``LOCKSTEP_KEY_DIR``, else in Lockstep's default key directory)."""
        env = os.environ if env is None else env
        size = env.get("LOCKSTEP_MAX_EVENT_BYTES", "").strip()
        try:
            max_bytes = int(size) if size else DEFAULT_MAX_EVENT_BYTES
        except ValueError:
            raise ConfigError(
                f"LOCKSTEP_MAX_EVENT_BYTES={size!r} is not a whole number of bytes"
            ) from None
        where = state_dir
        if where is None and env.get("LOCKSTEP_DEPLOYER_STATE_DIR", "").strip():
            where = Path(env["LOCKSTEP_DEPLOYER_STATE_DIR"])
        return cls(
            agent=agent,
            bootstrap_servers=env.get("LOCKSTEP_KAFKA_BOOTSTRAP", "").strip() or "127.0.0.1:9092",
            namespace=env.get("LOCKSTEP_NAMESPACE", "").strip() or topics.DEFAULT_NAMESPACE,
            state_dir=where,
            max_event_bytes=max_bytes,
            trust_store=_trust_store_from(env),
            security_protocol=env.get("LOCKSTEP_KAFKA_SECURITY_PROTOCOL", "").strip()
            or "SASL_PLAINTEXT",
            kafka_user=env.get("LOCKSTEP_KAFKA_USER", "").strip() or DEPLOYER_PRINCIPAL,
            kafka_password=env.get("LOCKSTEP_KAFKA_PASSWORD") or None,
        )

    @classmethod
    def from_settings(
        cls, settings: LockstepSettings, *, agent: str, state_dir: Path | None = None
    ) -> AgentConfig:
        """From Lockstep's own settings (the ``lockstep deployer`` command, tests): logged in
        as their ``deployer`` principal (or the user they name)."""
        try:
            login = settings.as_principal(DEPLOYER_PRINCIPAL).kafka_login()
        except ValueError as exc:  # no password: the message says where to put one
            raise ConfigError(str(exc)) from None
        user, password = login if login is not None else (DEPLOYER_PRINCIPAL, None)
        return cls(
            agent=agent, bootstrap_servers=settings.kafka_bootstrap,
            namespace=settings.namespace, state_dir=state_dir,
            max_event_bytes=settings.max_event_bytes,
            trust_store=settings.key_dir / TRUST_FILE,
            retired_grace=timedelta(seconds=settings.retired_key_grace_s),
            security_protocol="PLAINTEXT" if login is None else "SASL_PLAINTEXT",
            kafka_user=user, kafka_password=password,
        )  # fmt: skip

    def kafka_security(self) -> dict[str, str]:
        """The security keyword arguments of the agent's aiokafka clients."""
        if self.security_protocol == "PLAINTEXT":
            return {"security_protocol": "PLAINTEXT"}
        assert self.kafka_password is not None  # __post_init__ saw to it
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.kafka_user,
            "sasl_plain_password": self.kafka_password,
        }

    def topic(self, logical: str) -> str:
        return topics.physical(self.namespace, logical)

    @property
    def group_id(self) -> str:
        return f"{self.namespace}.deployer.{self.agent}"

    @property
    def source(self) -> str:
        return f"lockstep/deployer/{self.agent}"

    @property
    def journal_path(self) -> Path:
        """One journal per installation and agent, in the agent's state directory."""
        base = self.state_dir if self.state_dir is not None else default_state_dir()
        return base / ".lockstep-journal" / f"{self.namespace}.{self.agent}.sqlite3"


def _trust_store_from(env: Mapping[str, str]) -> Path:
    named = env.get("LOCKSTEP_DEPLOYER_TRUST_STORE", "").strip()
    if named:
        return Path(named)
    key_dir = env.get("LOCKSTEP_KEY_DIR", "").strip()
    return Path(key_dir) / TRUST_FILE if key_dir else default_trust_store()
