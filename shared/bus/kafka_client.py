"""Every Kafka client of Lockstep is made here, logged in as the process's principal.

The broker `infra/lockstep-infra up` starts takes SASL/SCRAM-SHA-512 logins only, and its
authorizer refuses what infra/access.toml does not allow (docs/security.md). A process is
one principal (``Settings.kafka_principal``; ``Settings.as_principal``): its user is that
name unless LOCKSTEP_KAFKA_USER says otherwise, its password LOCKSTEP_KAFKA_PASSWORD or, by
default, the one `up` wrote for that user in ``<credentials_dir>/kafka.json``.

A login the broker refuses is ``KafkaLoginRefused``: one line that says what to do, and not
retriable (waiting does not mend a wrong password). aiokafka reports it only as "Unable to
bootstrap" (a connection error, which is retriable), so a client that fails to start asks
the broker once more, directly, why."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.metadata import MetadataRequest

from shared.settings import CredentialsMissing, Settings

MECHANISM = "SCRAM-SHA-512"

log = logging.getLogger(__name__)


class KafkaLoginRefused(KafkaError):  # type: ignore[misc]
    """The broker refused this process's login (or it has none to give): not retriable."""

    retriable = False
    invalid_metadata = False

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "Kafka refused the login"


class WriteNotAllowed(InvalidTopicError):  # type: ignore[misc]
    """The principal may not write the topic (infra/access.toml): a fault of the record's,
    for the publisher (``shared.bus.producer.classify``), which sending again will not mend."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not allowed to write the topic"


class WritesRefusedAtOnce:
    """A producer (``start``, ``stop``, ``send``) whose refused writes are ``WriteNotAllowed``
    at once, for a publisher whose caller must hear it (``lockstep publish`` as ``ci`` to
    the promotions topic), not wait out its timeout. A service's relay keeps retrying
    instead: an ACL mended by the operator lets it go on, with nothing set aside."""

    def __init__(self, producer: Any, settings: Settings) -> None:
        self._producer = producer
        self._settings = settings

    def _refusal(self, topic: str) -> WriteNotAllowed:
        return WriteNotAllowed(
            f"Kafka user '{user_of(self._settings)}' may not write {topic} "
            f"(infra/access.toml); publish as a principal that may"
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        try:
            sent = await self._producer.send(topic, *args, **kwargs)
        except TopicAuthorizationFailedError:
            raise self._refusal(topic) from None
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if answer.done():
                return
            if done.cancelled():
                answer.cancel()
            elif isinstance(done.exception(), TopicAuthorizationFailedError):
                answer.set_exception(self._refusal(topic))
            elif (error := done.exception()) is not None:
                answer.set_exception(error)
            else:
                answer.set_result(done.result())

        sent.add_done_callback(settle)
        return answer


def user_of(settings: Settings) -> str:
    """The SCRAM user this process logs in as."""
    return settings.kafka_user or settings.kafka_principal


def client_security(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments of an aiokafka client (producer, consumer, admin) for
    this process's principal. ``KafkaLoginRefused`` if it has no password to give."""
    try:
        login = settings.kafka_login()
    except CredentialsMissing as exc:
        raise KafkaLoginRefused(str(exc)) from None
    if login is None:
        return {"security_protocol": "PLAINTEXT"}
    user, password = login
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


async def why_refused(settings: Settings) -> KafkaLoginRefused | None:
    """Ask the first bootstrap server once, directly, whether it refuses our login (or our
    PLAINTEXT connection); None if it does not, or does not answer at all."""
    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    where = settings.kafka_bootstrap
    try:
        security = client_security(settings)
    except KafkaLoginRefused as exc:
        return exc
    try:
        conn = await create_conn(host, int(port), request_timeout_ms=5000, **security)
    except KafkaConnectionError:
        return None  # not there: the caller's "not reachable" is right
    except KafkaError as exc:  # SaslAuthenticationFailed, UnsupportedSaslMechanism, …
        user = user_of(settings)
        return KafkaLoginRefused(
            f"Kafka at {where} refused user '{user}' ({exc.message}): check "
            "LOCKSTEP_KAFKA_USER / LOCKSTEP_KAFKA_PASSWORD, or run `lockstep infra up`"
        )
    except (OSError, TimeoutError, ValueError):
        return None
    try:
        if security["security_protocol"] == "PLAINTEXT":
            try:
                await conn.send(MetadataRequest([]))
            except KafkaConnectionError:
                return KafkaLoginRefused(
                    f"Kafka at {where} closed a connection without a login: it wants one "
                    "(LOCKSTEP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT, the default)"
                )
            except (KafkaError, OSError, TimeoutError):
                return None
        return None
    finally:
        conn.close()


CANCELLED_START_S = 5.0  # how long a cancelled start may go on so that it can be closed


class _ExplainsRefusal:
    """A client whose start says why the broker refused it (see the module's docstring), and
    whose start can fail or be cancelled without leaking a socket.

    aiokafka's bootstrap holds its first connection in a local variable until the broker's
    metadata answer is in: a start cancelled then (a shutdown, a timeout) leaves that
    connection open, unreachable, until the garbage collector warns about it. So the start
    runs as a task of its own; the caller's cancellation lets it end (bounded), then closes
    the client, then goes on being cancelled."""

    _lockstep_settings: Settings

    async def start(self) -> None:
        starting = asyncio.ensure_future(self._start_explained())
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            await asyncio.wait({starting}, timeout=CANCELLED_START_S)
            if not starting.done():
                starting.cancel()
            elif not starting.cancelled():
                starting.exception()  # retrieved: the caller was cancelled, not told this
            await self._close_quietly()
            raise
        except BaseException:
            # A start that failed after its bootstrap (no access to a topic, a version check,
            # a producer id refused) holds the connections it made, and aiokafka's metadata
            # task goes on using them: closed here, whoever the caller is.
            await self._close_quietly()
            raise

    async def _start_explained(self) -> None:
        try:
            await super().start()  # type: ignore[misc]
        except KafkaConnectionError:
            refused = await why_refused(self._lockstep_settings)
            if refused is not None:
                raise refused from None
            raise

    async def _close_quietly(self) -> None:
        close = getattr(self, "stop", None) or self.close  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(close(), CANCELLED_START_S)
        except Exception as exc:  # closing is best effort here; the cancellation goes on
            log.debug("a client whose start was cancelled did not close cleanly: %r", exc)


class LockstepProducer(_ExplainsRefusal, AIOKafkaProducer):  # type: ignore[misc]
    pass


class LockstepConsumer(_ExplainsRefusal, AIOKafkaConsumer):  # type: ignore[misc]
    pass


class LockstepAdminClient(_ExplainsRefusal, AIOKafkaAdminClient):  # type: ignore[misc]
    pass


def kafka_producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer`` on ``settings.kafka_bootstrap``, logged in as the settings'
    principal (``kwargs``: aiokafka's other options)."""
    producer = LockstepProducer(
        bootstrap_servers=settings.kafka_bootstrap, **client_security(settings), **kwargs
    )
    producer._lockstep_settings = settings
    return producer


def kafka_consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    """An ``AIOKafkaConsumer`` of ``topics`` (none: assign later), logged in likewise."""
    consumer = LockstepConsumer(
        *topics, bootstrap_servers=settings.kafka_bootstrap, **client_security(settings), **kwargs
    )
    consumer._lockstep_settings = settings
    return consumer


def kafka_admin(settings: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    """An ``AIOKafkaAdminClient``, logged in likewise (topic and ACL work needs admin)."""
    admin = LockstepAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **client_security(settings), **kwargs
    )
    admin._lockstep_settings = settings
    return admin
