"""API keys: their format, the hashed records, and the node's registry."""

from __future__ import annotations

import pytest

from iceshop.auth import (
    ApiKeyRegistry,
    Principal,
    format_api_key,
    is_api_key,
    parse_api_key,
)
from iceshop.auth.apikeys import hash_secret, new_record
from iceshop.wire import ErrorCode, ShopError


def refused(registry: ApiKeyRegistry, token: str) -> str:
    with pytest.raises(ShopError) as info:
        registry.verify(token)
    assert info.value.code is ErrorCode.UNAUTHORIZED
    if len(token) > 8:
        assert token not in info.value.message  # never the key back
    return info.value.message


def test_a_key_is_stored_hashed_and_verifies() -> None:
    record, secret = new_record("erp_sync-1", "seller", "S1", "ERP", now=100.0)
    assert len(secret) == 64 and secret not in repr(record)
    assert record.digest == hash_secret(record.salt, secret) and len(record.salt) == 16
    other, other_secret = new_record("erp_sync-2", "seller", "S1", None, now=100.0)
    assert other.salt != record.salt and other_secret != secret
    registry = ApiKeyRegistry([record])
    token = format_api_key("erp_sync-1", secret)
    assert token.startswith("isk_erp_sync-1_") and is_api_key(token)
    assert parse_api_key(token) == ("erp_sync-1", secret)
    assert registry.verify(token) == Principal("S1", "seller")


def test_wrong_secret_unknown_key_and_malformed_keys_are_unauthorized() -> None:
    record, secret = new_record("k1", "gateway", "k1", None, now=0.0)
    registry = ApiKeyRegistry([record])
    flipped = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    assert refused(registry, format_api_key("k1", flipped)) == "the API key is not valid"
    assert refused(registry, format_api_key("k2", secret)) == "the API key is not valid"
    for bad in (
        "isk_",
        "isk_k1",
        f"isk__{secret}",
        f"isk_k1_{secret.upper()}",
        f"isk_k 1_{secret}",
    ):
        assert "malformed" in refused(registry, bad)
    assert not is_api_key("eyJhbGciOi.x.y")


def test_revoking_stops_a_key_at_once_and_for_good() -> None:
    record, secret = new_record("k1", "buyer", "B1", None, now=0.0)
    registry = ApiKeyRegistry([record])
    token = format_api_key("k1", secret)
    assert registry.verify(token).sub == "B1"
    registry.revoke("k1", at=5.0)
    assert refused(registry, token) == "the API key has been revoked"
    registry.revoke("k1", at=9.0)  # a repeat keeps the first time
    stored = registry.get("k1")
    assert stored is not None and stored.revoked_at == 5.0
    registry.revoke("unknown", at=1.0)  # an event about a key this node never saw
    assert len(registry) == 1
