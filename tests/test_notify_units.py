"""The notifier's pure parts: templates, backoff, WhatsApp error classification, request
decoding, the outcome event, and the rate limiter on virtual time."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from actors import VirtualClock
from iceshop.notify import (
    Attempt,
    Backoff,
    NotificationRecord,
    NotifyRequest,
    PermanentSendError,
    RateLimiter,
    RetryableSendError,
    classify,
    decode_request,
    format_price,
    outcome_event,
    render,
)
from iceshop.notify.request import REQUEST_STREAM
from iceshop.notify.templates import format_closing
from iceshop.notify.whatsapp import message_body, parse_retry_after
from iceshop.observability import logs
from iceshop.product.notifications import notification_payload
from iceshop.product.state import NotificationRequested
from iceshop.wire import parse_time

# -- templates --------------------------------------------------------------------------


def a_request(**kw: object) -> NotifyRequest:
    fields: dict[str, object] = {
        "notification_id": "n1",
        "buyer_id": "B1",
        "phone": "+905550000001",
        "locale": "tr",
        "window_id": "W1",
        "product_id": "kettle",
        "seller_id": "S1",
        "unit_price_minor": 123450,
        "currency": "TRY",
        "expires_at": "2027-03-01T12:30:00.000Z",
    }
    fields.update(kw)
    return msgspec.convert(fields, NotifyRequest)


def test_prices_follow_the_locale_and_the_currency_decimals() -> None:
    assert format_price(123450, "TRY", "tr") == "1.234,50 TL"
    assert format_price(123450, "TRY", "en") == "TRY 1,234.50"
    assert format_price(5, "EUR", "tr") == "0,05 EUR"
    assert format_price(1500, "JPY", "en") == "JPY 1,500"
    assert format_price(1234567, "KWD", "en") == "KWD 1,234.567"
    assert format_price(99, "USD", "xx") == "0,99 USD"  # unknown locale: Turkish


def test_closing_time_is_shown_in_the_buyers_zone() -> None:
    assert format_closing("2027-03-01T22:30:00.000Z", "tr") == "02.03.2027 01:30 TSİ"
    assert format_closing("2027-03-01T22:30:00.000Z", "en") == "2027-03-01 22:30 UTC"


def test_render_builds_template_params_and_the_same_text() -> None:
    tr = render(a_request())
    assert tr.template == "iceshop_flash_window"
    assert tr.locale == "tr"
    assert tr.to == "+905550000001"
    assert tr.params == ("kettle", "1.234,50 TL", "01.03.2027 15:30 TSİ", "W1")
    assert all(p in tr.text for p in tr.params)
    assert tr.text.startswith("Flaş satış")  # noqa: RUF001

    en = render(a_request(locale="en"), "custom")
    assert en.template == "custom"
    assert en.locale == "en"
    assert en.params == ("kettle", "TRY 1,234.50", "2027-03-01 12:30 UTC", "W1")
    assert en.text.startswith("Flash sale on: kettle at TRY 1,234.50 each")

    assert render(a_request(locale="de")).locale == "tr"


def test_whatsapp_body_is_a_template_message_carrying_our_id() -> None:
    body = message_body(render(a_request(locale="en")))
    assert body["to"] == "905550000001"
    assert body["type"] == "template"
    assert body["biz_opaque_callback_data"] == "n1"
    assert body["template"]["language"] == {"code": "en"}
    params = body["template"]["components"][0]["parameters"]
    assert [p["text"] for p in params] == ["kettle", "TRY 1,234.50", "2027-03-01 12:30 UTC", "W1"]


# -- requests ---------------------------------------------------------------------------


def test_product_requests_decode_and_unknown_fields_are_ignored() -> None:
    requested = NotificationRequested(
        notification_id="nabc",
        window_id="W1",
        product_id="P1",
        seller_id="S1",
        buyer_id="B1",
        intent_id="I1",
        phone="+905550000001",
        locale="en",
        unit_price_minor=900,
        currency="TRY",
        activates_at=1_800_000_000.0,
        expires_at=1_800_000_900.0,
        at=1_800_000_000.0,
    )
    _, body = notification_payload(requested)
    event = decode_request(body)
    assert event.seq == 1
    assert event.data.notification_id == "nabc"
    assert event.data.whatsapp_opt_in is True  # the product asks for opted-in buyers only
    assert parse_time(event.data.expires_at) == 1_800_000_900.0

    raw = msgspec.json.decode(body)
    raw["data"]["whatsapp_opt_in"] = False
    raw["data"]["something_new"] = 1
    assert decode_request(msgspec.json.encode(raw)).data.whatsapp_opt_in is False
    del raw["data"]["whatsapp_opt_in"]
    assert decode_request(msgspec.json.encode(raw)).data.whatsapp_opt_in is None
    with pytest.raises(msgspec.DecodeError):
        decode_request(b'{"event_id": "x"}')


def test_request_stream_is_the_one_the_node_creates() -> None:
    from iceshop.node.app import NOTIFICATION_STREAM

    assert REQUEST_STREAM == NOTIFICATION_STREAM


# -- backoff ----------------------------------------------------------------------------


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    top = Backoff(base=1.0, cap=30.0, max_attempts=8, rand=lambda: 0.999999)
    assert [math.ceil(top.delay(n)) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    bottom = Backoff(base=1.0, cap=30.0, rand=lambda: 0.0)
    assert bottom.delay(5) == 0.0
    assert bottom.delay(5, retry_after=7.5) == 7.5
    half = Backoff(base=2.0, cap=100.0, rand=lambda: 0.5)
    assert half.delay(3) == 4.0
    assert half.delay(3, retry_after=1.0) == 4.0
    assert half.ceiling(1000) == 100.0
    assert not half.exhausted(7)
    assert Backoff(max_attempts=8).exhausted(8)
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)


# -- WhatsApp answers -------------------------------------------------------------------


def graph_error(code: int, message: str = "x") -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message, "type": "T"}})


@pytest.mark.parametrize(
    ("status", "code"), [(400, 130429), (400, 131056), (500, 1), (503, 2), (429, 4), (502, 0)]
)
def test_retryable_answers(status: int, code: int) -> None:
    with pytest.raises(RetryableSendError) as err:
        classify(status, graph_error(code), retry_after="3")
    assert err.value.code == (code or status)
    assert err.value.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("status", "code"), [(400, 131026), (400, 131047), (400, 131048), (400, 368), (500, 131026)]
)
def test_permanent_codes_win_over_the_status(status: int, code: int) -> None:
    with pytest.raises(PermanentSendError) as err:
        classify(status, graph_error(code, "nope"))
    assert err.value.code == code
    assert "nope" in err.value.reason
    assert not err.value.retryable


def test_other_client_errors_are_permanent_and_bodiless_5xx_retryable() -> None:
    with pytest.raises(PermanentSendError) as perm:
        classify(401, graph_error(190, "bad token"))
    assert perm.value.code == 190
    with pytest.raises(PermanentSendError) as plain:
        classify(404, b"not json")
    assert plain.value.code == 404
    with pytest.raises(RetryableSendError) as retry:
        classify(502, b"<html>bad gateway</html>")
    assert retry.value.code == 502
    assert retry.value.retry_after_s is None


def test_accepted_answers_carry_the_message_id() -> None:
    ok = msgspec.json.encode({"messages": [{"id": "wamid.ABC", "message_status": "accepted"}]})
    assert classify(200, ok).message_id == "wamid.ABC"
    assert classify(200, b"garbage").message_id is None


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- the outcome event --------------------------------------------------------------------


def test_outcome_event_has_the_contract_shape() -> None:
    record = NotificationRecord(
        notification_id="n1",
        state="delivered",
        outcome="sent",
        attempts=(
            Attempt(at=1.0, outcome="retry", code=130429),
            Attempt(at=2.0, outcome="in_doubt"),
            Attempt(at=3.0, outcome="sent"),
        ),
        message_id="wamid.1",
        buyer_id="B1",
        window_id="W1",
        product_id="P1",
        provider="whatsapp",
        error_code=130429,
        reason="rate",
        decided_at=1_800_000_000.0,
    )
    subject, event_id, body = outcome_event(record, "shop.eu", 0.0)
    assert subject == "shop.eu.events.notification.n1.sent"
    assert event_id == "notification.n1.2"
    assert msgspec.json.decode(body) == {
        "event_id": "notification.n1.2",
        "type": "sent",
        "at": "2027-01-15T08:00:00.000Z",
        "seq": 2,
        "data": {
            "notification_id": "n1",
            "buyer_id": "B1",
            "window_id": "W1",
            "product_id": "P1",
            "channel": "whatsapp",
            "attempts": 2,
            "message_id": "wamid.1",
            "error_code": None,
            "reason": None,
        },
    }
    dead = msgspec.structs.replace(record, outcome="dead", state="dead", reason="exhausted")
    subject, _, body = outcome_event(dead, "iceshop", 0.0)
    assert subject.endswith(".dead")
    assert msgspec.json.decode(body)["data"]["error_code"] == 130429
    # A record the provider's status settled (our own write lost in a crash): sent.
    orphan = msgspec.structs.replace(record, outcome=None, state="read")
    assert outcome_event(orphan, "iceshop", 0.0)[0].endswith(".sent")


# -- the rate limiter on virtual time ---------------------------------------------------


async def drive(clock: VirtualClock, limiter: RateLimiter, until: anyio.Event) -> None:
    """Move virtual time in 4 ms steps, waking the limiter's sleepers, until ``until``."""
    while not until.is_set():
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        clock.set(round(clock.monotonic() + 0.004, 6))
        limiter.wake()


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window - 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.anyio
async def test_rate_per_number_is_never_exceeded_on_virtual_time() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(clock, rate_per_s=80.0)
    times: list[float] = []
    done = anyio.Event()

    async def send(i: int) -> None:
        slot = await limiter.acquire("num", f"+90555{i:07d}")
        assert clock.monotonic() >= slot  # never before its slot
        times.append(slot)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, clock, limiter, done)
        async with anyio.create_task_group() as senders:
            for i in range(200):
                senders.start_soon(send, i)
        done.set()
    assert len(times) == 200
    assert max_in_window(times, 1.0) == 80
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    assert min(gaps) >= 1 / 80 - 1e-6
    assert times[-1] == pytest.approx(199 / 80, abs=0.002)  # and no slower than that


