"""The buyer actor (kind ``buyer``, key ``buyer_id``): registration and intents.

Submitting an intent needs the product's word (does it exist, in which currency), so the
turn only asks: it sends ``AddIntent`` with :meth:`request`, takes over the reply with
``reply_later`` and stores nothing. The intent is persisted when the product's
``IntentAccepted`` comes back, and the client hears ``ok`` after that commit. A
``ShopError`` from the product (``unknown_product``) is passed on and nothing is stored.

Every command is idempotent, because a client that hears nothing retries with the same
id:

- while a submit waits for the product, a repeat with the same parameters waits for the
  same answer (one ``AddIntent``), a repeat with other parameters is a conflict;
- once stored, a repeat gets the first reply again with the current status (rebuilt from
  the record: ``expires_at`` never changes), other parameters are a conflict;
- if the actor restarts while waiting, the reply handles are gone (they live in memory
  only) but the product's answer still arrives and is stored, so the retry finds it; a
  request that timed out leaves an intent in the product that the retry adopts (the
  product accepts an ``AddIntent`` it already has) or that expires there on its own.

A buyer holds at most ``max_open_intents_per_buyer`` open intents (a setting beyond the
contract): a submit beyond is ``limit_exceeded`` with ``details.open_intents`` and
``details.max_open_intents``, decided before the product is asked, so while the cap is
reached it also comes before ``unknown_product``.

A buyer has at most one open intent per product: a new one replaces the open one, which
becomes ``cancelled`` and leaves the product's demand (``RemoveIntent`` reason
``replaced``). A reservation (``IntentMatched`` from a window) turns the open intent for
its product ``matched`` and takes it out of the demand; when its reservations are all
released before it expires it is ``open`` again and re-added to the product (the product
treats a re-add as the same intent, not a new arrival). A new intent does not replace a
matched one: the matched one keeps its history and simply never reopens.

Expiry is a durable deadline ``intent:<intent_id>`` at ``expires_at``, so it happens on
time even if the node was down (then as soon as it starts). Everything told to the
product goes after commit, so the product never hears of a change that was not stored;
and because such a tell dies with the process, a buyer that starts tells the product
again what its unexpired intents imply (open: re-added; otherwise: removed).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import structlog

from actors import ActorRef, ActorsError, DeadlineFired, PersistentActor
from actors.envelope import Reply
from iceshop.buyer.directory import KnownBuyers
from iceshop.buyer.state import (
    LIVE,
    BuyerEvent,
    BuyerProfile,
    BuyerState,
    IntentJoinAdded,
    IntentJoinRemoved,
    IntentOpened,
    IntentRecord,
    IntentStatusSet,
    Registered,
    join_key,
)
from iceshop.protocol import (
    AddIntent,
    BuyerKnown,
    CheckBuyer,
    IntentAccepted,
    IntentMatched,
    RemoveIntent,
    Request,
    ReservationReleased,
)
from iceshop.settings import Settings
from iceshop.wire.commands import (
    DEFAULT_LOCALE,
    DEFAULT_WHATSAPP_OPT_IN,
    CommandKind,
    RegisterBuyer,
    SubmitIntent,
)
from iceshop.wire.errors import ErrorCode, ShopError, to_shop_error
from iceshop.wire.times import format_time
from iceshop.wire.views import CancelIntentReply, RegisterBuyerReply, SubmitIntentReply

__all__ = ["KIND", "BuyerActor", "ProductAnswer"]

log = structlog.get_logger("iceshop.buyer")

KIND = "buyer"
PRODUCT_KIND = "product"
DEADLINE_PREFIX = "intent:"


class ProductAnswer:
    """The product's answer to a submit's ``AddIntent``, back in the buyer's mailbox.

    It carries the submit itself, so an answer that reaches a restarted buyer (whose
    pending replies are gone) can still be stored."""

    __slots__ = ("add", "body", "reply")

    def __init__(self, body: SubmitIntent, add: AddIntent, reply: Any) -> None:
        self.body = body
        self.add = add
        self.reply = reply

    def __repr__(self) -> str:
        return f"ProductAnswer({self.body.intent_id!r}, {self.reply!r})"


class _Pending:
    """A submit waiting for the product: its request and whoever waits for the reply."""

    __slots__ = ("body", "replies")

    def __init__(self, body: SubmitIntent, reply: Reply) -> None:
        self.body = body
        self.replies = [reply]


def _same_submit(intent: IntentRecord | SubmitIntent, body: SubmitIntent) -> bool:
    return (
        intent.product_id == body.product_id
        and intent.quantity == body.quantity
        and intent.max_price_minor == body.max_price_minor
        and intent.ttl_s == body.ttl_s
    )


def _conflict(intent_id: str) -> ShopError:
    return ShopError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        f"intent {intent_id!r} was already submitted with other parameters",
        {"intent_id": intent_id},
    )


class BuyerActor(PersistentActor):
    """One buyer: profile, intents, and their life cycle (see the module docstring)."""

    __slots__ = ("_pending", "known", "settings", "state")

    event_type = BuyerEvent
    snapshot_type = BuyerState
    snapshot_every = 200
    passivate_after = 600.0
    #: How long a submit waits for the product before answering ``unavailable``.
    product_timeout_s: ClassVar[float] = 5.0

    def __init__(self, settings: Settings | None = None, known: KnownBuyers | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        #: The node's directory of registered buyers (see ``iceshop.buyer.directory``).
        self.known = known
        self.state = BuyerState()
        self._pending: dict[str, _Pending] = {}

    # -- persistence ----------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        self.state.apply(event)

    def snapshot(self) -> BuyerState:
        return self.state

    def restore(self, snapshot: BuyerState) -> None:
        self.state = snapshot

    def on_start(self) -> None:
        """Tell the products again what the stored intents imply. What was told after a
        commit is lost if the node died right after it (a cancel would stay in the
        demand until its expiry); the product takes every repeat as a no-op. A registered
        buyer (what the journal holds is committed) goes into the node's directory."""
        if self.state.profile is None:
            return
        if self.known is not None:
            self.known.add(self.key)
        now = self.now()
        for intent in self.state.intents.values():
            if intent.expires_at <= now:
                continue  # the product drops it on its own
            message: AddIntent | RemoveIntent
            if intent.status == "open":
                message = self._add_intent(intent)
            else:
                message = RemoveIntent(self.key, intent.intent_id, intent.status)
            try:
                self._product(intent.product_id).tell(message)
            except ActorsError as exc:
                log.warning("product not told again", buyer=self.key, error=repr(exc))

    # -- dispatch --------------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case Request(kind=CommandKind.INTENT_SUBMIT, body=SubmitIntent() as body):
                return self._submit(body)
            case ProductAnswer():
                self._on_answer(message)
                return None
            case Request(kind=CommandKind.INTENT_CANCEL, ids=ids):
                return self._cancel(ids.get("intent_id"))
            case Request(kind=CommandKind.BUYER_REGISTER, body=RegisterBuyer() as body):
                return self._register(body)
            case Request(kind=kind):
                return ShopError(ErrorCode.INTERNAL, f"{kind} is not a buyer command")
            case CheckBuyer():
                if self.state.profile is None:
                    return self._unknown_buyer()
                return BuyerKnown(self.key)
            case IntentMatched():
                self._on_matched(message)
                return None
            case ReservationReleased():
                self._on_released(message)
                return None
            case DeadlineFired(name=name) if name.startswith(DEADLINE_PREFIX):
                self._on_expiry(name[len(DEADLINE_PREFIX) :])
                return None
        raise TypeError(f"buyer cannot handle {message!r}")

    # -- registration ----------------------------------------------------------------------

    def _register(self, body: RegisterBuyer) -> RegisterBuyerReply:
        old = self.state.profile
        locale = body.locale if isinstance(body.locale, str) else None
        opt_in = body.whatsapp_opt_in if isinstance(body.whatsapp_opt_in, bool) else None
        new = BuyerProfile(
            name=body.name,
            phone=body.phone,
            locale=locale or (old.locale if old is not None else DEFAULT_LOCALE),
            whatsapp_opt_in=(
                opt_in
                if opt_in is not None
                else (old.whatsapp_opt_in if old is not None else DEFAULT_WHATSAPP_OPT_IN)
            ),
        )
        if new != old:
            self.persist(Registered(new))
            if old is None and self.known is not None:
                self.after_commit(partial(self.known.add, self.key))
            if old is not None and (
                (old.phone, old.locale, old.whatsapp_opt_in)
                != (new.phone, new.locale, new.whatsapp_opt_in)
            ):
                # The products hold a copy of the contact details for notifications.
                for intent in self.state.intents.values():
                    if intent.status == "open":
                        self._tell_product(intent.product_id, self._add_intent(intent))
        return RegisterBuyerReply(buyer_id=self.key, created=old is None)

    # -- submit ----------------------------------------------------------------------------

    def _submit(self, body: SubmitIntent) -> Any:
        stored = self.state.intents.get(body.intent_id)
        if stored is not None:
            if not _same_submit(stored, body):
                return _conflict(body.intent_id)
            return self._submit_reply(stored)
        pending = self._pending.get(body.intent_id)
        if pending is not None:
            if pending.body != body:
                return _conflict(body.intent_id)
            pending.replies.append(self.reply_later())
            return None
        profile = self.state.profile
        if profile is None:
            return self._unknown_buyer()
        too_many = self._open_limit(body.product_id)
        if too_many is not None:
            return too_many
        now = self.now()
        add = AddIntent(
            buyer_id=self.key,
            intent_id=body.intent_id,
            quantity=body.quantity,
            max_price_minor=body.max_price_minor,
            submitted_at=now,
            expires_at=now + body.ttl_s,
            whatsapp_opt_in=profile.whatsapp_opt_in,
            locale=profile.locale,
            phone=profile.phone,
        )
        self._pending[body.intent_id] = _Pending(body, self.reply_later())
        self.request(
            self._product(body.product_id),
            add,
            lambda reply: ProductAnswer(body, add, reply),
            timeout=self.product_timeout_s,
        )
        return None

    def _open_limit(self, product_id: str) -> ShopError | None:
        """``limit_exceeded`` if a new intent for ``product_id`` would make more open
        intents than ``max_open_intents_per_buyer`` (one for the same product replaces
        the open one, so it never counts; submits waiting for their product do)."""
        limit = self.settings.max_open_intents_per_buyer
        products = {i.product_id for i in self.state.intents.values() if i.status == "open"}
        products.update(p.body.product_id for p in self._pending.values())
        products.discard(product_id)
        if len(products) < limit:
            return None
        return ShopError(
            ErrorCode.LIMIT_EXCEEDED,
            f"buyer {self.key!r} has {len(products)} open intents, the most allowed; "
            "cancel one first",
            {"open_intents": len(products), "max_open_intents": limit},
        )

    def _on_answer(self, answer: ProductAnswer) -> None:
        body = answer.body
        pending = self._pending.get(body.intent_id)
        if pending is not None and pending.body != body:
            # The answer to an earlier submit of this id (from before a restart): it
            # decides what the id means, but the waiting submit gets its own answer.
            pending = None
        else:
            self._pending.pop(body.intent_id, None)
        reply = answer.reply
        result: Any
        if isinstance(reply, IntentAccepted):
            result = self._open(body, answer.add)
        elif isinstance(reply, ShopError):
            result = reply
        elif isinstance(reply, BaseException):
            result = to_shop_error(reply)
        else:
            log.error("unexpected answer to AddIntent", buyer=self.key, reply=repr(reply))
            result = ShopError(ErrorCode.INTERNAL, "internal error")
        if pending is not None:
            for handle in pending.replies:
                self.respond(handle, result)

    def _open(self, body: SubmitIntent, add: AddIntent) -> SubmitIntentReply | ShopError:
        stored = self.state.intents.get(body.intent_id)
        if stored is not None:  # an earlier answer to the same submit was stored
            return (
                self._submit_reply(stored)
                if _same_submit(stored, body)
                else _conflict(body.intent_id)
            )
        now = self.now()
        old = self.state.open_intent(body.product_id)
        if old is not None:
            self.persist(IntentStatusSet(old.intent_id, "cancelled", now))
            self.cancel_deadline(DEADLINE_PREFIX + old.intent_id)
            self._tell_product(old.product_id, RemoveIntent(self.key, old.intent_id, "replaced"))
        intent = IntentRecord(
            intent_id=body.intent_id,
            product_id=body.product_id,
            quantity=body.quantity,
            max_price_minor=body.max_price_minor,
            ttl_s=body.ttl_s,
            submitted_at=add.submitted_at,
            expires_at=add.expires_at,
        )
        self.persist(IntentOpened(intent))
        self.set_deadline(DEADLINE_PREFIX + intent.intent_id, intent.expires_at)
        return self._submit_reply(intent)

    def _submit_reply(self, intent: IntentRecord) -> SubmitIntentReply:
        return SubmitIntentReply(
            intent_id=intent.intent_id,
            status=intent.status,
            expires_at=format_time(intent.expires_at),
        )

    # -- cancel and expiry ----------------------------------------------------------------

    def _cancel(self, intent_id: str | None) -> CancelIntentReply | ShopError:
        intent = None if intent_id is None else self.state.intents.get(intent_id)
        if intent is None:
            return ShopError(
                ErrorCode.UNKNOWN_INTENT,
                f"buyer {self.key!r} has no intent {intent_id!r}",
                {"intent_id": intent_id},
            )
        if intent.status in LIVE:
            self._close(intent, "cancelled")
        return CancelIntentReply(
            intent_id=intent.intent_id, status=self.state.intents[intent.intent_id].status
        )

    def _on_expiry(self, intent_id: str) -> None:
        intent = self.state.intents.get(intent_id)
        if intent is not None and intent.status in LIVE:
            self._close(intent, "expired")

    def _close(self, intent: IntentRecord, status: Any) -> None:
        """End a live intent (``cancelled`` or ``expired``); an open one leaves the demand."""
        self.persist(IntentStatusSet(intent.intent_id, status, self.now()))
        self.cancel_deadline(DEADLINE_PREFIX + intent.intent_id)
        if intent.status == "open":
            self._tell_product(intent.product_id, RemoveIntent(self.key, intent.intent_id, status))

    # -- reservations ------------------------------------------------------------------------

    def _on_matched(self, message: IntentMatched) -> None:
        intent = self.state.current(message.product_id)
        if intent is None or intent.status not in LIVE:
            return  # joining needs no intent
        key = join_key(message.window_id, message.join_id)
        if key in intent.joins:
            return
        self.persist(IntentJoinAdded(intent.intent_id, key, self.now()))
        if intent.status == "open":
            self._tell_product(
                intent.product_id, RemoveIntent(self.key, intent.intent_id, "matched")
            )

    def _on_released(self, message: ReservationReleased) -> None:
        intent = self.state.current(message.product_id)
        key = join_key(message.window_id, message.join_id)
        if intent is None or key not in intent.joins:
            return
        now = self.now()
        self.persist(IntentJoinRemoved(intent.intent_id, key, now))
        intent = self.state.intents[intent.intent_id]
        if intent.status != "matched" or intent.joins:
            return
        if intent.expires_at <= now:
            self._close(intent, "expired")
            return
        self.persist(IntentStatusSet(intent.intent_id, "open", now))
        self._tell_product(intent.product_id, self._add_intent(intent))

    # -- helpers ----------------------------------------------------------------------------

    def _add_intent(self, intent: IntentRecord) -> AddIntent:
        """The ``AddIntent`` that (re-)adds a stored intent, with current contact details."""
        profile = self.state.profile
        assert profile is not None
        return AddIntent(
            buyer_id=self.key,
            intent_id=intent.intent_id,
            quantity=intent.quantity,
            max_price_minor=intent.max_price_minor,
            submitted_at=intent.submitted_at,
            expires_at=intent.expires_at,
            whatsapp_opt_in=profile.whatsapp_opt_in,
            locale=profile.locale,
            phone=profile.phone,
        )

    def _product(self, product_id: str) -> ActorRef:
        return self.system.ref(PRODUCT_KIND, product_id)

    def _tell_product(self, product_id: str, message: Any) -> None:
        self.tell_after_commit(self._product(product_id), message)

    def _unknown_buyer(self) -> ShopError:
        return ShopError(
            ErrorCode.UNKNOWN_BUYER, f"buyer {self.key!r} is not registered", {"buyer_id": self.key}
        )
