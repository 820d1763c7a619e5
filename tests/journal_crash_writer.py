"""Writes acknowledged batches to a SQLite journal forever, for the crash test.

Usage: ``python journal_crash_writer.py PATH``. After each ``write`` returns it prints one
line ``KEY SEQ`` per actor in the batch (the sequence now acknowledged) and flushes, so
whoever kills this process knows exactly which sequences were acknowledged.
"""

from __future__ import annotations

import sys

import anyio

from actors.journal import SqliteJournal, WriteRequest

KEYS = ("a", "b", "c")
EVENTS_PER_WRITE = 3


def event(key: str, seq: int) -> bytes:
    return f"{key}:{seq}".encode()


async def main(path: str) -> None:
    journal = SqliteJournal(path)
    await journal.open()
    heads = dict.fromkeys(KEYS, 0)
    while True:
        batch = [
            WriteRequest(
                "crash",
                key,
                heads[key],
                events=[event(key, heads[key] + i) for i in range(1, EVENTS_PER_WRITE + 1)],
            )
            for key in KEYS
        ]
        results = await journal.write(batch)
        if any(r is not None for r in results):
            raise SystemExit(f"unexpected conflict: {results}")
        for key in KEYS:
            heads[key] += EVENTS_PER_WRITE
            sys.stdout.write(f"{key} {heads[key]}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], backend="asyncio")
