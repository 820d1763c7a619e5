"""Every subject, fuzzed: the node never crashes on input and a refusal changes nothing.

In process, per command: the node's own routes (captured from ``ShopNode`` as it
subscribes them) get defective, valid and wild requests from ``fuzz_inputs``; each
outcome is judged against the contract. Over NATS: a seeded shop gets a few hundred
defective requests aimed at its own records; every reply is a refusal, no event is
published, the journal and the views are unchanged, and the node still serves a valid
request (which does change them: the comparison can see a change). ``bench/fuzz.py``
runs the same with 100,000 inputs.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.nats import Routed
from iceshop.node.routing import make_route
from tests.fuzz_inputs import (
    CONTRACT,
    KINDS,
    MAX_BODY,
    Accepted,
    Case,
    FuzzFailure,
    RouteTable,
    World,
    any_case,
    contract_route,
    defect_pairs,
    format_deadline,
    judge,
)
from tests.fuzz_world import defects_for_every_kind, fuzz_over_nats, fuzz_shop, seed_world, snapshot

FUZZ = settings(
    max_examples=25,  # x 8 cases per example, per command
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.from_node()


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(cases=st.data())
def test_fuzzed_requests_are_judged_right(
    table: RouteTable, kind: str, cases: st.DataObject
) -> None:
    for case in cases.draw(st.lists(any_case(World(), kind), min_size=8, max_size=8)):
        judge(case, table.dispatch(case.subject, case.headers, case.payload))


def test_every_contract_subject_is_served(table: RouteTable) -> None:
    for kind, spec in CONTRACT.items():
        ids = {name: "X1" for _, name in spec.slots}
        subject = spec.subject(ids)
        assert contract_route(subject) == (kind, ids)
        outcome = table.dispatch(subject, {}, b"{}")
        if isinstance(outcome, Routed):
            assert outcome.message.kind == kind
        elif isinstance(outcome, Accepted):
            assert outcome.kind == kind
        else:  # {} lacks the command's required fields
            assert isinstance(outcome, bytes) and b'"invalid_request"' in outcome, kind
            assert any(f.required for f in spec.fields), kind


def test_body_size_limit_is_exact(table: RouteTable) -> None:
    body = b'{"join_id":"J1","buyer_id":"B1"}'
    at_limit = b"{" + b" " * (MAX_BODY - len(body)) + body[1:]
    assert len(at_limit) == MAX_BODY
    routed = table.dispatch("iceshop.windows.W1.join", {}, at_limit)
    assert isinstance(routed, Routed)
    over = table.dispatch("iceshop.windows.W1.join", {}, b" " + at_limit)
    assert isinstance(over, bytes) and b'"invalid_request"' in over


def test_deep_nesting_and_huge_numbers_are_refused(table: RouteTable) -> None:
    for payload in (
        b"[" * 32_000 + b"]" * 32_000,
        b'{"join_id":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"join_id":"J1","buyer_id":"B1","quantity":1e400}',
        b'{"join_id":"J1","buyer_id":"B1","quantity":' + b"9" * 400 + b"}",
        b'{"join_id":"J1","buyer_id":"B1","quantity":NaN}',
    ):
        reply = table.dispatch("iceshop.windows.W1.join", {}, payload)
        assert isinstance(reply, bytes) and b'"invalid_request"' in reply, payload[:40]


def test_the_oracle_catches_a_lenient_route(table: RouteTable) -> None:
    """A route that forgets the deadline must fail the judge: the fuzz can fail."""
    lenient = make_route(["windows"], "window_id", table.clock)
    past = format_deadline(table.clock.time() - 5)
    case = Case(
        "window.join",
        "deadline_passed",
        "iceshop.windows.W1.join",
        {"Iceshop-Deadline": past},
        b'{"join_id":"J1","buyer_id":"B1"}',
    )
    assert isinstance(lenient(["W1", "join"], {}, case.payload), Routed)  # headers dropped
    with pytest.raises(FuzzFailure, match="accepted a request with a defect"):
        judge(case, lenient(["W1", "join"], {}, case.payload))
    refused = Case("window.join", "valid", case.subject, {}, case.payload, {"join_id": "J1"})
    with pytest.raises(FuzzFailure, match="refused a valid request"):
        judge(refused, table.dispatch(case.subject, case.headers, case.payload))


@pytest.mark.anyio
@pytest.mark.integration
async def test_fuzz_over_nats_changes_nothing(tmp_path: Path) -> None:
    async with fuzz_shop(tmp_path) as shop:
        world = await seed_world(shop)
        cases = await anyio.to_thread.run_sync(defects_for_every_kind, world, 3, 7)
        assert len(cases) == 3 * len(defect_pairs()) > 300
        assert {c.kind for c in cases} == set(KINDS)
        before = await snapshot(shop, world)

        report = await fuzz_over_nats(shop, world, cases)

        assert report.failures == []
        assert report.sent == len(cases)
        assert set(report.buckets) <= {"invalid_request", "unavailable", "overloaded", "unrouted"}
        assert report.buckets["invalid_request"] > len(cases) // 2
        assert report.events == 0
        after = await snapshot(shop, world)
        assert before.changes(after) == []

        # still serving: a valid command is applied, and the comparison sees it
        c = shop.client
        (wid,) = world.pool("window_id")
        await c.ok("buyers.B9.register", {"name": "Late buyer", "phone": "+905551112299"})
        joined = await c.ok(f"windows.{wid}.join", {"join_id": "J9", "buyer_id": "B9"})
        assert joined["status"] == "reserved"
        changed = await snapshot(shop, world)
        assert changed.views["window"]["quantity_reserved"] == (
            after.views["window"]["quantity_reserved"] + 1
        )
        assert any(line.startswith("journal table events") for line in after.changes(changed))