@pytest.mark.anyio
async def test_sends_that_wake_late_still_leave_one_interval_apart() -> None:
    """The loop stalls for 100 ms in the middle of a run: the sends whose slots passed
    meanwhile leave together, but no second of actual departures holds more than the
    rate (without the departure gate it would)."""
    clock = VirtualClock()
    limiter = RateLimiter(clock, rate_per_s=80.0)
    departures: list[float] = []
    done = anyio.Event()

    async def stalling_drive() -> None:
        step = 0
        while not done.is_set():
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            step += 1
            stall = 0.1 if step == 150 else 0.004
            clock.set(round(clock.monotonic() + stall, 6))
            limiter.wake()

    async def send(i: int) -> None:
        await limiter.acquire("num", f"+90555{i:07d}")
        departures.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(stalling_drive)
        async with anyio.create_task_group() as senders:
            for i in range(200):
                senders.start_soon(send, i)
        done.set()
    assert len(departures) == 200
    assert max_in_window(departures, 1.0) <= 80
    assert max(departures) < 199 / 80 + 0.2  # late wake-ups cost no lasting rate


@pytest.mark.anyio
async def test_recipient_spacing_holds_back_only_that_recipient() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(clock, rate_per_s=100.0, spacing_s=2.0)
    sent: list[tuple[str, float]] = []
    done = anyio.Event()

    async def send(to: str) -> None:
        await limiter.acquire("num", to)
        sent.append((to, clock.monotonic()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, clock, limiter, done)
        async with anyio.create_task_group() as senders:
            for to in ["A", "A", "A", "B", "C", "D"]:
                senders.start_soon(send, to)
        done.set()
    a_times = [t for to, t in sent if to == "A"]
    assert len(a_times) == 3
    assert a_times[1] - a_times[0] >= 2.0 - 1e-6
    assert a_times[2] - a_times[1] >= 2.0 - 1e-6
    others = [t for to, t in sent if to != "A"]
    assert max(others) < 0.1  # B, C, D did not wait behind A


def test_recipient_memory_is_bounded_by_the_spacing() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(clock, rate_per_s=1000.0, burst=1000, spacing_s=1.0)
    for i in range(5000):
        clock.set(i * 0.01)  # 100 sends a second, each to a new recipient
        limiter.book("num", f"r{i}")
    # Only recipients booked within the last second (plus the backlog) are kept.
    assert limiter.tracked() <= 101
    assert limiter.recipient_ready("num", "r4999") == pytest.approx(49.99 + 1.0)
    assert limiter.recipient_ready("num", "r0") == -math.inf


def test_burst_lets_that_many_go_at_once_then_paces() -> None:
    clock = VirtualClock(start=10.0)
    limiter = RateLimiter(clock, rate_per_s=10.0, burst=3)
    slots = [limiter.book("n", f"r{i}") for i in range(6)]
    assert slots == pytest.approx([10.0, 10.0, 10.0, 10.1, 10.2, 10.3])
    with pytest.raises(ValueError):
        RateLimiter(clock, rate_per_s=0)


@pytest.mark.parametrize("burst", [1, 3])
def test_a_new_lease_holder_waits_one_interval_before_its_first_send(burst: int) -> None:
    clock = VirtualClock(start=10.0)
    limiter = RateLimiter(clock, rate_per_s=10.0, burst=burst)
    limiter.hold_off("n")  # just took the send lease: the previous holder sent until now
    slots = [limiter.book("n", f"r{i}") for i in range(3)]
    # As if the previous holder had emptied the bucket: it refills at the rate.
    assert slots == pytest.approx([10.1, 10.2, 10.3])
    # A hold-off never moves a schedule that is already later.
    limiter.hold_off("n")
    assert limiter.book("n", "r3") >= slots[-1]


# -- logging: httpx's per-request lines ----------------------------------------------------


def test_httpx_request_lines_are_not_logged_at_info(tmp_path: Path) -> None:
    """httpx logs a line per request at INFO (80 a second from a notifier): the logging
    setup keeps httpx and httpcore to warnings, and the rest at the configured level."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    before = [logger.level for logger in loggers]
    path = tmp_path / "node.log"
    try:
        with logs.to_file(path, "info", "json"):
            logging.getLogger("httpx").info("HTTP Request: POST https://graph.example")
            logging.getLogger("httpcore.http11").info("send_request_headers.started")
            logging.getLogger("httpx").warning("httpx trouble")
            logging.getLogger("iceshop.notify").info("kept")
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)
    text = path.read_text()
    assert "kept" in text and "httpx trouble" in text
    assert "HTTP Request" not in text and "send_request_headers" not in text
