"""Which Postgres login a service gets (``Settings.pg_dsn_for``): its own DSN if the operator
gives one, else its role from the credentials file `infra/lockstep-infra up` writes, else the
administrator's; and a credentials file that cannot be used says so, never what it holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.pg_logins import CredentialsUnreadable
from shared.settings import CHECKOUT, Settings

ADMIN = "postgresql://lockstep:adminpw@db.example:6543/lockstep?sslmode=disable"


def credentials(folder: Path, entries: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "postgres.json").write_text(json.dumps(entries))
    return folder


@pytest.fixture(autouse=True)
def no_service_dsns(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("LOCKSTEP_PG_DSN_"):
            monkeypatch.delenv(name)


def test_the_credentials_file_gives_the_role_at_the_administrators_server(tmp_path: Path) -> None:
    folder = credentials(
        tmp_path, {"gates": {"user": "lockstep_svc_gates", "password": "p@ss/w:rd"}}
    )
    settings = Settings(pg_dsn=ADMIN, credentials_dir=folder)
    assert settings.pg_dsn_for("gates") == (
        "postgresql://lockstep_svc_gates:p%40ss%2Fw%3Ard@db.example:6543/lockstep?sslmode=disable"
    )
    login = settings.pg_login("gates")
    assert (login.user, login.own_role, login.source) == (
        "lockstep_svc_gates",
        True,
        str(folder / "postgres.json"),
    )
    assert "p@ss" not in repr(login)


def test_a_dsn_given_for_the_service_comes_before_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = credentials(tmp_path, {"gates": {"user": "lockstep_svc_gates", "password": "f"}})
    monkeypatch.setenv("LOCKSTEP_PG_DSN_GATES", "postgresql://gates_prod:s3cret@pg.prod/lockstep")
    settings = Settings(pg_dsn=ADMIN, credentials_dir=folder)
    assert settings.pg_dsn_for("gates") == "postgresql://gates_prod:s3cret@pg.prod/lockstep"
    assert settings.pg_login("gates").source == "LOCKSTEP_PG_DSN_GATES"
    assert "s3cret" not in repr(settings)
    # only the service it names
    assert settings.pg_login("artifacts").own_role is False


def test_without_a_role_a_service_gets_the_administrators_dsn(tmp_path: Path) -> None:
    folder = credentials(tmp_path, {"gates": {"user": "lockstep_svc_gates", "password": "f"}})
    for settings in (
        Settings(pg_dsn=ADMIN, credentials_dir=tmp_path / "none"),  # no file at all
        Settings(pg_dsn=ADMIN, credentials_dir=folder),  # a file without the service
    ):
        login = settings.pg_login("flags")
        assert settings.pg_dsn_for("flags") == ADMIN
        assert (login.own_role, login.user, login.source) == (False, "lockstep", "LOCKSTEP_PG_DSN")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"gates": {"user": "lockstep_svc_gates", "password": "hunter2"', "not JSON"),
        ('["hunter2"]', "expected an object of services"),
        ('{"gates": {"user": "lockstep_svc_gates"}}', '\'gates\' needs a "user" and a "password"'),
        ('{"gates": {"password": "hunter2"}}', '\'gates\' needs a "user" and a "password"'),
    ],
)
def test_an_unusable_credentials_file_is_refused_naming_it(
    tmp_path: Path, content: str, said: str
) -> None:
    (tmp_path / "postgres.json").write_text(content)
    settings = Settings(pg_dsn=ADMIN, credentials_dir=tmp_path)
    with pytest.raises(CredentialsUnreadable) as refused:
        settings.pg_dsn_for("gates")
    assert str(tmp_path / "postgres.json") in str(refused.value)
    assert said in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_the_credentials_dir_defaults_to_the_checkouts_state_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOCKSTEP_CREDENTIALS_DIR", raising=False)
    assert Settings().credentials_dir == CHECKOUT / ".lockstep" / "credentials"


def test_an_empty_credentials_dir_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_CREDENTIALS_DIR", " ")
    with pytest.raises(ValueError, match="name a directory for the credentials"):
        Settings()
