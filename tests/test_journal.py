"""The shared journal suite run against every journal, plus what only one of them has:
reopening a SQLite file, two writers on one file, and surviving ``kill -9``."""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from journal_suite import JournalSuite, events

from actors.errors import JournalUnavailable, SequenceConflict
from actors.journal import Journal, MemoryJournal, SqliteJournal, WriteRequest
from actors.journal.sqlite import SCHEMA_VERSION

CRASH_WRITER = Path(__file__).with_name("journal_crash_writer.py")


class TestMemoryJournal(JournalSuite):
    @pytest.fixture
    def journal_factory(self) -> Callable[[], Journal]:
        store = MemoryJournal()  # one instance is the store; reopening keeps its data
        return lambda: store


class TestSqliteJournal(JournalSuite):
    @pytest.fixture
    def journal_factory(self, tmp_path: Path) -> Callable[[], Journal]:
        path = tmp_path / "journal.db"
        return lambda: SqliteJournal(path)


# -- MemoryJournal only -----------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_fail_next_write_applies_nothing() -> None:
    journal = MemoryJournal()
    await journal.open()
    journal.fail_next_write()
    with pytest.raises(JournalUnavailable):
        await journal.write([WriteRequest("acct", "a", 0, events=events("e1"))])
    assert (await journal.recover([("acct", "a")]))[0].seq == 0
    assert await journal.write([WriteRequest("acct", "a", 0, events=events("e1"))]) == [None]
    assert journal.writes == 1


# -- SqliteJournal only -----------------------------------------------------------------


def _pragmas(path: Path) -> tuple[str, int, int]:
    with sqlite3.connect(path) as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()
    db.close()
    return mode, version, tables[0]


@pytest.mark.anyio
async def test_sqlite_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = SqliteJournal(path)
    await first.open()
    await first.write(
        [
            WriteRequest("acct", f"k{i}", 0, events=events(*(f"{i}.{n}" for n in range(i + 1))))
            for i in range(20)
        ]
    )
    await first.close()
    await first.close()  # closing twice is harmless

    assert await anyio.to_thread.run_sync(_pragmas, path) == ("wal", SCHEMA_VERSION, 7)

    again = SqliteJournal(path)
    await again.open()
    try:
        got = await again.recover([("acct", f"k{i}") for i in range(20)])
        assert [r.seq for r in got] == [i + 1 for i in range(20)]
        assert got[19].events[-1] == b"19.19"
    finally:
        await again.close()


@pytest.mark.anyio
async def test_sqlite_second_instance_with_stale_seq_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    one, two = SqliteJournal(path), SqliteJournal(path)
    await one.open()
    await two.open()
    try:
        assert (await two.recover([("acct", "a")]))[0].seq == 0
        assert await one.write([WriteRequest("acct", "a", 0, events=events("one"))]) == [None]
        # `two` still believes the actor is at 0: the store, not the instance, decides.
        [conflict] = await two.write([WriteRequest("acct", "a", 0, events=events("two"))])
        assert isinstance(conflict, SequenceConflict)
        assert (conflict.expected, conflict.actual) == (0, 1)
        [a] = await two.recover([("acct", "a")])
        assert (a.seq, a.events) == (1, events("one"))
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_sqlite_two_instances_write_concurrently(tmp_path: Path) -> None:
    """Each write takes the file's write lock before reading heads, so writers on two
    connections queue behind each other instead of failing on a stale read."""
    path = tmp_path / "j.db"
    one, two = SqliteJournal(path), SqliteJournal(path)
    await one.open()
    await two.open()

    async def writer(journal: SqliteJournal, key: str) -> None:
        for seq in range(100):
            res = await journal.write([WriteRequest("acct", key, seq, events=events(f"{seq}"))])
            assert res == [None]

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, one, "one")
            tg.start_soon(writer, two, "two")
        got = await one.recover([("acct", "one"), ("acct", "two")])
        assert [r.seq for r in got] == [100, 100]
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_sqlite_full_synchronous_option(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db", synchronous="FULL")
    await journal.open()
    try:
        assert await journal.write([WriteRequest("acct", "a", 0, events=events("e"))]) == [None]
        assert (await journal.recover([("acct", "a")]))[0].events == events("e")
    finally:
        await journal.close()
    with pytest.raises(ValueError, match="synchronous"):
        SqliteJournal(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_sqlite_errors_map_to_journal_unavailable(tmp_path: Path) -> None:
    with pytest.raises(JournalUnavailable) as missing_dir:
        await SqliteJournal(tmp_path / "no" / "such" / "dir.db").open()
    assert isinstance(missing_dir.value.__cause__, sqlite3.Error)

    newer = tmp_path / "newer.db"

    def make_newer() -> None:
        db = sqlite3.connect(newer)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.close()

    await anyio.to_thread.run_sync(make_newer)
    with pytest.raises(JournalUnavailable, match="schema version"):
        await SqliteJournal(newer).open()


@pytest.mark.anyio
async def test_sqlite_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    acked: dict[str, int] = {}
    lines = 0
    with anyio.fail_after(30):
        async with await anyio.open_process([sys.executable, str(CRASH_WRITER), str(path)]) as proc:
            assert proc.stdout is not None
            out = BufferedByteReceiveStream(proc.stdout)
            try:
                while lines < 600:
                    line = await out.receive_until(b"\n", 100)
                    key, seq = line.decode().split()
                    acked[key] = int(seq)
                    lines += 1
            finally:
                proc.send_signal(signal.SIGKILL)
            # Lines printed before the kill landed are acknowledged too.
            try:
                while True:
                    line = await out.receive_until(b"\n", 100)
                    key, seq = line.decode().split()
                    acked[key] = int(seq)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass
            assert await proc.wait() == -signal.SIGKILL

    assert set(acked) == {"a", "b", "c"}
    assert min(acked.values()) >= 600
    journal = SqliteJournal(path)
    await journal.open()
    try:
        for rec in await journal.recover([("crash", key) for key in sorted(acked)]):
            assert rec.seq >= acked[rec.key], f"{rec.key}: acked {acked[rec.key]}, got {rec.seq}"
            assert rec.events == [f"{rec.key}:{n}".encode() for n in range(1, rec.seq + 1)]
        # The file is writable again after the crash.
        [res] = await journal.write(
            [WriteRequest("crash", "a", acked["a"], events=events("after"))]
        )
        assert res is None or (isinstance(res, SequenceConflict) and res.actual > acked["a"])
    finally:
        await journal.close()
