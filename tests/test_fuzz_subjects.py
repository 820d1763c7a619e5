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
    BAD_CREDENTIALS,
    CONTRACT,
    CREDENTIALS,
    KINDS,
    MAX_BODY,
    Accepted,
    AuthCase,
    Case,
    Credentials,
    FuzzFailure,
    RouteTable,
    World,
    any_case,
    auth_case,
    contract_route,
    defect_pairs,
    fixed_api_keys,
    format_deadline,
    good_token,
    judge,
    judge_auth,
)
from tests.fuzz_world import (
    create_api_keys,
    credentials_for_every_kind,
    defects_for_every_kind,
    fuzz_over_nats,
    fuzz_shop,
    seed_world,
    snapshot,
)

CREDS = Credentials(fixed_api_keys())

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


@pytest.fixture(scope="module")
def auth_table() -> RouteTable:
    return RouteTable.from_node(creds=CREDS)


@pytest.mark.parametrize("label", CREDENTIALS)
@settings(FUZZ, max_examples=12)
@given(cases=st.data())
def test_fuzzed_credentials_are_judged_right(
    auth_table: RouteTable, label: str, cases: st.DataObject
) -> None:
    """Authentication on: every credential (good, forged, expired, revoked, ...) with
    valid, defective and wild requests over every subject, in the contract's precedence
    (unauthorized, then invalid_request, then forbidden)."""
    for ac in cases.draw(st.lists(auth_case(CREDS, World(), label=label), min_size=4, max_size=4)):
        case = ac.case
        judge_auth(ac, auth_table.dispatch(case.subject, case.headers, case.payload))


def test_the_auth_oracle_catches_a_gate_that_lets_anyone_in(auth_table: RouteTable) -> None:
    """Routes without authentication must fail the authentication oracle, as must a
    forbidden request that is routed: the auth fuzz can fail."""
    lax = RouteTable.from_node()  # authentication off
    body = b'{"name":"Seller"}'
    subject = "iceshop.sellers.S1.register"
    for label in ("missing", "expired"):
        token = None if label == "missing" else "Bearer x.y.z"
        headers = {} if token is None else {"Authorization": token}
        ac = AuthCase(Case("seller.register", "valid", subject, headers, body), label, None)
        assert judge_auth(ac, auth_table.dispatch(subject, headers, body)) == "unauthorized"
        with pytest.raises(FuzzFailure, match="accepted a request with"):
            judge_auth(ac, lax.dispatch(subject, headers, body))
    buyer = good_token(CREDS, "B1", "buyer", auth_table.clock.time())
    headers = {"Authorization": f"Bearer {buyer}"}
    ac = AuthCase(Case("seller.register", "valid", subject, headers, body), "jwt_hs256",
                  ("B1", "buyer"))  # fmt: skip
    assert judge_auth(ac, auth_table.dispatch(subject, headers, body)) == "forbidden"
    with pytest.raises(FuzzFailure, match="principal None"):
        judge_auth(ac, lax.dispatch(subject, headers, body))


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


@pytest.mark.anyio
@pytest.mark.integration
async def test_auth_fuzz_over_nats_changes_nothing(tmp_path: Path) -> None:
    """Authentication on: three requests of every (command, credential) pair that the
    node must refuse; nothing changes, and good credentials are still served."""
    async with fuzz_shop(tmp_path, Credentials()) as shop:
        world = await seed_world(shop)
        creds = await create_api_keys(shop, Credentials())
        cases = await anyio.to_thread.run_sync(credentials_for_every_kind, world, creds, 3, 7)
        assert len(cases) == 3 * len(KINDS) * len(CREDENTIALS)
        before = await snapshot(shop, world)

        report = await fuzz_over_nats(shop, world, cases)

        assert report.failures == []
        assert report.sent == len(cases)
        assert set(report.buckets) <= {
            "unauthorized", "invalid_request", "forbidden", "unavailable", "unrouted"
        }  # fmt: skip
        bad = sum(n for (label, _), n in report.by_defect.items() if label in BAD_CREDENTIALS)
        assert report.buckets["unauthorized"] > bad // 2
        outside = sum(1 for c in cases if c.principal is not None and c.case.defect == "valid")
        assert report.buckets["forbidden"] >= outside > 0  # good credentials, no rights
        assert report.events == 0
        after = await snapshot(shop, world)
        assert before.changes(after) == []

        # still serving good credentials: a gateway key registers a buyer, whose own
        # token joins; the revoked key is still refused
        gateway = next(k.key for k in creds.api_keys if k.role == "gateway" and not k.revoked)
        revoked = next(k.key for k in creds.api_keys if k.revoked)
        c = shop.client
        buyer = {"name": "Late buyer", "phone": "+905551112299"}
        reply = await c.call(
            "buyers.B9.register", buyer, headers={"Authorization": f"Bearer {revoked}"}
        )
        assert reply["error"]["code"] == "unauthorized"
        reply = await c.call(
            "buyers.B9.register", buyer, headers={"Authorization": f"Bearer {gateway}"}
        )
        assert reply["ok"] is True, reply
        b9 = good_token(creds, "B9", "buyer", shop.clock.time(), ed=True)
        (wid,) = world.pool("window_id")
        joined = await c.call(
            f"windows.{wid}.join",
            {"join_id": "J9", "buyer_id": "B9"},
            headers={"Authorization": f"Bearer {b9}"},
        )
        assert joined["ok"] is True and joined["data"]["status"] == "reserved", joined
