"""Routing with authentication on: the contract's precedence, and the principal on the
request. ``make_route`` is called exactly as the node builds it."""

from __future__ import annotations

import msgspec
import pytest

from actors import VirtualClock
from actors.nats import Routed
from iceshop.auth import ApiKeyRegistry, BuyerLimits, Gate, KeyRing, TokenKey, TokenVerifier, mint
from iceshop.auth.apikeys import format_api_key, new_record
from iceshop.node.routing import check_command, make_route
from iceshop.protocol import Principal, Request
from iceshop.settings import Settings
from iceshop.wire import CommandKind, Join, ListWindows, ShopError
from iceshop.wire.times import format_time

KEY = TokenKey.hs256("k1", b"k" * 32)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=0.0, epoch=1_800_000_000.0)


def gate(clock: VirtualClock, *, required: bool = True, **limits: float) -> Gate:
    settings = Settings(**limits)  # type: ignore[arg-type]
    return Gate(
        required=required,
        verifier=TokenVerifier(KeyRing([KEY]), clock),
        apikeys=ApiKeyRegistry(),
        limits=BuyerLimits(settings, clock),
    )


def bearer(clock: VirtualClock, sub: str, role: str, ttl: float = 60) -> dict[str, str]:
    return {"authorization": f"Bearer {mint(KEY, sub=sub, role=role, ttl_s=ttl, now=clock.time())}"}


def code(reply: Routed | bytes) -> str:
    assert isinstance(reply, bytes), reply
    decoded = msgspec.json.decode(reply)
    assert decoded["ok"] is False
    return str(decoded["error"]["code"])


JOIN = b'{"join_id": "J1", "buyer_id": "B1"}'


def test_credentials_come_first(clock: VirtualClock) -> None:
    route = make_route(["windows"], "window_id", clock, gate(clock))
    assert code(route(["W1", "join"], {}, JOIN)) == "unauthorized"
    # even a bad subject, a bad body and a bad deadline are unauthorized without credentials
    assert code(route(["W*", "explode"], {"iceshop-deadline": "never"}, b"{")) == "unauthorized"
    assert code(route(["W1", "join"], {"authorization": "Basic dTpw"}, JOIN)) == "unauthorized"
    expired = bearer(clock, "B1", "buyer", ttl=1)
    clock.set(32)
    assert code(route(["W1", "join"], expired, JOIN)) == "unauthorized"


def test_then_the_request_then_the_role(clock: VirtualClock) -> None:
    route = make_route(["windows"], "window_id", clock, gate(clock))
    other = bearer(clock, "B2", "buyer")
    assert code(route(["W1", "join"], other, b'{"join_id": "J1"}')) == "invalid_request"
    assert (
        code(route(["W1", "join"], {**other, "iceshop-deadline": "x"}, JOIN)) == "invalid_request"
    )
    assert code(route(["W1", "join"], other, JOIN)) == "forbidden"
    routed = route(["W1", "join"], bearer(clock, "B1", "buyer"), JOIN)
    assert routed == Routed(
        "W1",
        Request(
            CommandKind.WINDOW_JOIN, Join(join_id="J1", buyer_id="B1"), {}, Principal("B1", "buyer")
        ),
        None,
    )


def test_api_keys_route_like_tokens(clock: VirtualClock) -> None:
    g = gate(clock)
    record, secret = new_record("int1", "gateway", "int1", None, now=0.0)
    g.apikeys.put(record)
    route = make_route(["buyers"], "buyer_id", clock, g)
    headers = {"authorization": f"Bearer {format_api_key('int1', secret)}"}
    routed = route(["B9", "register"], headers, b'{"name": "n", "phone": "+905551234567"}')
    assert isinstance(routed, Routed) and routed.message.principal == Principal("int1", "gateway")
    g.apikeys.revoke("int1", at=1.0)
    assert code(route(["B9", "register"], headers, b"{}")) == "unauthorized"


def test_rate_limits_come_last_and_apply_with_auth_off(clock: VirtualClock) -> None:
    g = gate(clock, required=False, buyer_join_rate_per_s=1.0, buyer_join_burst=1)
    route = make_route(["windows"], "window_id", clock, g)
    first = route(["W1", "join"], {}, JOIN)
    assert isinstance(first, Routed) and first.message.principal is None
    reply = msgspec.json.decode(route(["W1", "join"], {}, JOIN))  # type: ignore[arg-type]
    assert reply["error"]["code"] == "overloaded" and reply["error"]["retryable"] is True
    assert reply["error"]["details"] == {"retry_after_s": 1.0}
    # a forbidden request is forbidden, not overloaded, and takes no token
    on = gate(clock, buyer_join_rate_per_s=1.0, buyer_join_burst=1)
    route = make_route(["windows"], "window_id", clock, on)
    assert code(route(["W1", "join"], bearer(clock, "B2", "buyer"), JOIN)) == "forbidden"
    assert isinstance(route(["W1", "join"], bearer(clock, "B1", "buyer"), JOIN), Routed)


def test_a_request_refused_for_its_passed_deadline_takes_no_token(clock: VirtualClock) -> None:
    g = gate(clock, required=False, buyer_join_rate_per_s=1.0, buyer_join_burst=1)
    route = make_route(["windows"], "window_id", clock, g)
    late = {"iceshop-deadline": format_time(clock.time() - 5)}
    for _ in range(5):
        assert code(route(["W1", "join"], late, JOIN)) == "unavailable"
    assert isinstance(route(["W1", "join"], {}, JOIN), Routed)  # the burst is still there


def test_the_api_key_subject_goes_to_one_actor(clock: VirtualClock) -> None:
    route = make_route(["admin", "apikeys"], "key_id", clock, gate(clock), key="all")
    body = b'{"role": "gateway"}'
    assert code(route(["K1", "create"], bearer(clock, "S1", "seller"), body)) == "forbidden"
    routed = route(["K1", "create"], bearer(clock, "root", "admin"), body)
    assert isinstance(routed, Routed) and routed.key == "all"
    assert routed.message.ids == {"key_id": "K1"}


def test_handlers_check_the_same_way(clock: VirtualClock) -> None:
    g = gate(clock)
    with pytest.raises(ShopError, match="unauthorized"):
        check_command(g, CommandKind.CLUSTER_STATUS, {}, b"")
    with pytest.raises(ShopError, match="forbidden"):
        check_command(g, CommandKind.CLUSTER_STATUS, bearer(clock, "gw", "gateway"), b"")
    body, principal = check_command(
        g, CommandKind.WINDOWS_LIST, bearer(clock, "gw", "gateway"), b""
    )
    assert principal == Principal("gw", "gateway")
    assert body == ListWindows()
