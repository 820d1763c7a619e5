"""The flash window actor: one per window, keyed by ``window_id``.

It owns the sale: it activates at ``activates_at`` and closes at ``expires_at`` through
two durable deadlines (re-armed after a restart; a deadline missed while the node was
down fires as soon as it is back), takes joins under a hard stock limit and a per-buyer
limit, closes at once when it sells out, and applies the tipping point at close. Every
change of the window is one journal event and one contract event
(``iceshop.events.window.<id>.<type>``, ``seq`` 1, 2, ... per window, ``event_id``
``window.<id>.<seq>`` so a replay publishes the same ids), published from the outbox
after commit. The module ``state`` holds the rules; this one does the talking.

**Joins.** The precedence is the contract's: a repeated ``join_id`` (same buyer and
quantity: the first reply with the current status; other parameters:
``idempotency_conflict``), then ``unknown_buyer``, then the window's state, the per-buyer
limit and the stock. Only successful joins are stored; a rejected join changes nothing
and leaves its ``join_id`` free for a retry. Stock is decided in the turn that applies the
join, and a turn is atomic, so nothing is ever oversold.

**Knowing the buyer.** Whether a buyer exists is the buyer actor's knowledge, so the
first join of a buyer the window has not verified asks it (``CheckBuyer``) and waits
(``reply_later``). Joins of that buyer that arrive meanwhile queue behind the check, and
so do joins reusing a ``join_id`` that is still waiting, so each ``join_id`` is decided
once, in arrival order; joins of other buyers go on. The answer is cached: a buyer with a
committed join is known from the journal itself (its joins are only stored after a
check), and buyers verified without a join (e.g. they came too late) are kept in a
bounded in-memory set. No ``BuyerVerified`` event is written: it would add a write for
every rejected join of a flash crowd and nothing is lost by asking again after a restart.
A check has a timeout and a guard timer, so a lost answer fails its joins as
``unavailable`` (retryable) instead of leaving them waiting; at most ``max_waiting``
joins wait at once (more are ``overloaded``).

**Notices.** Three peers must hear about the window: the product when it activates (to
record notification requests), the seller at the end (``ReturnStock``: the unreserved
quantity, all of it when the window failed) and the campaign at the end
(``WindowEnded``). Losing one would leave stock or a seller's window slot stranded, so
they are delivered at least once: the events that create them mark them pending in the
state, a durable ``notify`` deadline (due at once, so it fires only after the commit)
sends them as requests, and each confirmation is journaled (``NoticeAcked``); the
deadline re-fires with backoff until every notice is confirmed, across restarts. The
receivers are idempotent by ``window_id``. Buyers hear about their own reservations
(``IntentMatched``, ``ReservationReleased``) with ``tell_after_commit``: it is the hot
path, and a lost one only leaves an intent open. Such a tell dies with the process (or
between nodes), so a window that comes back from its journal while still selling, or
closed but with notices not yet confirmed (a crash at the close), tells each of its
buyers again where their reservations stand; the buyer ignores what it already knows
(it keys them by window and join id). A window closed longer ago stays quiet: a tell
lost then leaves an intent ``matched`` until its own expiry.

**Audit.** An admin's cancel is audited (``window.cancelled``: the principal that sent
it, the reason it gave, the window as it stood and what it released) in the cancel's
own commit (``iceshop.audit``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, Final, Literal

import structlog

from actors import ActorsError, DeadlineFired, Overflow, PersistentActor
from iceshop.audit import actor_of, emit_audit, window_cancelled
from iceshop.buyer.directory import KnownBuyers
from iceshop.observability.counters import ShopCounters
from iceshop.protocol import (
    BuyerKnown,
    CheckBuyer,
    CreateWindow,
    IntentMatched,
    Principal,
    Request,
    ReservationReleased,
)
from iceshop.settings import Settings
from iceshop.window.access import denied, may_list_reservations
from iceshop.window.events import (
    Activated,
    Cancelled,
    Closed,
    Created,
    Joined,
    Left,
    NoticeAcked,
    Reservation,
    SoldOut,
    WindowEvent,
    WindowSnapshot,
)
from iceshop.window.messages import BuyerChecked, NoticeReply
from iceshop.window.notices import NOTICE_TIMEOUT_S, notice, retry_delay
from iceshop.window.state import WindowData, unknown_window
from iceshop.window.views import event_body, join_reply, reservations_page, window_view
from iceshop.window.waiting import Reply, Waiting, WaitingRoom
from iceshop.wire import (
    AdminCancelWindow,
    CommandKind,
    ErrorCode,
    Join,
    JoinReply,
    Leave,
    LeaveReply,
    ListReservations,
    ShopError,
    encode,
    event_subject,
    format_time,
    parse_headers,
    to_shop_error,
)

__all__ = [
    "ACTIVATE",
    "CHECK_TIMEOUT_S",
    "EXPIRE",
    "NOTIFY",
    "WindowActor",
]

log = structlog.get_logger("iceshop.window")

#: Durable deadline names.
ACTIVATE: Final = "activate"
EXPIRE: Final = "expire"
NOTIFY: Final = "notify"

CHECK_TIMEOUT_S: Final = 5.0
_VERIFIED_MAX: Final = 100_000

_LATER: Final = object()  # the join waits for a buyer check; it is answered later


def _create_error(m: CreateWindow) -> ShopError | None:
    problems = []
    if m.quantity_total < 1:
        problems.append("quantity_total must be at least 1")
    if m.max_per_buyer < 1:
        problems.append("max_per_buyer must be at least 1")
    if m.min_participants < 0 or m.unit_price_minor < 0:
        problems.append("min_participants and unit_price_minor must not be negative")
    if not m.expires_at > m.activates_at:
        problems.append("expires_at must be after activates_at")
    if not problems:
        return None
    return ShopError.invalid("CreateWindow: " + "; ".join(problems))


class WindowActor(PersistentActor):
    """One flash window. Register it with its settings::

    system.register("window", lambda: WindowActor(settings), cls=WindowActor)
    """

    __slots__ = (
        "_at_ms",
        "_at_text",
        "_events_head",
        "_notice_attempts",
        "_room",
        "_verified",
        "counters",
        "known",
        "settings",
        "w",
    )

    event_type: ClassVar[Any] = WindowEvent
    snapshot_type: ClassVar[Any] = WindowSnapshot
    #: A hot window with 100k joins replays at most this many events on recovery.
    snapshot_every: ClassVar[int] = 10_000
    #: A flash crowd queues here; beyond it the node answers ``overloaded`` at once.
    mailbox_capacity: ClassVar[int] = 10_000
    overflow: ClassVar[Overflow] = Overflow.REJECT
    #: Joins applied per turn, and so committed together (group commit).
    throughput: ClassVar[int] = 512
    passivate_after: ClassVar[float | None] = 600.0
    #: Joins that may wait for buyer checks at once; more are ``overloaded``.
    max_waiting: ClassVar[int] = 10_000

    def __init__(
        self,
        settings: Settings | None = None,
        counters: ShopCounters | None = None,
        known: KnownBuyers | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        #: The node's directory of registered buyers: a buyer in it needs no check.
        self.known = known if known is not None else KnownBuyers(0)
        #: Joins by outcome, for the node's metrics.
        self.counters = counters if counters is not None else ShopCounters()
        self.w: WindowData | None = None
        self._room = WaitingRoom()
        self._verified: set[str] = set()
        self._notice_attempts = 0
        self._events_head: str | None = None
        # The last event time formatted (joins in a crowd share their millisecond).
        self._at_ms = -1
        self._at_text = ""

    # -- persistence ---------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        w = self.w
        if w is not None:
            w.apply(event)
        elif type(event) is Created:
            self.w = WindowData(event)
        else:
            raise ValueError(f"window {self.key}: first event must be created, not {event!r}")

    def snapshot(self) -> WindowSnapshot:
        assert self.w is not None
        return self.w.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.w = WindowData.restore(snapshot)

    def on_start(self) -> None:
        """Coming back from the journal while active, or closed so recently that its
        notices are not all confirmed (after a crash, a passivation or a shard move):
        tell the buyers again where their reservations stand (see the module docstring).
        A window being created has no state yet and tells nothing."""
        w = self.w
        if w is None or not (w.state == "active" or (w.ended and w.unacked)):
            return
        product_id = w.info.product_id
        for r in w.reservations.values():
            message: IntentMatched | ReservationReleased = (
                ReservationReleased(product_id, self.key, r.join_id)
                if w.status_of(r) == "released"
                else IntentMatched(product_id, self.key, r.join_id)
            )
            try:
                self.system.ref("buyer", r.buyer_id).tell(message)
            except ActorsError as exc:
                log.warning("buyer not told again", window_id=self.key, error=repr(exc))

    def on_stop(self) -> None:
        """Joins still waiting for a buyer check go to the window's next incarnation,
        here or on the node that now holds its shard, with their reply handles: the
        requester gets the real answer. Only when the node is stopping do they get a
        retryable ``unavailable``."""
        waiting = self._room.take_all()
        if not waiting:
            return
        gone = ShopError(ErrorCode.UNAVAILABLE, "the window stopped before the join; retry")
        clock = self.system.clock
        for item in waiting:
            deadline = None
            if item.deadline is not None:
                deadline = clock.monotonic() + (item.deadline - clock.time())
            try:
                self.system.ref("window", self.key).tell(
                    Request(CommandKind.WINDOW_JOIN, item.join, {}, item.principal),
                    reply_to=item.reply,
                    deadline=deadline,
                )
            except ActorsError:
                self.counters.count_join(gone)
                self.respond(item.reply, gone)

    # -- dispatch ------------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Request:
            result = self._command(message)
            if message.kind == CommandKind.WINDOW_JOIN and result is not None:
                self._count_join(result)  # None: it waits for a buyer check
            return result
        if kind is BuyerChecked:
            self._checked(message.buyer_id, message.result)
            return None
        if kind is DeadlineFired:
            self._deadline(message.name)
            return None
        if kind is CreateWindow:
            return self._create(message)
        if kind is NoticeReply:
            self._notice_reply(message.notice, message.result)
            return None
        raise TypeError(f"window {self.key}: unexpected message {message!r}")

    def _command(self, request: Request) -> Any:
        kind = request.kind
        body = request.body
        refused = denied(request.principal, kind, body)
        if refused is not None:
            return refused
        w = self.w
        if w is None:
            if kind == CommandKind.WINDOW_RESERVATIONS and not may_list_reservations(
                request.principal, None
            ):
                # forbidden before unknown_*: and no telling which windows exist
                return ShopError(ErrorCode.FORBIDDEN, "reservations are for admins and its seller")
            return unknown_window(self.key)
        if not w.ended:
            self._catch_up(w)
        if kind == CommandKind.WINDOW_JOIN and type(body) is Join:
            result = self._join(body, None, None, None, request.principal)
            return None if result is _LATER else result
        if kind == CommandKind.WINDOW_LEAVE and type(body) is Leave:
            return self._leave(body)
        if kind == CommandKind.WINDOW_GET:
            return window_view(w)
        if kind == CommandKind.WINDOW_RESERVATIONS and type(body) is ListReservations:
            if not may_list_reservations(request.principal, w.info.seller_id):
                return ShopError(ErrorCode.FORBIDDEN, "reservations are for admins and its seller")
            return reservations_page(w, body.limit, body.cursor)
        if kind == CommandKind.ADMIN_WINDOW_CANCEL and type(body) is AdminCancelWindow:
            return self._cancel(body.reason, request.principal)
        return ShopError.invalid(f"{kind.value} with {type(body).__name__} is not a window command")

    # -- create and timers ---------------------------------------------------------------

    def _create(self, m: CreateWindow) -> Any:
        w = self.w
        if w is not None:
            return window_view(w)  # the campaign repeats itself: nothing changes
        error = _create_error(m)
        if error is not None:
            log.warning("window not created", window_id=self.key, error=error.message)
            return error
        now = self.now()
        self.persist(
            Created(
                window_id=self.key,
                product_id=m.product_id,
                seller_id=m.seller_id,
                decision_id=m.decision_id,
                unit_price_minor=m.unit_price_minor,
                currency=m.currency,
                quantity_total=m.quantity_total,
                min_participants=m.min_participants,
                max_per_buyer=m.max_per_buyer,
                activates_at=m.activates_at,
                expires_at=m.expires_at,
                at=now,
            )
        )
        # A time already past fires as soon as this turn has committed.
        self.set_deadline(ACTIVATE, m.activates_at)
        self.set_deadline(EXPIRE, m.expires_at)
        self._publish("created", now)
        assert self.w is not None
        return window_view(self.w)

    def _deadline(self, name: str) -> None:
        w = self.w
        if w is None:
            return
        now = self.now()
        if name == ACTIVATE:
            if w.state == "scheduled":
                self._activate(now)
        elif name == EXPIRE:
            if w.state == "scheduled":  # both missed while down: keep the lifecycle order
                self._activate(now)
            if w.state == "active":
                self._close("expired", now)
        elif name == NOTIFY:
            self._send_notices(now)

    def _catch_up(self, w: WindowData) -> None:
        """Apply a transition whose time has come but whose deadline has not been
        delivered yet (timer lag under load, a node that has just come back), so that the
        clock, not the timer's delivery, decides the state a command sees: no join after
        ``expires_at``, no cancel of a window that has already closed. The late deadline
        then finds the transition done and does nothing."""
        now = self.now()
        info = w.info
        if w.state == "scheduled" and now >= info.activates_at:
            self._activate(now)
        if w.state == "active" and now >= info.expires_at:
            self._close("expired", now)

    def _activate(self, now: float) -> None:
        self.persist(Activated(now))
        self._publish("activated", now)
        self.set_deadline(NOTIFY, now)

    def _close(self, reason: Literal["expired", "sold_out"], now: float) -> None:
        w = self.w
        assert w is not None
        if reason == "sold_out":
            self.persist(SoldOut(now))
            self._publish("sold_out", now)
        released = w.unreleased() if w.would_fail() else []
        self.persist(Closed(reason, now))
        self._publish("closed", now)
        self._ended(released, now)

    def _cancel(self, reason: str, principal: Principal | None) -> Any:
        w = self.w
        assert w is not None
        if w.state == "cancelled":
            return window_view(w)
        if w.state == "closed":
            return ShopError(ErrorCode.WINDOW_CLOSED, "the window is already closed")
        before = window_view(w)
        released = w.unreleased()
        now = self.now()
        self.persist(Cancelled(reason, now))
        self._publish("cancelled", now)
        record = window_cancelled(
            before,
            reason=reason,
            actor=actor_of(principal),
            at=now,
            released_reservations=len(released),
            released_quantity=sum(r.quantity for r in released),
        )
        emit_audit(self, self.settings.prefix, record)
        self._ended(released, now)
        return window_view(w)

    def _ended(self, released: list[Reservation], now: float) -> None:
        self.cancel_deadline(ACTIVATE)
        self.cancel_deadline(EXPIRE)
        assert self.w is not None
        product_id = self.w.info.product_id
        for r in released:
            self._tell_buyer(r.buyer_id, ReservationReleased(product_id, self.key, r.join_id))
        self.set_deadline(NOTIFY, now)

    # -- joins -------------------------------------------------------------------------------

    def _join(
        self,
        join: Join,
        reply: Reply | None,
        deadline: float | None,
        resolved: tuple[str, ShopError | None] | None,
        principal: Principal | None = None,
    ) -> Any:
        """Decide a join now, or queue it behind a buyer check (``_LATER``). ``reply`` is
        None for a join straight from the mailbox; ``resolved`` is the buyer check that
        has just been answered, when draining its queue."""
        w = self.w
        assert w is not None
        join_id = join.join_id
        key = self._room.queue_of(join_id)
        if key is not None:
            return self._wait(key, join, reply, deadline, principal)
        buyer = join.buyer_id
        prior = w.replay(join_id, buyer, join.quantity)
        if prior is not None:
            return join_reply(w, prior) if type(prior) is Reservation else prior
        if resolved is not None and resolved[0] == buyer:
            if resolved[1] is not None:
                return resolved[1]
        elif buyer not in w.held and buyer not in self._verified and buyer not in self.known:
            return self._wait(buyer, join, reply, deadline, principal)
        error = w.admission_error(buyer, join.quantity)
        if error is not None:
            return error
        return self._reserve(w, join)

    def _reserve(self, w: WindowData, join: Join) -> JoinReply:
        now = self.now()
        join_id = join.join_id
        self.persist(Joined(join_id, join.buyer_id, join.quantity, now))
        self._publish("joined", now, w.reservations[join_id])
        self._tell_buyer(join.buyer_id, IntentMatched(w.info.product_id, self.key, join_id))
        reply = JoinReply(
            join_id=join_id,
            window_id=self.key,
            status="reserved",
            quantity=join.quantity,
            unit_price_minor=w.info.unit_price_minor,
            currency=w.info.currency,
        )
        if w.quantity_reserved >= w.info.quantity_total:
            self._close("sold_out", now)
        return reply

    def _wait(
        self,
        key: str,
        join: Join,
        reply: Reply | None,
        deadline: float | None,
        principal: Principal | None,
    ) -> Any:
        """Queue ``join`` behind the check of buyer ``key`` (starting it if needed)."""
        room = self._room
        if len(room) >= self.max_waiting:
            return ShopError(ErrorCode.OVERLOADED, "too many joins wait for buyer checks")
        if key not in room:
            failure = self._start_check(key)
            if failure is not None:
                return failure
            room.open(key)
        if reply is None:
            deadline = self._header_deadline()
            reply = self.reply_later()
        # Its trace goes with it: it is decided (stored, published) in a later turn.
        room.add(key, Waiting(join, reply, deadline, self.current_span, principal))
        return _LATER

    def _start_check(self, buyer_id: str) -> ShopError | None:
        try:
            target = self.system.ref("buyer", buyer_id)
        except ActorsError as exc:
            return to_shop_error(exc)
        # The answer is certain: the buyer's reply, or AskTimeout after CHECK_TIMEOUT_S
        # (request replies are never dropped by a full mailbox).
        self.request(target, CheckBuyer(), partial(BuyerChecked, buyer_id), timeout=CHECK_TIMEOUT_S)
        return None

    def _checked(self, buyer_id: str, result: Any) -> None:
        """A buyer check answered: decide every join that waited for it, in order."""
        error: ShopError | None = None
        if isinstance(result, BuyerKnown):
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified.add(buyer_id)
        elif isinstance(result, ShopError):
            error = result
        elif isinstance(result, BaseException):
            error = to_shop_error(result)
        else:
            log.error("unexpected answer to CheckBuyer", window_id=self.key, answer=repr(result))
            error = ShopError(ErrorCode.INTERNAL, "internal error")
        queue = self._room.take(buyer_id)
        if not queue:
            return
        w = self.w
        if w is not None and not w.ended:
            self._catch_up(w)
        now = self.now()
        resolved = (buyer_id, error)
        for item in queue:
            if item.deadline is not None and now > item.deadline:
                value: Any = ShopError(
                    ErrorCode.UNAVAILABLE, "the request's deadline passed before its turn"
                )
            else:
                with self.continue_trace(item.trace):
                    value = self._join(
                        item.join, item.reply, item.deadline, resolved, item.principal
                    )
            if value is not _LATER:
                self._count_join(value)
                self.respond(item.reply, value)

    def _count_join(self, result: Any) -> None:
        """Count a join's answer once it goes out: after this turn's commit, with the
        turn's replies (a rejection that stored nothing too, behind the commits still in
        flight). A commit that fails counts nothing here: the join was answered with the
        runtime's ``CommitFailed`` and is counted in ``iceshop_journal_commit_failures``.
        Joins the runtime refuses because their deadline passed before their turn never
        reach this actor: the runtime counts them (``iceshop_actor_expired_total``)."""
        self.after_commit(partial(self.counters.count_join, result))

    def _header_deadline(self) -> float | None:
        """The ``Iceshop-Deadline`` of the message being handled, for a join that waits
        (the runtime checks it only when the message's turn comes)."""
        headers = self.headers
        if not headers:
            return None
        try:
            return parse_headers(headers).deadline_at()
        except ShopError:
            return None

    # -- leave -------------------------------------------------------------------------------

    def _leave(self, leave: Leave) -> Any:
        w = self.w
        assert w is not None
        found = w.leave_error(leave.join_id, leave.buyer_id)
        if type(found) is not Reservation:
            return found
        if w.status_of(found) != "released":
            now = self.now()
            self.persist(Left(leave.join_id, now))
            self._publish("left", now, w.reservations[leave.join_id])
            self._tell_buyer(
                leave.buyer_id, ReservationReleased(w.info.product_id, self.key, leave.join_id)
            )
        return LeaveReply(join_id=leave.join_id, status="released")

    # -- notices -----------------------------------------------------------------------------

    def _send_notices(self, now: float) -> None:
        w = self.w
        assert w is not None
        if not w.unacked:
            return
        for name in sorted(w.unacked):
            kind, key, message = notice(w, name)
            try:
                target = self.system.ref(kind, key)
            except ActorsError as exc:
                log.warning("notice not sent", window_id=self.key, notice=name, error=repr(exc))
                continue
            self.request(target, message, partial(NoticeReply, name), timeout=NOTICE_TIMEOUT_S)
        self._notice_attempts += 1
        self.set_deadline(NOTIFY, now + retry_delay(self._notice_attempts))

    def _notice_reply(self, name: str, result: Any) -> None:
        w = self.w
        if w is None or name not in w.unacked:
            return
        if isinstance(result, ActorsError):
            return  # the notify deadline sends it again
        if isinstance(result, ShopError):
            log.warning("notice refused", window_id=self.key, notice=name, error=repr(result))
        self.persist(NoticeAcked(name))
        if not w.unacked:
            self.cancel_deadline(NOTIFY)
            self._notice_attempts = 0

    # -- output ------------------------------------------------------------------------------

    def _tell_buyer(self, buyer_id: str, message: Any) -> None:
        try:
            self.tell_after_commit(self.system.ref("buyer", buyer_id), message)
        except ActorsError as exc:
            log.warning("buyer not told", window_id=self.key, error=repr(exc))

    def _publish(self, event_type: str, at: float, reservation: Reservation | None = None) -> None:
        w = self.w
        assert w is not None
        head = self._events_head
        if head is None:
            subject = event_subject("window", self.key, event_type, self.settings.prefix)
            head = self._events_head = subject[: -len(event_type)]
        ms = round(at * 1000)
        if ms != self._at_ms:
            self._at_ms = ms
            self._at_text = format_time(at)
        body = event_body(w, event_type, self._at_text, reservation)
        self.emit(head + event_type, encode(body), id=body.event_id)
