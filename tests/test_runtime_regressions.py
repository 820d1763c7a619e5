"""Regression tests for runtime bugs found in review (each failed before its fix)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from actors import Actor, ActorFailed, DeadlineFired, PersistentActor
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit

pytestmark = pytest.mark.anyio


class Noted(msgspec.Struct, frozen=True, tag=True):
    what: str


class Notes(PersistentActor):
    event_type = Noted
    passivate_after = 5.0

    def __init__(self) -> None:
        self.notes: list[str] = []

    def apply(self, event: Any) -> None:
        self.notes.append(event.what)

    def receive(self, message: Any) -> Any:
        if isinstance(message, DeadlineFired):
            self.persist(Noted(f"fired {message.name}"))
            return None
        if isinstance(message, tuple) and message[0] == "at":
            self.set_deadline(message[1], message[2])
            return None
        if message == "cancel x":
            self.cancel_deadline("x")
            return None
        return list(self.notes)


async def test_deadline_waking_a_passivated_actor_fires_once_even_if_wall_time_steps() -> None:
    async with ActorTestKit(journal=MemoryJournal(), sweep_interval=1.0) as kit:
        kit.system.register("n", Notes)
        ref = kit.system.ref("n", "k")
        await ref.ask(("at", "x", kit.clock.time() + 100))
        await kit.advance(20)
        assert not kit.system.is_active("n", "k")
        kit.clock._epoch += 0.25  # the wall clock is stepped (NTP): re-arming recomputes
        await kit.advance(100)
        assert await ref.ask("get") == ["fired x"]
        # and the fired deadline is forgotten once its removal committed
        assert kit.system.timers.get("n", "k", "x") is None


async def test_a_fire_overtaken_by_a_replacement_does_not_cancel_the_new_deadline() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("n", Notes)
        ref = kit.system.ref("n", "k")
        await ref.ask(("at", "x", kit.clock.time() + 10))
        actor = ref._target()
        # The old deadline fires while a turn that replaces it is being committed.
        ref.tell(("at", "x", kit.clock.time() + 50))
        kit.system.persistence.turn(actor)  # type: ignore[union-attr]
        assert actor._p_flight  # the replacing turn is in flight
        kit.clock.set(10)
        kit.system.timers.fire_due()
        await kit.settle()
        assert actor.notes == []  # the stale fire never reached the actor
        stored = await journal.deadlines()
        assert [(d.name, d.due - kit.clock.time()) for d in stored] == [("x", 40.0)]
        await kit.advance(40)
        assert await ref.ask("get") == ["fired x"]


async def test_timers_work_in_spawned_actors() -> None:
    got: list[str] = []

    class Alarm(Actor):
        def receive(self, message: Any) -> Any:
            if message == "arm":
                self.start_timer("t", 1.0, "ring")
            else:
                got.append(message)

    async with ActorTestKit() as kit:
        ref = kit.system.spawn(Alarm)
        ref.tell("arm")
        await kit.advance(2)
        assert got == ["ring"]


async def test_faulty_callbacks_do_not_take_the_system_down() -> None:
    class Piper(Actor):
        def receive(self, message: Any) -> Any:
            if message == "pipe":

                async def work() -> int:
                    return 1

                self.pipe(work, lambda r: 1 / 0)
            elif message == "request":
                silent = self.system.ref("silent", "s")
                silent._target()._a_state = 3  # never answers
                self.request(silent, "hello", lambda r: 1 / 0, timeout=1.0)
            return "ok"

    async with ActorTestKit() as kit:
        kit.system.register("p", Piper)
        kit.system.register("silent", Piper)
        ref = kit.system.ref("p", "k")
        await ref.ask("pipe")
        await ref.ask("request")
        await kit.advance(2)  # the request times out; its callback raises
        assert await ref.ask("still alive?") == "ok"
        await kit.advance(5)  # the timer service still runs
        assert kit.system.timers.next_due() is not None


async def test_restart_drops_in_memory_timers_and_on_restart_sees_its_key() -> None:
    seen: list[str] = []

    class Fragile(Actor):
        restart_backoff = (0.1, 0.1)

        def on_restart(self, error: BaseException) -> None:
            seen.append(f"restart {self.key}")

        def receive(self, message: Any) -> Any:
            if message == "arm":
                self.start_timer("t", 10.0, "ring")
            elif message == "boom":
                raise RuntimeError("boom")
            else:
                seen.append(message)

    async with ActorTestKit() as kit:
        kit.system.register("f", Fragile)
        ref = kit.system.ref("f", "k")
        ref.tell("arm")
        ref.tell("boom")  # fails 3 times, dead-lettered, actor restarted each time
        await kit.advance(20)
        assert "ring" not in seen
        assert seen[0] == "restart k"


async def test_a_restarted_spawned_actor_is_rebuilt_from_its_own_factory() -> None:
    class Named(Actor):
        restart_backoff = (0.1, 0.1)

        def __init__(self, name: str) -> None:
            self.name = name

        def receive(self, message: Any) -> Any:
            if message == "boom":
                raise RuntimeError("boom")
            return self.name

    async with ActorTestKit() as kit:
        kit.system.spawn(lambda: Named("first"))
        second = kit.system.spawn(lambda: Named("second"))
        second.tell("boom")
        await kit.advance(5)
        assert await second.ask("who") == "second"


async def test_first_remembered_reply_wins_in_memory_as_in_the_journal() -> None:
    class Idem(Notes):
        def receive(self, message: Any) -> Any:
            if message == "twice":
                self.remember("r", b"first")
                self.remember("r", b"second")
                self.persist(Noted("x"))
                return None
            return self.recall("r")

    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("i", Idem)
        await kit.system.ref("i", "k").ask("twice")
        assert await kit.system.ref("i", "k").ask("recall") == b"first"
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("i", Idem)
        assert await kit.system.ref("i", "k").ask("recall") == b"first"


async def test_replay_that_keeps_failing_gives_up_with_actor_failed() -> None:
    class Broken(Notes):
        restart_backoff = (0.1, 0.1)

        def apply(self, event: Any) -> None:
            if event.what == "poison":
                raise ValueError("cannot apply")
            super().apply(event)

        def receive(self, message: Any) -> Any:
            if message == "poison":
                self.notes.append("poison")  # state must not depend on this
                self.persist_raw = True
                return None
            return super().receive(message)

    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("n", Notes)
        ref = kit.system.ref("n", "k")
        await ref.ask(("at", "never", kit.clock.time() + 10_000))
        ref._target().persist(Noted("poison"))  # stage a poison event by hand
        ref._target().persist  # noqa: B018
        await ref.ask("get")
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("n", Broken)
        got: list[Any] = []
        kit.system.ref("n", "k").tell("get", reply_to=got.append)
        await kit.advance(10)
        assert len(got) == 1 and isinstance(got[0], ActorFailed)
        assert kit.system.dead_letters.recent()[0].message_type == "$recovery"
        assert not kit.system.is_active("n", "k")


async def test_actor_stopped_while_committing_gets_on_stop_after_the_commit() -> None:
    stopped: list[str] = []

    class Stoppable(Notes):
        def on_stop(self) -> None:
            stopped.append(self.key)

    async with ActorTestKit(journal=MemoryJournal()) as kit:
        kit.system.register("s", Stoppable)
        ref = kit.system.ref("s", "k")
        await ref.ask("get")
        got: list[Any] = []
        ref.tell(("at", "x", kit.clock.time() + 100), reply_to=got.append)
        async with anyio.create_task_group():
            pass
        # run exactly the turn, then stop while its commit is pending
        kit.system.persistence.turn(ref._target())  # type: ignore[union-attr]
        ref.stop()
        assert stopped == []
        await kit.settle()
        assert stopped == ["k"]
        assert got == [None]  # the committed turn still answers


async def test_deadlines_due_at_start_wait_for_their_kind_to_be_registered() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("n", Notes)
        await kit.system.ref("n", "k").ask(("at", "x", kit.clock.time() + 10))
        epoch = kit.clock.time()
    async with ActorTestKit(journal=journal, epoch=epoch + 3600) as kit:
        await kit.advance(1)  # due at start; the kind is not registered yet
        kit.system.register("n", Notes)
        await kit.settle()
        assert await kit.system.ref("n", "k").ask("get") == ["fired x"]


async def test_a_reply_reaches_a_requester_whose_mailbox_is_full() -> None:
    """The reply to ``Actor.request`` must not be dropped by the requester's overflow
    policy: it asked for it, and a lost reply would leave it waiting for ever."""
    got: list[Any] = []

    class Echo(Actor):
        def receive(self, message: Any) -> Any:
            asker = self.system.ref("asker", "a")
            asker.tell("filler")
            asker.tell("filler")  # the asker's mailbox is full when the reply leaves
            return f"echo {message}"

    class Asker(Actor):
        mailbox_capacity = 2

        def receive(self, message: Any) -> Any:
            if message == "go":
                self.request(self.system.ref("echo", "e"), "hi", lambda r: ("answer", r))
                return None
            if isinstance(message, tuple) and message[0] == "answer":
                got.append(message[1])
            return None

    async with ActorTestKit() as kit:
        kit.system.register("echo", Echo)
        kit.system.register("asker", Asker)
        asker = kit.system.ref("asker", "a")
        asker.tell("go")
        await kit.settle()
        assert got == ["echo hi"]
