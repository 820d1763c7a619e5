"""Notifications: how fast the notifier drains requests, and that it keeps the rate.

Everything is real but the provider's far end: a nats-server with JetStream, requests
published as the product's outbox publishes them, one :class:`~iceshop.notify.Notifier`
with its store (a JetStream key-value bucket) and contract events.

* **log**: ``n`` requests through the ``log`` provider (a JSON line per message in a
  temporary file), with no rate limit: notifications/s from the first fetch to the last
  acknowledgement. This is the notifier's own cost per notification (claim, record,
  event, ack: four JetStream round trips, pipelined over ``concurrency`` sends). The
  baseline, measured in the same run on a fresh server: a bare pull consumer that only
  fetches the same requests and acknowledges each (the floor of any JetStream worker).
* **cloud**: ``m`` requests through the ``whatsapp`` provider against the local fake
  Cloud API (HTTP on loopback), at the default limit of 80 messages/s. The fake's arrival
  times after the first are cut into whole seconds from the first
  (:meth:`~bench.fake_cloud_api.FakeCloudApi.per_second`): the sustained rate is the mean
  of the complete seconds and the busiest second is the largest of them. Departures (the
  moment each send is handed to the provider) are recorded too: the run fails if any
  sliding second of departures holds more than 80, or any second of arrivals more than
  84 (the fake runs in this process, so a busy loop can bunch the arrivals it records
  by a few; what WhatsApp counts is what leaves). The baseline is the limit itself: the
  sustained rate should be close to it, never above.
* **cloud x2**: the same with two notifiers on the one sending number, each configured
  for the full limit: only the holder of the number's send lease sends, so together
  they keep the limit (without the lease they would send twice as fast).

    python -m bench.notify [--quick]

Exits non-zero if a notification is missing or sent twice, or the rate is exceeded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from actors import OutboxEntry, RealClock
from actors.nats import JetStreamOutbox, NatsServer, NatsTransport
from bench._common import figure, ratio
from bench.fake_cloud_api import FakeCloudApi, max_in_window
from iceshop.cli.lifecycle import configure_logging
from iceshop.notify import (
    REQUEST_STREAM,
    Backoff,
    LogProvider,
    NotificationStore,
    Notifier,
    RateLimiter,
    WhatsAppProvider,
)
from iceshop.notify.provider import Outbound, Provider, Sent
from iceshop.product.notifications import notification_payload, notification_subject
from iceshop.product.state import NotificationRequested
from iceshop.wire import EVENT_STREAM

LOG_N, LOG_N_QUICK = 5000, 1000
CLOUD_N, CLOUD_N_QUICK = 800, 240
LIMIT = 80.0
ARRIVAL_SLACK = 1.05
"""Arrivals recorded by the in-process fake may bunch by a few when the loop is busy."""
CONCURRENCY = 64


class BenchError(Exception):
    pass


def request(i: int, run: str) -> NotificationRequested:
    return NotificationRequested(
        notification_id=f"{run}{i:07d}",
        window_id="W1",
        product_id="kettle",
        seller_id="S1",
        buyer_id=f"B{i}",
        intent_id=f"I{i}",
        phone=f"+9055{i:08d}",
        locale="tr" if i % 2 else "en",
        unit_price_minor=129_900,
        currency="TRY",
        activates_at=1_800_000_000.0,
        expires_at=1_800_000_900.0,
        at=1_800_000_000.0,
    )


async def publish(transport: NatsTransport, n: int, run: str) -> list[str]:
    outbox = JetStreamOutbox(transport)
    await outbox.ensure_stream(REQUEST_STREAM, ["iceshop.notifications.>"])
    await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
    entries = []
    for i in range(n):
        req = request(i, run)
        event_id, body = notification_payload(req)
        entries.append(
            OutboxEntry(event_id, notification_subject(req.notification_id, "iceshop"), body)
        )
    await outbox.publish(entries)
    return [e.id.split(".")[1] for e in entries]


async def drain(
    transport: NatsTransport, provider: Provider, rate: float, n: int, notifiers: int = 1
) -> tuple[list[Notifier], float]:
    """Run ``notifiers`` notifiers until ``n`` requests are sent; seconds from start to
    the last."""
    running = [
        Notifier(
            transport,
            NotificationStore(transport),
            provider,
            limiter=RateLimiter(RealClock(), rate_per_s=rate),
            backoff=Backoff(base=0.05, cap=1.0),
            concurrency=CONCURRENCY,
            fetch_timeout=0.2,
        )
        for _ in range(notifiers)
    ]
    async with anyio.create_task_group() as tg:
        start = time.perf_counter()
        for notifier in running:
            await tg.start(notifier.run)
        with anyio.fail_after(max(60.0, 4 * n / rate)):
            await running[0].idle()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    sent = sum(notifier.stats.sent for notifier in running)
    if sent != n:
        raise BenchError(f"sent {sent} of {n}")
    return running, elapsed


async def bare_consume(url: str, n: int) -> float:
    """Fetch ``n`` requests and acknowledge each, nothing else: requests per second."""
    async with NatsTransport(url) as transport:
        await publish(transport, n, "b")
        js = transport.client.jetstream()
        sub = await js.pull_subscribe("iceshop.notifications.>", durable="bench-bare")
        done = 0
        start = time.perf_counter()
        while done < n:
            for msg in await sub.fetch(min(256, n - done), timeout=5):
                await msg.ack()
                done += 1
        await transport.flush()
        return n / (time.perf_counter() - start)


async def bench_log(url: str, workdir: Path, n: int) -> float:
    async with NatsTransport(url) as transport:
        await publish(transport, n, "l")
        async with LogProvider(workdir / "notifications.jsonl", keep=10) as provider:
            _, elapsed = await drain(transport, provider, 1e9, n)
        lines = (workdir / "notifications.jsonl").read_bytes().count(b"\n")
    if lines != n:
        raise BenchError(f"log provider wrote {lines} lines for {n} notifications")
    print(figure(f"notify log: {n} notifications", n / elapsed, "notifications/s"), flush=True)
    return n / elapsed


class _DeparturesTimed(WhatsAppProvider):
    """The WhatsApp provider, noting when each send is handed to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.departures: list[float] = []

    async def send(self, msg: Outbound) -> Sent:
        self.departures.append(time.monotonic())
        return await super().send(msg)


