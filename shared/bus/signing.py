"""Signing and verifying on the bus (``events.signing`` is the format; this is its use).

A service that makes decisions signs as a role (``ServiceSpec.signs_as``): at start-up it
loads the newest usable key of that role from ``LOCKSTEP_KEY_DIR`` (``service_key``; none: it
does not start, and says to run ``lockstep keys init``), and every event it emits whose type
is in ``SIGNERS`` carries the signature (``signed_record``) in the outbox row, so a resend is
the same bytes. Every consumer verifies the decisions it handles (``Verifier``) before the
handler runs: a refusal is dead-lettered at once with ``signature <reason>: <detail>`` and
reported on the ``security`` topic (``events.security.SignatureRefusal.of``)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from events import CDEvent, KafkaRecord, encode
from events.signing import (
    TRUST_FILE,
    KeyStore,
    KeyStoreError,
    NoSigningKey,
    SignatureRefused,
    SigningKey,
    TrustStoreFile,
    is_decision,
    sign,
    signature_of,
    signers_of,
    with_signature,
)
from shared.db import NotComingUp
from shared.settings import Settings

log = logging.getLogger(__name__)

# Benchmarks only: the release chain's latency with signatures against without needs a mesh
# that neither signs nor verifies. No setting turns this on (a user must not be able to turn
# verification off); only code run in the process can, and only bench/harness/unsigned.py
# does, for the processes a bench starts with ``--signing off``.
_BENCH_UNSIGNED = False


def unsigned_for_a_benchmark() -> None:
    """Sign nothing and verify nothing in this process from now on. For the benchmark's
    comparison only (bench/harness/unsigned.py); never call it anywhere else."""
    global _BENCH_UNSIGNED
    _BENCH_UNSIGNED = True
    log.warning("signing and verification are OFF in this process (a benchmark's comparison)")


__all__ = [
    "KeySource",
    "RotatingKey",
    "UnsignableDecision",
    "Verifier",
    "service_key",
    "signed_record",
]


class UnsignableDecision(RuntimeError):
    """A decision emitted without a key, or with a key whose role may not sign it: a
    programming (or set-up) error, never something to send unsigned."""


def service_key(settings: Settings, role: str, who: str) -> SigningKey:
    """The key ``who`` signs with as ``role``: the newest usable one in ``settings.key_dir``.
    None there, or one that cannot be read: ``NotComingUp`` saying what to do (one line)."""
    try:
        return KeyStore(settings.key_dir).signing_key(role)
    except NoSigningKey as exc:
        raise NotComingUp(f"{who}: it signs as {role}, and {exc}") from None
    except KeyStoreError as exc:
        raise NotComingUp(f"{who}: cannot load its {role} signing key: {exc}") from None


class RotatingKey:
    """The key a running service signs with: the newest usable key of its role, looked up
    again when ``trust.json`` changes (looked at at most once a second). So a successor made
    with ``lockstep keys create`` and the old key retired or revoked take effect without a
    restart. With no usable key left (revoked with no successor), every decision raises
    ``UnsignableDecision``: the handler fails and is retried, and nothing goes out unsigned
    or signed by a key the verifiers refuse."""

    def __init__(self, settings: Settings, role: str, who: str, first: SigningKey) -> None:
        self._store = KeyStore(settings.key_dir)
        self._role, self._who = role, who
        self._key: SigningKey | None = first
        self._problem = ""
        self._stamp = self._trust_stamp()
        self._looked = time.monotonic()

    @property
    def role(self) -> str:
        return self._role

    def current(self) -> SigningKey:
        now = time.monotonic()
        if now - self._looked >= 1.0:
            self._looked = now
            stamp = self._trust_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._look_again()
        if self._key is None:
            raise UnsignableDecision(f"{self._who}: no usable {self._role} key: {self._problem}")
        return self._key

    def _look_again(self) -> None:
        before = self._key.key_id if self._key is not None else None
        try:
            self._key = self._store.signing_key(self._role)
        except (NoSigningKey, KeyStoreError) as exc:
            self._key, self._problem = None, str(exc)
            log.error("%s: no usable %s key any more (%s)", self._who, self._role, exc)
            return
        if self._key.key_id != before:
            log.info("%s: now signing with %s key %s", self._who, self._role, self._key.key_id)

    def _trust_stamp(self) -> tuple[int, int] | None:
        try:
            st = self._store.trust_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size


KeySource = SigningKey | RotatingKey  # a key, or where a running service finds its current one


def signed_record(
    event: CDEvent,
    *,
    topic: str,
    key: KeySource | None,
    trace_headers: dict[str, str] | None = None,
) -> KafkaRecord:
    """``event`` as a record for ``topic``; a decision (a type in ``SIGNERS``) signed with
    ``key`` (a ``RotatingKey``: its current one), which must be of a role that may sign it
    (else ``UnsignableDecision``)."""
    record = encode(event, topic=topic, trace_headers=trace_headers or {})
    if _BENCH_UNSIGNED or not is_decision(event):
        return record
    if isinstance(key, RotatingKey):
        key = key.current()
    roles = signers_of(event)
    if key is None:
        raise UnsignableDecision(
            f"{event.context.type} is a decision and must be signed (by a key of role "
            f"{' or '.join(sorted(roles))}), but no signing key was given"
        )
    if key.role not in roles:
        raise UnsignableDecision(
            f"{event.context.type} may be signed by {' or '.join(sorted(roles))}, not by "
            f"the {key.role} key {key.key_id}"
        )
    return with_signature(record, sign(event, key))


class Verifier:
    """Checks the decisions a service is handed against the trust store in
    ``settings.key_dir`` (read again when the file changes, looked at at most once a second),
    retired keys with ``settings.retired_key_grace_s`` of grace."""

    def __init__(self, settings: Settings, *, trust_path: Path | None = None) -> None:
        self._trust = TrustStoreFile(trust_path or settings.key_dir / TRUST_FILE)
        self._grace = timedelta(seconds=settings.retired_key_grace_s)
        self._problem: str | None = None

    def refusal(self, record: KafkaRecord, event: CDEvent) -> SignatureRefused | None:
        """Why ``event`` (read from ``record``) must not be acted on; None: act (it is not a
        decision, or its signature holds)."""
        if _BENCH_UNSIGNED or not is_decision(event):
            return None
        try:
            self._trust.verify(
                event, signature_of(record), now=datetime.now(UTC), retired_grace=self._grace
            )
        except SignatureRefused as refused:
            return refused
        finally:
            if self._trust.problem != self._problem:
                self._problem = self._trust.problem
                if self._problem:
                    log.error("trust store: %s", self._problem)
        return None
