"""The flash crowd's two helper processes: the load generator and the no-op responder.

Both run as processes of their own, so the node (or the responder) and the load never
share an interpreter: a Python load generator in the node's process would take its CPU
and its event loop, and the measurement would say nothing about the node.

**load** — ``python -m bench._flash_load load SPEC_JSON OUT_PATH``. Sends ``count``
requests to ``subject``, ``concurrency`` of them in flight at once (one worker task per
slot, each sending its next request as soon as its previous one is answered), spread
over ``connections`` NATS connections (``url`` may list several servers, comma
separated). Request ``i`` is a join by buyer ``<buyer_prefix><i>`` with join id
``<join_prefix><i>``; the bodies are encoded before the clock starts so both runs (node
and no-op) pay the same client cost. With several ``subjects`` (windows) request ``i``
goes to ``subjects[i % len(subjects)]`` by buyer ``<buyer_prefix><i // len(subjects)>``,
so each buyer joins every window once. It records the latency and the outcome of every
request: ``ok``, the contract error ``code`` of an ``ok: false`` reply, or a transport
failure (``timeout``, ``no_responders``, ``transport_error``). With ``retry_for_s`` a
request whose outcome is retryable (a transport failure, ``unavailable``, ``internal``,
``overloaded``) is sent again, same body and same join id as the contract says, until
that long after its first attempt; its latency and outcome are then those of the last
attempt, counted from the first (what a retrying client sees). With ``progress_every``
it prints ``acked N`` on stdout each time the number of ``ok`` replies reaches a
multiple of it, so a parent can act mid-crowd (the crash mode kills the node on those
lines). The result is written to ``OUT_PATH`` as JSON (:class:`LoadResult`), the join
ids of every ``ok`` reply included.

**noop** — ``python -m bench._flash_load noop URL SUBJECT``. Subscribes to ``SUBJECT``
and answers every request at once with a fixed join-sized reply; prints ``ready`` when
its subscription is in place. This is the ceiling: the most request-reply traffic the
same load generator gets through this NATS server on this machine.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path

import anyio
import msgspec

from actors.errors import NoResponders, RequestTimeout, TransportError
from actors.nats import Msg, NatsTransport

__all__ = ["NOOP_REPLY", "RETRYABLE", "LoadResult", "LoadSpec", "join_body", "percentile"]

NOOP_REPLY = msgspec.json.encode(
    {
        "ok": True,
        "data": {
            "join_id": "J000000",
            "window_id": "W000000000000",
            "status": "reserved",
            "quantity": 1,
            "unit_price_minor": 90000,
            "currency": "TRY",
        },
    }
)
"""What the no-op responder answers: the size and shape of a real join reply."""


class LoadSpec(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    subject: str
    count: int
    concurrency: int
    connections: int = 1
    buyer_prefix: str = "C"
    join_prefix: str = "J"
    timeout_s: float = 10.0
    progress_every: int = 0
    #: A NATS login for servers with users (nats.conf's "gateway" may send joins): the
    #: user, and a file holding its password (never the password: the spec is argv).
    nats_user: str = ""
    nats_password_file: str = ""
    #: Several join subjects (windows): request ``i`` goes to ``subjects[i % n]`` (see
    #: the module docstring); empty: every request goes to ``subject``.
    subjects: tuple[str, ...] = ()
    #: Retry retryable outcomes for this long after a request's first attempt (0: never).
    retry_for_s: float = 0.0
    #: Pause between two attempts of one request.
    retry_pause_s: float = 0.05

    def subject_of(self, i: int) -> str:
        return self.subjects[i % len(self.subjects)] if self.subjects else self.subject

    def buyer_of(self, i: int) -> str:
        return f"{self.buyer_prefix}{i // max(1, len(self.subjects))}"


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    sent: int
    #: Requests that got a reply (``ok`` or a contract error), i.e. not a transport failure.
    replies: int
    ok: int
    #: Outcomes other than ``ok``: contract error codes and transport failures.
    codes: dict[str, int]
    #: From the first request sent to the last reply received.
    elapsed_s: float
    #: From the first request sent to the last ``ok`` reply received (0 without one).
    ok_elapsed_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Latency of the ``ok`` replies alone (the joins that were committed).
    ok_p50_ms: float
    ok_p99_ms: float
    #: CPU seconds the load process used while sending (all its threads).
    cpu_s: float
    ok_join_ids: list[str]
    #: Attempts sent again after a retryable outcome (``retry_for_s``).
    retries: int = 0

    @property
    def replies_per_s(self) -> float:
        return self.replies / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.ok_elapsed_s if self.ok_elapsed_s > 0 else 0.0


class _Error(msgspec.Struct):
    code: str


class _Reply(msgspec.Struct):
    ok: bool
    error: _Error | None = None


_reply = msgspec.json.Decoder(_Reply)


RETRYABLE = frozenset(
    {
        "transport:timeout",
        "transport:no_responders",
        "transport:error",
        "unavailable",
        "internal",
        "overloaded",
    }
)
"""Outcomes a client retries with the same join id (the contract's retryable ones)."""


def join_body(spec: LoadSpec, i: int) -> bytes:
    return msgspec.json.encode({"join_id": f"{spec.join_prefix}{i}", "buyer_id": spec.buyer_of(i)})


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class _Tally:
    """Outcomes as they arrive. Touched only from the event loop's thread."""

    def __init__(self, progress_every: int) -> None:
        self.progress_every = progress_every
        self.latencies: list[float] = []
        self.ok_latencies: list[float] = []
        self.codes: dict[str, int] = {}
        self.ok_ids: list[str] = []
        self.replies = 0
        self.retries = 0
        self.last_reply = 0.0
        self.last_ok = 0.0

    def record(self, outcome: str, join_id: str, started: float, now: float) -> None:
        self.latencies.append(now - started)
        if outcome == "ok":
            self.ok_latencies.append(now - started)
            self.replies += 1
            self.last_reply = self.last_ok = now
            self.ok_ids.append(join_id)
            every = self.progress_every
            if every and len(self.ok_ids) % every == 0:
                print(f"acked {len(self.ok_ids)}", flush=True)
            return
        if not outcome.startswith("transport:"):
            self.replies += 1
            self.last_reply = now
        self.codes[outcome] = self.codes.get(outcome, 0) + 1


async def _request(transport: NatsTransport, subject: str, body: bytes, timeout_s: float) -> str:
    """One request; its outcome as a short string."""
    try:
        payload, _ = await transport.request(subject, body, timeout=timeout_s)
    except NoResponders:
        return "transport:no_responders"
    except RequestTimeout:
        return "transport:timeout"
    except TransportError:
        return "transport:error"
    try:
        reply = _reply.decode(payload)
    except msgspec.DecodeError:
        return "undecodable_reply"
    if reply.ok:
        return "ok"
    return reply.error.code if reply.error is not None else "error_without_code"


async def run_load(spec: LoadSpec) -> LoadResult:
    """Send the crowd and tally it (see the module docstring)."""
    bodies = [join_body(spec, i) for i in range(spec.count)]
    join_ids = [f"{spec.join_prefix}{i}" for i in range(spec.count)]
    subjects = [spec.subject_of(i) for i in range(spec.count)]
    tally = _Tally(spec.progress_every)
    user = spec.nats_user or None
    urls = [u.strip() for u in spec.url.split(",") if u.strip()]
    async with contextlib.AsyncExitStack() as stack:
        transports = [
            await stack.enter_async_context(
                NatsTransport(
                    urls,
                    name=f"flash-load-{n}",
                    user=user,
                    password_file=spec.nats_password_file or None,
                    inbox_prefix=f"_INBOX_{user}" if user else None,
                )
            )
            for n in range(max(1, spec.connections))
        ]
        indexes = iter(range(spec.count))
        timeout = spec.timeout_s
        retry_for = spec.retry_for_s
        clock = time.perf_counter

        async def worker(transport: NatsTransport) -> None:
            for i in indexes:
                started = clock()
                while True:
                    outcome = await _request(transport, subjects[i], bodies[i], timeout)
                    if outcome not in RETRYABLE or clock() - started >= retry_for:
                        break
                    tally.retries += 1
                    await anyio.sleep(spec.retry_pause_s)
                tally.record(outcome, join_ids[i], started, clock())

        start = clock()
        cpu_start = time.process_time()
        async with anyio.create_task_group() as tg:
            for slot in range(spec.concurrency):
                tg.start_soon(worker, transports[slot % len(transports)])
        end = clock()
        cpu_s = time.process_time() - cpu_start
    latencies = sorted(tally.latencies)
    ok_latencies = sorted(tally.ok_latencies)
    last_reply = tally.last_reply or end
    return LoadResult(
        sent=spec.count,
        replies=tally.replies,
        ok=len(tally.ok_ids),
        codes=dict(sorted(tally.codes.items())),
        elapsed_s=last_reply - start,
        ok_elapsed_s=(tally.last_ok - start) if tally.ok_ids else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else 0.0,
        ok_p50_ms=percentile(ok_latencies, 0.50) * 1000,
        ok_p99_ms=percentile(ok_latencies, 0.99) * 1000,
        cpu_s=cpu_s,
        ok_join_ids=tally.ok_ids,
        retries=tally.retries,
    )


async def serve_noop(url: str, subject: str) -> None:
    """Answer every request on ``subject`` with :data:`NOOP_REPLY` until SIGTERM/SIGINT."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with NatsTransport(url, name="flash-noop") as transport:

            async def answer(msg: Msg) -> None:
                await transport.publish(msg.reply, NOOP_REPLY)

            await transport.subscribe(subject, answer)
            await transport.flush()
            print("ready", flush=True)
            async for _ in signals:
                break


def main(argv: list[str]) -> int:
    match argv:
        case ["load", spec_json, out_path]:
            spec = msgspec.json.decode(spec_json, type=LoadSpec)
            result = anyio.run(run_load, spec)
            Path(out_path).write_bytes(msgspec.json.encode(result))
            return 0
        case ["noop", url, subject]:
            anyio.run(serve_noop, url, subject)
            return 0
        case _:
            print(__doc__, file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
