"""The WhatsApp delivery-status webhook, over real loopback sockets.

httpx is the provider; raw anyio sockets play the misbehaving clients (stalled, garbage,
oversized heads) that httpx is too polite to be.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from structlog.testing import capture_logs

from iceshop.notify.receiver import (
    InvalidWebhookBody,
    StatusReceiver,
    parse_statuses,
    sign_body,
)
from iceshop.notify.store import StatusName, StatusUpdate

SECRET = b"app-secret-for-tests"
TOKEN = "verify-me"
PATH = "/whatsapp/webhook"


class Sink:
    """The ``on_status`` callback: records updates, fails on request."""

    def __init__(self) -> None:
        self.updates: list[StatusUpdate] = []
        self.fail_on: str | None = None  # a message id

    async def __call__(self, update: StatusUpdate) -> None:
        if update.message_id == self.fail_on:
            raise RuntimeError("store unavailable")
        self.updates.append(update)


@asynccontextmanager
async def serving(receiver: StatusReceiver) -> AsyncIterator[str]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(receiver.serve, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


def make_receiver(sink: Sink, **kwargs: Any) -> StatusReceiver:
    return StatusReceiver(app_secret=SECRET, verify_token=TOKEN, on_status=sink, **kwargs)


def status(
    wamid: str,
    state: str,
    ts: int,
    *,
    notification_id: str | None = "n-1",
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": wamid,
        "status": state,
        "timestamp": str(ts),
        "recipient_id": "905551112233",
        # Fields the provider sends that the receiver has no use for.
        "conversation": {"id": "c-1", "origin": {"type": "marketing"}},
        "pricing": {"billable": True, "pricing_model": "CBP", "category": "marketing"},
    }
    if notification_id is not None:
        body["biz_opaque_callback_data"] = notification_id
    if errors is not None:
        body["errors"] = errors
    return body


def webhook(*statuses: dict[str, Any], extra_changes: list[Any] | None = None) -> bytes:
    changes: list[Any] = [
        {
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "42"},
                "statuses": list(statuses),
            },
        }
    ]
    changes += extra_changes or []
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": changes}],
    }
    return json.dumps(envelope).encode()


def signed(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign_body(secret, body), "Content-Type": "application/json"}


def update(
    wamid: str,
    state: StatusName,
    ts: int,
    *,
    notification_id: str | None = "n-1",
    error_code: int | None = None,
    error_title: str | None = None,
) -> StatusUpdate:
    return StatusUpdate(
        message_id=wamid,
        notification_id=notification_id,
        status=state,
        at=float(ts),
        recipient="905551112233",
        error_code=error_code,
        error_title=error_title,
    )


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(data)
        return await read_to_eof(stream)


async def read_to_eof(stream: anyio.abc.SocketStream) -> bytes:
    received = b""
    with anyio.fail_after(5):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --- callbacks ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_signed_callback_delivers_every_status_in_order() -> None:
    sink = Sink()
    body = webhook(
        status("wamid.A", "sent", 1_700_000_000),
        status("wamid.A", "delivered", 1_700_000_005),
        status("wamid.B", "read", 1_700_000_009, notification_id=None),
        status(
            "wamid.C",
            "failed",
            1_700_000_010,
            notification_id="n-3",
            errors=[{"code": 131026, "title": "Message undeliverable", "error_data": {}}],
        ),
        status("wamid.D", "deleted", 1_700_000_011),  # not one of the four: skipped
        extra_changes=[
            # An incoming message, and a change of another kind with another shape.
            {"field": "messages", "value": {"messages": [{"from": "9055", "id": "wamid.in"}]}},
            {"field": "account_update", "value": {"statuses": "not a list", "event": "X"}},
        ],
    )
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 200
    assert sink.updates == [
        update("wamid.A", "sent", 1_700_000_000),
        update("wamid.A", "delivered", 1_700_000_005),
        update("wamid.B", "read", 1_700_000_009, notification_id=None),
        update(
            "wamid.C",
            "failed",
            1_700_000_010,
            notification_id="n-3",
            error_code=131026,
            error_title="Message undeliverable",
        ),
    ]


@pytest.mark.anyio
async def test_duplicate_and_out_of_order_callbacks_are_all_handed_over() -> None:
    sink = Sink()
    bodies = [
        webhook(status("wamid.A", "read", 30)),
        webhook(status("wamid.A", "sent", 10)),
        webhook(status("wamid.A", "read", 30)),
        webhook(status("wamid.A", "delivered", 20)),
    ]
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        codes = [
            (await client.post(PATH, content=body, headers=signed(body))).status_code
            for body in bodies
        ]
    assert codes == [200, 200, 200, 200]
    assert [(u.status, u.at) for u in sink.updates] == [
        ("read", 30.0),
        ("sent", 10.0),
        ("read", 30.0),
        ("delivered", 20.0),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": sign_body(b"another secret", webhook(status("w", "read", 1)))},
        {"X-Hub-Signature-256": sign_body(SECRET, b"another body")},
        {"X-Hub-Signature-256": "sha1=" + sign_body(SECRET, webhook(status("w", "read", 1)))[7:]},
        {"X-Hub-Signature-256": "garbage"},
    ],
    ids=["missing", "wrong-secret", "wrong-body", "wrong-scheme", "garbage"],
)
async def test_unsigned_or_badly_signed_callback_is_401_and_not_delivered(
    headers: dict[str, str],
) -> None:
    sink = Sink()
    body = webhook(status("w", "read", 1))
    with capture_logs() as logs:
        async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post(PATH, content=body, headers=headers)
    assert response.status_code == 401
    assert sink.updates == []
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in warnings] in (
        ["webhook signature missing"],
        ["webhook signature mismatch"],
    )
    logged = repr(logs)
    assert SECRET.decode() not in logged
    assert "wamid" not in logged and body.decode() not in logged


@pytest.mark.anyio
async def test_signature_is_checked_on_the_raw_bytes() -> None:
    """Re-serialising the JSON (other spacing) must break the signature."""
    sink = Sink()
    body = webhook(status("w", "read", 1))
    respaced = json.dumps(json.loads(body), indent=2).encode()
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        bad = await client.post(PATH, content=respaced, headers=signed(body))
        good = await client.post(PATH, content=respaced, headers=signed(respaced))
    assert (bad.status_code, good.status_code) == (401, 200)
    assert len(sink.updates) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b'{"object": "whatsapp_business_account", "entry": "nope"}',
        webhook({"id": "w", "status": "read"}),  # no timestamp
        webhook(status("w", "read", 1) | {"timestamp": "yesterday"}),
    ],
    ids=["malformed", "empty", "wrong-shape", "missing-field", "bad-timestamp"],
)
async def test_signed_body_that_is_not_a_webhook_is_400(body: bytes) -> None:
    sink = Sink()
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 400
    assert sink.updates == []


@pytest.mark.anyio
async def test_body_over_the_limit_is_413_and_not_delivered() -> None:
    sink = Sink()
    padding = "x" * (256 * 1024)
    body = webhook(status("w", "read", 1) | {"padding": padding})
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        too_big = await client.post(PATH, content=body, headers=signed(body))
        small = webhook(status("w", "read", 1))
        fine = await client.post(PATH, content=small, headers=signed(small))
    assert (too_big.status_code, fine.status_code) == (413, 200)
    assert sink.updates == [update("w", "read", 1)]


@pytest.mark.anyio
async def test_chunked_body_over_the_limit_is_413() -> None:
    sink = Sink()
    body = webhook(status("w", "read", 1) | {"padding": "x" * 4096})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with (
        serving(make_receiver(sink, max_body=2048)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(PATH, content=chunks(), headers=signed(body))
    assert response.status_code == 413
    assert sink.updates == []


@pytest.mark.anyio
async def test_declared_oversize_is_answered_before_the_body_is_sent() -> None:
    async with serving(make_receiver(Sink(), max_body=1024)) as url:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
        answer = await raw_exchange(port_of(url), head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


@pytest.mark.anyio
async def test_failing_status_handler_is_500_and_the_resend_is_accepted() -> None:
    sink = Sink()
    sink.fail_on = "wamid.B"
    body = webhook(status("wamid.A", "delivered", 5), status("wamid.B", "read", 6))
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        failed = await client.post(PATH, content=body, headers=signed(body))
        sink.fail_on = None
        resent = await client.post(PATH, content=body, headers=signed(body))
    assert (failed.status_code, resent.status_code) == (500, 200)
    # wamid.A arrived twice: once before the failure, once in the resend.
    assert sink.updates == [
        update("wamid.A", "delivered", 5),
        update("wamid.A", "delivered", 5),
        update("wamid.B", "read", 6),
    ]


@pytest.mark.anyio
async def test_one_log_line_per_batch_with_counts() -> None:
    sink = Sink()
    body = webhook(status("a", "delivered", 1), status("b", "delivered", 2), status("c", "read", 3))
    with capture_logs() as logs:
        async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
            await client.post(PATH, content=body, headers=signed(body))
    batches = [entry for entry in logs if entry["event"] == "delivery statuses received"]
    assert len(batches) == 1
    assert batches[0]["count"] == 3
    assert batches[0]["statuses"] == {"delivered": 2, "read": 1}
    assert SECRET.decode() not in repr(logs)


# --- handshake, routing ------------------------------------------------------------------


@pytest.mark.anyio
async def test_verification_handshake_echoes_the_challenge() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "1158201444"}
    async with serving(make_receiver(Sink())) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get(PATH, params=params)
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {},
    ],
    ids=["wrong-token", "wrong-mode", "no-token", "nothing"],
)
async def test_verification_with_the_wrong_token_is_403(params: dict[str, str]) -> None:
    async with serving(make_receiver(Sink())) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get(PATH, params=params)
    assert response.status_code == 403
    assert "1" not in response.text


@pytest.mark.anyio
async def test_other_paths_are_404_and_other_methods_405() -> None:
    sink = Sink()
    body = webhook(status("w", "read", 1))
    async with serving(make_receiver(sink)) as url, httpx.AsyncClient(base_url=url) as client:
        elsewhere = await client.post("/other", content=body, headers=signed(body))
        put = await client.put(PATH, content=body, headers=signed(body))
        head = await client.head(PATH)
        after = await client.post(PATH, content=body, headers=signed(body))
    assert elsewhere.status_code == 404
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, POST"
    assert (head.status_code, head.content) == (405, b"")
    assert after.status_code == 200
    assert sink.updates == [update("w", "read", 1)]


@pytest.mark.anyio
async def test_custom_path() -> None:
    sink = Sink()
    body = webhook(status("w", "read", 1))
    async with (
        serving(make_receiver(sink, path="/hooks/wa")) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        default = await client.post(PATH, content=body, headers=signed(body))
        custom = await client.post("/hooks/wa", content=body, headers=signed(body))
    assert (default.status_code, custom.status_code) == (404, 200)
    assert len(sink.updates) == 1


# --- the connection level ----------------------------------------------------------------


@pytest.mark.anyio
async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    sink = Sink()
    bodies = [webhook(status(f"w{i}", "sent", i)) for i in range(3)]
    async with (
        serving(make_receiver(sink)) as url,
        await anyio.connect_tcp("127.0.0.1", port_of(url)) as stream,
    ):
        for body in bodies:
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                f"X-Hub-Signature-256: {sign_body(SECRET, body)}\r\n\r\n"
            ).encode()
            await stream.send(head + body)
            answer = b""
            with anyio.fail_after(5):
                while not answer.endswith(b"\r\n\r\nOK"):
                    answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200 ")
    assert [u.message_id for u in sink.updates] == ["w0", "w1", "w2"]


@pytest.mark.anyio
async def test_garbage_is_400() -> None:
    async with serving(make_receiver(Sink())) as url:
        answer = await raw_exchange(port_of(url), b"this is not http\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "stall",
    [
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode(),
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode(),
    ],
    ids=["mid-head", "mid-body"],
)
async def test_a_stalled_client_does_not_block_another(stall: bytes) -> None:
    sink = Sink()
    body = webhook(status("w", "read", 1))
    async with (
        serving(make_receiver(sink)) as url,
        await anyio.connect_tcp("127.0.0.1", port_of(url)) as stalled,
    ):
        await stalled.send(stall)
        async with httpx.AsyncClient(base_url=url) as client:
            with anyio.fail_after(5):
                response = await client.post(PATH, content=body, headers=signed(body))
        assert response.status_code == 200
    assert sink.updates == [update("w", "read", 1)]


@pytest.mark.anyio
async def test_connections_beyond_the_limit_wait_for_a_free_slot() -> None:
    sink = Sink()
    body = webhook(status("w", "read", 1))
    codes: list[int] = []

    async def post(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            codes.append((await client.post(PATH, content=body, headers=signed(body))).status_code)

    async with serving(make_receiver(sink, max_connections=1)) as url:
        stalled = await anyio.connect_tcp("127.0.0.1", port_of(url))
        await stalled.send(f"POST {PATH} HTTP/1.1\r\n".encode())
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(post, url)
                await anyio.wait_all_tasks_blocked()
                assert codes == []  # the only slot is taken by the stalled client
                assert sink.updates == []
                await stalled.aclose()
    assert codes == [200]
    assert sink.updates == [update("w", "read", 1)]


@pytest.mark.slow
@pytest.mark.anyio
async def test_an_idle_or_slow_client_is_timed_out() -> None:
    async with serving(make_receiver(Sink(), read_timeout=0.2)) as url:
        idle = await raw_exchange(port_of(url), b"")
        slow = await raw_exchange(port_of(url), f"POST {PATH} HTTP/1.1\r\n".encode())
    assert idle == b""  # an idle keep-alive connection is closed without a word
    assert slow.startswith(b"HTTP/1.1 408 ")


# --- parsing -----------------------------------------------------------------------------


def test_parse_accepts_a_numeric_timestamp_and_ignores_other_objects() -> None:
    body = json.loads(webhook(status("w", "sent", 7)))
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"] = 7
    assert parse_statuses(json.dumps(body).encode()).updates == (update("w", "sent", 7),)
    body["object"] = "page"
    assert parse_statuses(json.dumps(body).encode()).updates == ()


def test_parse_reports_skipped_statuses() -> None:
    batch = parse_statuses(webhook(status("w", "deleted", 1), status("w", "read", 2)))
    assert batch.updates == (update("w", "read", 2),)
    assert batch.skipped == ("deleted",)


@pytest.mark.parametrize("body", [b"[]", b"nul", webhook(status("w", "read", -5))])
def test_parse_rejects_what_is_not_a_webhook(body: bytes) -> None:
    with pytest.raises(InvalidWebhookBody):
        parse_statuses(body)


def test_receiver_rejects_empty_secret_or_token() -> None:
    with pytest.raises(ValueError, match="app_secret"):
        StatusReceiver(app_secret=b"", verify_token=TOKEN, on_status=Sink())
    with pytest.raises(ValueError, match="verify_token"):
        StatusReceiver(app_secret=SECRET, verify_token="", on_status=Sink())
    assert SECRET.decode() not in repr(make_receiver(Sink()))
