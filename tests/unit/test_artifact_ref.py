"""Artifact identity: what CI may send, and what it is told when it is wrong."""

from __future__ import annotations

import pytest

from events import ArtifactPackaged, ArtifactRef, ArtifactRefError, check_digest

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_lockstep_purl_round_trips() -> None:
    ref = ArtifactRef("checkout", "1.4.2", DIGEST)
    assert ref.purl() == f"pkg:oci/checkout@{DIGEST}?tag=1.4.2"
    assert ArtifactRef.from_purl(ref.purl(), require_digest=True) == ref


@pytest.mark.parametrize(
    "purl",
    [
        f"pkg:oci/checkout@sha256%3A{DIGEST[7:]}?tag=1.4.2",  # the percent-encoded form
        f"pkg:oci/checkout@{DIGEST}?repository_url=ghcr.io/shop&tag=1.4.2",
        f"pkg:generic/checkout@1.4.2?checksum={DIGEST}",
        f"pkg:generic/checkout@1.4.2?checksum=sha1:{'a' * 40},{DIGEST}",
    ],
)
def test_purls_other_producers_write_are_read(purl: str) -> None:
    assert ArtifactRef.from_purl(purl, require_digest=True) == ArtifactRef(
        "checkout", "1.4.2", DIGEST
    )


@pytest.mark.parametrize(
    ("purl", "code", "words"),
    [
        ("pkg:oci/checkout?tag=1.4.2", "missing_digest", ["no sha256 digest", "immutable"]),
        ("pkg:generic/checkout@1.4.2", "missing_digest", ["no sha256 digest"]),
        (f"pkg:oci/checkout@{DIGEST}", "missing_version", ["no version", "?tag=1.4.2"]),
        ("pkg:oci/checkout@sha256:abc?tag=1.4.2", "invalid_digest", ["64 lower-case hex"]),
        ("checkout-1.4.2.tar.gz", "invalid_purl", ["not a Package URL"]),
        (f"pkg:oci/Checkout%20App@{DIGEST}?tag=1.4.2", "invalid_service", ["service name"]),
    ],
)
def test_bad_artifact_ids_say_what_to_do(purl: str, code: str, words: list[str]) -> None:
    with pytest.raises(ArtifactRefError) as caught:
        ArtifactRef.from_purl(purl, require_digest=True)
    assert caught.value.code == code
    for word in words:
        assert word in caught.value.reason


def test_an_upper_case_digest_is_told_to_be_lower_case() -> None:
    # purls of type oci are normalised to lower case by the purl library; a --digest is not
    with pytest.raises(ArtifactRefError, match="write it in lower case"):
        check_digest(DIGEST.upper().replace("SHA256", "sha256"))


def test_evidence_may_name_an_artifact_without_its_digest() -> None:
    assert ArtifactRef.from_purl("pkg:generic/checkout@1.4.2", require_digest=False) == ArtifactRef(
        "checkout", "1.4.2", None
    )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"digest": "sha256:12ab"}, "invalid_digest"),
        ({"digest": "md5:" + "a" * 32}, "invalid_digest"),
        ({"service": "Checkout"}, "invalid_service"),
        ({"version": "1.4.2 final"}, "invalid_version"),
    ],
)
def test_building_a_packaged_event_checks_its_parts(kwargs: dict[str, str], code: str) -> None:
    args = {"service": "checkout", "version": "1.4.2", "digest": DIGEST, "commit": "abc"} | kwargs
    with pytest.raises(ArtifactRefError) as caught:
        ArtifactPackaged.build(**args)
    assert caught.value.code == code


def test_labels() -> None:
    assert ArtifactRef.parse_label("checkout@1.4.2") == ArtifactRef("checkout", "1.4.2")
    with pytest.raises(ArtifactRefError, match="service@version"):
        ArtifactRef.parse_label("checkout-1.4.2")


def test_a_checksum_without_sha256_is_a_missing_digest() -> None:
    with pytest.raises(ArtifactRefError) as caught:
        ArtifactRef.from_purl(
            f"pkg:generic/checkout@1.4.2?checksum=sha512:{'a' * 128}", require_digest=True
        )
    assert caught.value.code == "missing_digest"


