"""The flags service on the real Kafka and Postgres, with real clients: the OpenFeature SDK
and its OFREP provider evaluating over HTTP, the `lockstep flags` command line, a
flagchange.requested from Kafka, and flagd's own in-process provider loading an export."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from events import FlagChanged, FlagChangeRejected, FlagChangeRequested, IncidentDetected, Reference
from events.incidents import IncidentContent, IncidentSubject
from services.flags import keys
from services.flags.app import SPEC
from services.flags.edge import FlagEdge
from shared.clock import ManualClock
from shared.service import RunningService
from tests.integration.conftest import Namespace, NamespaceFactory

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
META = {"type": "release", "owner": "payments", "release": "checkout@1.4.2"}

FLAG_SET: dict[str, Any] = {
    "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@lockstep.dev"]}},
    "flags": {
        "new-checkout": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"$ref": "staff"}, "on", None]},
            "metadata": META,
        },
        "checkout-kill": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
            "metadata": {"type": "kill-switch", "owner": "payments"},
        },
        "banner": {
            "state": "ENABLED",
            "variants": {"plain": "Welcome", "bold": "WELCOME"},
            "defaultVariant": "plain",
            "targeting": {"fractional": [["plain", 50], ["bold", 50]]},
            "metadata": {"type": "experiment", "owner": "growth"},
        },
        "max-items": {
            "state": "ENABLED",
            "variants": {"few": 10, "many": 100},
            "defaultVariant": "few",
            "targeting": {"if": [{"sem_ver": [{"var": "app"}, ">=", "2.0.0"]}, "many", "few"]},
            "metadata": {"type": "operational", "owner": "payments"},
        },
        "ratio": {
            "state": "ENABLED",
            "variants": {"low": 0.25, "high": 0.75},
            "defaultVariant": "low",
            "metadata": {"type": "operational", "owner": "payments"},
        },
        "theme": {
            "state": "ENABLED",
            "variants": {"dark": {"bg": "#000", "fg": "#fff"}, "light": {"bg": "#fff"}},
            "defaultVariant": "dark",
            "metadata": {"type": "permission", "owner": "design"},
        },
    },
}


@dataclass
class Flags:
    ns: Namespace
    running: RunningService
    edge: FlagEdge
    clock: ManualClock
    env: str
    evaluate_key: str
    admin_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"

    def base_url(self, env: str | None = None) -> str:
        return f"{self.url}/environments/{env or self.env}/"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "LOCKSTEP_NAMESPACE": self.ns.settings.namespace,
            "LOCKSTEP_TRACE_DIR": str(self.ns.settings.trace_dir),
            "LOCKSTEP_FLAGD_SCHEMA_DIR": str(ROOT / ".lockstep" / "flagd-schemas"),
            "LOCKSTEP_KEY_DIR": str(self.ns.settings.key_dir),
        }
        done = subprocess.run(
            [sys.executable, "-m", "cli", "flags", *args],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"lockstep flags {' '.join(args)}: {done.stderr}{done.stdout}")
        return done

    def client(self, key: str | None = None, env: str | None = None) -> OpenFeatureClient:
        domain = "lockstep-" + uuid.uuid4().hex[:8]
        chosen = self.evaluate_key if key is None else key
        provider = OFREPProvider(
            self.base_url(env), headers_factory=lambda: {"X-API-Key": chosen} if chosen else {}
        )
        api.set_provider(provider, domain)
        return api.get_client(domain)

    async def definition(self, key: str) -> dict[str, Any] | None:
        rows = await self.ns.sql(
            "flags", "SELECT definition::text FROM flags WHERE environment = $1 AND flag_key = $2",
            self.env, key,
        )  # fmt: skip
        return json.loads(rows[0][0]) if rows else None


@pytest.fixture(scope="module")
async def flags(new_namespace: NamespaceFactory, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Flags]:  # fmt: skip
    ns = await new_namespace(flags_http_port=0, periodic_s=3600.0)
    clock = ManualClock(datetime.now(UTC))
    running = RunningService(SPEC, ns.settings, clock=clock)
    await running.setup()
    running.start()
    try:
        assert running.consumer is not None
        await asyncio.wait_for(running.consumer.assigned.wait(), 30)
        edge = running.companions[0]
        assert isinstance(edge, FlagEdge)
        await asyncio.wait_for(edge.started.wait(), 10)
        assert running.pool is not None
        async with running.pool.acquire() as conn:
            evaluate_key = await keys.create(conn, "prod-eu", "evaluate", "tests", clock())
            admin_key = await keys.create(conn, "prod-eu", "admin", "tests-admin", clock())
        f = Flags(ns, running, edge, clock, "prod-eu", evaluate_key, admin_key)
        path = tmp_path_factory.mktemp("flags") / "flags.json"
        path.write_text(json.dumps(FLAG_SET), encoding="utf-8")
        await asyncio.to_thread(f.cli, "import", str(path), "--env", "prod-eu", "--reason", "seed",
                                "--by", "alice")  # fmt: skip
        yield f
    finally:
        await running.stop()


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` (run in a thread: the OFREP client blocks) until it returns truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.2)


async def test_an_openfeature_client_evaluates_every_type_over_ofrep(flags: Flags) -> None:
    client = flags.client()
    staff = EvaluationContext("ann", {"email": "ann@lockstep.dev", "app": "2.1.0"})
    guest = EvaluationContext("bob", {"email": "bob@example.com", "app": "1.9.0"})

    def run() -> dict[str, Any]:
        return {
            "staff": client.get_boolean_details("new-checkout", False, staff),
            "guest": client.get_boolean_details("new-checkout", True, guest),
            "banner": client.get_string_details("banner", "?", staff),
            "many": client.get_integer_details("max-items", 0, staff),
            "few": client.get_integer_details("max-items", 0, guest),
            "ratio": client.get_float_details("ratio", 0.0, guest),
            "theme": client.get_object_details("theme", {}, guest),
            "missing": client.get_boolean_details("no-such-flag", True, guest),
            "mismatch": client.get_string_details("new-checkout", "x", guest),
        }

    got = await asyncio.to_thread(run)
    assert (got["staff"].value, got["staff"].variant, got["staff"].reason) == (
        True, "on", Reason.TARGETING_MATCH,
    )  # fmt: skip
    assert got["staff"].flag_metadata["owner"] == "payments"
    assert got["staff"].flag_metadata["release"] == "checkout@1.4.2"
    assert (got["guest"].value, got["guest"].reason) == (False, Reason.DEFAULT)
    assert got["banner"].reason == Reason.SPLIT and got["banner"].value in ("Welcome", "WELCOME")
    assert (got["many"].value, got["few"].value) == (100, 10)
    assert (got["ratio"].value, got["ratio"].reason) == (0.25, Reason.STATIC)
    assert got["theme"].value == {"bg": "#000", "fg": "#fff"}
    assert (got["missing"].value, got["missing"].error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    assert (got["mismatch"].value, got["mismatch"].error_code) == ("x", ErrorCode.TYPE_MISMATCH)


async def test_the_split_is_stable_and_matches_flagds_own_provider_on_the_export(
    flags: Flags, tmp_path: Path
) -> None:
    exported = tmp_path / "prod-eu.flagd.json"
    await asyncio.to_thread(flags.cli, "export", "--env", "prod-eu", "--out", str(exported))
    doc = json.loads(exported.read_text(encoding="utf-8"))
    assert doc["metadata"]["flagSetId"] == "prod-eu" and "$evaluators" in doc
    flagd = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(exported))
    api.set_provider(flagd, "flagd-file")
    in_process = api.get_client("flagd-file")
    remote = flags.client()

    def compare() -> list[tuple[str, Any, Any]]:
        differ = []
        for i in range(200):
            ctx = EvaluationContext(f"user-{i}", {"email": f"u{i}@example.com", "app": "2.0.0"})
            for key in ("banner", "new-checkout", "max-items"):
                ours = remote.get_object_details(key, {}, ctx)
                theirs = in_process.get_object_details(key, {}, ctx)
                if (ours.variant, ours.value) != (theirs.variant, theirs.value):
                    differ.append((key, ours, theirs))
            again = remote.get_string_details("banner", "?", ctx)
            if again.value != remote.get_string_details("banner", "?", ctx).value:
                differ.append(("banner twice", again, None))
        return differ

    try:
        assert await asyncio.to_thread(compare) == []
    finally:
        await asyncio.to_thread(api.clear_providers)


async def test_a_cli_change_reaches_clients_and_kafka(flags: Flags) -> None:
    client = flags.client()
    guest = EvaluationContext("bob", {})
    assert await asyncio.to_thread(client.get_integer_value, "max-items", 0, guest) == 10
    definition = {k: v for k, v in FLAG_SET["flags"]["max-items"].items() if k != "targeting"}
    definition["defaultVariant"] = "many"
    posing = await asyncio.to_thread(
        flags.cli, "set", "max-items", "--env", "prod-eu", "--json", json.dumps(definition),
        "--reason", "as someone else", "--by", "mallory", check=False,
    )  # fmt: skip
    assert posing.returncode != 0
    assert "--by mallory, but the person key here is alice's" in posing.stderr
    done = await asyncio.to_thread(
        flags.cli, "set", "max-items", "--env", "prod-eu", "--json", json.dumps(definition),
        "--reason", "more items for everyone", "--by", "alice",  # as her key says
    )  # fmt: skip
    assert "version 2" in done.stdout
    await until(lambda: client.get_integer_value("max-items", 0, guest) == 100)
    changed = await flags.ns.log.wait_for(
        lambda: [
            e for e in flags.ns.log.events(FlagChanged)
            if isinstance(e, FlagChanged) and e.subject.id == "prod-eu/max-items"
            and e.subject.content.version == 2
        ]
    )  # fmt: skip
    created = [
        e for e in flags.ns.log.events(FlagChanged)
        if isinstance(e, FlagChanged) and e.subject.id == "prod-eu/max-items"
        and e.subject.content.version == 1
    ]  # fmt: skip
    assert created and created[0].subject.content.previous is None  # the import made it
    c = changed[0].subject.content
    assert (c.action, c.changed_by, c.source, c.reason) == (
        "set", "alice", "cli", "more items for everyone",
    )  # fmt: skip
    assert c.previous is not None and c.previous["defaultVariant"] == "few"
    assert c.definition is not None and c.definition["defaultVariant"] == "many"


async def test_a_kill_switch_requested_on_kafka_flips(flags: Flags) -> None:
    client = flags.client()
    ctx = EvaluationContext("bob", {})
    assert await asyncio.to_thread(client.get_boolean_value, "checkout-kill", False, ctx) is True
    request = FlagChangeRequested.build(
        environment="prod-eu", flag_key="checkout-kill", action="disable",
        requested_by="lockstep/incidents", reason="error_rate 4 % > 2 %", incident_id="inc-42",
        source="lockstep/incidents",
    )  # fmt: skip
    await flags.ns.publish(request, signed_as="incidents")
    details = await until(
        lambda: (
            (d := client.get_boolean_details("checkout-kill", True, ctx)).reason == Reason.DISABLED
            and d
        )
    )
    assert details.value is True  # disabled: the caller's own default, as flagd does
    rows = await flags.ns.sql(
        "flags", "SELECT changed_by, reason, request_id, source FROM flag_changes "
        "WHERE environment = 'prod-eu' AND flag_key = 'checkout-kill' ORDER BY version DESC",
    )  # fmt: skip
    assert (rows[0]["changed_by"], rows[0]["request_id"], rows[0]["source"]) == (
        "lockstep/incidents", request.id, "kafka",
    )  # fmt: skip
    assert "inc-42" in rows[0]["reason"]

    unknown = FlagChangeRequested.build(
        environment="prod-eu", flag_key="no-such-switch", action="disable",
        requested_by="lockstep/incidents", reason="kill", source="lockstep/incidents",
    )  # fmt: skip
    await flags.ns.publish(unknown, signed_as="incidents")
    rejected = await flags.ns.log.wait_for(
        lambda: [
            e for e in flags.ns.log.events(FlagChangeRejected)
            if isinstance(e, FlagChangeRejected) and e.subject.content.request_id == unknown.id
        ]
    )  # fmt: skip
    assert "no flag 'no-such-switch'" in rejected[0].subject.content.reason


async def test_api_keys_are_scoped_to_one_environment(flags: Flags) -> None:
    async with httpx.AsyncClient(base_url=flags.url) as http:
        path = "/environments/prod-eu/ofrep/v1/evaluate/flags/ratio"
        assert (await http.post(path, json={})).status_code == 401
        bad = await http.post(path, json={}, headers={"X-API-Key": "lsk_not-a-key"})
        assert bad.status_code == 401
        other = "/environments/prod-us/ofrep/v1/evaluate/flags/ratio"
        forbidden = await http.post(other, json={}, headers={"X-API-Key": flags.evaluate_key})
        assert forbidden.status_code == 403
        assert "prod-eu" in forbidden.json()["errorDetails"]
        bearer = {"Authorization": f"Bearer {flags.evaluate_key}"}
        ok = await http.post("/ofrep/v1/evaluate/flags/ratio", json={}, headers=bearer)
        assert (ok.status_code, ok.json()["value"]) == (200, 0.25)
        admin = await http.put(
            "/admin/v1/environments/prod-eu/flags/ratio",
            json={"definition": {}, "reason": "x"},
            headers={"X-API-Key": flags.evaluate_key},
        )
        assert admin.status_code == 403
    # through the OpenFeature client: an auth failure is an error, and the code default
    wrong_env = flags.client(env="prod-us")
    details = await asyncio.to_thread(wrong_env.get_float_details, "ratio", 9.0)
    assert (details.value, details.error_code) == (9.0, ErrorCode.GENERAL)


async def test_bulk_evaluation_answers_304_until_something_changes(flags: Flags) -> None:
    path = "/environments/prod-eu/ofrep/v1/evaluate/flags"
    headers = {"X-API-Key": flags.evaluate_key}
    body = {"context": {"targetingKey": "user-7", "email": "u7@example.com"}}
    async with httpx.AsyncClient(base_url=flags.url, headers=headers) as http:
        first = await http.post(path, json=body)
        assert first.status_code == 200
        keys_seen = {f["key"] for f in first.json()["flags"]}
        assert {"new-checkout", "banner", "ratio", "theme"} <= keys_seen
        etag = first.headers["etag"]
        again = await http.post(path, json=body, headers={"If-None-Match": etag})
        assert (again.status_code, again.content) == (304, b"")
        other_user = {"context": {"targetingKey": "user-8", "email": "ann@lockstep.dev"}}
        assert (
            await http.post(path, json=other_user, headers={"If-None-Match": etag})
        ).status_code == 200
        await asyncio.to_thread(
            flags.cli, "disable", "theme", "--env", "prod-eu", "--reason", "bulk test"
        )

        async def changed() -> bool:
            r = await http.post(path, json=body, headers={"If-None-Match": etag})
            return r.status_code == 200 and r.headers["etag"] != etag

        for _ in range(50):
            if await changed():
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the bulk evaluation never changed after the flag did")
        config = await http.get("/environments/prod-eu/ofrep/v1/configuration")
        assert config.json()["capabilities"]["cacheInvalidation"]["polling"]["enabled"] is True
        cached = await http.get(
            "/environments/prod-eu/ofrep/v1/configuration",
            headers={"If-None-Match": config.headers["etag"]},
        )
        assert cached.status_code == 304


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "INVALID_CONTEXT"),
        (b"[1, 2]", "INVALID_CONTEXT"),
        (b'{"context": 5}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": 7}}', "INVALID_CONTEXT"),
        (b"\xff\xfe\x00garbage", "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": "u", "app": "not-a-version"}}', None),
    ],
)
async def test_malformed_requests_get_the_ofrep_error_never_a_500(
    flags: Flags, body: bytes, code: str | None
) -> None:
    headers = {"X-API-Key": flags.evaluate_key, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=flags.url, headers=headers) as http:
        single = await http.post("/ofrep/v1/evaluate/flags/max-items", content=body)
        bulk = await http.post("/ofrep/v1/evaluate/flags", content=body)
    if code is None:  # an odd value is the rule's business: it falls through, as in flagd
        assert single.status_code == 200 and single.json()["variant"] in ("few", "many")
        assert bulk.status_code == 200
        return
    assert single.status_code == 400 and single.json()["errorCode"] == code
    assert single.json()["key"] == "max-items" and single.json()["errorDetails"]
    assert bulk.status_code == 400 and bulk.json()["errorCode"] == code


async def test_the_admin_api_refuses_invalid_definitions_with_the_path(flags: Flags) -> None:
    headers = {"X-API-Key": flags.admin_key}
    base = "/admin/v1/environments/prod-eu/flags"
    mixed = {
        "state": "ENABLED", "variants": {"a": "x", "b": 2}, "defaultVariant": "a",
        "metadata": {"type": "experiment", "owner": "growth"},
    }  # fmt: skip
    bad_ref = dict(FLAG_SET["flags"]["new-checkout"], targeting={"$ref": "nobody"})
    async with httpx.AsyncClient(base_url=flags.url, headers=headers) as http:
        r = await http.put(f"{base}/mixed", json={"definition": mixed, "reason": "t"})
        assert r.status_code == 422
        assert r.json()["problems"][0]["path"] == "/flags/mixed/variants/b"
        r = await http.put(f"{base}/refs", json={"definition": bad_ref, "reason": "t"})
        assert r.status_code == 422
        assert r.json()["problems"][0]["path"] == "/flags/refs/targeting/$ref"
        r = await http.put(f"{base}/no-reason", json={"definition": mixed})
        assert r.status_code == 400
        r = await http.post(f"{base}/no-such/enable", json={"reason": "t"})
        assert r.status_code == 404
        good = dict(mixed, variants={"a": "x", "b": "y"})
        r = await http.put(f"{base}/copy", json={"definition": good, "reason": "new copy"})
        assert r.status_code == 200 and r.json()["version"] == 1
        history = await http.get(f"{base}/copy/history")
        assert history.json()[0]["by"] == "api-key tests-admin"
    assert await flags.definition("mixed") is None


async def test_a_rollout_advances_on_schedule_and_halts_on_an_incident(flags: Flags) -> None:
    flag = {
        "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
        "metadata": {"type": "release", "owner": "payments", "release": "basket@2.0.0"},
    }  # fmt: skip
    await asyncio.to_thread(
        flags.cli, "set", "new-basket", "--env", "prod-eu", "--json", json.dumps(flag),
        "--reason", "ship dark",
    )  # fmt: skip
    done = await asyncio.to_thread(
        flags.cli, "rollout", "new-basket", "--env", "prod-eu", "--to", "on",
        "--schedule", "10%,25%@1h,50%@4h,100%@8h", "--reason", "go",
    )  # fmt: skip
    assert "10% now, 25% after 1h, 50% after 4h, 100% after 8h" in done.stdout
    flags.clock.set(datetime.now(UTC))  # the command line started the rollout on real time
    assert (await flags.definition("new-basket") or {})["targeting"] == {
        "fractional": [["on", 10], ["off", 90]]
    }
    assert flags.running.periodic is not None
    await flags.running.periodic.turn()  # nothing due yet
    assert (await flags.definition("new-basket") or {})["targeting"]["fractional"][0][1] == 10

    flags.clock.advance(timedelta(hours=1, seconds=1))
    await flags.running.periodic.turn()
    assert (await flags.definition("new-basket") or {})["targeting"]["fractional"][0][1] == 25

    incident = IncidentDetected(
        context=IncidentDetected.new_context("lockstep/incidents"),
        subject=IncidentSubject(
            id="inc-7",
            content=IncidentContent(
                description="p99 latency", environment=Reference(id="prod-eu"),
                service=Reference(id="basket"),
            ),
        ),
    )  # fmt: skip
    await flags.ns.publish(incident)
    await flags.ns.log.wait_for(
        lambda: [
            e for e in flags.ns.log.events(FlagChanged)
            if isinstance(e, FlagChanged) and e.subject.id == "prod-eu/new-basket"
            and e.subject.content.action == "halt-rollout"
        ]
    )  # fmt: skip
    flags.clock.advance(timedelta(hours=8))
    await flags.running.periodic.turn()
    assert (await flags.definition("new-basket") or {})["targeting"]["fractional"][0][1] == 25
    rows = await flags.ns.sql(
        "flags", "SELECT state, ended_reason FROM rollouts WHERE flag_key = 'new-basket'"
    )
    assert rows[0]["state"] == "halted" and "inc-7" in rows[0]["ended_reason"]


async def test_a_rollout_reaches_everyone_and_the_flag_is_reported_stale(flags: Flags) -> None:
    flag = {
        "state": "ENABLED", "variants": {"new": "v2", "old": "v1"}, "defaultVariant": "old",
        "metadata": {"type": "release", "owner": "search"},
    }  # fmt: skip
    await asyncio.to_thread(
        flags.cli, "set", "search-v2", "--env", "prod-eu", "--json", json.dumps(flag),
        "--reason", "ship dark",
    )  # fmt: skip
    await asyncio.to_thread(
        flags.cli, "rollout", "search-v2", "--env", "prod-eu", "--to", "new",
        "--schedule", "50%,100%@30m", "--reason", "go",
    )  # fmt: skip
    assert flags.running.periodic is not None
    flags.clock.set(datetime.now(UTC))  # the command line started the rollout on real time
    await flags.running.periodic.turn()
    assert (await flags.definition("search-v2") or {})["targeting"]["fractional"][0][1] == 50
    flags.clock.advance(timedelta(minutes=31))
    await flags.running.periodic.turn()
    final = await flags.definition("search-v2") or {}
    assert final["defaultVariant"] == "new" and "targeting" not in final
    stale = await asyncio.to_thread(flags.cli, "stale", "--env", "prod-eu", "--grace", "0s")
    line = next(ln for ln in stale.stdout.splitlines() if "search-v2" in ln)
    assert "fully rolled out" in line and "never evaluated" in line


async def test_an_import_that_only_changes_evaluators_reloads_and_keeps_flags_valid(
    flags: Flags, tmp_path: Path
) -> None:
    client = flags.client()
    bob = EvaluationContext("bob", {"email": "bob@example.com"})
    assert await asyncio.to_thread(client.get_boolean_value, "new-checkout", False, bob) is False
    widened = {
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
        "flags": {"new-checkout": FLAG_SET["flags"]["new-checkout"]},
    }
    path = tmp_path / "widened.json"
    path.write_text(json.dumps(widened), encoding="utf-8")
    await asyncio.to_thread(flags.cli, "import", str(path), "--env", "prod-eu", "--reason", "t")
    await until(lambda: client.get_boolean_value("new-checkout", False, bob) is True)

    # $evaluators without `staff` would break new-checkout, which still uses it: refused.
    broken = {"$evaluators": {"other": {"==": [1, 1]}}, "flags": {}}
    path.write_text(json.dumps(broken), encoding="utf-8")
    done = await asyncio.to_thread(
        flags.cli, "import", str(path), "--env", "prod-eu", "--reason", "t", check=False
    )
    assert done.returncode == 2
    assert "/flags/new-checkout/targeting/if/0/$ref" in done.stderr
    assert await asyncio.to_thread(client.get_boolean_value, "new-checkout", False, bob) is True
