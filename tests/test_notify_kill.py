"""A notifier killed mid-batch (SIGKILL, a real ``iceshop notifier`` process) loses and
duplicates nothing: the standby notifier takes its send lease over when it lapses,
finishes the batch, and the fake Cloud API receives every notification exactly once.

Making the kill land mid-batch, deterministically: the fake accepts ``KEEP`` messages and
then holds every further request unanswered, so the notifier has sends in flight that
the provider never took. The test waits until the fake holds some of them and the
notifier has announced (hence stored) its ``KEEP`` verdicts, then kills it. The held
requests are then answered ``503`` into the dead sockets, never accepted.

A crash after the ``sent`` write and before the acknowledgement is covered in-process,
by a notifier that records its verdicts but never acknowledges: every request it sent
comes back to the next notifier, which must find it settled and not send it again. What
is *not* tested, because nothing can make it exactly once, is a crash between the
provider's answer and the notifier's ``sent`` write (see ``docs/notifications.md``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from actors import RealClock
from actors.nats import Msg, NatsServer, NatsTransport
from bench.fake_cloud_api import FakeCloudApi
from iceshop.notify import (
    DEFAULT_DURABLE,
    REQUEST_STREAM,
    NotificationStore,
    Notifier,
    RateLimiter,
    WhatsAppProvider,
)
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.notify_support import EventLog, ensure_streams, make_request, publish_requests

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
TOTAL = 40
KEEP = 15
KEEP_BEFORE_CRASH = 5


def notifier_env(api: FakeCloudApi) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICESHOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(
        {
            "ICESHOP_NOTIFY_PROVIDER": "whatsapp",
            "ICESHOP_WHATSAPP_API_BASE": api.base,
            "ICESHOP_WHATSAPP_API_VERSION": api.version,
            "ICESHOP_WHATSAPP_PHONE_NUMBER_ID": api.phone_number_id,
            "ICESHOP_WHATSAPP_TOKEN": api.token,
            "ICESHOP_NOTIFY_RATE_PER_S": "500",
            "ICESHOP_NOTIFY_RECIPIENT_SPACING_S": "0",
            "ICESHOP_NOTIFY_CONCURRENCY": "8",
            # A dead notifier's claims are taken over after this (and its unacknowledged
            # requests come back after it): short, to keep the test fast.
            "ICESHOP_NOTIFY_CLAIM_TTL_S": "2",
            # The standby takes the dead holder's send lease over this long after its
            # last renewal; long enough that the holder keeps it while the second
            # process starts on a loaded machine.
            "ICESHOP_NOTIFY_LEASE_TTL_S": "3",
            "ICESHOP_NOTIFY_RETRY_BASE_S": "0.05",
            "ICESHOP_NOTIFY_RETRY_CAP_S": "0.2",
        }
    )
    return env


@asynccontextmanager
async def notifier_process(
    url: str, data: Path, log: Path, env: dict[str, str]
) -> AsyncIterator[tuple[anyio.abc.Process, list[str]]]:
    """A running ``iceshop notifier`` and the lines it printed up to ``notifier ready``."""
    argv = [sys.executable, "-m", "iceshop.cli", "notifier", "--nats", url, "--data", str(data)]
    with log.open("wb") as errors:
        process = await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, stderr=errors, cwd=REPO, env=env
        )
        try:
            assert process.stdout is not None
            out = BufferedByteReceiveStream(process.stdout)
            lines: list[str] = []
            with anyio.fail_after(20):
                while not lines or lines[-1] != "notifier ready":
                    lines.append((await out.receive_until(b"\n", 4096)).decode())
            yield process, lines
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()


async def drained(transport: NatsTransport) -> None:
    """Wait until the consumer has nothing pending and nothing unacknowledged (polled:
    the work happens in another process)."""
    js = transport.jetstream()
    while True:
        info = await js.consumer_info(REQUEST_STREAM, DEFAULT_DURABLE)
        if not info.num_pending and not info.num_ack_pending:
            return
        await anyio.sleep(0.05)


async def test_a_notifier_killed_mid_batch_sends_each_notification_exactly_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    requests = [make_request(i) for i in range(TOTAL)]
    async with FakeCloudApi() as api, NatsTransport(nats_server.url) as transport:
        await ensure_streams(transport)
        events = EventLog()
        await events.subscribe(transport)
        await publish_requests(transport, requests)
        api.hold_after(KEEP)
        env = notifier_env(api)

        async with (
            notifier_process(nats_server.url, tmp_path / "a", tmp_path / "a.err", env) as (
                first,
                first_lines,
            ),
            # Started once the first holds the send lease: it stands by, and says so.
            notifier_process(nats_server.url, tmp_path / "b", tmp_path / "b.err", env) as (
                second,
                second_lines,
            ),
        ):
            [first_consumer] = [line for line in first_lines if "consumer" in line]
            [second_consumer] = [line for line in second_lines if "consumer" in line]
            assert "iceshop-notifier on ICESHOP_NOTIFICATIONS" in first_consumer
            assert "standing by" in second_consumer, second_lines
            with anyio.fail_after(20):
                await api.wait_until(lambda a: len(a.accepted) == KEEP and a.held > 0)
                await events.wait_for(KEEP)
            held = api.held
            first.send_signal(signal.SIGKILL)
            with anyio.fail_after(10):
                assert await first.wait() == -signal.SIGKILL
            assert len(api.accepted) == KEEP
            assert held > 0  # the kill landed with sends in flight
            api.release()

            with anyio.fail_after(30):
                await api.wait_accepted(TOTAL)
                await events.wait_for(TOTAL)
                await drained(transport)
            second.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await second.wait() == 0, (tmp_path / "b.err").read_text()
        assert b"send lease taken" in (tmp_path / "b.err").read_bytes()

        sent = Counter(api.accepted_ids())
        assert sorted(sent) == sorted(r.notification_id for r in requests)
        assert set(sent.values()) == {1}, [k for k, n in sent.items() if n > 1]

        store = NotificationStore(transport)
        await store.open()
        records = await store.records()
        assert len(records) == TOTAL
        assert {r.state for r in records} == {"sent"}
        taken_over = [r for r in records if any(a.outcome == "in_doubt" for a in r.attempts)]
        assert taken_over  # the killed notifier's in-flight claims were taken over
        assert all(r.claims == 2 for r in taken_over)
        assert {e["type"] for e in events.events} == {"sent"}


class CrashesBeforeAck(Notifier):
    """Records every verdict, then acknowledges nothing: as if it died right after each
    ``sent`` write (NAKs are lost as well)."""

    @staticmethod
    async def _settle_msg(msg: Msg, how: str, delay: float = 0.0) -> None:
        return


async def test_a_crash_after_recording_sent_and_before_the_ack_sends_nothing_again(
    nats_server: NatsServer,
) -> None:
    requests = [make_request(i) for i in range(12)]
    async with (
        FakeCloudApi() as api,
        WhatsAppProvider(
            token=api.token,
            phone_number_id=api.phone_number_id,
            api_base=api.base,
            api_version=api.version,
        ) as provider,
        NatsTransport(nats_server.url) as transport,
    ):
        await ensure_streams(transport)
        events = EventLog()
        await events.subscribe(transport)
        await publish_requests(transport, requests)

        def notifier(cls: type[Notifier]) -> Notifier:
            return cls(
                transport,
                NotificationStore(transport),
                provider,
                limiter=RateLimiter(RealClock(), rate_per_s=10.0),
                claim_ttl=1.0,
                concurrency=4,
                fetch_timeout=0.2,
                lease_ttl=3.0,  # released at each stop: no lapse is waited for
            )

        crashing = notifier(CrashesBeforeAck)
        async with anyio.create_task_group() as tg:
            await tg.start(crashing.run)
            with anyio.fail_after(20):
                await events.wait_for(KEEP_BEFORE_CRASH)
            tg.cancel_scope.cancel()
        done = {
            r.notification_id
            for r in [await crashing.store.get(n) for n in api.accepted_ids() if n]
            if r and r.state == "sent"
        }
        assert len(done) >= KEEP_BEFORE_CRASH
        info = await transport.jetstream().consumer_info(REQUEST_STREAM, DEFAULT_DURABLE)
        assert info.num_ack_pending >= len(done)  # sent and recorded, never acknowledged

        survivor = notifier(Notifier)
        async with anyio.create_task_group() as tg:
            await tg.start(survivor.run)
            with anyio.fail_after(30):
                await events.wait_for(len(requests))
                await survivor.idle()
            tg.cancel_scope.cancel()

    sent = Counter(api.accepted_ids())
    assert sorted(sent) == [r.notification_id for r in requests]
    assert set(sent.values()) == {1}, [k for k, n in sent.items() if n > 1]
    # Every request the crashed notifier had sent came back and was found settled.
    assert survivor.stats.settled >= len(done)
    assert survivor.stats.sent == len(requests) - crashing.stats.sent
