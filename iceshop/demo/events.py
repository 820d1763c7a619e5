"""What the demo hears: the contract's events, as any core subscriber sees them live.

One subscription on ``<prefix>.events.>`` feeds the board (window events carry the whole
window view, so fill bars move while the crowd buys) and keeps what the checks need: the
latest demand figures per product, every decision announced, and each window's event
types by ``seq`` (delivery is at least once, so a repeated ``seq`` is dropped). Memory is
bounded: per window only types, times and sequence numbers are kept, and at most
``MAX_WINDOW_EVENTS`` of them.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog

from actors.nats import Msg, NatsTransport, Subscription
from iceshop.demo.board import Board

__all__ = ["MAX_WINDOW_EVENTS", "EventLog"]

log = structlog.get_logger("iceshop.demo")

MAX_WINDOW_EVENTS: Final = 100_000


class EventLog:
    def __init__(self, board: Board, prefix: str = "iceshop") -> None:
        self.board = board
        self.prefix = prefix
        #: product_id -> (seq, data) of its latest ``demand.updated``
        self.demand: dict[str, tuple[int, dict[str, Any]]] = {}
        #: decision events in arrival order (the decision without ``inputs``)
        self.decisions: list[dict[str, Any]] = []
        #: window_id -> seq -> (type, at); a repeat of a seq (at least once) is dropped
        self.window_events: dict[str, dict[int, tuple[str, str]]] = {}
        self.total = 0
        self.undecodable = 0
        self._kept = 0
        self._sub: Subscription | None = None

    async def attach(self, transport: NatsTransport) -> None:
        self._sub = await transport.subscribe(f"{self.prefix}.events.>", self._on_event)
        await transport.flush()

    async def detach(self, transport: NatsTransport) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await transport.unsubscribe(sub, drain=False)

    async def _on_event(self, msg: Msg) -> None:
        self.total += 1
        try:
            event = msgspec.json.decode(msg.data)
            entity, entity_id, kind = msg.subject.split(".")[-3:]
            seq, data, at = int(event["seq"]), event["data"], str(event["at"])
        except (msgspec.DecodeError, ValueError, KeyError, TypeError):
            self.undecodable += 1
            log.warning("undecodable event", subject=msg.subject)
            return
        if entity == "window":
            seen = self.window_events.setdefault(entity_id, {})
            if seq not in seen and self._kept < MAX_WINDOW_EVENTS:
                self._kept += 1
                seen[seq] = (kind, at)
            self.board.window(data, seq)
        elif entity == "demand":
            latest = self.demand.get(entity_id)
            if latest is None or seq > latest[0]:
                self.demand[entity_id] = (seq, data)
        elif entity == "decision":
            self.decisions.append(data)

    def window_seqs(self, window_id: str) -> list[int]:
        return sorted(self.window_events.get(window_id, {}))

    def window_types(self, window_id: str) -> list[str]:
        """The window's event types in ``seq`` order."""
        known = self.window_events.get(window_id, {})
        return [known[seq][0] for seq in sorted(known)]

    def window_event(self, window_id: str, kind: str) -> tuple[int, str, str] | None:
        """``(seq, type, at)`` of the window's first event of ``kind``."""
        known = self.window_events.get(window_id, {})
        return next(((q, k, at) for q, (k, at) in sorted(known.items()) if k == kind), None)

    def decisions_for(self, product_id: str) -> list[dict[str, Any]]:
        return [d for d in self.decisions if d.get("product_id") == product_id]
