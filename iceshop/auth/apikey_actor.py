"""The ``apikey`` actor: the durable record of every API key, and the node's copy of it.

One persistent actor (kind ``apikey``, key ``all``) holds every key record, so a node
loads them all at start in one recovery (:class:`LoadKeys`) and routing can check a key
without touching the journal. Integrations are few (tens, not millions), so one actor is
plenty, and it keeps create and revoke atomic with respect to each other.

It answers ``iceshop.admin.apikeys.<key_id>.create`` (body ``role``, ``principal``,
``note``) and ``.revoke``, both admin only (routing checks; so does the actor). A
create returns the key's secret once; the record keeps only a salted hash, and a second
create of the same id is ``idempotency_conflict`` (the secret cannot be shown again:
revoke the key and create another id). A revoke is idempotent by state; an unknown key
is ``invalid_request`` (the contract has no ``unknown_*`` code for keys).

**Revoked keys stop working at once.** The node's :class:`ApiKeyRegistry` is updated in
the same turn that persists the change, before the commit and so before the reply
leaves: by the time an admin reads "revoked", this node refuses the key. If the commit
fails the actor is rebuilt from its journal and ``on_start`` copies the stored records
over the registry again, so it never keeps a change that was not stored (a create whose
commit failed never had its secret shown to anyone). Other nodes learn of a change from
its event (``<prefix>.events.apikey.<key_id>.created`` / ``.revoked``, without hash or
secret) and apply revocations at once; a key created on another node is known here after
this node's next start (while the shop runs one node this never arises).

Both are admin actions and are audited in their own commit (``apikey.created`` /
``apikey.revoked`` by the admin who sent them, the create's note as its why; never the
hash or the secret; see ``iceshop.audit``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog

from actors import PersistentActor
from iceshop.audit import actor_of, apikey_changed, emit_audit
from iceshop.auth.apikeys import ApiKeyRecord, ApiKeyRegistry, format_api_key, new_record
from iceshop.auth.principal import ADMIN, BUYER, SELLER
from iceshop.events import emit_event
from iceshop.protocol import Principal, Request
from iceshop.settings import Settings
from iceshop.wire import (
    ApiKeyView,
    CommandKind,
    CreateApiKey,
    ErrorCode,
    ShopError,
    format_time,
)

__all__ = [
    "APIKEY_KIND",
    "REGISTRY_KEY",
    "ApiKeyActor",
    "ApiKeyEvent",
    "ApiKeyState",
    "KeyCreated",
    "KeyRevoked",
    "LoadKeys",
    "key_view",
]

log = structlog.get_logger("iceshop.auth")

APIKEY_KIND: Final = "apikey"
REGISTRY_KEY: Final = "all"


class KeyCreated(msgspec.Struct, frozen=True, tag="apikey.created"):
    record: ApiKeyRecord


class KeyRevoked(msgspec.Struct, frozen=True, tag="apikey.revoked"):
    key_id: str
    at: float


ApiKeyEvent = KeyCreated | KeyRevoked


class ApiKeyState(msgspec.Struct):
    records: dict[str, ApiKeyRecord] = {}


class LoadKeys(msgspec.Struct, frozen=True):
    """Asked by the node at start: the actor recovers (filling the registry) and
    answers how many keys it holds."""


def key_view(record: ApiKeyRecord, api_key: str | None = None) -> ApiKeyView:
    return ApiKeyView(
        key_id=record.key_id,
        role=record.role,
        principal=record.principal,
        note=record.note,
        status="revoked" if record.revoked_at is not None else "active",
        created_at=format_time(record.created_at),
        revoked_at=None if record.revoked_at is None else format_time(record.revoked_at),
        api_key=api_key,
    )


class ApiKeyActor(PersistentActor):
    """Every API key; see the module docstring."""

    __slots__ = ("prefix", "registry", "state")

    event_type = ApiKeyEvent
    snapshot_type = ApiKeyState
    snapshot_every = 200

    def __init__(self, settings: Settings, registry: ApiKeyRegistry) -> None:
        self.prefix = settings.prefix
        self.registry = registry
        self.state = ApiKeyState()

    # -- persistence ----------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        records = self.state.records
        match event:
            case KeyCreated(record=record):
                records[record.key_id] = record
            case KeyRevoked(key_id=key_id, at=at):
                old = records.get(key_id)
                if old is not None:
                    records[key_id] = msgspec.structs.replace(old, revoked_at=at)
            case _:
                raise TypeError(f"not an API key event: {event!r}")

    def snapshot(self) -> ApiKeyState:
        return self.state

    def restore(self, snapshot: ApiKeyState) -> None:
        self.state = snapshot

    def on_start(self) -> None:
        """The registry becomes what the journal holds (also after a failed commit)."""
        self.registry.replace_all(self.state.records.values())
        log.info("API keys loaded", keys=len(self.state.records))

    # -- commands -------------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case LoadKeys():
                return len(self.state.records)
            case Request(principal=principal) if principal is not None and principal.role != ADMIN:
                return ShopError(ErrorCode.FORBIDDEN, "API keys are for admins only")
            case Request(
                kind=CommandKind.APIKEY_CREATE,
                body=CreateApiKey() as body,
                ids=ids,
                principal=principal,
            ):
                return self._create(ids.get("key_id", ""), body, by=principal)
            case Request(kind=CommandKind.APIKEY_REVOKE, ids=ids, principal=principal):
                return self._revoke(ids.get("key_id", ""), by=principal)
            case Request(kind=kind):
                return ShopError(ErrorCode.INTERNAL, f"{kind} is not an API key command")
        raise TypeError(f"apikey cannot handle {message!r}")

    def _create(
        self, key_id: str, body: CreateApiKey, *, by: Principal | None
    ) -> ApiKeyView | ShopError:
        if key_id in self.state.records:
            return ShopError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                f"API key {key_id} exists and its secret was shown once, when it was "
                "created: revoke it and create a key with another id",
                {"key_id": key_id},
            )
        if body.role in (BUYER, SELLER) and body.principal is None:
            return ShopError.invalid(
                f"principal: a {body.role} key acts as one {body.role}: name its id",
                field="principal",
            )
        now = self.now()
        principal = body.principal if body.principal is not None else key_id
        record, secret = new_record(key_id, body.role, principal, body.note, now)
        self.persist(KeyCreated(record))
        self.registry.put(record)
        view = key_view(record)
        emit_event(self, self.prefix, "apikey", key_id, "created", 1, now, view)
        audit = apikey_changed(view, verb="created", actor=actor_of(by), at=now)
        emit_audit(self, self.prefix, audit)
        return key_view(record, format_api_key(key_id, secret))

    def _revoke(self, key_id: str, *, by: Principal | None) -> ApiKeyView | ShopError:
        record = self.state.records.get(key_id)
        if record is None:
            return ShopError.invalid(f"no API key {key_id}", field="key_id")
        if record.revoked_at is None:
            now = self.now()
            self.persist(KeyRevoked(key_id, now))
            self.registry.revoke(key_id, now)
            record = self.state.records[key_id]
            view = key_view(record)
            emit_event(self, self.prefix, "apikey", key_id, "revoked", 2, now, view)
            audit = apikey_changed(view, verb="revoked", actor=actor_of(by), at=now)
            emit_audit(self, self.prefix, audit)
        return key_view(record)
