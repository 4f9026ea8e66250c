"""``lockstep keys create|list|retire``: keys in LOCKSTEP_KEY_DIR (a temporary folder here),
rotation from the command line, and every error one line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.keys import keys_app
from cli.root import Root
from events import PromotionApproved
from events.signing import KeyStore, SignatureRefused, sign, verify
from events.testing import sample

# The command group as the root app mounts it (cli/main.py: app.add_typer(keys_app, "keys")).
app = typer.Typer()


@app.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = Root()


app.add_typer(keys_app, name="keys")


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "keys"


def lockstep(key_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["keys", *args], env={"LOCKSTEP_KEY_DIR": str(key_dir), "COLUMNS": "200"}
    )
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    return err


def test_create_makes_a_private_key_and_trusts_its_public_half(key_dir: Path) -> None:
    code, out, err = lockstep(key_dir, "create", "--role", "promotion")
    assert code == 0, err
    kid = out.strip()
    assert kid.startswith("ed25519:") and len(kid) == 24
    assert "promotion key created" in err
    store = KeyStore(key_dir)
    assert (store.private_path(kid).stat().st_mode & 0o777) == 0o600
    trusted = json.loads(store.trust_path.read_text(encoding="utf-8"))["keys"]
    assert [(k["keyid"], k["role"], k["retiredAt"]) for k in trusted] == [(kid, "promotion", None)]
    event = sample(PromotionApproved)
    assert verify(event, sign(event, store.signing_key("promotion")), store.trust()).key_id == kid


def test_list_shows_every_key_its_role_and_whether_it_is_held(key_dir: Path) -> None:
    code, _, err = lockstep(key_dir, "list")
    assert code == 0
    assert "no keys yet" in err
    _, gates, _ = lockstep(key_dir, "create", "--role", "gates")
    _, platform, _ = lockstep(key_dir, "create", "--role", "platform")
    code, out, _ = lockstep(key_dir, "list")
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines() if "ed25519:" in line}
    assert set(rows) == {gates.strip(), platform.strip()}
    assert "gates" in rows[gates.strip()] and "yes" in rows[gates.strip()]


def test_retire_rotates_a_role_to_its_other_key(key_dir: Path) -> None:
    _, old, _ = lockstep(key_dir, "create", "--role", "promotion")
    _, new, _ = lockstep(key_dir, "create", "--role", "promotion")
    store = KeyStore(key_dir)
    assert store.signing_key("promotion").key_id == new.strip()
    code, out, err = lockstep(key_dir, "retire", new.strip())
    assert code == 0, err
    assert f"retired {new.strip()} (promotion) at " in out
    assert store.signing_key("promotion").key_id == old.strip()
    # without its prefix too
    code, _, err = lockstep(key_dir, "retire", old.strip().removeprefix("ed25519:"))
    assert code == 0, err
    event = sample(PromotionApproved)
    with pytest.raises(SignatureRefused) as caught:
        verify(event, sign(event, store.load_private(store.trust().get(old.strip()))),  # type: ignore[arg-type]
               store.trust())  # fmt: skip
    assert caught.value.reason == "retired"
    _, listed, _ = lockstep(key_dir, "list")
    assert listed.count("ed25519:") == 2


def test_errors_are_one_line(key_dir: Path) -> None:
    err = one_line_error(*lockstep(key_dir, "create", "--role", "root")[::2])
    assert "unknown role 'root'" in err and "promotion" in err
    err = one_line_error(*lockstep(key_dir, "create", "--role", "person")[::2])
    assert "a person key needs the person's name: --name NAME" in err
    err = one_line_error(*lockstep(key_dir, "retire", "ed25519:0000000000000000")[::2])
    assert "no key ed25519:0000000000000000" in err
    _, kid, _ = lockstep(key_dir, "create", "--role", "person", "--name", "alice")
    lockstep(key_dir, "retire", kid.strip())
    err = one_line_error(*lockstep(key_dir, "retire", kid.strip())[::2])
    assert "was retired at" in err
    (key_dir / "trust.json").write_text("{not json", encoding="utf-8")
    err = one_line_error(*lockstep(key_dir, "list")[::2])
    assert "trust.json" in err and "not JSON" in err


def test_an_empty_key_dir_setting_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["keys", "list"], env={"LOCKSTEP_KEY_DIR": ""})
    err = one_line_error(result.exit_code, result.stderr)
    assert "LOCKSTEP_KEY_DIR" in err


def test_init_makes_every_role_once_and_list_shows_names_and_revocations(key_dir: Path) -> None:
    code, _, err = lockstep(key_dir, "init", "--person", "alice")
    assert code == 0, err
    for role in ("gates", "promotion", "incidents", "platform", "admin"):
        assert f"created {role} key" in err
    assert "created person key of alice" in err
    code, _, err = lockstep(key_dir, "init", "--person", "alice")
    assert code == 0 and "every role has one already" in err
    _, listed, _ = lockstep(key_dir, "list")
    assert listed.count("ed25519:") == 6 and "alice" in listed
    gates = KeyStore(key_dir).signing_key("gates")
    code, out, err = lockstep(key_dir, "revoke", gates.key_id.removeprefix("ed25519:"))
    assert code == 0, err
    assert f"revoked {gates.key_id} (gates)" in out and "keys create --role gates" in out
    assert not KeyStore(key_dir).has_private(gates.key_id)
    event = sample(PromotionApproved)
    trust = KeyStore(key_dir).trust()
    revoked = trust.get(gates.key_id)
    assert revoked is not None and revoked.revoked_at is not None
    _, listed, _ = lockstep(key_dir, "list")
    row = next(line for line in listed.splitlines() if gates.key_id in line)
    assert f"{revoked.revoked_at:%Y-%m-%d %H:%M:%S}" in row
    err = one_line_error(*lockstep(key_dir, "revoke", gates.key_id)[::2])
    assert "was revoked at" in err
    assert verify(event, sign(event, KeyStore(key_dir).signing_key("promotion")), trust)