async def bench_cloud(url: str, n: int, notifiers: int = 1) -> float:
    async with NatsTransport(url) as transport, FakeCloudApi() as api:
        ids = await publish(transport, n, "c")
        async with _DeparturesTimed(
            token=api.token,
            phone_number_id=api.phone_number_id,
            api_base=api.base,
            api_version=api.version,
            max_connections=CONCURRENCY,
        ) as provider:
            running, _ = await drain(transport, provider, LIMIT, n, notifiers)
            departures = provider.departures
    counts = Counter(api.accepted_ids())
    if set(counts) != set(ids) or set(counts.values()) != {1}:
        raise BenchError("the fake Cloud API did not receive every notification exactly once")
    seconds = api.per_second()
    whole = seconds[:-1] or seconds  # the last second is partial
    sustained = sum(whole) / len(whole)
    busiest = max(whole)
    sliding = api.max_in_window(1.0)
    left = max_in_window(departures, 1.0)
    what = f"notify cloud x{notifiers}" if notifiers > 1 else "notify cloud"
    print(
        figure(
            f"{what}: {n} notifications, limit {LIMIT:g}/s, mean of {len(whole)} whole seconds",
            sustained,
            "messages/s",
        )
    )
    print(figure(f"{what}: busiest whole second", busiest, "requests"), flush=True)
    print(figure(f"{what}: most departures in any second", left, "requests"), flush=True)
    print(figure(f"{what}: most arrivals in any second", sliding, "requests"), flush=True)
    if notifiers > 1:
        split = ", ".join(str(notifier.stats.sent) for notifier in running)
        print(f"  {what}: sent by each notifier: {split}", flush=True)
    if left > LIMIT:
        raise BenchError(f"rate limit exceeded: {left} sends left within a second")
    if max(busiest, sliding) > ARRIVAL_SLACK * LIMIT:
        raise BenchError(f"rate limit exceeded: {max(busiest, sliding)} arrived within a second")
    return sustained


async def main_async(quick: bool, workdir: Path) -> None:
    n = LOG_N_QUICK if quick else LOG_N
    with NatsServer(jetstream=True, store_dir=workdir / "js") as server:
        ours = await bench_log(server.url, workdir, n)
    with NatsServer(jetstream=True, store_dir=workdir / "js0") as server:
        bare = await bare_consume(server.url, n)
    print(figure(f"bare consume + ack: {n} requests", bare, "requests/s"), flush=True)
    print(ratio("notify log vs bare consume", ours, bare, "bare consume"), flush=True)
    with NatsServer(jetstream=True, store_dir=workdir / "js2") as server:
        sustained = await bench_cloud(server.url, CLOUD_N_QUICK if quick else CLOUD_N)
    print(ratio("notify cloud vs its limit", sustained, LIMIT, "limit"), flush=True)
    with NatsServer(jetstream=True, store_dir=workdir / "js3") as server:
        both = await bench_cloud(server.url, CLOUD_N_QUICK if quick else CLOUD_N, notifiers=2)
    print(ratio("notify cloud x2 vs its limit", both, LIMIT, "limit"), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notify")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    configure_logging("warning")  # one info line per attempt would measure the terminal
    with tempfile.TemporaryDirectory() as tmp:
        try:
            anyio.run(main_async, args.quick, Path(tmp))
        except BenchError as exc:
            print(f"!! {exc}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
