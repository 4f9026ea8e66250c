"""Signed decisions: who made a decision event, proved with Ed25519, checked before acting.

A decision (a gate decision, a promotion, a rollback, a policy update, a flag change a service
asks for, a person's approval or hold release) is signed by whoever emits it, with a key of
that emitter's *role*: the gates, promotion and incidents services with their own
(``shared.bus.signing``), the command line with the platform's (a release model) or the
person's (an approval). Whoever acts on it verifies it first, against a trust store of public
keys: every Lockstep service for each decision it handles (``shared.bus.consumer``), the
deployer SDK for a promotion. What is unsigned, altered, signed by a key whose role may not
make that decision, by another person than the one it names, by a revoked key, or by a retired
key past its time, is refused: dead-lettered and reported as ``signature.refused``
(``events.security``).

The envelope
------------
The signature is detached: the record stays a plain CloudEvent in Kafka binary content mode
(``events._envelope``) and carries one more header, ``ce_lockstepsig``: the CloudEvents
extension attribute ``lockstepsig`` in the binary binding. Its value is compact JSON::

    {"keyid":"ed25519:3f2a9c0d1b7e6a54","sig":"<base64 of the 64-byte Ed25519 signature>"}

``keyid`` is ``"ed25519:"`` and the first 16 hex digits of the sha256 of the raw 32-byte public
key; ``sig`` is standard base64 (RFC 4648, with padding). Unknown members are ignored.

What is signed is DSSE's pre-authentication encoding (PAE, DSSE v1 protocol)::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with ``type`` = ``application/vnd.lockstep.cloudevent+json`` (``PAYLOAD_TYPE``), LEN the byte
length in ASCII decimal, and ``body`` the event's canonical JSON: ``CDEvent.to_json()``, the
form Lockstep writes as the record's value and the one its inboxes digest. For a record Lockstep
wrote, ``body`` is exactly the record's value, so a verifier in another language signs and
checks those bytes; a Python verifier re-serialises the event it decoded, so what is checked is
the event *as Lockstep reads it* (a member Lockstep ignores changes nothing it acts on).

The body covers the CloudEvents attributes: each is a copy of the data's ``context`` (``ce_id``
= ``context.id``, ``ce_source`` = ``context.source``, ``ce_type`` = ``context.type``,
``ce_time`` = ``context.timestamp``, ``ce_subject`` = ``subject.id``; ``ce_specversion`` and
``content-type`` are fixed), and Lockstep takes them from the data (``decode`` refuses a
``ce_id`` or ``ce_type`` that disagrees). So an environment, a digest, a type or a time changed
anywhere in the event no longer verifies, and a promotion cannot be replayed for another
environment. Replaying the very same event is the inboxes' business (same id: skipped).

Keys, roles, rotation
---------------------
A trust store (``TrustStore``, a JSON file) lists public keys, each with its role (and for a
person's key the person's name), when it was created, and when it was retired and revoked (or
null). A private key ring is a directory holding one PEM
file per key (PKCS#8, mode 0600). ``KeyStore(directory)`` is the usual layout of both:
``trust.json`` and ``private/<16 hex>.pem``; Lockstep's settings name the directory
(``LOCKSTEP_KEY_DIR``), this module takes paths.

Several keys of a role may be valid at once: a signer uses the newest usable key of its role
that it holds; a verifier accepts any key the store has, with three limits:

- a *retired* key (rotation: ``lockstep keys retire``) verifies only events timed before its
  retirement, and only until ``retired_grace`` (default a day, ``DEFAULT_RETIRED_GRACE``) after
  it. The event's time is the signer's to choose, so a retired key's holder could backdate;
  the grace bounds that to the time what the key signed needs to be read;
- a *revoked* key (compromised: ``lockstep keys revoke``) verifies nothing, whenever signed;
- a *person's* key carries the person's name, and verifies only an event that claims that
  person (``claimed_person``: approval.updated's responder, hold.released's ``by``); else the
  refusal is ``impersonation``. Whether that person may approve that environment is the
  gates service's business.

A service reads the trust store file again when it changes (``TrustStoreFile``: a ``stat`` at
most once a second, and at once for a key it does not know yet), so a retirement or a
revocation takes effect without a restart.

``SIGNERS`` says which roles may sign which event type. ``verify`` raises ``SignatureRefused``,
whose ``reason`` is one of ``REFUSALS`` (``unsigned``, ``malformed``, ``unknown-key``,
``altered``, ``role-not-allowed``, ``impersonation``, ``retired``, ``revoked``) and whose text
says what and why. The signature is checked first, so every refusal after ``altered`` means the
key really signed it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from events._base import CDEvent
from events._envelope import KafkaRecord
from events.approvals import ApprovalUpdated
from events.flags import FlagChangeRequested
from events.gates import GateFailed, GatePassed
from events.incidents import RollbackRequested
from events.policy import PolicyUpdated
from events.promotions import HoldReleased, PromotionApproved, PromotionBlocked

SIGNATURE_HEADER: Final = "ce_lockstepsig"  # the extension attribute "lockstepsig", binary mode
PAYLOAD_TYPE: Final = "application/vnd.lockstep.cloudevent+json"
KEY_ID_PREFIX: Final = "ed25519:"
MAX_HEADER_CHARS: Final = 512  # a key id and 88 characters of base64 need far less
TRUST_FILE: Final = "trust.json"
PRIVATE_DIR: Final = "private"
# How long a retired key's signatures still verify (for events timed before its retirement):
# time for what it signed to be read. Past it, nothing the key signed verifies.
DEFAULT_RETIRED_GRACE: Final = timedelta(days=1)
PERSON_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")

Role = Literal["gates", "promotion", "incidents", "platform", "admin", "person"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
# The roles of services and the platform: one key each is what an installation starts with
# (``KeyStore.init``); a person's key is per person.
INIT_ROLES: Final[tuple[str, ...]] = ("gates", "promotion", "incidents", "platform", "admin")

# Which roles may sign which decision. A role is a kind of signer, not one signer: every key of
# the role may sign these types.
SIGNERS: Final[Mapping[str, frozenset[str]]] = {
    GatePassed.TYPE: frozenset({"gates"}),
    GateFailed.TYPE: frozenset({"gates"}),
    # a rollback's promotion is a promotion.approved with rollback: true, signed the same way
    PromotionApproved.TYPE: frozenset({"promotion"}),
    PromotionBlocked.TYPE: frozenset({"promotion"}),
    RollbackRequested.TYPE: frozenset({"incidents"}),
    # the kill switches incidents pulls, and an administrator's change sent on Kafka
    FlagChangeRequested.TYPE: frozenset({"incidents", "admin"}),
    PolicyUpdated.TYPE: frozenset({"platform"}),
    # A person's key carries the person's name, and the event must claim that name
    # (``claimed_person``). Whether that person may approve that environment is the gates
    # service's business (the model's approvers), not the signature's.
    ApprovalUpdated.TYPE: frozenset({"person"}),
    HoldReleased.TYPE: frozenset({"person"}),
}

Refusal = Literal[
    "unsigned",
    "malformed",
    "unknown-key",
    "altered",
    "role-not-allowed",
    "impersonation",
    "retired",
    "revoked",
]
REFUSALS: Final[tuple[str, ...]] = get_args(Refusal)


class SignatureRefused(ValueError):
    """An event not to act on. ``reason`` is one of ``REFUSALS``; the text says what and why
    (fit for a dead letter's error and a security event)."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason: Refusal = reason
        self.detail = detail


class KeyStoreError(ValueError):
    """A key store, trust store or private key that cannot be used; the text says why."""


class NoSigningKey(LookupError):
    """No unretired key of the role is in the ring; the text says how to make one."""


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signed a verified event (``name``: the person, for a person's key)."""

    key_id: str
    role: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the trust store knows, with its role and its life."""

    key_id: str
    role: str
    public_key: bytes  # raw, 32 bytes
    created_at: datetime
    retired_at: datetime | None = None
    name: str | None = None  # the person, for a key of role person
    revoked_at: datetime | None = None  # compromised: nothing it signed verifies

    def retired_by(self, moment: datetime) -> bool:
        return self.retired_at is not None and moment >= self.retired_at

    @property
    def usable(self) -> bool:
        """Neither retired nor revoked: a signer may sign with it."""
        return self.retired_at is None and self.revoked_at is None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key to sign with, and the id and role its public half is trusted under."""

    key_id: str
    role: str
    private_key: Ed25519PrivateKey
    name: str | None = None  # the person, for a key of role person


def key_id(public_key: bytes | Ed25519PublicKey) -> str:
    """``ed25519:`` and the first 16 hex digits of the sha256 of the raw public key."""
    raw = public_key if isinstance(public_key, bytes) else _raw(public_key)
    return KEY_ID_PREFIX + hashlib.sha256(raw).hexdigest()[:16]


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding of ``body`` as ``payload_type``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def signed_bytes(event: CDEvent) -> bytes:
    """What a signature of ``event`` is over: PAE of its canonical JSON."""
    return pae(PAYLOAD_TYPE, event.to_json())


def sign(event: CDEvent, key: SigningKey) -> str:
    """The ``ce_lockstepsig`` header value: ``key``'s signature of ``event``."""
    signature = key.private_key.sign(signed_bytes(event))
    return json.dumps(
        {"keyid": key.key_id, "sig": base64.b64encode(signature).decode("ascii")},
        separators=(",", ":"),
    )


def signers_of(event: CDEvent) -> frozenset[str]:
    """The roles that may sign ``event`` (none for a type that is not a decision)."""
    return SIGNERS.get(type(event).TYPE, frozenset())


def is_decision(event: CDEvent) -> bool:
    """Whether ``event`` must be signed: its model's type is in ``SIGNERS``. Decided by the
    model the event was read as, never by the type string it carries: ``decode`` reads any
    minor or patch version of a known type with the model of that type (``gate.passed.0.9.9``
    is a ``GatePassed``), and such a string must not pass as "not a decision"."""
    return type(event).TYPE in SIGNERS


def claimed_person(event: CDEvent) -> str | None:
    """The person a person-signed event says acted (approval.updated's responder,
    hold.released's ``by``); None for other events."""
    if isinstance(event, ApprovalUpdated):
        return event.who
    if isinstance(event, HoldReleased):
        return event.subject.content.by
    return None


def verify(
    event: CDEvent,
    header_value: str | bytes | None,
    trust: TrustStore,
    *,
    allowed_roles: Collection[str] | None = None,
    now: datetime | None = None,
    retired_grace: timedelta = DEFAULT_RETIRED_GRACE,
) -> Signer:
    """Who signed ``event`` (``header_value``: its ``ce_lockstepsig``), if a key of
    ``allowed_roles`` (default: ``SIGNERS`` for its type) did, that is not revoked, and
    unretired at the event's time (a retired key only until ``retired_grace`` after its
    retirement, judged by ``now``, default the system's); a person's key only for an event
    that claims that person. Else raise ``SignatureRefused``."""
    what = _what(event)
    key_id_, signature = _parse_header(header_value, what)
    trusted = trust.get(key_id_)
    if trusted is None:
        raise SignatureRefused(
            "unknown-key",
            f"{what} is signed by key {key_id_}, which the trust store does not know",
        )
    try:
        Ed25519PublicKey.from_public_bytes(trusted.public_key).verify(
            signature, signed_bytes(event)
        )
    except InvalidSignature:
        raise SignatureRefused(
            "altered",
            f"{what}: the signature of key {key_id_} does not match the event "
            "(altered after signing, or signed as another event)",
        ) from None
    roles = frozenset(signers_of(event) if allowed_roles is None else allowed_roles)
    if trusted.role not in roles:
        may = ", ".join(sorted(roles)) or "no role (not a signed decision)"
        raise SignatureRefused(
            "role-not-allowed",
            f"{what} is signed by key {key_id_} of role {trusted.role!r}; it may be signed "
            f"by: {may}",
        )
    if trusted.revoked_at is not None:
        raise SignatureRefused(
            "revoked",
            f"{what} is signed by key {key_id_}, revoked at {_rfc3339(trusted.revoked_at)}: "
            "nothing it signed is trusted",
        )
    if trusted.role == "person":
        claimed = claimed_person(event)
        if trusted.name is None or claimed != trusted.name:
            whose = (
                f"of {trusted.name!r}"
                if trusted.name
                else "of no one named (a person key made before keys carried names: make a "
                "new one with --name)"
            )
            raise SignatureRefused(
                "impersonation",
                f"{what} claims to be by {claimed!r}, but is signed by key {key_id_} {whose}",
            )
    at = event.context.timestamp
    if trusted.retired_by(at):
        assert trusted.retired_at is not None
        raise SignatureRefused(
            "retired",
            f"{what} at {_rfc3339(at)} is signed by key {key_id_}, retired at "
            f"{_rfc3339(trusted.retired_at)}",
        )
    if trusted.retired_at is not None:
        moment = now or datetime.now(UTC)
        if moment >= trusted.retired_at + retired_grace:
            raise SignatureRefused(
                "retired",
                f"{what} is signed by key {key_id_}, retired at "
                f"{_rfc3339(trusted.retired_at)}; its signatures verified until "
                f"{_rfc3339(trusted.retired_at + retired_grace)} (the grace after retirement)",
            )
    return Signer(key_id=trusted.key_id, role=trusted.role, name=trusted.name)


def signature_of(record: KafkaRecord) -> str | None:
    """The record's ``ce_lockstepsig`` (None: unsigned). Given twice with different values it
    is refused as malformed: which one would be the event's?"""
    values = {v for k, v in record.headers if k.lower() == SIGNATURE_HEADER}
    if len(values) > 1:
        raise SignatureRefused(
            "malformed", f"header {SIGNATURE_HEADER} is given {len(values)} times, differently"
        )
    if not values:
        return None
    (value,) = values
    return None if value is None else value.decode("utf-8", errors="replace")


def with_signature(record: KafkaRecord, header_value: str) -> KafkaRecord:
    """``record`` carrying ``header_value`` as its ``ce_lockstepsig`` (any other one dropped)."""
    kept = tuple((k, v) for k, v in record.headers if k.lower() != SIGNATURE_HEADER)
    return replace(record, headers=(*kept, (SIGNATURE_HEADER, header_value.encode("utf-8"))))


def _what(event: CDEvent) -> str:
    return f"{type(event).__name__} {event.context.id}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_header(value: str | bytes | None, what: str) -> tuple[str, bytes]:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureRefused(
                "malformed", f"{what}: header {SIGNATURE_HEADER} is not UTF-8 text"
            ) from None
    if value is None or not value.strip():
        raise SignatureRefused(
            "unsigned", f"{what} is unsigned: it has no {SIGNATURE_HEADER} header"
        )
    expected = f'{{"keyid": "{KEY_ID_PREFIX}<16 hex>", "sig": "<base64>"}}'

    def malformed(why: str) -> SignatureRefused:
        return SignatureRefused(
            "malformed", f"{what}: header {SIGNATURE_HEADER} {why}; it must be {expected}"
        )

    if len(value) > MAX_HEADER_CHARS:
        raise malformed(f"is {len(value)} characters long")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        raise malformed("is not JSON") from None
    if not isinstance(parsed, dict):
        raise malformed("is not a JSON object")
    found_id, sig = parsed.get("keyid"), parsed.get("sig")
    if not isinstance(found_id, str) or not _is_key_id(found_id):
        raise malformed("has no keyid of the form ed25519:<16 hex>")
    if not isinstance(sig, str):
        raise malformed("has no sig")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise malformed("has a sig that is not base64") from None
    if len(signature) != 64:
        raise malformed(f"has a sig of {len(signature)} bytes, not Ed25519's 64")
    return found_id, signature


def _is_key_id(text: str) -> bool:
    digits = text.removeprefix(KEY_ID_PREFIX)
    return (
        text.startswith(KEY_ID_PREFIX)
        and len(digits) == 16
        and all(c in "0123456789abcdef" for c in digits)
    )


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --- the trust store --------------------------------------------------------------------------


class TrustStore:
    """Public keys by key id, with their role and life. As a file: JSON,
    ``{"keys": [{"keyid", "role", "name" (a person key's person; else absent or null),
    "publicKey" (base64, raw 32 bytes), "createdAt", "retiredAt", "revokedAt" (RFC 3339, or
    null or absent)}]}``."""

    def __init__(self, keys: Collection[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self.add(key)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(sorted(self._keys.values(), key=lambda k: (k.role, k.created_at)))

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key_id_: str) -> TrustedKey | None:
        return self._keys.get(key_id_)

    def add(self, key: TrustedKey) -> None:
        if key_id(key.public_key) != key.key_id:
            raise KeyStoreError(f"key {key.key_id} is not the id of its public key")
        self._keys[key.key_id] = key

    def retire(self, key_id_: str, at: datetime) -> TrustedKey:
        key = self._keys.get(key_id_)
        if key is None:
            raise KeyStoreError(f"no key {key_id_} in the trust store")
        if key.revoked_at is not None:
            raise KeyStoreError(f"key {key_id_} was revoked at {_rfc3339(key.revoked_at)}")
        if key.retired_at is not None:
            raise KeyStoreError(f"key {key_id_} was retired at {_rfc3339(key.retired_at)}")
        self._keys[key_id_] = retired = replace(key, retired_at=at)
        return retired

    def revoke(self, key_id_: str, at: datetime) -> TrustedKey:
        key = self._keys.get(key_id_)
        if key is None:
            raise KeyStoreError(f"no key {key_id_} in the trust store")
        if key.revoked_at is not None:
            raise KeyStoreError(f"key {key_id_} was revoked at {_rfc3339(key.revoked_at)}")
        self._keys[key_id_] = revoked = replace(key, revoked_at=at)
        return revoked

    def of_role(self, role: str, *, at: datetime) -> list[TrustedKey]:
        """The role's keys unretired at ``at`` and not revoked, newest first."""
        found = [
            k
            for k in self._keys.values()
            if k.role == role and not k.retired_by(at) and k.revoked_at is None
        ]
        return sorted(found, key=lambda k: k.created_at, reverse=True)

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        """The store in ``path`` (a file that is not there: an empty store, which trusts
        nothing); a file that cannot be read is a ``KeyStoreError`` naming it."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"{path}: cannot read the trust store ({exc})") from None
        try:
            return cls.from_json(text)
        except KeyStoreError as exc:
            raise KeyStoreError(f"{path}: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> TrustStore:
        try:
            document: Any = json.loads(text)
        except ValueError as exc:
            raise KeyStoreError(f"the trust store is not JSON ({exc})") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise KeyStoreError('the trust store must be {"keys": [...]}')
        store = cls()
        for n, entry in enumerate(entries):
            key = _trusted_key(entry, n)
            if store.get(key.key_id) is not None:
                raise KeyStoreError(f"keys[{n}]: key {key.key_id} is listed twice")
            store.add(key)
        return store

    def to_json(self) -> str:
        keys = [
            {
                "keyid": k.key_id,
                "role": k.role,
                "name": k.name,
                "publicKey": base64.b64encode(k.public_key).decode("ascii"),
                "createdAt": _rfc3339(k.created_at),
                "retiredAt": _rfc3339(k.retired_at) if k.retired_at else None,
                "revokedAt": _rfc3339(k.revoked_at) if k.revoked_at else None,
            }
            for k in self
        ]
        return json.dumps({"keys": keys}, indent=2) + "\n"

    def save(self, path: Path) -> None:
        """Written whole, then renamed over ``path``: a reader sees the old store or the new."""
        _write_atomically(path, self.to_json().encode("utf-8"), mode=0o644)


def _trusted_key(entry: object, n: int) -> TrustedKey:
    where = f"keys[{n}]"
    if not isinstance(entry, dict):
        raise KeyStoreError(f"{where} is not an object")
    kid, role, public = entry.get("keyid"), entry.get("role"), entry.get("publicKey")
    if not isinstance(kid, str) or not _is_key_id(kid):
        raise KeyStoreError(f"{where}.keyid must be ed25519:<16 hex>")
    if role not in ROLES:
        raise KeyStoreError(f"{where}.role {role!r} is not one of {', '.join(ROLES)}")
    try:
        raw = base64.b64decode(public if isinstance(public, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KeyStoreError(f"{where}.publicKey must be the base64 of a raw 32-byte Ed25519 key")
    if key_id(raw) != kid:
        raise KeyStoreError(f"{where}: keyid {kid} is not the id of its publicKey")
    created = _time(entry.get("createdAt"), f"{where}.createdAt")
    retired_raw, revoked_raw = entry.get("retiredAt"), entry.get("revokedAt")
    retired = None if retired_raw is None else _time(retired_raw, f"{where}.retiredAt")
    revoked = None if revoked_raw is None else _time(revoked_raw, f"{where}.revokedAt")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not PERSON_NAME_RE.match(name)):
        raise KeyStoreError(f"{where}.name must be a person's name (letters, digits, ._@-)")
    return TrustedKey(kid, str(role), raw, created, retired, name=name, revoked_at=revoked)


def _time(raw: object, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise KeyStoreError(f"{where} must be an RFC 3339 time with its offset")
    return moment


# --- the key store: a trust store and a private key ring in one directory ---------------------


class KeyStore:
    """``directory/trust.json`` (the trust store) and ``directory/private/`` (the ring: one
    PEM file per private key, ``<16 hex of the key id>.pem``, mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.trust_path = self.directory / TRUST_FILE
        self.private_dir = self.directory / PRIVATE_DIR

    def trust(self) -> TrustStore:
        return TrustStore.load(self.trust_path)

    def private_path(self, key_id_: str) -> Path:
        return self.private_dir / f"{key_id_.removeprefix(KEY_ID_PREFIX)}.pem"

    def has_private(self, key_id_: str) -> bool:
        return self.private_path(key_id_).is_file()

    def create(
        self, role: str, *, name: str | None = None, now: datetime | None = None
    ) -> TrustedKey:
        """A new key of ``role`` (a person's carries ``name``, required for that role and
        only for it): its private half in the ring, its public half trusted."""
        if role not in ROLES:
            raise KeyStoreError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
        if role == "person" and not name:
            raise KeyStoreError("a person key needs the person's name: --name NAME")
        if role != "person" and name:
            raise KeyStoreError(f"only a person key has a name; a {role} key is the role's")
        if name is not None and not PERSON_NAME_RE.match(name):
            raise KeyStoreError(
                f"name {name!r}: 1-100 letters, digits, '.', '_', '@' or '-', starting with a "
                "letter or digit"
            )
        private = Ed25519PrivateKey.generate()
        raw = _raw(private.public_key())
        key = TrustedKey(key_id(raw), role, raw, now or datetime.now(UTC), name=name)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._locked():
            self.private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.private_path(key.key_id)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise KeyStoreError(f"{path}: cannot write the private key ({exc})") from None
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            trust = self.trust()
            trust.add(key)
            trust.save(self.trust_path)
        return key

    def retire(self, key_id_: str, *, now: datetime | None = None) -> TrustedKey:
        """Retire a key from ``now``: it signs nothing more, and what it signed before still
        verifies. Its private half stays in the ring (delete it once nothing needs it)."""
        with self._locked():
            trust = self.trust()
            retired = trust.retire(key_id_, now or datetime.now(UTC))
            trust.save(self.trust_path)
        return retired

    def revoke(self, key_id_: str, *, now: datetime | None = None) -> TrustedKey:
        """Revoke a key (compromised): from now on nothing it signed verifies, whenever it
        was signed. Its private half is deleted from the ring."""
        with self._locked():
            trust = self.trust()
            revoked = trust.revoke(key_id_, now or datetime.now(UTC))
            trust.save(self.trust_path)
            with contextlib.suppress(FileNotFoundError):
                self.private_path(key_id_).unlink()
        return revoked

    def signing_key(
        self,
        role: str,
        *,
        name: str | None = None,
        trust: TrustStore | None = None,
        now: datetime | None = None,
    ) -> SigningKey:
        """The newest key of ``role`` (of the person ``name``, if given) that is unretired,
        unrevoked, and whose private half is here."""
        store = self.trust() if trust is None else trust
        for key in store.of_role(role, at=now or datetime.now(UTC)):
            if (name is None or key.name == name) and self.has_private(key.key_id):
                return self.load_private(key)
        whose = f" of {name}" if name else ""
        make = f"--role {role}" + (f" --name {name}" if role == "person" else "")
        if role == "person" and not name:
            make = "--role person --name YOUR-NAME"
        raise NoSigningKey(
            f"no unretired {role} key{whose} in {self.private_dir} (trusted in "
            f"{self.trust_path}); make one with `lockstep keys init` or "
            f"`lockstep keys create {make}`"
        )

    def person_key(self, name: str | None = None) -> SigningKey:
        """The key a person signs with: ``name``'s; without a name, the only person key in
        the ring (several: ``NoSigningKey`` saying to choose, with LOCKSTEP_PERSON)."""
        if name is not None:
            return self.signing_key("person", name=name)
        now = datetime.now(UTC)
        mine = [k for k in self.trust().of_role("person", at=now) if self.has_private(k.key_id)]
        names = sorted({k.name or "" for k in mine})
        if len(names) > 1:
            raise NoSigningKey(
                f"the ring {self.private_dir} holds keys of {', '.join(names)}: say whose to "
                "sign with, LOCKSTEP_PERSON=NAME"
            )
        return self.signing_key("person", name=names[0] if names else None)

    def init(self, person: str | None) -> list[TrustedKey]:
        """A key of each of ``INIT_ROLES`` that has no usable key here yet, and one for
        ``person`` if they have none: what a new installation needs, and nothing more when
        run again. Returns the keys created."""
        created: list[TrustedKey] = []
        now = datetime.now(UTC)
        trust = self.trust()

        def held(role: str, name: str | None = None) -> bool:
            return any(
                (name is None or k.name == name) and self.has_private(k.key_id)
                for k in trust.of_role(role, at=now)
            )

        for role in INIT_ROLES:
            if not held(role):
                created.append(self.create(role))
        if person is not None and not held("person", person):
            created.append(self.create("person", name=person))
        return created

    def load_private(self, key: TrustedKey) -> SigningKey:
        path = self.private_path(key.key_id)
        try:
            mode = path.stat().st_mode & 0o777
            data = path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"{path}: cannot read the private key ({exc})") from None
        if mode & 0o077:
            raise KeyStoreError(f"{path} is readable by others (mode {mode:o}); `chmod 600 {path}`")
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(f"{path} is not an unencrypted PEM private key ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyStoreError(f"{path} is not an Ed25519 key")
        if key_id(private.public_key()) != key.key_id:
            raise KeyStoreError(f"{path} is not the private half of {key.key_id}")
        return SigningKey(key_id=key.key_id, role=key.role, private_key=private, name=key.name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two `keys create` at once must not lose a key)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- the trust store as a file that changes ---------------------------------------------------


def trust_store_problem(path: Path) -> str | None:
    """Why a verifier must not start on the trust store at ``path`` (None: it may): missing,
    unreadable, trusting no key (every decision would be refused, dead-lettered and lost), or
    writable by others than its owner, it or its directory (whoever can write it chooses whom
    a verifier trusts)."""
    path = Path(path)
    for where in (path, path.parent):
        try:
            mode = where.stat().st_mode
        except FileNotFoundError:
            return (
                f"there is no trust store at {path}: run `lockstep keys init` (or set "
                "LOCKSTEP_KEY_DIR)"
            )
        except OSError as exc:
            return f"cannot read the trust store at {path} ({exc})"
        if mode & 0o022:
            return f"{where} may be written by others (mode {mode & 0o777:o}): `chmod go-w {where}`"
    try:
        store = TrustStore.load(path)
    except (KeyStoreError, OSError) as exc:
        return f"cannot read the trust store at {path} ({exc})"
    if not len(store):
        return f"the trust store at {path} trusts no key: run `lockstep keys init`"
    return None


class TrustStoreFile:
    """The trust store in ``path``, read again when the file changes (a retired or revoked key
    takes effect without a restart). The file is looked at (a ``stat``) at most once per
    ``check_every_s``, unless a caller asks to look now (``current(look=True)``, for a key it
    does not know yet). A file that cannot be read on a change keeps the store read before and
    says why (``problem``); a file that is not there trusts nothing."""

    def __init__(self, path: Path, *, check_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self._every = check_every_s
        self._checked_at = -float("inf")
        self._seen: tuple[int, int, int] | None = None
        self._store = TrustStore()
        self.problem: str | None = None

    def verify(
        self,
        event: CDEvent,
        header_value: str | bytes | None,
        *,
        now: datetime | None = None,
        retired_grace: timedelta = DEFAULT_RETIRED_GRACE,
    ) -> Signer:
        """``verify`` against the current store; a key it does not know is looked for again
        in the file at once (a key made a moment ago signs at once), then refused."""
        try:
            return verify(event, header_value, self.current(), now=now,
                          retired_grace=retired_grace)  # fmt: skip
        except SignatureRefused as refused:
            if refused.reason != "unknown-key":
                raise
        return verify(event, header_value, self.current(look=True), now=now,
                      retired_grace=retired_grace)  # fmt: skip

    def current(self, *, look: bool = False) -> TrustStore:
        """The store as the file last read says; ``look``: look at the file now, however
        recently it was (for a key not known yet: it may have been made a moment ago)."""
        now = time.monotonic()
        if not look and now - self._checked_at < self._every:
            return self._store
        self._checked_at = now
        try:
            st = self.path.stat()
            seen: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            seen = None
        except OSError as exc:
            self.problem = f"{self.path}: cannot look at the trust store ({exc})"
            return self._store
        if seen == self._seen and self.problem is None:
            return self._store
        try:
            self._store = TrustStore.load(self.path) if seen is not None else TrustStore()
            self.problem = None
        except KeyStoreError as exc:
            self.problem = f"{exc}; the trust store read before is kept"
        self._seen = seen
        return self._store
