"""infra/access.toml: read and checked by shared.bus.access, and the rules of issue 11."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events import topics
from services.catalog import SERVICES, spec
from shared.bus.access import (
    AccessFileError,
    Acl,
    Operation,
    Pattern,
    Resource,
    extra_users,
    load_access,
    namespace_acls,
    parse_access,
    service_settings,
)
from shared.settings import CHECKOUT, Settings

ACCESS = load_access(CHECKOUT / "infra" / "access.toml")


def writers_of(logical: str) -> set[str]:
    return {name for name, p in ACCESS.principals.items() if logical in p.write}


def test_the_issue_s_rules_hold_in_the_file() -> None:
    assert ACCESS.principals["ci"].write == (topics.ARTIFACTS, topics.EVIDENCE)
    assert writers_of(topics.PROMOTIONS) == {"promotion", "person"}  # person: hold.released
    assert writers_of(topics.GATES) == {"gates", "person"}  # person: approval.updated
    assert writers_of(topics.POLICIES) == {"platform"}
    assert writers_of(topics.FLAGS) == {"incidents", "flags"}  # flags: flag.changed
    assert writers_of(topics.DEPLOYMENTS) == {"deployer"}
    assert ACCESS.principals["deployer"].read == (topics.PROMOTIONS,)
    assert not ACCESS.principals["viewer"].write
    assert [n for n, p in ACCESS.principals.items() if p.super_user] == ["admin"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_is_a_principal_that_may_read_what_it_consumes(service: str) -> None:
    principal = ACCESS.principals[service]
    assert set(spec(service).router.topics) <= set(principal.read)
    assert topics.DLQ in principal.write  # a record it cannot handle goes to the DLQ
    assert service in principal.groups  # its consumer group, <namespace>.<service>


def test_a_namespace_s_acls_are_literal_topics_and_prefixed_groups() -> None:
    acls = namespace_acls(ACCESS, "it_x", {"ci-jenkins": "ci", "sneaky": "admin"})
    assert Acl(Resource.TOPIC, "it_x.artifacts", Pattern.LITERAL, "ci", Operation.WRITE) in acls
    assert Acl(
        Resource.TOPIC, "it_x.evidence", Pattern.LITERAL, "ci-jenkins", Operation.WRITE
    ) in acls  # fmt: skip
    assert Acl(
        Resource.GROUP, "it_x.deployer", Pattern.PREFIXED, "deployer", Operation.READ
    ) in acls  # fmt: skip
    assert not [a for a in acls if a.user in ("admin", "sneaky")]  # super user: no ACL needed
    # a deployer added beside the default one joins only its own agents' groups: it cannot
    # commit past another agent's promotions
    eu = namespace_acls(ACCESS, "it_x", {"deployer-eu": "deployer"})
    assert [a.name for a in eu if a.user == "deployer-eu" and a.resource is Resource.GROUP] == [
        "it_x.deployer.deployer-eu"
    ]
    assert not [a for a in acls if a.user == "ci" and a.name == "it_x.promotions"]
    assert all(a.name.startswith("it_x.") for a in acls)


def test_users_added_with_a_principal_s_rights_come_from_the_credentials_file(
    tmp_path: Path,
) -> None:
    creds = tmp_path / "kafka.json"
    assert extra_users(creds) == {}
    creds.write_text(json.dumps({"users": {
        "ci": {"password": "a", "role": "ci"}, "ci-jenkins": {"password": "b", "role": "ci"},
    }}))  # fmt: skip
    assert extra_users(creds) == {"ci-jenkins": "ci"}


def test_a_service_runs_as_its_principal_and_one_the_file_does_not_name_only_as_named() -> None:
    settings = Settings()
    assert service_settings(settings, "gates").kafka_principal == "gates"
    # not the default principal (admin): a service the file does not know must be named
    with pytest.raises(AccessFileError, match=r"service 'made-up' is no principal of .*access"):
        service_settings(settings, "made-up")
    own = Settings(kafka_principal="admin")  # as a test names it for its own services
    assert service_settings(own, "made-up") is own
    named = Settings(kafka_user="operator-choice")
    assert service_settings(named, "gates") is named  # an operator's user is kept


GOOD = """
[principals.admin]
super_user = true

[principals.ci]
write = ["artifacts"]
"""


def test_a_good_file_is_read() -> None:
    access = parse_access(GOOD, "access.toml")
    assert access.principals["ci"].write == ("artifacts",)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (GOOD.replace('["artifacts"]', '["artifacts", "promotion"]'),
         r"access.toml:6: principals.ci.write: 'promotion' is not a topic"),
        (GOOD.replace("write =", "wirte ="),
         r"access.toml:6: principals.ci.wirte: Extra inputs are not permitted"),
        (GOOD.replace("[principals.ci]", "[principals.CI]"),
         r"access.toml:5: principals.CI: not a principal name"),
        (GOOD.replace("super_user = true", ""), r"exactly one super user, 'admin'"),
        (GOOD + "\n[principals.ops]\nsuper_user = true\n", r"exactly one super user"),
        (GOOD.replace('write = ["artifacts"]', "write = [artifacts"),
         r"access.toml: not valid TOML: .*line 6"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_its_line_and_field(text: str, said: str) -> None:
    with pytest.raises(AccessFileError, match=said):
        parse_access(text, "access.toml")
