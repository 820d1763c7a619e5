"""The runtime's plain actors on virtual time: messaging, mailboxes, timers,
supervision, virtual activation and passivation."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from actors import (
    Actor,
    ActorFailed,
    ActorState,
    ActorStopped,
    AskTimeout,
    DeadlineExceeded,
    Overflow,
    Overloaded,
)
from actors.testkit import ActorTestKit

pytestmark = pytest.mark.anyio


class Echo(Actor):
    def receive(self, message: Any) -> Any:
        return message


class Recorder(Actor):
    """Records what it handles, in order; replies with the count so far."""

    log: list[Any] = []

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def receive(self, message: Any) -> Any:
        self.seen.append(message)
        Recorder.log.append((self.key, message))
        return len(self.seen)


async def test_ask_returns_the_handlers_value() -> None:
    async with ActorTestKit() as kit:
        kit.system.register("echo", Echo)
        ref = kit.system.ref("echo", "a")
        assert await ref.ask({"x": 1}) == {"x": 1}
        assert kit.system.is_active("echo", "a")


async def test_messages_are_handled_in_order_one_at_a_time() -> None:
    class Turns(Actor):
        def __init__(self) -> None:
            self.inside = False
            self.order: list[int] = []

        def receive(self, message: Any) -> Any:
            assert not self.inside
            self.inside = True
            self.order.append(message)
            self.inside = False
            return list(self.order)

    async with ActorTestKit() as kit:
        kit.system.register("t", Turns)
        ref = kit.system.ref("t", "k")
        for i in range(500):
            ref.tell(i)
        assert await ref.ask(500) == list(range(501))


async def test_virtual_actors_are_distinct_per_key_and_survive_passivation() -> None:
    class Count(Actor):
        passivate_after = 10.0

        def __init__(self) -> None:
            self.n = 0

        def receive(self, message: Any) -> Any:
            self.n += 1
            return self.n

    async with ActorTestKit(sweep_interval=1.0) as kit:
        kit.system.register("count", Count)
        a, b = kit.system.ref("count", "a"), kit.system.ref("count", "b")
        assert await a.ask("x") == 1
        assert await a.ask("x") == 2
        assert await b.ask("x") == 1
        await kit.advance(5)
        assert kit.system.active_count("count") == 2
        assert await a.ask("x") == 3  # touched: a stays, b goes
        await kit.advance(8)
        assert kit.system.is_active("count", "a")
        assert not kit.system.is_active("count", "b")
        await kit.advance(20)
        assert kit.system.active_count("count") == 0
        # The same ref activates a fresh incarnation (plain actors keep no state).
        assert await a.ask("x") == 1


async def test_max_active_passivates_the_least_recently_used() -> None:
    class Capped(Echo):
        max_active = 3

    async with ActorTestKit() as kit:
        kit.system.register("c", Capped)
        for key in "abcd":
            await kit.system.ref("c", key).ask(key)
        assert kit.system.active_count("c") == 3
        assert not kit.system.is_active("c", "a")
        await kit.system.ref("c", "b").ask("again")
        await kit.system.ref("c", "e").ask("e")
        assert sorted(kit.system.kind("c").active) == ["b", "d", "e"]


async def test_full_mailbox_rejects_at_once_with_overloaded() -> None:
    class Small(Echo):
        mailbox_capacity = 3

    async with ActorTestKit() as kit:
        kit.system.register("s", Small)
        ref = kit.system.ref("s", "k")
        got: list[Any] = []
        for i in range(3):
            ref.tell(i, reply_to=got.append)
        with pytest.raises(Overloaded) as info:
            ref.tell(99, reply_to=got.append)
        assert info.value.retryable
        await kit.settle()
        assert got == [0, 1, 2]


async def test_drop_oldest_answers_the_dropped_message() -> None:
    class Lossy(Echo):
        mailbox_capacity = 2
        overflow = Overflow.DROP_OLDEST

    async with ActorTestKit() as kit:
        kit.system.register("l", Lossy)
        ref = kit.system.ref("l", "k")
        got: list[Any] = []
        for i in range(4):
            ref.tell(i, reply_to=got.append)
        await kit.settle()
        assert [type(x) for x in got[:2]] == [Overloaded, Overloaded]
        assert got[2:] == [2, 3]


async def test_drop_newest_answers_the_new_message() -> None:
    class Lossy(Echo):
        mailbox_capacity = 2
        overflow = Overflow.DROP_NEWEST

    async with ActorTestKit() as kit:
        kit.system.register("l", Lossy)
        ref = kit.system.ref("l", "k")
        got: list[Any] = []
        for i in range(3):
            ref.tell(i, reply_to=got.append)
        assert isinstance(got[0], Overloaded)
        await kit.settle()
        assert got[1:] == [0, 1]


def hold(ref: Any) -> Any:
    """Keep an actor from running (as if it were backing off after a failure)."""
    target = ref._target()
    target._a_state = ActorState.BACKOFF
    return target


def release(kit: ActorTestKit, target: Any) -> None:
    target._a_state = ActorState.READY
    kit.system._reschedule(target)


async def test_ask_times_out_on_virtual_time() -> None:
    async with ActorTestKit() as kit:
        kit.system.register("slow", Echo)
        ref = kit.system.ref("slow", "k")
        target = hold(ref)
        result: list[BaseException] = []

        async def asker() -> None:
            try:
                await ref.ask("late", timeout=2.0)
            except AskTimeout as exc:
                result.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(asker)
            await kit.advance(1.9)
            assert result == []
            await kit.advance(0.2)
        assert len(result) == 1
        release(kit, target)
        await kit.settle()


async def test_expired_message_is_not_applied() -> None:
    async with ActorTestKit() as kit:
        kit.system.register("r", Recorder)
        ref = kit.system.ref("r", "k")
        target = hold(ref)
        got: list[Any] = []
        ref.tell("stale", reply_to=got.append, deadline=kit.clock.monotonic() + 1)
        ref.tell("fresh", reply_to=got.append, deadline=kit.clock.monotonic() + 10)
        await kit.advance(5)
        release(kit, target)
        await kit.settle()
        assert isinstance(got[0], DeadlineExceeded)
        assert got[1] == 1
        assert target.seen == ["fresh"]  # type: ignore[attr-defined]
        [stats] = [k for k in kit.system.stats().kinds if k.kind == "r"]
        assert (stats.expired, stats.handled) == (1, 1)


async def test_queued_asks_fail_when_the_actor_stops_and_spawned_refs_stay_dead() -> None:
    async with ActorTestKit() as kit:
        ref = kit.system.spawn(Recorder)
        hold(ref)
        got: list[Any] = []
        ref.tell("a", reply_to=got.append)
        ref.tell("b", reply_to=got.append)
        ref.stop()
        assert [type(x) for x in got] == [ActorStopped, ActorStopped]
        with pytest.raises(ActorStopped):
            await ref.ask("c")
        with pytest.raises(ActorStopped):
            ref.tell("d")


async def test_stop_hook_runs_and_virtual_ref_reactivates() -> None:
    events: list[str] = []

    class Hooks(Echo):
        def on_start(self) -> None:
            events.append(f"start {self.key}")

        def on_stop(self) -> None:
            events.append(f"stop {self.key}")

    async with ActorTestKit() as kit:
        kit.system.register("h", Hooks)
        ref = kit.system.ref("h", "k")
        await ref.ask(1)
        ref.stop()
        assert await ref.ask(2) == 2
    assert events == ["start k", "stop k", "start k", "stop k"]


async def test_timers_fire_in_the_actors_turn_at_their_time() -> None:
    class Alarm(Actor):
        def __init__(self) -> None:
            self.fired: list[tuple[str, float]] = []

        def receive(self, message: Any) -> Any:
            if message == "arm":
                self.start_timer("a", 30.0, "ring-a")
                self.start_timer("b", 10.0, "ring-b")
                self.start_timer("c", 20.0, "ring-c")
                self.cancel_timer("c")
                return None
            if message == "get":
                return list(self.fired)
            self.fired.append((message, self.monotonic()))
            return None

    async with ActorTestKit() as kit:
        kit.system.register("alarm", Alarm)
        ref = kit.system.ref("alarm", "k")
        await ref.ask("arm")
        await kit.advance(9.999)
        assert await ref.ask("get") == []
        await kit.advance(100)
        assert await ref.ask("get") == [("ring-b", 10.0), ("ring-a", 30.0)]
        assert kit.system.timers.stats.count >= 2
        assert kit.system.timers.stats.max == 0.0


async def test_failing_handler_restarts_with_backoff_and_then_succeeds() -> None:
    attempts: list[float] = []
    restarts: list[str] = []

    class Flaky(Actor):
        restart_backoff = (1.0, 8.0)
        max_failures = 5

        def on_restart(self, error: BaseException) -> None:
            restarts.append(repr(error))

        def receive(self, message: Any) -> Any:
            attempts.append(self.monotonic())
            if len(attempts) < 3:
                raise RuntimeError("boom")
            return "ok"

    async with ActorTestKit() as kit:
        kit.system.register("f", Flaky)
        got: list[Any] = []
        kit.system.ref("f", "k").tell("go", reply_to=got.append)
        await kit.advance(60)
        assert got == ["ok"]
        # first try at 0; restart after 1 s; second failure: restart after 2 s more.
        assert attempts == [0.0, 1.0, 3.0]
        assert len(restarts) == 2 and "boom" in restarts[0]
        assert kit.system.restarts == 2


async def test_poison_message_goes_to_dead_letters_and_the_actor_keeps_serving() -> None:
    class Picky(Actor):
        max_failures = 3
        restart_backoff = (0.5, 0.5)

        def receive(self, message: Any) -> Any:
            if message == "poison":
                raise ValueError("cannot digest")
            return f"ate {message}"

    async with ActorTestKit() as kit:
        kit.system.register("p", Picky)
        ref = kit.system.ref("p", "k")
        got: list[Any] = []
        ref.tell("poison", reply_to=got.append)
        ref.tell("bread", reply_to=got.append)
        await kit.advance(10)
        assert isinstance(got[0], ActorFailed)
        assert got[1] == "ate bread"
        letters = kit.system.dead_letters.recent()
        assert len(letters) == 1
        assert letters[0].kind == "p" and letters[0].key == "k"
        assert letters[0].attempts == 3 and "cannot digest" in letters[0].error
        assert letters[0].message_type == "str"


async def test_pipe_delivers_the_result_as_a_message() -> None:
    class Piper(Actor):
        def __init__(self) -> None:
            self.results: list[Any] = []

        def receive(self, message: Any) -> Any:
            if message == "start":

                async def work() -> int:
                    await anyio.lowlevel.checkpoint()
                    return 41

                self.pipe(work, lambda r: ("done", r + 1))
                return None
            if message == "get":
                return self.results
            self.results.append(message)
            return None

    async with ActorTestKit() as kit:
        kit.system.register("p", Piper)
        ref = kit.system.ref("p", "k")
        await ref.ask("start")
        await kit.settle()
        assert await ref.ask("get") == [("done", 42)]


async def test_reply_callback_failure_does_not_break_the_actor() -> None:
    def bad(value: Any) -> None:
        raise RuntimeError("callback bug")

    async with ActorTestKit() as kit:
        kit.system.register("e", Echo)
        ref = kit.system.ref("e", "k")
        ref.tell(1, reply_to=bad)
        assert await ref.ask(2) == 2
