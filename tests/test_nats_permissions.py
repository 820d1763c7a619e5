"""The NATS users of nats.conf, enforced by a real nats-server.

The server runs the repository's ``nats.conf`` with the users' passwords in its
environment, on free ports. Each role logs in with its own password and inbox prefix and
is refused everything outside its role: the server answers a publish or subscribe it
does not allow with a permissions violation (the connection stays up) and drops the
message. A refused publish is shown to be dropped, not only reported: the same client
publishes an allowed message right after it, and a node-side subscriber sees only that
one (one client's messages reach a subscriber in the order they were sent). A refused
subscription is shown to receive nothing: after a ``flush`` (PING/PONG) every message
the server had sent it would have been counted.

The message layer (JWT per command) is tested elsewhere; nodes here run with
``auth = "off"`` so that only the NATS layer decides.
"""

from __future__ import annotations

import re
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest
import structlog

from actors import NotPermitted, VirtualClock
from actors.nats import JetStreamOutbox, Msg, NatsServer, NatsTransport, Subscription
from iceshop.cli import main
from iceshop.cli.client import resolve_nats_login
from iceshop.cli.secrets import (
    CLIENT_LOGIN_FILE,
    NATS_ROLES,
    SECRETS_DIR,
    new_password,
    password_env,
    provision,
    read_client_login,
)
from iceshop.config import load_settings
from iceshop.connection import nats_login
from iceshop.node import ShopNode
from iceshop.settings import Settings
from iceshop.wire import EVENT_STREAM

ROOT = Path(__file__).resolve().parent.parent
NATS_CONF = ROOT / "nats.conf"
PASSWORDS = {role: f"{role}-password-for-tests" for role in NATS_ROLES}
SERVER_ENV = {password_env(role): password for role, password in PASSWORDS.items()}
CLIENTS = [role for role in NATS_ROLES if role != "node"]

pytestmark = [pytest.mark.integration]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    # monitor_port=0: a free monitoring port rather than the file's fixed 8222.
    with NatsServer(
        config=NATS_CONF, env=SERVER_ENV, store_dir=tmp_path / "js", monitor_port=0
    ) as running:
        yield running


def login(server: NatsServer, user: str, password: str | None = None) -> NatsTransport:
    return NatsTransport(
        server.url,
        name=f"test-{user}",
        user=user,
        password=PASSWORDS[user] if password is None else password,
        inbox_prefix=f"_INBOX_{user}",
        reconnect_time_wait=0.05,
    )


async def _ignore(msg: Msg) -> None:
    pass


class Listener:
    """A ``node`` subscriber on ``iceshop.>`` recording the subjects that arrive."""

    def __init__(self, transport: NatsTransport) -> None:
        self.transport = transport
        self.subjects: list[str] = []
        self._marker = ""
        self._seen = anyio.Event()

    async def start(self) -> None:
        await self.transport.subscribe("iceshop.>", self._on_msg)
        await self.transport.flush()

    async def _on_msg(self, msg: Msg) -> None:
        self.subjects.append(msg.subject)
        if msg.subject == self._marker:
            self._seen.set()

    async def after(self, sender: NatsTransport, marker: str) -> list[str]:
        """Publish ``marker`` from ``sender`` (it must be allowed) and return what had
        arrived by the time it did; the sender's violations are all counted by then."""
        self._marker, self._seen = marker, anyio.Event()
        await sender.publish(marker, b"{}")
        with anyio.fail_after(5):
            await self._seen.wait()
        await sender.flush()  # and the sender has heard every -ERR the server sent it
        return self.subjects


@asynccontextmanager
async def listening(server: NatsServer) -> AsyncIterator[Listener]:
    async with login(server, "node") as node:
        listener = Listener(node)
        await listener.start()
        yield listener


async def refused_subscription(transport: NatsTransport, subject: str) -> Subscription:
    before = transport.permission_violations
    sub = await transport.subscribe(subject, _ignore)
    await transport.flush()
    assert transport.permission_violations == before + 1, subject
    violation = transport.last_permission_violation
    assert violation is not None
    assert f'subscription to "{subject.lower()}"' in str(violation)
    return sub


