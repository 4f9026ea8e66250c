"""The promotion service's gate decisions a batch at a time, on the real Kafka and Postgres:
a batch decides what one event at a time decides, decisions lock a service in an environment
(a train's members together), not the whole environment, and a poison event in a batch
stops only itself."""

from __future__ import annotations

import asyncio
import base64
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry.trace import INVALID_SPAN

from events import CDEvent, GateFailed, GatePassed, PromotionApproved, PromotionBlocked, decode
from events.kafka import reason_of
from events.testing import sample
from policy import LoadedModel, load_text, policy_updated
from services.promotion import handlers as promotion
from services.promotion.app import SPEC as PROMOTION
from shared.bus import HandlerContext
from shared.bus.direct import in_transaction
from shared.bus.handlers import Item, handle, take_locks
from shared.service import RunningService
from shared.telemetry import read_spans
from tests.integration.conftest import Namespace, NamespaceFactory, digest

pytestmark = pytest.mark.integration

# Two environments side by side; in dev, pay and shop ride a train; needy needs base in qa.
MODEL = textwrap.dedent("""\
    version: 1
    environments:
      - name: dev
      - name: qa
    trains:
      - name: duo
        services: [pay, shop]
        environments: [dev]
    dependencies:
      needy:
        - service: base
          version: ">=2.0"
    """)


def passed(service: str, version: str, environment: str) -> GatePassed:
    return sample(
        GatePassed, service=service, version=version, environment=environment,
        digest=digest(service + version),
    )  # fmt: skip


def failed(service: str, version: str, environment: str) -> GateFailed:
    return sample(
        GateFailed, service=service, version=version, environment=environment,
        digest=digest(service + version),
    )  # fmt: skip


@asynccontextmanager
async def promotion_service(ns: Namespace) -> AsyncIterator[RunningService]:
    """The promotion service's schema, keys and pool, with the model in force; not consuming:
    the test hands it events."""
    async with ns.service(PROMOTION, consume=False, relay=False) as running:
        loaded = load_text(MODEL.encode())
        await in_service(running, lambda ctx: promotion.on_policy(policy_event(loaded), ctx))
        yield running


def policy_event(loaded: LoadedModel) -> Any:
    return policy_updated(loaded, updated_by="platform", source="test", sender="tests")


async def in_service(
    running: RunningService, work: Callable[[HandlerContext], Awaitable[None]]
) -> None:
    assert running.provider is not None
    await in_transaction(
        running.pool, running.settings, "promotion", work,
        tracer=running.provider.get_tracer("test"), span=None, signing_key=running.signing_key,
    )  # fmt: skip


async def as_one_batch(
    running: RunningService, events: list[CDEvent], statements: list[str] | None = None
) -> list[CDEvent]:
    """``events`` handled as the bus handles one poll of them: one transaction, every declared
    lock in one statement, the batch handler called once, each event with a context of its
    own. What was emitted, in order; ``statements``: what the handler sent Postgres."""
    contexts: list[HandlerContext] = []

    async def batch(ctx: HandlerContext) -> None:
        registration = promotion.router.registration_for(events[0])
        assert registration is not None and registration.batch
        await take_locks(ctx.conn, [(registration, e) for e in events])
        memo: dict[str, Any] = {}
        items = [Item(e, _context(ctx, memo)) for e in events]
        contexts.extend(i.ctx for i in items)

        def log(query: Any) -> None:
            if statements is not None and not _introspection(query.query):
                statements.append(query.query)

        ctx.conn.add_query_logger(log)
        try:
            await registration.fn(items)
        finally:
            ctx.conn.remove_query_logger(log)

    await in_service(running, batch)
    return [decode(r).event for c in contexts for r in c.emitted]


def _introspection(query: str) -> bool:
    """asyncpg's own look at a type it meets for the first time on a connection (once per
    connection: the consumer keeps its connection)."""
    return "typeinfo_tree" in query or "'jit'" in query


def _context(ctx: HandlerContext, memo: dict[str, Any]) -> HandlerContext:
    return HandlerContext(
        conn=ctx.conn, settings=ctx.settings, record=None, span=INVALID_SPAN, clock=ctx.clock,
        tracer=ctx.tracer, signing_key=ctx.signing_key, memo=memo,
    )  # fmt: skip


