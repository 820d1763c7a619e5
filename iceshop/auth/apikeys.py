"""API keys for integrations: ``Authorization: Bearer isk_<key_id>_<secret>``.

A service that cannot mint JWTs (a partner's webhook, a script) gets an API key instead.
It is told apart from a JWT by its prefix (``isk_``; a JWT never has one), names its
record by ``key_id`` and proves itself with ``secret`` (64 hex characters, 256 random
bits, so never ``_`` inside: the key id is everything between the prefix and the last
``_``).

The shop keeps only ``sha256(salt || secret)`` with a random per-key salt, never the
secret, which the admin sees once, in the reply that created the key. A plain hash is
enough because the secret is random and long (there is no dictionary to try); the
comparison is constant-time. Each key acts as one role and, for buyer and seller keys,
one principal id (the id it acts as); revoking a key ends it for good.

Records are stored by the ``apikey`` actor (``iceshop.auth.apikey_actor``); routing,
which is synchronous, checks credentials against :class:`ApiKeyRegistry`, the node's
in-memory copy that the actor keeps up to date (see there for when).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Final

import msgspec

from iceshop.protocol import Principal
from iceshop.wire import ErrorCode, ShopError

__all__ = [
    "API_KEY_PREFIX",
    "ApiKeyRecord",
    "ApiKeyRegistry",
    "format_api_key",
    "hash_secret",
    "is_api_key",
    "new_record",
    "parse_api_key",
]

API_KEY_PREFIX: Final = "isk_"
_SECRET: Final = re.compile(r"[0-9a-f]{64}")
_KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DUMMY_SALT: Final = bytes(16)


class ApiKeyRecord(msgspec.Struct, frozen=True):
    """What the shop stores about a key (no secret)."""

    key_id: str
    role: str
    principal: str
    salt: bytes
    digest: bytes
    note: str | None
    created_at: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_secret(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


def format_api_key(key_id: str, secret: str) -> str:
    """The bearer value of a key: ``isk_<key_id>_<secret>``."""
    return f"{API_KEY_PREFIX}{key_id}_{secret}"


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def parse_api_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``."""
    if not token.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(API_KEY_PREFIX) :].rpartition("_")
    if not sep or _KEY_ID.fullmatch(key_id) is None or _SECRET.fullmatch(secret) is None:
        return None
    return key_id, secret


def new_record(
    key_id: str, role: str, principal: str, note: str | None, now: float
) -> tuple[ApiKeyRecord, str]:
    """A fresh key: its record and its secret (to show once, never to store)."""
    secret = secrets.token_hex(32)
    salt = secrets.token_bytes(16)
    record = ApiKeyRecord(
        key_id=key_id,
        role=role,
        principal=principal,
        salt=salt,
        digest=hash_secret(salt, secret),
        note=note,
        created_at=now,
    )
    return record, secret


def _unauthorized(message: str) -> ShopError:
    return ShopError(ErrorCode.UNAUTHORIZED, message)


class ApiKeyRegistry:
    """The node's in-memory copy of the key records, for checks on the hot path."""

    __slots__ = ("_records",)

    def __init__(self, records: Iterable[ApiKeyRecord] = ()) -> None:
        self._records: dict[str, ApiKeyRecord] = {}
        self.replace_all(records)

    def replace_all(self, records: Iterable[ApiKeyRecord]) -> None:
        self._records = {r.key_id: r for r in records}

    def put(self, record: ApiKeyRecord) -> None:
        self._records[record.key_id] = record

    def revoke(self, key_id: str, at: float) -> None:
        """Mark ``key_id`` revoked (also for a node that only heard the event)."""
        record = self._records.get(key_id)
        if record is not None and record.revoked_at is None:
            self._records[key_id] = msgspec.structs.replace(record, revoked_at=at)

    def get(self, key_id: str) -> ApiKeyRecord | None:
        return self._records.get(key_id)

    def __len__(self) -> int:
        return len(self._records)

    def verify(self, token: str) -> Principal:
        """The principal of a valid, unrevoked key; ``unauthorized`` otherwise."""
        parsed = parse_api_key(token)
        if parsed is None:
            raise _unauthorized("the API key is malformed (expected isk_<key_id>_<secret>)")
        key_id, secret = parsed
        record = self._records.get(key_id)
        salt = record.salt if record is not None else _DUMMY_SALT
        digest = hash_secret(salt, secret)
        if record is None or not hmac.compare_digest(digest, record.digest):
            raise _unauthorized("the API key is not valid")
        if record.revoked_at is not None:
            raise _unauthorized("the API key has been revoked")
        return Principal(record.principal, record.role)