# -- logging in -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("role", NATS_ROLES)
async def test_each_role_logs_in_with_its_own_password_only(server: NatsServer, role: str) -> None:
    async with login(server, role) as transport:
        await transport.flush()
        assert transport.is_connected and transport.permission_violations == 0
    other = next(r for r in NATS_ROLES if r != role)
    with anyio.fail_after(3), pytest.raises(NotPermitted, match="refused the login"):
        async with login(server, role, password=PASSWORDS[other]):
            pass


@pytest.mark.anyio
async def test_anonymous_and_unknown_users_are_refused(server: NatsServer) -> None:
    with anyio.fail_after(3), pytest.raises(NotPermitted):
        async with NatsTransport(server.url):
            pass
    with anyio.fail_after(3), pytest.raises(NotPermitted):
        async with NatsTransport(server.url, user="root", password=PASSWORDS["admin"]):
            pass


# -- the gateway ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_gateway_cannot_register_a_seller_but_can_join(server: NatsServer) -> None:
    async with listening(server) as node, login(server, "gateway") as gateway:
        await gateway.publish("iceshop.sellers.X.register", b'{"name": "Forged"}')
        await gateway.flush()
        assert gateway.permission_violations == 1
        assert 'publish to "iceshop.sellers.x.register"' in str(gateway.last_permission_violation)
        arrived = await node.after(gateway, "iceshop.windows.W1.join")
        assert arrived == ["iceshop.windows.W1.join"]  # the registration never reached a node
        assert gateway.permission_violations == 1


@pytest.mark.anyio
async def test_gateway_publishes_only_buyer_and_window_commands(server: NatsServer) -> None:
    allowed = [
        "iceshop.buyers.B1.register",
        "iceshop.buyers.B1.intents.submit",
        "iceshop.buyers.B1.intents.I1.cancel",
        "iceshop.windows.W1.join",
        "iceshop.windows.W1.leave",
        "iceshop.windows.W1.get",
        "iceshop.windows.list",
    ]
    refused = [
        "iceshop.sellers.S1.listings.upsert",
        "iceshop.sellers.S1.offers.O1.approve",
        "iceshop.windows.W1.reservations",
        "iceshop.decisions.D1.get",
        "iceshop.admin.windows.W1.cancel",
        "iceshop.cluster.status",
        "iceshop.events.window.W1.created",
        "$JS.API.STREAM.DELETE.ICESHOP_EVENTS",
    ]
    async with listening(server) as node, login(server, "gateway") as gateway:
        for subject in refused + allowed:
            await gateway.publish(subject, b"{}")
        arrived = await node.after(gateway, "iceshop.windows.W2.get")
        assert arrived == [*allowed, "iceshop.windows.W2.get"]
        assert gateway.permission_violations == len(refused)


@pytest.mark.anyio
async def test_gateway_reads_no_inbox_but_its_own(server: NatsServer) -> None:
    async with (
        login(server, "node") as node,
        login(server, "admin") as admin,
        login(server, "gateway") as gateway,
    ):

        async def answer(msg: Msg) -> None:
            await msg.respond(b"secret reply")

        await node.subscribe("iceshop.cluster.status", answer)
        await node.flush()
        stolen = [
            await refused_subscription(gateway, subject)
            for subject in ("_INBOX_admin.>", "_INBOX_node.>", "_INBOX.>", ">", "*.>")
        ]
        own = await gateway.subscribe("_INBOX_gateway.>", _ignore)
        await gateway.flush()
        assert gateway.permission_violations == len(stolen)

        # The admin's request is answered on the admin's inbox ...
        reply, _ = await admin.request("iceshop.cluster.status", b"{}", timeout=5)
        assert reply == b"secret reply"
        # ... and nothing of it reached the gateway (flush: anything sent is counted).
        await gateway.flush()
        assert [sub.delivered for sub in stolen] == [0] * len(stolen)
        assert own.delivered == 0