@pytest.mark.parametrize(
    "written",
    [
        DIGEST.upper(),  # SHA256:0123…
        DIGEST.upper().replace("SHA256", "sha256"),
        DIGEST[:-4] + "ABCD",
    ],
)
def test_an_upper_case_digest_is_refused_and_shown_in_lower_case(written: str) -> None:
    with pytest.raises(ArtifactRefError) as caught:
        check_digest(written)
    assert caught.value.code == "invalid_digest"
    assert repr(written.lower()) in caught.value.reason


@pytest.mark.parametrize(
    "purl",
    [
        f"pkg:oci/checkout@{DIGEST.upper()}?tag=1.4.2",
        f"pkg:oci/checkout@sha256:{DIGEST[7:].upper()}?tag=1.4.2",
        f"pkg:oci/checkout@sha256%3A{DIGEST[7:].upper()}?tag=1.4.2",
        f"pkg:generic/checkout@1.4.2?checksum=sha256:{DIGEST[7:].upper()}",
    ],
)
def test_a_purl_with_an_upper_case_digest_is_not_folded_to_lower_case(purl: str) -> None:
    # the purl library lower-cases an oci purl's version; Lockstep judges it as written
    with pytest.raises(ArtifactRefError) as caught:
        ArtifactRef.from_purl(purl, require_digest=False)
    assert caught.value.code == "invalid_digest"
    assert repr(DIGEST) in caught.value.reason


# Lockstep's own purls are read by a fast path (a regular expression); anything else by
# packageurl. Both must read every purl the same way, errors included.
_SAME_READING = [
    f"pkg:oci/checkout@{DIGEST}?tag=1.4.2",
    f"pkg:oci/checkout@sha256%3A{DIGEST[7:]}?tag=1.4.2",
    f"pkg:oci/a@{DIGEST}?tag=A",
    f"pkg:oci/{'s' * 63}@{DIGEST}?tag={'9' * 128}",
    f"pkg:oci/web.front_end-2@{DIGEST}?tag=2024.11.0-rc_1",
    # near misses: each read by packageurl, to its own answer
    f"pkg:oci/{'s' * 64}@{DIGEST}?tag=1",
    f"pkg:oci/checkout@{DIGEST}?tag={'9' * 129}",
    f"pkg:oci/Checkout@{DIGEST}?tag=1.4.2",
    f"pkg:oci/checkout@{DIGEST.upper()}?tag=1.4.2",
    f"pkg:oci/checkout@sha256:{'A' * 64}?tag=1.4.2",
    f"pkg:oci/checkout@{DIGEST}?tag=1.4.2%2Bb7",
    f"pkg:oci/checkout@{DIGEST}?tag=-1",
    f"pkg:oci/checkout@{DIGEST}?tag=",
    f"pkg:oci/checkout@{DIGEST}",
    f"pkg:oci/checkout@{DIGEST[:-1]}?tag=1.4.2",
    f"pkg:oci/checkout@{DIGEST}?tag=1.4.2&arch=amd64",
    f"pkg:oci/checkout@{DIGEST}?tag=1.4.2#sub",
    f"pkg:oci/.checkout@{DIGEST}?tag=1.4.2",
    f"pkg:generic/checkout@{DIGEST}?tag=1.4.2",
    "not a purl",
]


@pytest.mark.parametrize("purl", _SAME_READING)
def test_the_fast_reading_of_lockstep_purls_is_packageurl_s(purl: str) -> None:
    from events import _artifact_ref as refs

    refs._parse_purl.cache_clear()
    assert refs._parse_purl(purl) == refs._parse_purl_with_packageurl(purl)


def test_the_purls_lockstep_writes_take_the_fast_path() -> None:
    from events import _artifact_ref as refs

    for version in ["1.4.2", "2024.11.0-rc_1", "A"]:
        purl = ArtifactRef("checkout", version, DIGEST).purl()
        assert refs._CANONICAL_OCI.match(purl) is not None, purl
