"""Artifact identity: a service, a version and an immutable sha256 digest, written as a purl.

Lockstep writes ``pkg:oci/<service>@sha256:<hex>?tag=<version>`` (the OCI purl type keeps the
digest as the version and the human version in the ``tag`` qualifier). It also reads what other
CDEvents producers write, e.g. ``pkg:generic/<service>@<version>?checksum=sha256:<hex>``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote

from packageurl import PackageURL

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# A name (a service, an environment): what every part of Lockstep accepts as one.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SERVICE_RE = re.compile(NAME_PATTERN)
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class ArtifactRefError(ValueError):
    """A purl, digest, service name or version that Lockstep cannot accept; ``code`` is stable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_digest(digest: str) -> str:
    """``digest`` if it is an OCI sha256 digest as written: ``sha256:`` and 64 lower-case hex.

    Upper case is refused, never folded: the OCI image spec writes digests in lower case, and
    Lockstep compares them as written, so a build registered as one spelling and evidence
    naming another would not meet. The reason shows the lower-case form to send instead."""
    if DIGEST_RE.match(digest):
        return digest
    if DIGEST_RE.match(digest.lower()):
        raise ArtifactRefError(
            "invalid_digest",
            f"digest {digest!r} has upper-case letters (OCI digests are lower-case hex): "
            f"write it in lower case, {digest.lower()!r}",
        )
    raise ArtifactRefError(
        "invalid_digest",
        f"digest {digest!r} is not 'sha256:' followed by 64 lower-case hex characters; "
        "pass the image or file digest (e.g. from `docker buildx imagetools inspect` "
        "or `sha256sum`)",
    )


def check_service(service: str) -> str:
    if SERVICE_RE.match(service):
        return service
    raise ArtifactRefError(
        "invalid_service",
        f"service name {service!r} must be 1-63 characters of a-z, 0-9, '.', '_' or '-', "
        "starting with a letter or digit",
    )


def check_version(version: str) -> str:
    if VERSION_RE.match(version):
        return version
    raise ArtifactRefError(
        "invalid_version",
        f"version {version!r} must be 1-128 characters of letters, digits, '.', '_', '+' or '-'",
    )


def service_of(purl: str) -> str | None:
    """The service (purl name) of an artifact id, without judging the rest; None if no purl."""
    try:
        return str(PackageURL.from_string(purl).name)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    service: str
    version: str
    digest: str | None = None

    @property
    def label(self) -> str:
        return f"{self.service}@{self.version}"

    def purl(self) -> str:
        if self.digest is None:
            return PackageURL(type="generic", name=self.service, version=self.version).to_string()
        return PackageURL(
            type="oci", name=self.service, version=self.digest, qualifiers={"tag": self.version}
        ).to_string()

    @classmethod
    def parse_label(cls, label: str) -> ArtifactRef:
        """``checkout@1.4.2`` -> ArtifactRef (no digest)."""
        service, sep, version = label.partition("@")
        if not sep:
            raise ArtifactRefError(
                "invalid_label", f"{label!r} is not service@version, e.g. checkout@1.4.2"
            )
        return cls(check_service(service), check_version(version))

    @classmethod
    def from_purl(cls, purl: str, *, require_digest: bool) -> ArtifactRef:
        parsed = _parse_purl(purl)
        if parsed.early is not None:
            raise ArtifactRefError(*parsed.early)
        if parsed.digest is None and require_digest:
            raise ArtifactRefError(
                "missing_digest",
                f"artifact id {purl!r} carries no sha256 digest; Lockstep registers immutable "
                "builds only: use pkg:oci/<service>@sha256:<hex>?tag=<version> "
                "(or a checksum=sha256:<hex> qualifier)",
            )
        if parsed.late is not None:
            raise ArtifactRefError(*parsed.late)
        assert parsed.ref is not None
        return parsed.ref


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A purl read once, whatever the caller requires: the digest it names (or None), and the
    errors found before the digest is known (``early``: not a purl, a bad digest) and after
    (``late``: no version, a bad name or version), as (code, reason)."""

    digest: str | None
    ref: ArtifactRef | None
    early: tuple[str, str] | None = None
    late: tuple[str, str] | None = None


# What ArtifactRef.purl() writes for a build: read without packageurl (a quarter of the
# artifacts service's CPU went to parsing it), to the same result (tests/unit/test_artifact_ref.py
# holds the two readings equal). Anything else is read by packageurl.
_CANONICAL_OCI = re.compile(
    r"^pkg:oci/([a-z0-9][a-z0-9._-]{0,62})@sha256(?::|%3A)([0-9a-f]{64})"
    r"\?tag=([A-Za-z0-9][A-Za-z0-9._-]{0,127})$"
)


@functools.lru_cache(maxsize=4096)
def _parse_purl(purl: str) -> _Parsed:
    """Parsed once per purl: a handler asks for the same artifact's identity several times."""
    canonical = _CANONICAL_OCI.match(purl)
    if canonical is not None:
        service, hex_digest, version = canonical.groups()
        digest = f"sha256:{hex_digest}"
        return _Parsed(digest, ArtifactRef(service, version, digest))
    return _parse_purl_with_packageurl(purl)


def _parse_purl_with_packageurl(purl: str) -> _Parsed:
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError as exc:
        reason = f"artifact id {purl!r} is not a Package URL (purl): {exc}"
        return _Parsed(None, None, early=("invalid_purl", reason))
    qualifiers = parsed.qualifiers if isinstance(parsed.qualifiers, dict) else {}
    digest: str | None = None
    version: str | None = None
    if parsed.version and parsed.version.startswith("sha256:"):
        # packageurl lower-cases an oci purl's version; the digest is judged as it was written
        digest = _written_version(purl) or parsed.version
        version = qualifiers.get("tag")
    else:
        version = parsed.version
        checksum = qualifiers.get("checksum") or qualifiers.get("digest")
        if checksum:  # e.g. "sha1:…,sha256:…"; only a sha256 names a Lockstep build
            sha256s = [c for c in str(checksum).split(",") if c.lower().startswith("sha256:")]
            digest = sha256s[0] if sha256s else None
    if digest is not None:
        try:
            check_digest(digest)
        except ArtifactRefError as exc:
            return _Parsed(None, None, early=(exc.code, exc.reason))
    if not version:
        reason = (
            f"artifact id {purl!r} carries no version; add the release version as the "
            "'tag' qualifier, e.g. ?tag=1.4.2"
        )
        return _Parsed(digest, None, late=("missing_version", reason))
    try:
        ref = ArtifactRef(check_service(parsed.name), check_version(version), digest)
    except ArtifactRefError as exc:
        return _Parsed(digest, None, late=(exc.code, exc.reason))
    return _Parsed(digest, ref)


def _written_version(purl: str) -> str | None:
    """The purl's version as written (percent-decoded, not case-folded)."""
    try:
        raw = PackageURL.from_string(purl, normalize_purl=False).version
    except ValueError:
        return None
    return unquote(raw) if raw else None