# -- the other roles ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_seller_cannot_send_buyer_or_admin_commands(server: NatsServer) -> None:
    refused = [
        "iceshop.buyers.B1.register",
        "iceshop.buyers.B1.intents.submit",
        "iceshop.buyers.B1.intents.I1.cancel",
        "iceshop.windows.W1.join",
        "iceshop.windows.W1.leave",
        "iceshop.sellers.S1.register",
        "iceshop.admin.windows.W1.cancel",
        "iceshop.cluster.status",
    ]
    allowed = [
        "iceshop.sellers.S1.listings.upsert",
        "iceshop.sellers.S1.offers.O1.approve",
        "iceshop.sellers.S1.offers.O1.reject",
        "iceshop.windows.W1.get",
        "iceshop.windows.W1.reservations",
        "iceshop.windows.list",
        "iceshop.decisions.D1.get",
    ]
    async with listening(server) as node, login(server, "seller") as seller:
        for subject in refused + allowed:
            await seller.publish(subject, b"{}")
        arrived = await node.after(seller, "iceshop.windows.W2.get")
        assert arrived == [*allowed, "iceshop.windows.W2.get"]
        assert seller.permission_violations == len(refused)
        await refused_subscription(seller, "_INBOX_gateway.>")


@pytest.mark.anyio
@pytest.mark.parametrize("role", CLIENTS)
async def test_only_nodes_subscribe_to_command_subjects(server: NatsServer, role: str) -> None:
    commands = [
        "iceshop.windows.*.>",
        "iceshop.windows.W1.join",
        "iceshop.buyers.*.>",
        "iceshop.sellers.*.>",
        "iceshop.>",
    ]
    async with login(server, role) as client:
        subs = [await refused_subscription(client, subject) for subject in commands]
        async with login(server, "gateway") as gateway:
            await gateway.publish("iceshop.windows.W1.join", b"{}")
            await gateway.flush()
        await client.flush()
        assert [sub.delivered for sub in subs] == [0] * len(subs)
    async with login(server, "node") as node:
        for subject in commands:
            await node.subscribe(subject, _ignore)
        await node.flush()
        assert node.permission_violations == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "forged",
    [
        # Events and notification requests come from nodes only, after a commit.
        ["iceshop.events.window.W1.closed", "iceshop.notifications.N1.requested"],
        # Messages between nodes carry principals the sending node has checked, and the
        # journal stream stores whatever reaches its subjects: only nodes publish there,
        # not even an admin (whose commands go through the checks like anyone's).
        ["iceshop.internal.nodes.n1", "iceshop.journal.ev.window.W1"],
    ],
    ids=["events-and-notifications", "cluster-journal-and-node-messages"],
)
async def test_only_nodes_publish_what_nodes_trust(server: NatsServer, forged: list[str]) -> None:
    async with listening(server) as node:
        for role in CLIENTS:
            async with login(server, role) as client:
                for subject in forged:
                    await client.publish(subject, b"{}")
                await client.flush()
                assert client.permission_violations == len(forged), role
        async with login(server, "admin") as admin:
            arrived = await node.after(admin, "iceshop.cluster.status")
        assert arrived == ["iceshop.cluster.status"]


@pytest.mark.anyio
async def test_events_reader_consumes_the_event_stream_and_nothing_else(
    server: NatsServer,
) -> None:
    async with login(server, "node") as node, login(server, "events") as reader:
        outbox = JetStreamOutbox(node)
        await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
        await outbox.ensure_stream("ICESHOP_NOTIFICATIONS", ["iceshop.notifications.>"])
        await node.jetstream().publish("iceshop.events.window.W1.created", b'{"n": 1}')

        js = reader.jetstream(timeout=2.0)
        sub = await js.pull_subscribe("iceshop.events.>", durable="crm", stream=EVENT_STREAM)
        (msg,) = await sub.fetch(1, timeout=2.0)
        assert (msg.subject, msg.data) == ("iceshop.events.window.W1.created", b'{"n": 1}')
        await msg.ack_sync(timeout=2.0)  # answered by the server: the ack is in
        info = await js.consumer_info(EVENT_STREAM, "crm")
        assert info.num_ack_pending == 0
        assert reader.permission_violations == 0

        for subject in (
            "$JS.API.STREAM.CREATE.MINE",
            "$JS.API.STREAM.DELETE.ICESHOP_EVENTS",
            "$JS.API.STREAM.PURGE.ICESHOP_EVENTS",
            "$JS.API.CONSUMER.CREATE.ICESHOP_NOTIFICATIONS",
            "$JS.API.STREAM.MSG.GET.ICESHOP_NOTIFICATIONS",
            "iceshop.windows.W1.get",
        ):
            before = reader.permission_violations
            await reader.publish(subject, b"{}")
            await reader.flush()
            assert reader.permission_violations == before + 1, subject
        await refused_subscription(reader, "iceshop.notifications.>")


