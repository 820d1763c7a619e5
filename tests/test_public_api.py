"""The public surface of ``actors`` is what ``__init__`` re-exports, and nothing leaks."""

from __future__ import annotations

import actors
import actors.journal
import actors.nats

EXPECTED = {
    "Actor",
    "ActorFailed",
    "ActorRef",
    "ActorState",
    "ActorStopped",
    "ActorSystem",
    "ActorsError",
    "AskTimeout",
    "Clock",
    "CommitFailed",
    "ConnectionClosed",
    "DeadLetter",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineFired",
    "Journal",
    "JournalError",
    "JournalUnavailable",
    "NoResponders",
    "NotLocal",
    "NotPermitted",
    "OutboxEntry",
    "OutboxSink",
    "Overflow",
    "Overloaded",
    "PersistentActor",
    "RealClock",
    "Recovery",
    "RequestTimeout",
    "SequenceConflict",
    "TimerStats",
    "TransportError",
    "VirtualClock",
    "WriteRequest",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(actors.__all__) == EXPECTED


def test_every_exported_name_resolves() -> None:
    for name in actors.__all__:
        assert getattr(actors, name) is not None, name


def test_error_tree_roots_in_actors_error_and_marks_retryable() -> None:
    errors = [getattr(actors, n) for n in EXPECTED if n.endswith(("Error", "Timeout"))]
    errors += [actors.Overloaded, actors.ActorStopped, actors.ActorFailed, actors.NoResponders]
    for cls in errors:
        assert issubclass(cls, actors.ActorsError), cls
    assert actors.Overloaded.retryable and actors.TransportError.retryable
    assert not actors.ActorStopped.retryable and not actors.SequenceConflict.retryable
    assert issubclass(actors.AskTimeout, TimeoutError)
    assert issubclass(actors.NotPermitted, actors.TransportError)
    assert not actors.NotPermitted.retryable  # a refused login or subject stays refused


def test_subpackages_re_export_their_surface() -> None:
    for module in (actors.journal, actors.nats):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert {"MemoryJournal", "SqliteJournal", "Journal"} <= set(actors.journal.__all__)
    assert {"NatsBinding", "NatsServer", "NatsTransport", "JetStreamOutbox"} <= set(
        actors.nats.__all__
    )


def test_actors_knows_nothing_of_the_shop() -> None:
    import pathlib

    root = pathlib.Path(actors.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "iceshop" not in text, f"{path.name} mentions the shop"
