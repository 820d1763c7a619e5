"""The shop's node-to-node codec: what one node sends, another reads back as the same
typed value (a dict where a Struct was sent would be refused by the receiving actor)."""

from __future__ import annotations

import typing

import msgspec
import pytest

import iceshop.protocol
from iceshop.node.messages import shop_codec
from iceshop.protocol import CreateWindow, Principal, RecordDecision, Request
from iceshop.wire import CommandKind, DecisionView, ErrorCode, Join, Reason, ShopError


def roundtrip(value: object) -> object:
    codec = shop_codec()
    tag, data = codec.encode(value)
    return codec.decode(tag, data)


def test_a_request_arrives_with_its_command_type_and_principal() -> None:
    request = Request(
        CommandKind.WINDOW_JOIN,
        Join(join_id="J1", buyer_id="B1", quantity=2),
        {"extra": "x"},
        Principal("gw1", "gateway"),
    )
    back = roundtrip(request)
    assert back == request and type(back.body) is Join  # type: ignore[attr-defined]


def test_a_decision_arrives_as_a_decision_view() -> None:
    view = DecisionView(
        decision_id="D1",
        product_id="P1",
        made_at="2026-11-25T10:00:00Z",
        outcome="window_proposed",
        reasons=[Reason(code="demand", text="enough demand", value=12, threshold=5)],
        offer=None,
        window_id="W1",
        inputs={"score": 12.5},
    )
    back = roundtrip(RecordDecision(view=view))
    assert isinstance(back, RecordDecision) and type(back.view) is DecisionView
    assert back == RecordDecision(view=view)


def test_shop_errors_and_window_creation_cross_intact() -> None:
    error = roundtrip(ShopError(ErrorCode.SOLD_OUT, "no stock left", {"left": 0}))
    assert isinstance(error, ShopError)
    assert (error.code, error.message, error.details) == (
        ErrorCode.SOLD_OUT,
        "no stock left",
        {"left": 0},
    )
    create = CreateWindow(
        product_id="P1",
        seller_id="S1",
        decision_id=None,
        unit_price_minor=500,
        currency="TRY",
        quantity_total=3,
        min_participants=1,
        max_per_buyer=1,
        activates_at=1.5,
        expires_at=2.5,
    )
    assert roundtrip(create) == create


@pytest.mark.parametrize(
    "cls",
    [
        v
        for v in vars(iceshop.protocol).values()
        if isinstance(v, type)
        and issubclass(v, msgspec.Struct)
        and v.__module__ == "iceshop.protocol"
    ],
)
def test_no_message_between_actors_has_an_untyped_field(cls: type[msgspec.Struct]) -> None:
    """An ``Any`` field would arrive on another node as plain dicts and lists."""
    hints = typing.get_type_hints(cls)
    untyped = [name for name, hint in hints.items() if hint is typing.Any]
    assert untyped == [], (cls.__name__, untyped)
