"""The notifier wired into the node and the command line: a window that activates tells
its opted-in buyers (through the default ``log`` provider), and a provider without
what it needs is refused at start, naming the setting."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest
import structlog

from actors.nats import NatsServer, NatsTransport
from bench.fake_cloud_api import FakeCloudApi
from iceshop.cli import main
from iceshop.node import ShopNode
from iceshop.notify import LOG_FILE, REQUEST_STREAM
from iceshop.notify.receiver import sign_body
from iceshop.notify.service import open_provider, whatsapp_token
from iceshop.settings import Settings
from iceshop.wire import ShopError
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.notify_support import EventLog
from tests.shop_client import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def _structlog_defaults() -> Iterator[None]:
    """``main`` configures logging for its process; give the next test the defaults back."""
    yield
    structlog.reset_defaults()


def node_settings(server: NatsServer, data: Path, **kw: object) -> Settings:
    return msgspec.structs.replace(
        Settings(
            nats_url=server.url,
            data_dir=str(data),
            node_id="n1",
            auth="off",
            campaign_min_quantity=1,
            campaign_interval_s=0.2,
            window_min_participants=1,
            window_lead_s=0.3,
        ),
        **kw,
    )


async def a_window_for_two_buyers(c: Client) -> None:
    await c.ok("sellers.S1.register", {"name": "Seller"})
    listing = {
        "product_id": "P1",
        "title": "Kettle",
        "list_price_minor": 100_000,
        "floor_price_minor": 80_000,
        "stock": 10,
        "currency": "TRY",
    }
    await c.ok("sellers.S1.listings.upsert", listing)
    buyers = [("B1", "+905550000001", "tr", True), ("B2", "+905550000002", "en", False)]
    for buyer, number, locale, opt_in in buyers:
        await c.ok(
            f"buyers.{buyer}.register",
            {"name": buyer, "phone": number, "locale": locale, "whatsapp_opt_in": opt_in},
        )
        intent = {"intent_id": "I1", "product_id": "P1", "max_price_minor": 100_000}
        await c.ok(f"buyers.{buyer}.intents.submit", intent)


@pytest.mark.anyio
async def test_the_node_notifies_opted_in_buyers_through_the_log(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "node"
    async with (
        ShopNode(node_settings(nats_server, data)) as node,
        NatsTransport(nats_server.url) as t,
    ):
        assert node.notifier is not None
        events = EventLog()
        await events.subscribe(t)
        await a_window_for_two_buyers(Client(t))
        with anyio.fail_after(15):
            await events.wait_for(1)
            await node.notifier.idle()
        (event,) = events.events
        assert event["type"] == "sent"
        assert event["data"]["buyer_id"] == "B1"
        assert event["data"]["channel"] == "log"
        # The node's metrics count the notifier's outcomes.
        assert 'iceshop_notifications_total{outcome="sent"} 1.0' in (
            node.metrics.exposition().decode()
        )
    (line,) = (data / LOG_FILE).read_bytes().splitlines()
    logged = msgspec.json.decode(line)
    assert logged["to"] == "+905550000001"
    assert logged["locale"] == "tr"
    assert logged["text"].startswith("Flaş satış başladı: P1, tanesi")  # noqa: RUF001


@pytest.mark.anyio
async def test_a_buyer_registered_without_opt_in_never_reaches_the_provider(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeCloudApi() as api:
        monkeypatch.setenv("ICESHOP_WHATSAPP_TOKEN", api.token)
        settings = node_settings(
            nats_server,
            tmp_path,
            notify_provider="whatsapp",
            whatsapp_api_base=api.base,
            whatsapp_api_version=api.version,
            whatsapp_phone_number_id=api.phone_number_id,
        )
        async with ShopNode(settings) as node, NatsTransport(nats_server.url) as t:
            assert node.notifier is not None
            events = EventLog()
            await events.subscribe(t)
            await a_window_for_two_buyers(Client(t))  # B1 opted in, B2 did not
            with anyio.fail_after(15):
                await events.wait_for(1)
                await node.notifier.idle()
            requests = await t.jetstream().stream_info(REQUEST_STREAM)
            stats = node.notifier.stats
        assert [e["data"]["buyer_id"] for e in events.events] == ["B1"]
        assert [e["type"] for e in events.events] == ["sent"]
        assert [a.to for a in api.accepted] == ["905550000001"]
        assert len(api.arrivals) == 1
        # The product asked for B1 only, with the opt-in: nothing was refused either.
        assert requests.state.messages == 1
        assert (stats.received, stats.sent, stats.refused) == (1, 1, 0)


@pytest.mark.anyio
async def test_the_notifier_serves_the_status_receiver_which_updates_the_record(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICESHOP_WHATSAPP_APP_SECRET", "app-secret")
    monkeypatch.setenv("ICESHOP_WHATSAPP_VERIFY_TOKEN", "verify-me")
    port = free_port()
    settings = node_settings(nats_server, tmp_path, status_webhook_port=port)
    async with (
        ShopNode(settings) as node,
        NatsTransport(nats_server.url) as t,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        assert node.notifier is not None
        events = EventLog()
        await events.subscribe(t)
        await a_window_for_two_buyers(Client(t))
        with anyio.fail_after(15):
            await events.wait_for(1)
        nid = events.events[0]["data"]["notification_id"]
        record = await node.notifier.store.get(nid)
        assert record is not None and record.state == "sent"
        handshake = await http.get(
            "/whatsapp/webhook",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": "verify-me",
                "hub.challenge": "42",
            },
        )
        assert (handshake.status_code, handshake.text) == (200, "42")
        status = {
            "id": "wamid.1",  # the log provider gives no message id: the callback's own
            "status": "delivered",
            "timestamp": "1800000000",
            "recipient_id": "905550000001",
            "biz_opaque_callback_data": nid,
        }
        change = {
            "field": "messages",
            "value": {"messaging_product": "whatsapp", "statuses": [status]},
        }
        body = msgspec.json.encode(
            {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
        )
        forged = await http.post(
            "/whatsapp/webhook", content=body, headers={"X-Hub-Signature-256": "sha256=00"}
        )
        assert forged.status_code == 401
        assert (await node.notifier.store.get(nid)).state == "sent"  # type: ignore[union-attr]
        signed = {"X-Hub-Signature-256": sign_body(b"app-secret", body)}
        answer = await http.post("/whatsapp/webhook", content=body, headers=signed)
        assert answer.status_code == 200
        assert (await node.notifier.store.get(nid)).state == "delivered"  # type: ignore[union-attr]


@pytest.mark.usefixtures("_structlog_defaults")
def test_the_notifier_refuses_a_status_receiver_without_its_secret(
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ICESHOP_WHATSAPP_APP_SECRET", raising=False)
    monkeypatch.setenv("ICESHOP_STATUS_WEBHOOK_PORT", str(free_port()))
    status = main(["notifier", "--nats", nats_server.url, "--data", str(tmp_path)])
    assert status == 2
    assert "whatsapp_app_secret" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["external", "off"])
async def test_other_modes_leave_the_notifier_out(
    nats_server: NatsServer, tmp_path: Path, mode: str
) -> None:
    async with ShopNode(node_settings(nats_server, tmp_path, notifier=mode)) as node:
        assert node.notifier is None


@pytest.mark.usefixtures("_structlog_defaults")
def test_the_notifier_command_refuses_whatsapp_without_a_token(
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ICESHOP_NOTIFY_PROVIDER", "whatsapp")
    monkeypatch.setenv("ICESHOP_WHATSAPP_PHONE_NUMBER_ID", "123")
    monkeypatch.delenv("ICESHOP_WHATSAPP_TOKEN", raising=False)
    status = main(["notifier", "--nats", nats_server.url, "--data", str(tmp_path)])
    assert status == 2
    assert "whatsapp_token" in capsys.readouterr().err


@pytest.mark.usefixtures("_structlog_defaults")
def test_the_notifier_command_refuses_an_empty_token_file(
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    monkeypatch.setenv("ICESHOP_NOTIFY_PROVIDER", "whatsapp")
    monkeypatch.setenv("ICESHOP_WHATSAPP_PHONE_NUMBER_ID", "123")
    monkeypatch.setenv("ICESHOP_WHATSAPP_TOKEN_FILE", str(token))
    status = main(["notifier", "--nats", nats_server.url, "--data", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "whatsapp_token_file" in err
    assert "is empty" in err


@pytest.mark.anyio
async def test_the_token_comes_from_the_environment_or_else_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ICESHOP_WHATSAPP_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_text("from-file\n")
    base = Settings(notify_provider="whatsapp", whatsapp_phone_number_id="123")
    from_file = msgspec.structs.replace(base, whatsapp_token_file=str(token))
    assert await whatsapp_token(from_file) == "from-file"
    env = {"ICESHOP_WHATSAPP_TOKEN": "from-env"}
    assert await whatsapp_token(from_file, env) == "from-env"
    monkeypatch.setenv("ICESHOP_WHATSAPP_TOKEN", "from-env")
    provider = await open_provider(from_file)
    assert "from-env" not in repr(provider)
    # A secret, not a setting: config skips the variable and Settings has no such field.
    assert "whatsapp_token" not in Settings.__struct_fields__
    monkeypatch.delenv("ICESHOP_WHATSAPP_TOKEN")
    missing = msgspec.structs.replace(base, whatsapp_token_file=str(tmp_path / "none"))
    with pytest.raises(ShopError) as err:
        await whatsapp_token(missing)
    assert err.value.details == {"field": "whatsapp_token_file"}
    with pytest.raises(ShopError):
        await open_provider(msgspec.structs.replace(base, notify_provider="webhook"))