async def one_at_a_time(running: RunningService, events: list[CDEvent]) -> list[CDEvent]:
    """Each of ``events`` in a transaction of its own, in order. What was emitted, in order."""
    emitted: list[CDEvent] = []
    for event in events:

        async def one(ctx: HandlerContext, event: CDEvent = event) -> None:
            await handle(promotion.router, event, ctx)
            emitted.extend(decode(r).event for r in ctx.emitted)

        await in_service(running, one)
    return emitted


async def outcome(ns: Namespace, emitted: list[CDEvent]) -> dict[str, Any]:
    """What a person would look at afterwards: what was told (each promotion and hold, in
    order), each candidate's state and what holds it, the promotions recorded, what was
    approved, and, for each build still waiting, the last hold it was told."""
    candidates = await ns.sql(
        "promotion",
        "SELECT service, version, environment, state, holds FROM candidates "
        "ORDER BY service, version, environment",
    )
    promotions = await ns.sql(
        "promotion",
        "SELECT promotion_id, service, version, environment, train, state FROM promotions "
        "ORDER BY promotion_id",
    )
    approved = sorted(
        e.subject.content.model_dump_json() for e in emitted if isinstance(e, PromotionApproved)
    )
    told: dict[tuple[str, str, str], list[str]] = {}
    for e in emitted:
        if isinstance(e, PromotionBlocked):
            c = e.subject.content
            told[(c.service, c.version, c.environment)] = [h.reason for h in c.holds]
    waiting = {(r["service"], r["version"], r["environment"]) for r in candidates
               if r["state"] == "waiting"}  # fmt: skip
    return {
        "emitted": [(e.context.type, e.subject.content.model_dump_json()) for e in emitted],
        "candidates": [tuple(r) for r in candidates],
        "promotions": [tuple(r) for r in promotions],
        "approved": approved,
        "told": {k: v for k, v in told.items() if k in waiting},
    }