# -- a node logged in as "node" -------------------------------------------------------------


@pytest.mark.anyio
async def test_a_node_logged_in_as_node_serves_the_gateway(
    server: NatsServer, tmp_path: Path
) -> None:
    password_file = tmp_path / "node.password"
    password_file.write_text(PASSWORDS["node"] + "\n")
    settings = Settings(
        nats_url=server.url,
        data_dir=str(tmp_path / "node"),
        node_id="n1",
        auth="off",  # only the NATS layer decides here
        nats_user="node",
        nats_password_file=str(password_file),
    )
    clock = VirtualClock(start=0.0, epoch=1_800_000_000.0)
    async with ShopNode(settings, clock=clock) as shop, login(server, "gateway") as gateway:
        assert shop.transport is not None
        assert shop.transport.inbox_prefix == "_INBOX_node"

        # The gateway's request is answered on the gateway's own inbox.
        inbox = "_INBOX_gateway.test-1"
        replies: list[Msg] = []
        got = anyio.Event()

        async def on_reply(msg: Msg) -> None:
            replies.append(msg)
            got.set()

        await gateway.subscribe(inbox, on_reply)
        body = {"name": "Ali", "phone": "+905551112233", "whatsapp_opt_in": True}
        await gateway.publish("iceshop.buyers.B1.register", msgspec.json.encode(body), reply=inbox)
        with anyio.fail_after(5):
            await got.wait()
        (reply,) = replies
        assert reply.subject == inbox
        assert msgspec.json.decode(reply.data) == {
            "ok": True,
            "data": {"buyer_id": "B1", "created": True},
        }

        # Requests through the transport (inbox _INBOX_gateway.<random>) work the same.
        raw, _ = await gateway.request("iceshop.windows.W404.join", b'{"join_id": "J1", '
                                       b'"buyer_id": "B1"}', timeout=5)  # fmt: skip
        assert msgspec.json.decode(raw)["error"]["code"] == "unknown_window"
        raw, _ = await gateway.request("iceshop.windows.list", b"{}", timeout=5)
        assert msgspec.json.decode(raw)["ok"] is True
        # The node made its streams and consumers and answered, all within its rights.
        assert shop.transport.permission_violations == 0
        assert gateway.permission_violations == 0


# -- credentials from files -----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_password_file_is_read_again_when_the_connection_is_lost(
    tmp_path: Path,
) -> None:
    """Rotation: the server restarts with a new password; the client's file already
    holds it, and the next reconnect logs in with it."""
    store = tmp_path / "js"
    password_file = tmp_path / "node.password"
    password_file.write_text("old-password\n")
    env = {**SERVER_ENV, password_env("node"): "old-password"}
    first = NatsServer(config=NATS_CONF, env=env, store_dir=store, monitor_port=0)
    async with first:
        transport = NatsTransport(
            first.url,
            user="node",
            password_file=password_file,
            inbox_prefix="_INBOX_node",
            reconnect_time_wait=0.05,
        )
        await transport.connect()
    try:
        password_file.write_text("new-password\n")
        env[password_env("node")] = "new-password"
        second = NatsServer(
            config=NATS_CONF, env=env, store_dir=store, port=first.port, monitor_port=0
        )
        async with second:
            with anyio.fail_after(10):
                while not transport.is_connected:
                    await anyio.sleep(0.02)  # the client's own reconnect loop
            await transport.flush()
            assert transport.permission_violations == 0
    finally:
        await transport.close()


@pytest.mark.anyio
async def test_a_missing_password_file_is_a_clear_error(tmp_path: Path) -> None:
    transport = NatsTransport(
        "nats://127.0.0.1:1", user="node", password_file=tmp_path / "missing.password"
    )
    with pytest.raises(Exception, match=r"NATS password file .*missing\.password"):
        await transport.connect()
    with pytest.raises(ValueError, match="not both"):
        NatsTransport("nats://127.0.0.1:1", user="u", password="p", password_file="f")


# -- settings, local secrets and the command line -------------------------------------------


