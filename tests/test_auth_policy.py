"""The role rules, command by command: every command kind against every role."""

from __future__ import annotations

import pytest

from iceshop.auth import ADMIN_ONLY, OWNER_CHECKED_BY_ACTOR, Principal, authorize
from iceshop.wire import (
    COMMAND_TYPES,
    SUBJECT_IDS,
    CommandKind,
    ErrorCode,
    Join,
    Leave,
    decode_command,
)

K = CommandKind
ME = "me"  # the principal's own id
OTHER = "other"

# What each role may do when every id in the request is its own ("self") and when the
# buyer or seller named is someone else ("other"). "owner?" = allowed here, and the
# actor then checks that the seller owns the window or decision.
#               buyer            seller            gateway          admin
EXPECTED: dict[CommandKind, tuple[str, str, str, str]] = {
    K.BUYER_REGISTER: ("self", "no", "yes", "yes"),
    K.INTENT_SUBMIT: ("self", "no", "yes", "yes"),
    K.INTENT_CANCEL: ("self", "no", "yes", "yes"),
    K.WINDOW_JOIN: ("self", "no", "yes", "yes"),
    K.WINDOW_LEAVE: ("self", "no", "yes", "yes"),
    K.SELLER_REGISTER: ("no", "no", "no", "yes"),
    K.LISTING_UPSERT: ("no", "self", "no", "yes"),
    K.OFFER_APPROVE: ("no", "self", "no", "yes"),
    K.OFFER_REJECT: ("no", "self", "no", "yes"),
    K.WINDOW_GET: ("yes", "yes", "yes", "yes"),
    K.WINDOWS_LIST: ("yes", "yes", "yes", "yes"),
    K.WINDOW_RESERVATIONS: ("no", "owner?", "no", "yes"),
    K.DECISION_GET: ("no", "owner?", "no", "yes"),
    K.ADMIN_WINDOW_CANCEL: ("no", "no", "no", "yes"),
    K.CLUSTER_STATUS: ("no", "no", "no", "yes"),
    K.APIKEY_CREATE: ("no", "no", "no", "yes"),
    K.APIKEY_REVOKE: ("no", "no", "no", "yes"),
}
ROLES = ("buyer", "seller", "gateway", "admin")

MINIMAL_BODY: dict[CommandKind, bytes] = {
    K.BUYER_REGISTER: b'{"name": "n", "phone": "+905551234567"}',
    K.SELLER_REGISTER: b'{"name": "n"}',
    K.LISTING_UPSERT: b'{"product_id": "p", "title": "t", "list_price_minor": 2,'
    b' "floor_price_minor": 1, "stock": 1}',
    K.INTENT_SUBMIT: b'{"intent_id": "i", "product_id": "p", "max_price_minor": 1}',
    K.ADMIN_WINDOW_CANCEL: b'{"reason": "r"}',
    K.APIKEY_CREATE: b'{"role": "gateway"}',
}


def request(kind: CommandKind, who: str) -> tuple[dict[str, str], object]:
    """Ids and body of ``kind`` where the buyer or seller named is ``who``."""
    ids = {name: (who if name in ("buyer_id", "seller_id") else "x1") for name in SUBJECT_IDS[kind]}
    if kind in (K.WINDOW_JOIN, K.WINDOW_LEAVE):
        cls = Join if kind is K.WINDOW_JOIN else Leave
        return ids, cls(join_id="j1", buyer_id=who)
    return ids, decode_command(kind, MINIMAL_BODY.get(kind, b""))


def test_the_table_covers_every_command() -> None:
    assert set(EXPECTED) == set(CommandKind) == set(COMMAND_TYPES)
    assert {k for k, row in EXPECTED.items() if row[:3] == ("no", "no", "no")} == ADMIN_ONLY
    assert {k for k, row in EXPECTED.items() if "owner?" in row} == OWNER_CHECKED_BY_ACTOR


@pytest.mark.parametrize("kind", list(CommandKind))
@pytest.mark.parametrize("role", ROLES)
def test_every_command_for_every_role(kind: CommandKind, role: str) -> None:
    rule = EXPECTED[kind][ROLES.index(role)]
    principal = Principal(ME, role)
    own = authorize(principal, kind, *request(kind, ME))
    others = authorize(principal, kind, *request(kind, OTHER))
    if rule in ("yes", "owner?"):
        assert own is None and others is None
    elif rule == "self":
        assert own is None
        assert others is not None and others.code is ErrorCode.FORBIDDEN
        assert "itself" in others.message or "own" in others.message
    else:
        assert own is not None and own.code is ErrorCode.FORBIDDEN
        assert others is not None and others.code is ErrorCode.FORBIDDEN
        assert not own.retryable


@pytest.mark.parametrize("kind", list(CommandKind))
def test_without_authentication_everything_is_allowed(kind: CommandKind) -> None:
    assert authorize(None, kind, *request(kind, OTHER)) is None


def test_a_buyer_joins_only_as_the_buyer_in_the_body() -> None:
    buyer = Principal("B1", "buyer")
    assert (
        authorize(buyer, K.WINDOW_JOIN, {"window_id": "W1"}, Join(join_id="j", buyer_id="B1"))
        is None
    )
    refused = authorize(buyer, K.WINDOW_JOIN, {"window_id": "W1"}, Join(join_id="j", buyer_id="B2"))
    assert refused is not None and refused.message == "a buyer may act only as itself"
