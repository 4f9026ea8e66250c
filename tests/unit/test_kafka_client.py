"""How a process logs in to Kafka (shared.bus.kafka_client), without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from shared.bus.kafka_client import (
    KafkaLoginRefused,
    WriteNotAllowed,
    _ExplainsRefusal,
    client_security,
)
from shared.bus.producer import Fault, classify, kafka_is_transient
from shared.settings import Settings


def creds(tmp_path: Path, **users: str) -> Path:
    (tmp_path / "kafka.json").write_text(
        json.dumps({"users": {n: {"password": p, "role": n} for n, p in users.items()}})
    )
    return tmp_path


def test_the_principal_s_password_comes_from_the_credentials_file(tmp_path: Path) -> None:
    settings = Settings(credentials_dir=creds(tmp_path, ci="pw-ci", admin="pw-admin"))
    assert client_security(settings.as_principal("ci")) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ci", "sasl_plain_password": "pw-ci",
    }  # fmt: skip
    assert client_security(settings)["sasl_plain_username"] == "admin"  # the default principal


def test_a_user_and_password_given_win_and_the_password_is_never_shown(tmp_path: Path) -> None:
    settings = Settings(
        credentials_dir=creds(tmp_path, ci="pw-ci"),
        kafka_user="jenkins", kafka_password=SecretStr("s3cret"),
    )  # fmt: skip
    assert settings.as_principal("ci") is settings  # the operator's user is kept
    security = client_security(settings)
    assert (security["sasl_plain_username"], security["sasl_plain_password"]) == (
        "jenkins", "s3cret",
    )  # fmt: skip
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_an_empty_password_variable_is_no_password(tmp_path: Path) -> None:
    settings = Settings(credentials_dir=creds(tmp_path, admin="pw"), kafka_password="")
    assert client_security(settings)["sasl_plain_password"] == "pw"


def test_no_password_anywhere_says_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(KafkaLoginRefused, match=r"run `lockstep infra up` \(it writes"):
        client_security(Settings(credentials_dir=tmp_path))
    with pytest.raises(KafkaLoginRefused, match="no password for Kafka user 'nobody' in"):
        client_security(Settings(credentials_dir=creds(tmp_path, ci="x"), kafka_user="nobody"))


def test_plaintext_is_for_a_broker_without_security() -> None:
    assert client_security(Settings(kafka_security_protocol="PLAINTEXT")) == {
        "security_protocol": "PLAINTEXT"
    }


def test_a_refused_login_is_not_waited_on_and_a_refused_write_is_the_record_s_fault() -> None:
    refused = KafkaLoginRefused("Kafka at k:9092 refused user 'ci'")
    assert not kafka_is_transient(refused)
    assert str(refused) == "Kafka at k:9092 refused user 'ci'"  # one line, no class name
    assert classify(WriteNotAllowed("may not write")) is Fault.RECORD


class HalfStarted:
    """An aiokafka client whose start fails after it has connected (the bootstrap done, then
    a topic it may not read)."""

    def __init__(self) -> None:
        self.open_connections = 0

    async def start(self) -> None:
        self.open_connections = 1
        raise TopicAuthorizationFailedError("lockstep.gates")

    async def stop(self) -> None:
        self.open_connections = 0


class Client(_ExplainsRefusal, HalfStarted):
    _lockstep_settings = Settings()


async def test_a_client_whose_start_fails_is_closed_before_the_caller_hears_why() -> None:
    client = Client()
    with pytest.raises(TopicAuthorizationFailedError):
        await client.start()
    assert client.open_connections == 0
