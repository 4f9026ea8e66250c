"""Signed decisions: who made a decision event, proved with Ed25519, checked before acting.

A decision (a gate decision, a promotion, a rollback, a policy update, a flag change a service
asks for, a person's approval) is signed by the service that emits it, with a key of that
service's *role*; whoever acts on it (the deployer SDK on a promotion, the promotion service on
a gate decision) verifies it first, against a trust store of public keys, and refuses what is
unsigned, altered, or signed by a key whose role may not make that decision. (Not yet wired:
no service calls ``sign`` or ``verify`` yet. Known gap to close when it is: retirement is
judged by the event's own time, which the signer chooses, so a retired key's holder can
backdate; a revoked state and a bound on the event's age are needed.)

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
A trust store (``TrustStore``, a JSON file) lists public keys, each with its role, when it was
created, and when it was retired (or null). A private key ring is a directory holding one PEM
file per key (PKCS#8, mode 0600). ``KeyStore(directory)`` is the usual layout of both:
``trust.json`` and ``private/<16 hex>.pem``; Lockstep's settings name the directory
(``LOCKSTEP_KEY_DIR``), this module takes paths.

Several keys of a role may be valid at once: a signer uses the newest unretired key of its role
that it holds; a verifier accepts any key the store has, except a retired key for an event whose
time is at or after its retirement (events it signed before still verify).

``SIGNERS`` says which roles may sign which event type. ``verify`` raises ``SignatureRefused``,
whose ``reason`` is one of ``REFUSALS`` (``unsigned``, ``malformed``, ``unknown-key``,
``altered``, ``role-not-allowed``, ``retired``) and whose text says what and why. The signature is
checked before the role and the retirement, so those two refusals mean the key really signed it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
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

Role = Literal["gates", "promotion", "incidents", "platform", "person"]
ROLES: Final[tuple[str, ...]] = get_args(Role)

# Which roles may sign which decision. A role is a kind of signer, not one signer: every key of
# the role may sign these types.
SIGNERS: Final[Mapping[str, frozenset[str]]] = {
    GatePassed.TYPE: frozenset({"gates"}),
    GateFailed.TYPE: frozenset({"gates"}),
    # a rollback's promotion is a promotion.approved with rollback: true, signed the same way
    PromotionApproved.TYPE: frozenset({"promotion"}),
    PromotionBlocked.TYPE: frozenset({"promotion"}),
    RollbackRequested.TYPE: frozenset({"incidents"}),
    FlagChangeRequested.TYPE: frozenset({"incidents"}),  # the kill switches incidents pulls
    PolicyUpdated.TYPE: frozenset({"platform"}),
    # TODO(people): "person" is any key of the role; which person, checked against the model's
    # approvers per environment (and four eyes), is the people part of issue 11.
    ApprovalUpdated.TYPE: frozenset({"person"}),
    HoldReleased.TYPE: frozenset({"person"}),
}

Refusal = Literal["unsigned", "malformed", "unknown-key", "altered", "role-not-allowed", "retired"]
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
    """Who signed a verified event."""

    key_id: str
    role: str


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the trust store knows, with its role and its life."""

    key_id: str
    role: str
    public_key: bytes  # raw, 32 bytes
    created_at: datetime
    retired_at: datetime | None = None

    def retired_by(self, moment: datetime) -> bool:
        return self.retired_at is not None and moment >= self.retired_at


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key to sign with, and the id and role its public half is trusted under."""

    key_id: str
    role: str
    private_key: Ed25519PrivateKey


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


def verify(
    event: CDEvent,
    header_value: str | bytes | None,
    trust: TrustStore,
    *,
    allowed_roles: Collection[str] | None = None,
) -> Signer:
    """Who signed ``event`` (``header_value``: its ``ce_lockstepsig``), if a key of
    ``allowed_roles`` (default: ``SIGNERS`` for its type) did, unretired at the event's time;
    else raise ``SignatureRefused``."""
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
    at = event.context.timestamp
    if trusted.retired_by(at):
        assert trusted.retired_at is not None
        raise SignatureRefused(
            "retired",
            f"{what} at {_rfc3339(at)} is signed by key {key_id_}, retired at "
            f"{_rfc3339(trusted.retired_at)}",
        )
    return Signer(key_id=trusted.key_id, role=trusted.role)


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
    ``{"keys": [{"keyid", "role", "publicKey" (base64, raw 32 bytes), "createdAt",
    "retiredAt" (RFC 3339, or null)}]}``."""

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
        if key.retired_at is not None:
            raise KeyStoreError(f"key {key_id_} was retired at {_rfc3339(key.retired_at)}")
        self._keys[key_id_] = retired = replace(key, retired_at=at)
        return retired

    def of_role(self, role: str, *, at: datetime) -> list[TrustedKey]:
        """The role's keys unretired at ``at``, newest first."""
        found = [k for k in self._keys.values() if k.role == role and not k.retired_by(at)]
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
                "publicKey": base64.b64encode(k.public_key).decode("ascii"),
                "createdAt": _rfc3339(k.created_at),
                "retiredAt": _rfc3339(k.retired_at) if k.retired_at else None,
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
    retired_raw = entry.get("retiredAt")
    retired = None if retired_raw is None else _time(retired_raw, f"{where}.retiredAt")
    return TrustedKey(kid, str(role), raw, created, retired)


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

    def create(self, role: str, *, now: datetime | None = None) -> TrustedKey:
        """A new key of ``role``: its private half in the ring, its public half trusted."""
        if role not in ROLES:
            raise KeyStoreError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
        private = Ed25519PrivateKey.generate()
        raw = _raw(private.public_key())
        key = TrustedKey(key_id(raw), role, raw, now or datetime.now(UTC))
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

    def signing_key(
        self, role: str, *, trust: TrustStore | None = None, now: datetime | None = None
    ) -> SigningKey:
        """The newest key of ``role`` that is unretired and whose private half is here."""
        store = self.trust() if trust is None else trust
        for key in store.of_role(role, at=now or datetime.now(UTC)):
            if self.has_private(key.key_id):
                return self.load_private(key)
        raise NoSigningKey(
            f"no unretired {role} key in {self.private_dir} (trusted in {self.trust_path}); "
            f"make one with `lockstep keys create --role {role}`"
        )

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
        return SigningKey(key_id=key.key_id, role=key.role, private_key=private)

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
