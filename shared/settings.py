"""The one settings object. Built once at start-up from ``LOCKSTEP_*`` variables and passed in;
nothing else in Lockstep reads the environment."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from events import topics
from events._envelope import DEFAULT_MAX_EVENT_BYTES
from shared.pg_logins import DSN_VARIABLE, PgLogin, login_for

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# The checkout this runtime comes from; `infra/lockstep-infra` keeps its state (Kafka, the
# flagd schemas it fetches) in its .lockstep/ folder.
CHECKOUT = Path(__file__).resolve().parents[1]


def user_state_dir() -> Path:
    """Where Lockstep keeps what it writes for a user by default (spans, the reference
    deployer's record): ``$XDG_STATE_HOME/lockstep``, else ``~/.local/state/lockstep``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lockstep"


class _ServiceDsns(PydanticBaseSettingsSource):
    """The ``LOCKSTEP_PG_DSN_<SERVICE>`` variables, gathered into ``pg_service_dsns``
    (``LOCKSTEP_PG_DSN_GATES`` is the gates service's): one variable per service, so that each
    service's deployment is given its own DSN and no other."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is in __call__

    def __call__(self) -> dict[str, Any]:
        found = {
            name[len(DSN_VARIABLE) :].lower(): value
            for name, value in os.environ.items()
            if name.upper().startswith(DSN_VARIABLE)
            and len(name) > len(DSN_VARIABLE)
            and value.strip()
        }
        return {"pg_service_dsns": found} if found else {}


KAFKA_CREDENTIALS_FILE = "kafka.json"  # in credentials_dir: the local SCRAM users


def read_kafka_users(path: Path) -> dict[str, dict[str, Any]]:
    """The users of a ``kafka.json`` that `infra/lockstep-infra up` writes (name -> its
    ``password`` and ``role``). ``FileNotFoundError`` if there is none; ``ValueError`` or
    ``OSError`` if it cannot be read."""
    users = json.loads(path.read_text()).get("users", {})
    if not isinstance(users, dict):
        raise ValueError(f"{path}: 'users' is not a table of users")
    return {name: user for name, user in users.items() if isinstance(user, dict)}


class CredentialsMissing(ValueError):
    """No password for the process's Kafka user; the message says where to put one."""


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOCKSTEP_", frozen=True, extra="ignore", populate_by_name=True
    )

    namespace: str = Field(
        default="lockstep",
        description="One Lockstep installation: prefixes topics, consumer groups and DB schemas",
    )
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["SASL_PLAINTEXT", "PLAINTEXT"] = Field(
        default="SASL_PLAINTEXT",
        description="SASL_PLAINTEXT: log in with SCRAM-SHA-512 (what `infra/lockstep-infra up` "
        "starts); PLAINTEXT only for a broker without security",
    )
    kafka_user: str | None = Field(
        default=None,
        description="The SCRAM user to log in as; default: the process's principal "
        "(LOCKSTEP_KAFKA_PRINCIPAL), its password read from the credentials file",
    )
    kafka_password: SecretStr | None = Field(
        default=None, description="The SCRAM password of LOCKSTEP_KAFKA_USER (never logged)"
    )
    kafka_principal: str = Field(
        default="admin",
        description="Which principal of infra/access.toml this process is, when no user is "
        "given: `lockstep run <service>` is that service, `publish` is ci, `model publish` "
        "is platform, approvals are person; anything else is admin",
    )
    access_file: Path = Field(
        default=CHECKOUT / "infra" / "access.toml",
        description="The principals and their rights (shared/bus/access.py); the ACLs of a "
        "namespace's topics are made from it",
    )
    # No TLS over loopback (Debian's Postgres offers it, and asyncpg would take it: a third of
    # a service's CPU went to encrypting localhost traffic). Set your own DSN for a remote one.
    # The administrator's DSN (the CLI's readers, set-up and clean-up); a service logs in as
    # its own role: pg_dsn_for(service).
    pg_dsn: str = "postgresql://lockstep:lockstep@127.0.0.1:5432/lockstep?sslmode=disable"
    pg_service_dsns: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="A service's own DSN, given as LOCKSTEP_PG_DSN_<SERVICE> "
        "(e.g. LOCKSTEP_PG_DSN_GATES); before the credentials file",
    )
    credentials_dir: Path = Field(
        default=CHECKOUT / ".lockstep" / "credentials",
        description="The credentials `infra/lockstep-infra up` writes, mode 0600: kafka.json "
        "(the local SCRAM users' passwords) and postgres.json (each service's Postgres role)",
    )
    topic_partitions: int = Field(default=6, ge=1)
    max_event_bytes: int = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        ge=1024,
        le=900 * 1024,  # below Kafka's 1 MiB topic default, so what we accept we can emit
    )
    handler_max_attempts: int = Field(
        default=3, ge=1, description="Tries of a failing handler before its record goes to the DLQ"
    )
    retry_backoff_s: float = Field(default=0.2, ge=0)
    consumer_batch: int = Field(default=500, ge=1)
    consumer_instance: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="A name for this process that stays the same across its restarts (a pod's "
        "name, a host's): each consumer is then a static member of its group (KIP-345), and a "
        "restart within the session timeout keeps its partitions without a rebalance; two "
        "processes running at once must not share it",
    )
    pg_pool_size: int = Field(
        default=8,
        ge=2,
        description="Connections per service: its consumer keeps one, its HTTP edge and "
        "periodic turn take others",
    )
    relay_batch: int = Field(default=500, ge=1)
    relay_lease_s: float = Field(
        default=10.0,
        gt=0,
        description="How long what a batch emitted is its own process's relay's to publish "
        "before any instance's relay may; a crash between commit and publish delays those "
        "records by up to this",
    )
    relay_poll_s: float = Field(
        default=1.0, gt=0, description="Outbox poll interval if a NOTIFY is missed"
    )
    producer_linger_ms: int = Field(default=2, ge=0)
    publish_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a publish may wait for Kafka before it fails"
    )
    # Nothing is written into the working directory unless a path names it: spans go to the
    # user's state directory by default.
    trace_dir: Path | None = Field(
        default_factory=lambda: user_state_dir() / "traces",
        description="Where spans are kept locally for `lockstep trace` (empty: keep none)",
    )
    flagd_schema_dir: Path = Field(
        default=CHECKOUT / ".lockstep" / "flagd-schemas",
        description="The official flagd schemas (flags.json, targeting.json); "
        "`infra/lockstep-infra up` fetches them",
    )
    key_dir: Path = Field(
        default_factory=lambda: user_state_dir() / "keys",
        description="Signing keys (events.signing.KeyStore): trust.json, the public keys and "
        "their roles, and private/, one PEM file per private key (mode 0600)",
    )
    retired_key_grace_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="How long after its retirement a retired key's signatures (of events "
        "timed before it) still verify: time for what it signed to be read; default 1 day",
    )
    person: str | None = Field(
        default=None,
        description="Whose person key the command line signs approvals and hold releases "
        "with, when the key directory holds several people's",
    )
    http_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body an HTTP edge reads"
    )
    http_max_json_depth: int = Field(
        default=64, ge=2, description="Deepest JSON nesting an HTTP edge parses"
    )
    flags_http_host: str = "127.0.0.1"
    flags_http_port: int = Field(
        default=8470, ge=0, le=65535, description="The flags service's OFREP and admin API"
    )
    incidents_http_host: str = "127.0.0.1"
    incidents_http_port: int = Field(
        default=8471, ge=0, le=65535, description="The incidents service's webhook edge"
    )
    incidents_webhook_token: str | None = Field(
        default=None,
        description="The token webhooks must send (Authorization: Bearer, or ?token=); "
        "without one they are refused, unless LOCKSTEP_INCIDENTS_WEBHOOK_OPEN is true",
    )
    incidents_webhook_open: bool = Field(
        default=False,
        description="Accept webhooks with no token from anyone who reaches the edge (said "
        "at start-up); only where nothing else can reach it",
    )
    clock_file: Path | None = Field(
        default=None,
        description="Tests and demos only: read the time from this file (ISO 8601), not the system",
    )
    periodic_s: float | None = Field(
        default=None, gt=0, description="How often periodic turns run (default: the service's own)"
    )
    pending_evidence_ttl_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="How long evidence waits for its artifact to be registered before it "
        "expires (evidence.rejected, code expired); default 7 days",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="How much `lockstep run` and `lockstep deployer` log"
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="Export spans over OTLP/HTTP as well (the standard OpenTelemetry variable)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _ServiceDsns(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator("kafka_user", "kafka_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # LOCKSTEP_KAFKA_PASSWORD= (empty) is no password given, not an empty one.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("trace_dir", mode="before")
    @classmethod
    def _empty_keeps_none(cls, value: object) -> object:
        # LOCKSTEP_TRACE_DIR= (empty) keeps no span files. It must not mean "here": Path("")
        # is the working directory, which once filled a checkout with span files.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("key_dir", mode="before")
    @classmethod
    def _key_dir_is_named(cls, value: object) -> object:
        # As for LOCKSTEP_TRACE_DIR: an empty path would be the working directory, and keys
        # must never be written into a checkout.
        if isinstance(value, str) and not value.strip():
            raise ValueError("name a directory for the signing keys (empty is not one)")
        return value

    @field_validator("credentials_dir", mode="before")
    @classmethod
    def _credentials_dir_is_named(cls, value: object) -> object:
        # As for LOCKSTEP_KEY_DIR: empty would be the working directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("name a directory for the credentials (empty is not one)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        # Python's logging takes `debug` as well as `DEBUG`; so does this setting.
        if isinstance(value, str) and value.strip().upper() in _LOG_LEVELS:
            return value.strip().upper()
        return value  # refused as given, so the error shows what was written

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError(
                "namespace must be 1-40 characters of a-z, 0-9 and '_', starting with a letter "
                "(it names Kafka topics and Postgres schemas)"
            )
        return value

    def kafka_login(self) -> tuple[str, str] | None:
        """The SCRAM user and password this process logs in with (None: PLAINTEXT). The user
        is LOCKSTEP_KAFKA_USER, else the principal; the password LOCKSTEP_KAFKA_PASSWORD, else
        the user's in ``<credentials_dir>/kafka.json``. ``CredentialsMissing`` if none."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return None
        user = self.kafka_user or self.kafka_principal
        if self.kafka_password is not None:
            return user, self.kafka_password.get_secret_value()
        path = self.credentials_dir / KAFKA_CREDENTIALS_FILE
        try:
            users = read_kafka_users(path)
        except FileNotFoundError:
            raise CredentialsMissing(
                f"no password for Kafka user '{user}': set LOCKSTEP_KAFKA_PASSWORD, or run "
                f"`lockstep infra up` (it writes {path})"
            ) from None
        except (OSError, ValueError) as exc:
            raise CredentialsMissing(f"cannot read the Kafka credentials {path}: {exc}") from None
        found = users.get(user, {}).get("password")
        if not isinstance(found, str):
            raise CredentialsMissing(
                f"no password for Kafka user '{user}' in {path}: set LOCKSTEP_KAFKA_PASSWORD, "
                f"or add the user (`lockstep infra principal add {user} --as <principal>`)"
            )
        return user, found

    def as_principal(self, principal: str) -> Settings:
        """These settings for a process that is ``principal`` (infra/access.toml). A user
        named in the settings (LOCKSTEP_KAFKA_USER) is kept: the operator chose it."""
        if self.kafka_user is not None or self.kafka_principal == principal:
            return self
        return self.model_copy(update={"kafka_principal": principal})

    def topic(self, logical: str) -> str:
        return topics.physical(self.namespace, logical)

    def all_topics(self) -> list[str]:
        return [self.topic(t) for t in topics.ALL]

    def group_id(self, service: str) -> str:
        return f"{self.namespace}.{service}"

    def db_schema(self, service: str) -> str:
        return f"{self.namespace}_{service}"

    def pg_login(self, service: str) -> PgLogin:
        """How ``service`` logs in to Postgres: its ``LOCKSTEP_PG_DSN_<SERVICE>``, else its
        role in ``credentials_dir/postgres.json``, else the administrator's ``pg_dsn``
        (``own_role`` false). Raises ``shared.pg_logins.CredentialsUnreadable`` for a
        credentials file that is there but unusable."""
        return login_for(
            service,
            admin_dsn=self.pg_dsn,
            explicit=self.pg_service_dsns,
            credentials_dir=self.credentials_dir,
        )

    def pg_dsn_for(self, service: str) -> str:
        """``service``'s own DSN (``pg_login``): what its pool and its relay's listener use.
        It holds the password: never log it (``shared.db.pg_where`` is what to show)."""
        return self.pg_login(service).dsn.get_secret_value()