def test_login_settings_load_from_toml_and_environment(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('nats_user = "node"\nnats_password_file = "/run/secrets/nats"\n')
    environ = {
        "ICESHOP_NATS_INBOX_PREFIX": "_INBOX_node.n1",
        # Secrets in the same environment are not settings, and are not refused.
        "ICESHOP_NATS_PASSWORD": "pw",
        "ICESHOP_NATS_GATEWAY_PASSWORD": "gw",
    }
    settings = load_settings(toml, environ=environ)
    assert (settings.nats_user, settings.nats_password_file) == ("node", "/run/secrets/nats")
    assert settings.nats_inbox_prefix == "_INBOX_node.n1"
    login = nats_login(settings, environ)
    assert login is not None and login.password_file == "/run/secrets/nats"
    assert login.inbox_prefix == "_INBOX_node.n1" and login.password is None

    from_env = load_settings(environ={"ICESHOP_NATS_USER": "node"})
    login = nats_login(from_env, {"ICESHOP_NATS_PASSWORD": "pw"})
    assert login is not None and (login.password, login.inbox_prefix) == ("pw", "_INBOX_node")
    assert "pw" not in repr(login)
    with pytest.raises(NotPermitted, match="no password"):
        nats_login(from_env, {})
    assert nats_login(Settings(), {"ICESHOP_NATS_PASSWORD": "pw"}) is None


def test_provision_makes_private_secrets_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = provision(data)
    directory = data / SECRETS_DIR
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    env = first.nats.server_env()
    assert sorted(env) == sorted(SERVER_ENV)
    assert len(set(env.values())) == len(NATS_ROLES)  # one password per role
    assert all(len(password) >= 40 for password in env.values())
    for role in NATS_ROLES:
        assert stat.S_IMODE(first.nats.password_file(role).stat().st_mode) == 0o600
    assert stat.S_IMODE(first.client_login.stat().st_mode) == 0o600
    # Made once: a second run finds and keeps them.
    second = provision(data)
    assert second.nats.server_env() == env
    login = read_client_login(data)
    assert login is not None and login.user == "admin" and login.inbox_prefix == "_INBOX_admin"
    assert login.password_file is not None
    assert Path(login.password_file).read_text().strip() == env[password_env("admin")]
    assert first.client_login == directory / CLIENT_LOGIN_FILE


def test_command_line_login_order(tmp_path: Path) -> None:
    assert resolve_nats_login({}, tmp_path) is None
    provision(tmp_path / "data")
    found = resolve_nats_login({}, tmp_path)
    assert found is not None and found.user == "admin"
    given = resolve_nats_login(
        {"ICESHOP_NATS_USER": "gateway", "ICESHOP_NATS_PASSWORD": "pw"}, tmp_path
    )
    assert given is not None and (given.user, given.password) == ("gateway", "pw")
    assert given.inbox_prefix == "_INBOX_gateway"


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """``main`` configures logging onto the captured stderr; give the defaults back."""
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("cli_logging")
def test_command_line_says_forbidden_and_unauthorized(
    server: NatsServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--nats", server.url, "--timeout", "0.5", "cluster", "status"]
    monkeypatch.setenv("ICESHOP_NATS_USER", "gateway")
    monkeypatch.setenv("ICESHOP_NATS_PASSWORD", PASSWORDS["gateway"])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "forbidden: NATS user gateway" in err
    assert 'publish to "iceshop.cluster.status"' in err

    monkeypatch.setenv("ICESHOP_NATS_PASSWORD", "wrong")
    assert main(argv) == 1
    assert "unauthorized:" in capsys.readouterr().err

    monkeypatch.setenv("ICESHOP_NATS_USER", "admin")
    monkeypatch.setenv("ICESHOP_NATS_PASSWORD", PASSWORDS["admin"])
    assert main(argv) == 3  # allowed; no node is running to answer
    assert "no node answered" in capsys.readouterr().err


def test_made_passwords_are_ones_nats_server_can_read_from_its_environment() -> None:
    """nats-server parses a variable's value as a config value: one starting with ``_``,
    ``-`` or a digit stops it. Every made password starts with a letter, then hex."""
    made = {new_password() for _ in range(2000)}
    assert len(made) == 2000
    assert all(re.fullmatch(r"p[0-9a-f]{64}", p) for p in made)
