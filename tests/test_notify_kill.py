"""A notifier killed mid-batch (SIGKILL, a real ``iceshop notifier`` process) loses and
duplicates nothing: another one finishes the batch, and the fake Cloud API receives
every notification exactly once.

Making the kill land mid-batch, deterministically: the fake accepts ``KEEP`` messages and
then holds every further request unanswered, so the notifier has sends in flight that
the provider never took. The test waits until the fake holds some of them and the
notifier has announced (hence stored) its ``KEEP`` verdicts, then kills it. The held
requests are then answered ``503`` into the dead sockets, never accepted. What is *not*
tested here, because nothing can make it exactly once, is a kill between the provider's
answer and the notifier's ``sent`` write (see ``docs/notifications.md``).
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

from actors.nats import NatsServer, NatsTransport
from bench.fake_cloud_api import FakeCloudApi
from iceshop.notify import DEFAULT_DURABLE, REQUEST_STREAM, NotificationStore
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.notify_support import EventLog, ensure_streams, make_request, publish_requests

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
TOTAL = 40
KEEP = 15


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
            "ICESHOP_NOTIFY_RETRY_BASE_S": "0.05",
            "ICESHOP_NOTIFY_RETRY_CAP_S": "0.2",
        }
    )
    return env


@asynccontextmanager
async def notifier_process(
    url: str, data: Path, log: Path, env: dict[str, str]
) -> AsyncIterator[anyio.abc.Process]:
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
            yield process
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

        async with notifier_process(
            nats_server.url, tmp_path / "a", tmp_path / "a.err", env
        ) as first:
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

        async with notifier_process(
            nats_server.url, tmp_path / "b", tmp_path / "b.err", env
        ) as second:
            with anyio.fail_after(30):
                await api.wait_accepted(TOTAL)
                await events.wait_for(TOTAL)
                await drained(transport)
            second.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await second.wait() == 0, (tmp_path / "b.err").read_text()

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
