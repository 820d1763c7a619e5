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
commit failed never had its secret shown to anyone).

**Other nodes** (a cluster: every node runs its own actor over the shared journal) hear
of a change from its event (``<prefix>.events.apikey.<key_id>.created`` / ``.revoked``,
without hash or secret): a revocation is applied at once, a creation makes the node
reload the actor. Those announcements are core NATS messages, so a node that was
disconnected when one went out would miss it. The journal is what counts, so the actor
also reads its own journal record again every ``refresh_s`` seconds
(:data:`REFRESH_INTERVAL_S`, an in-memory timer on the node's clock): when the journal
holds changes this actor has not seen, made by another node, the actor stops and is
activated again at once: it recovers what the journal holds, copies it over the
registry (``on_start``, as at any start) and its next write commits at the journal's
position. A revocation reaches every node within ``refresh_s`` (and a recovery)
whatever happened to its event; the check is one journal read of one actor.

Both are admin actions and are audited in their own commit (``apikey.created`` /
``apikey.revoked`` by the admin who sent them, the create's note as its why; never the
hash or the secret; see ``iceshop.audit``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog

from actors import PersistentActor
from actors.errors import ActorsError
from actors.journal.base import Recovery
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
    "REFRESH_INTERVAL_S",
    "REGISTRY_KEY",
    "ApiKeyActor",
    "ApiKeyEvent",
    "ApiKeyState",
    "KeyCreated",
    "KeyRevoked",
    "LoadKeys",
    "RefreshKeys",
    "key_view",
]

log = structlog.get_logger("iceshop.auth")

APIKEY_KIND: Final = "apikey"
REGISTRY_KEY: Final = "all"
#: How often the actor reads its journal record again for other nodes' changes: the
#: longest a node keeps accepting a key revoked elsewhere whose event it missed.
REFRESH_INTERVAL_S: Final = 10.0
_REFRESH_TIMER: Final = "refresh"


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


class RefreshKeys(msgspec.Struct, frozen=True):
    """Read the journal record again (the actor's timer sends it; so may a test).
    Answers nothing useful: the registry is updated once the read is back."""


class _Stored:
    """The journal's record of this actor, read by a refresh."""

    __slots__ = ("recovery",)

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery


class _NotRead:
    """A refresh's journal read failed (the next one tries again)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _nothing() -> None:
    return None


def _reload(_: object) -> LoadKeys:
    return LoadKeys()


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

    __slots__ = ("prefix", "refresh_s", "registry", "state")

    event_type = ApiKeyEvent
    snapshot_type = ApiKeyState
    snapshot_every = 200

    def __init__(
        self,
        settings: Settings,
        registry: ApiKeyRegistry,
        *,
        refresh_s: float | None = REFRESH_INTERVAL_S,
    ) -> None:
        self.prefix = settings.prefix
        self.registry = registry
        self.state = ApiKeyState()
        #: Seconds between journal re-reads (None: never; one node alone needs none).
        self.refresh_s = refresh_s

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
        if self.refresh_s is not None:
            self.start_timer(_REFRESH_TIMER, self.refresh_s, RefreshKeys())

    # -- other nodes' changes ---------------------------------------------------------------

    def _refresh(self) -> None:
        if self.refresh_s is not None:
            self.start_timer(_REFRESH_TIMER, self.refresh_s, RefreshKeys())
        journal = self.system.journal
        if journal is None:
            return
        ids = [(APIKEY_KIND, REGISTRY_KEY)]

        async def read() -> Recovery:
            return (await journal.recover(ids))[0]

        try:
            self.pipe(read, _Stored, _NotRead)
        except ActorsError as exc:  # the system is stopping: nothing left to refresh
            log.debug("API key refresh skipped", error=repr(exc))

    def _adopt(self, stored: Recovery) -> None:
        """When the journal holds more than this actor (another node changed the keys;
        this node's own changes are in ``seq`` before they are stored, so a read that
        merely lags behind them is ignored), start again from the journal."""
        if stored.seq <= self.seq:
            return
        log.info("API keys changed on another node; reloading", seq=stored.seq)
        self.stop()
        self.pipe(_nothing, _reload)

    # -- commands -------------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case LoadKeys():
                return len(self.state.records)
            case RefreshKeys():
                self._refresh()
                return None
            case _Stored(recovery=stored):
                self._adopt(stored)
                return None
            case _NotRead(error=error):
                log.warning("API key refresh: journal not read", error=repr(error))
                return None
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
