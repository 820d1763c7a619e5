"""A node hosting persistent ledger actors over NATS, for the SIGKILL crash test.

    python tests/crash_node.py NATS_URL JOURNAL_PATH CLOCK_OFFSET_S

Requests on ``crash.ledger.<key>.add`` carry ``{"id": ..., "deadline_in": s | null}``;
the actor stores the id and, when asked, a durable deadline ``s`` seconds later (wall).
``crash.ledger.<key>.get`` answers the stored ids and the deadlines that fired. The
clock offset lets the test restart the node "later" without waiting.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

from actors import ActorSystem, DeadlineFired, PersistentActor, RealClock
from actors.journal import SqliteJournal
from actors.nats import NatsBinding, NatsTransport, Routed


class Stored(msgspec.Struct, frozen=True, tag=True):
    id: str


class Fired(msgspec.Struct, frozen=True, tag=True):
    name: str


class Add(msgspec.Struct, frozen=True):
    id: str
    deadline_in: float | None = None


class Get(msgspec.Struct, frozen=True):
    pass


class Ledger(PersistentActor):
    event_type = Stored | Fired

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.fired: list[str] = []

    def apply(self, event: Any) -> None:
        if isinstance(event, Stored):
            self.ids.append(event.id)
        else:
            self.fired.append(event.name)

    def receive(self, message: Any) -> Any:
        if isinstance(message, Add):
            self.persist(Stored(message.id))
            if message.deadline_in is not None:
                self.set_deadline(message.id, self.now() + message.deadline_in)
            return {"ok": True}
        if isinstance(message, DeadlineFired):
            self.persist(Fired(message.name))
            return None
        return {"ids": self.ids, "fired": self.fired}


_add = msgspec.json.Decoder(Add)


def route(tokens: list[str], headers: Mapping[str, str], payload: bytes) -> Routed | bytes:
    key, action = tokens[0], tokens[1]
    if action == "add":
        return Routed(key, _add.decode(payload))
    return Routed(key, Get())


def encode(value: Any) -> bytes:
    if isinstance(value, BaseException):
        return msgspec.json.encode({"error": repr(value)})
    return msgspec.json.encode(value)


async def main(url: str, path: str, offset: float) -> None:
    system = ActorSystem(clock=RealClock(offset=offset), journal=SqliteJournal(path))
    async with system, NatsTransport(url) as transport, NatsBinding(system, transport) as binding:
        system.register("ledger", Ledger)
        await binding.serve("ledger", "crash.ledger.*.*", route, encode)
        await transport.flush()
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