async def batch_and_sequence(
    new_namespace: NamespaceFactory, events: list[CDEvent]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The outcome of ``events`` as one batch, and one at a time, each in a namespace of its
    own under the same model."""
    found = []
    for run in (as_one_batch, one_at_a_time):
        ns = await new_namespace()
        async with promotion_service(ns) as running:
            emitted = await run(running, events)
        found.append(await outcome(ns, emitted))
    return found[0], found[1]


async def test_a_batch_decides_what_one_event_at_a_time_decides(
    new_namespace: NamespaceFactory,
) -> None:
    events: list[CDEvent] = [
        passed("solo", "1.0.0", "dev"),
        passed("solo", "1.0.0", "qa"),
        passed("pay", "1.0.0", "dev"),  # a train member alone: waits for shop
        passed("needy", "1.0.0", "qa"),  # base runs nowhere: held
        passed("shop", "1.0.0", "dev"),  # the train is complete: both go
        passed("solo", "1.1.0", "qa"),  # a newer build in a later event: it goes too
        failed("lone", "1.0.0", "dev"),
    ]
    batch, sequence = await batch_and_sequence(new_namespace, events)

    assert batch == sequence
    states = {(s, v, e): state for s, v, e, state, _ in batch["candidates"]}
    assert states == {
        ("solo", "1.0.0", "dev"): "approved",
        ("solo", "1.0.0", "qa"): "approved",
        ("solo", "1.1.0", "qa"): "approved",  # after 1.0.0 went, as one at a time
        ("pay", "1.0.0", "dev"): "approved",
        ("shop", "1.0.0", "dev"): "approved",
        ("needy", "1.0.0", "qa"): "waiting",
        ("lone", "1.0.0", "dev"): "gate-failed",
    }
    assert {(p[1], p[4]) for p in batch["promotions"] if p[4]} == {("pay", "duo"), ("shop", "duo")}
    assert batch["told"] == {
        ("needy", "1.0.0", "qa"): ["needs base>=2.0 in qa, has none"],
    }


async def test_a_pass_and_a_fail_of_one_build_in_one_batch_end_as_one_at_a_time(
    new_namespace: NamespaceFactory,
) -> None:
    """A build passed, then failed, in one batch: as one event at a time, the pass promotes it
    before the fail arrives (and a promotion stands). Failed, then passed: it goes. A train
    member passed (held for its partner), then failed: it does not go, and its partner, when
    it comes, hears that it failed."""
    events: list[CDEvent] = [
        passed("solo", "1.0.0", "dev"),
        failed("solo", "1.0.0", "dev"),
        failed("solo", "1.0.0", "qa"),
        passed("solo", "1.0.0", "qa"),
        passed("pay", "1.0.0", "dev"),
        failed("pay", "1.0.0", "dev"),
        passed("shop", "1.0.0", "dev"),
    ]
    batch, sequence = await batch_and_sequence(new_namespace, events)

    assert batch == sequence
    states = {(s, v, e): state for s, v, e, state, _ in batch["candidates"]}
    assert states == {
        ("solo", "1.0.0", "dev"): "approved",  # passed, promoted, then failed: it stands
        ("solo", "1.0.0", "qa"): "approved",  # failed, then passed: it goes
        ("pay", "1.0.0", "dev"): "gate-failed",  # passed, held for shop, then failed
        ("shop", "1.0.0", "dev"): "waiting",
    }
    assert len(batch["promotions"]) == 2
    assert batch["told"] == {
        ("shop", "1.0.0", "dev"): ["train duo to dev waiting for pay (pay@1.0.0 failed its gate)"]
    }


async def test_a_batch_takes_as_many_statements_for_thirty_events_as_for_three(
    new_namespace: NamespaceFactory,
) -> None:
    """Each batch promotes one build, holds one (told why) and holds a train member (told
    what the train waits for); the larger one has 27 more builds of other services, each
    promoted. The statements sent are the same."""
    common: list[CDEvent] = [
        passed("needy", "1.0.0", "qa"),
        passed("pay", "1.0.0", "dev"),
        failed("lone", "1.0.0", "dev"),
    ]
    larger = common + [passed(f"svc{n}", "1.0.0", "dev" if n % 2 else "qa") for n in range(27)]
    counted = []
    for events in ([*common, passed("solo", "1.0.0", "dev")], larger):
        ns = await new_namespace()
        statements: list[str] = []
        async with promotion_service(ns) as running:
            emitted = await as_one_batch(running, events, statements)
        approvals = [e for e in emitted if isinstance(e, PromotionApproved)]
        assert len(approvals) == len(events) - 3
        counted.append(statements)

    assert len(counted[1]) == len(counted[0]) <= 8
    assert counted[1] == counted[0]


# --- locks ---------------------------------------------------------------------------------


class Held:
    """A gate decision handled in a transaction that stays open until ``release``."""

    def __init__(self, running: RunningService, event: CDEvent) -> None:
        self.handled, self.release = asyncio.Event(), asyncio.Event()

        async def work(ctx: HandlerContext) -> None:
            await handle(promotion.router, event, ctx)
            self.handled.set()
            await self.release.wait()

        self.task = asyncio.create_task(in_service(running, work))

    async def __aenter__(self) -> Held:
        await asyncio.wait_for(self.handled.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release.set()
        await asyncio.wait_for(self.task, 10)


def decide(running: RunningService, event: CDEvent) -> asyncio.Task[None]:
    async def work(ctx: HandlerContext) -> None:
        await handle(promotion.router, event, ctx)

    return asyncio.create_task(in_service(running, work))


async def waits(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` is still waiting after a second."""
    done, _ = await asyncio.wait({task}, timeout=1.0)
    return not done


async def test_decisions_lock_a_service_in_an_environment_not_the_environment(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    async with promotion_service(ns) as running:
        async with Held(running, passed("solo", "1.0.0", "dev")):
            other_service = decide(running, passed("lone", "1.0.0", "dev"))
            other_environment = decide(running, passed("solo", "1.0.0", "qa"))
            await asyncio.wait_for(asyncio.gather(other_service, other_environment), 10)
            same = decide(running, passed("solo", "1.1.0", "dev"))
            same_waited = await waits(same)
        await asyncio.wait_for(same, 10)

    assert same_waited  # for the first decision about solo in dev to commit
    promoted = await ns.sql(
        "promotion", "SELECT service, version, environment FROM promotions ORDER BY 1, 2, 3"
    )
    assert [tuple(r) for r in promoted] == [
        ("lone", "1.0.0", "dev"),
        ("solo", "1.0.0", "dev"),
        ("solo", "1.0.0", "qa"),
        ("solo", "1.1.0", "dev"),
    ]


@pytest.mark.parametrize("seen", [True, False], ids=["model seen", "model not seen yet"])
async def test_a_trains_members_are_locked_together(
    new_namespace: NamespaceFactory, seen: bool
) -> None:
    """pay and shop ride together in dev: a decision about one waits for one about the other,
    and so sees it; the train leaves once, with both. So too when the instance has not seen
    the model in force (another put it in force): the keys its events declared do not name
    the train, and each handler locks the other member by hand."""
    ns = await new_namespace()
    async with promotion_service(ns) as running:
        if not seen:
            promotion._hint.found = None  # what an instance knows that has seen no model
        async with Held(running, passed("pay", "1.0.0", "dev")):
            outside = decide(running, passed("solo", "1.0.0", "dev"))
            elsewhere = decide(running, passed("shop", "1.0.0", "qa"))  # no train in qa
            await asyncio.wait_for(asyncio.gather(outside, elsewhere), 10)
            if not seen:
                promotion._hint.found = None  # nor when its partner's decision comes
            partner = decide(running, passed("shop", "1.0.0", "dev"))
            partner_waited = await waits(partner)
        await asyncio.wait_for(partner, 10)

    assert partner_waited
    promoted = await ns.sql(
        "promotion",
        "SELECT service, environment, train FROM promotions WHERE environment = 'dev' "
        "ORDER BY service",
    )
    assert [tuple(r) for r in promoted] == [
        ("pay", "dev", "duo"),
        ("shop", "dev", "duo"),
        ("solo", "dev", None),
    ]


# --- a poison event in a batch -------------------------------------------------------------


async def test_a_poison_gate_decision_in_a_batch_stops_only_itself(
    new_namespace: NamespaceFactory,
) -> None:
    """A gate decision Postgres cannot store (a version too long for the candidates' key)
    arrives in one poll with good ones on its partition: the batch is undone, each event is
    handled alone, the poison is dead-lettered and the others are promoted."""
    ns = await new_namespace()
    loaded = load_text(MODEL.encode())
    await ns.publish(policy_event(loaded), signed_as="platform")
    huge = base64.b64encode(os.urandom(6000)).decode()  # no index row holds it
    poison = passed("solo", huge, "dev")
    good = [passed("solo", "1.0.0", "qa"), passed("solo", "1.0.0", "dev")]
    for event in [poison, *good]:  # one key: one partition, in this order
        await ns.publish(event, signed_as="gates")
    async with ns.service(PROMOTION):

        def promoted() -> list[tuple[str, str]]:
            """both good builds promoted"""
            found = [
                (e.subject.content.version, e.subject.content.environment)
                for e in ns.log.events(PromotionApproved)
                if isinstance(e, PromotionApproved) and e.subject.content.service == "solo"
            ]
            return found if len(found) >= 2 else []

        approved = await ns.log.wait_for(promoted)

        def dead() -> list[Any]:
            """the poison's dead letter"""
            return ns.log.dead_letters()

        letters = await ns.log.wait_for(dead)

    assert sorted(approved) == [("1.0.0", "dev"), ("1.0.0", "qa")]
    assert len(letters) == 1
    assert letters[0].header("ce_id") == poison.id
    why = reason_of(letters[0])
    assert why["stage"] == "handle" and "candidates_pkey" in why["error"]
    undone = [
        sp for sp in read_spans(ns.settings.trace_dir)
        if sp["attributes"].get("lockstep.batch_undone")
        and sp["attributes"].get("cloudevents.event_id") in {e.id for e in good}
    ]  # fmt: skip
    assert undone  # the good ones were in the poison's batch, and went through alone
