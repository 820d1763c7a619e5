"""The NATS users of nats.conf, enforced by a real nats-server.

The server runs the repository's ``nats.conf`` with two sellers' users added (as
``iceshop nats users S1 S2 --base nats.conf`` makes it) and the users' passwords in its
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
from nats.js.api import AckPolicy, ConsumerConfig

from actors import NotPermitted, VirtualClock
from actors.nats import JetStreamOutbox, Msg, NatsServer, NatsTransport, Subscription
from iceshop.audit import ensure_audit_stream
from iceshop.cli import main
from iceshop.cli.client import resolve_nats_login
from iceshop.cli.nats_users import (
    authorization_block,
    replace_authorization,
    seller_password_env,
    seller_user,
)
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
from iceshop.notify.lease import lease_key
from iceshop.notify.store import BUCKET as NOTIFY_BUCKET
from iceshop.notify.store import record_key
from iceshop.notify.worker import DEFAULT_DURABLE as NOTIFIER_DURABLE
from iceshop.readmodel.projector import node_durable
from iceshop.settings import Settings
from iceshop.wire import EVENT_STREAM

ROOT = Path(__file__).resolve().parent.parent
NATS_CONF = ROOT / "nats.conf"
#: The users of the shipped nats.conf: one per role, none shared by the sellers.
ROLES = ["node", "gateway", "admin", "events"]
SELLERS = ["S1", "S2"]
S1, S2 = (seller_user(s) for s in SELLERS)
USERS = [*ROLES, S1, S2]
PASSWORDS = {user: f"{user}-password-for-tests" for user in USERS}
SERVER_ENV = {
    **{password_env(role): PASSWORDS[role] for role in ROLES},
    **{seller_password_env(s): PASSWORDS[seller_user(s)] for s in SELLERS},
}
CLIENTS = [user for user in USERS if user != "node"]

pytestmark = [pytest.mark.integration]


def with_sellers(tmp_path: Path) -> Path:
    """nats.conf with the users of sellers S1 and S2 added."""
    conf = tmp_path / "nats-sellers.conf"
    conf.write_text(replace_authorization(NATS_CONF.read_text(), authorization_block(SELLERS)))
    return conf


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    # monitor_port=0: a free monitoring port rather than the file's fixed 8222.
    with NatsServer(
        config=with_sellers(tmp_path), env=SERVER_ENV, store_dir=tmp_path / "js", monitor_port=0
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
@pytest.mark.parametrize("role", USERS)
async def test_each_role_logs_in_with_its_own_password_only(server: NatsServer, role: str) -> None:
    async with login(server, role) as transport:
        await transport.flush()
        assert transport.is_connected and transport.permission_violations == 0
    other = next(r for r in USERS if r != role)
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
async def test_a_seller_publishes_only_its_own_seller_commands(server: NatsServer) -> None:
    refused = [
        # another seller's commands
        "iceshop.sellers.S2.listings.upsert",
        "iceshop.sellers.S2.offers.O1.approve",
        "iceshop.sellers.S2.offers.O1.reject",
        "iceshop.sellers.*.listings.upsert",
        # buyers', the admin's, and registering sellers (itself included)
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
    async with listening(server) as node, login(server, S1) as seller:
        for subject in refused + allowed:
            await seller.publish(subject, b"{}")
        arrived = await node.after(seller, "iceshop.windows.W2.get")
        assert arrived == [*allowed, "iceshop.windows.W2.get"]
        assert seller.permission_violations == len(refused)


@pytest.mark.anyio
async def test_a_seller_reads_no_replies_but_its_own(server: NatsServer) -> None:
    """Seller S1 cannot read the replies to seller S2's requests (nor anyone else's),
    and gets its own; neither can a gateway read a seller's."""
    async with (
        login(server, "node") as node,
        login(server, S1) as s1,
        login(server, S2) as s2,
        login(server, "gateway") as gateway,
    ):

        async def answer(msg: Msg) -> None:
            await msg.respond(f"reply to {msg.subject}".encode())

        await node.subscribe("iceshop.sellers.*.listings.upsert", answer)
        await node.flush()
        stolen = [
            await refused_subscription(s1, subject)
            for subject in (
                f"_INBOX_{S2}.>",
                "_INBOX_seller.>",  # the inbox of the former shared user
                "_INBOX_gateway.>",
                "_INBOX_admin.>",
                "_INBOX.>",
                ">",
                "*.>",
            )
        ]
        stolen.append(await refused_subscription(gateway, f"_INBOX_{S2}.>"))
        own = await s1.subscribe(f"_INBOX_{S1}.>", _ignore)
        await s1.flush()

        # S2's request is answered on S2's inbox ...
        reply, _ = await s2.request("iceshop.sellers.S2.listings.upsert", b"{}", timeout=5)
        assert reply == b"reply to iceshop.sellers.S2.listings.upsert"
        # ... and nothing of it reached S1 or the gateway (flush: anything sent is counted).
        await s1.flush()
        await gateway.flush()
        assert [sub.delivered for sub in stolen] == [0] * len(stolen)
        assert own.delivered == 0
        # S1's own request is answered on its own inbox.
        reply, _ = await s1.request("iceshop.sellers.S1.listings.upsert", b"{}", timeout=5)
        assert reply == b"reply to iceshop.sellers.S1.listings.upsert"
        assert s2.permission_violations == 0


@pytest.mark.anyio
async def test_the_shipped_config_has_no_user_shared_by_sellers(tmp_path: Path) -> None:
    """nats.conf as shipped: the former shared ``seller`` user is gone; a seller gets a
    user of its own with `iceshop nats users`."""
    assert "{ user: seller," not in NATS_CONF.read_text()
    env = {**SERVER_ENV, "ICESHOP_NATS_SELLER_PASSWORD": "shared-seller-password"}
    with NatsServer(config=NATS_CONF, env=env, store_dir=tmp_path / "js", monitor_port=0) as plain:
        with anyio.fail_after(3), pytest.raises(NotPermitted, match="refused the login"):
            async with NatsTransport(plain.url, user="seller", password="shared-seller-password"):
                pass
        async with login(plain, "gateway") as gateway:
            await gateway.flush()
            assert gateway.permission_violations == 0


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
        # Events, notification requests and audit records come from nodes only, after
        # a commit.
        [
            "iceshop.events.window.W1.closed",
            "iceshop.notifications.N1.requested",
            "iceshop.audit.window.W1",
        ],
        # Messages between nodes carry principals the sending node has checked, and the
        # journal stream stores whatever reaches its subjects: only nodes publish there,
        # not even an admin (whose commands go through the checks like anyone's).
        ["iceshop.internal.nodes.n1", "iceshop.journal.ev.window.W1"],
    ],
    ids=["events-notifications-and-audit", "cluster-journal-and-node-messages"],
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


#: The streams the nodes keep and trust, and what would erase or replace them.
PROTECTED_STREAMS = ["ICESHOP_AUDIT", "ICESHOP_EVENTS", "ICESHOP_JOURNAL", "KV_ICESHOP_SHARDS"]
ERASING_CALLS = ["UPDATE", "PURGE", "DELETE", "MSG.DELETE", "CREATE", "RESTORE"]


@pytest.mark.anyio
async def test_the_admin_cannot_erase_or_reconfigure_protected_streams(
    server: NatsServer,
) -> None:
    """The audit trail, the events, the journal and the lease bucket: an admin may read
    them but not change their config (``max_msgs: 1`` would erase the trail), purge,
    delete or restore them, delete single messages, or create one ahead of the nodes."""
    async with login(server, "node") as node, login(server, "admin") as admin:
        assert await ensure_audit_stream(node, "iceshop")
        outbox = JetStreamOutbox(node)
        await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
        await outbox.ensure_stream("ICESHOP_JOURNAL", ["iceshop.journal.>"])
        js = node.jetstream(timeout=5.0)
        kv = await js.create_key_value(bucket="ICESHOP_SHARDS")
        for n in range(3):
            await js.publish(f"iceshop.audit.window.W{n}", b"{}")
            await js.publish(f"iceshop.events.window.W{n}.created", b"{}")
            await js.publish(f"iceshop.journal.ev.window.W{n}", b"{}")
            await kv.put(f"shard-{n}", b"n1")

        before = {name: await js.stream_info(name) for name in PROTECTED_STREAMS}
        for name, info in before.items():
            erasing = msgspec.json.encode({**info.config.as_dict(), "max_msgs": 1})
            bodies = {"UPDATE": erasing, "CREATE": erasing, "MSG.DELETE": b'{"seq": 1}'}
            for call in ERASING_CALLS:
                subject = f"$JS.API.STREAM.{call}.{name}"
                violations = admin.permission_violations
                await admin.publish(subject, bodies.get(call, b"{}"), reply="_INBOX_admin.x")
                await admin.flush()
                assert admin.permission_violations == violations + 1, subject

        for name, info in before.items():
            after = await js.stream_info(name)
            assert after.state.messages == info.state.messages == 3, name
            assert after.config.max_msgs == info.config.max_msgs, name
        # Reading stays allowed: `iceshop audit` and the `nats` CLI look at the streams.
        violations = admin.permission_violations
        info = await admin.jetstream(timeout=5.0).stream_info("ICESHOP_AUDIT")
        assert info.state.messages == 3 and info.config.deny_delete and info.config.deny_purge
        assert admin.permission_violations == violations
        assert node.permission_violations == 0


async def refused_publish(client: NatsTransport, subject: str, body: bytes = b"{}") -> None:
    """``subject`` is refused to ``client`` (a JetStream API call: with a reply subject)."""
    before = client.permission_violations
    await client.publish(subject, body, reply=f"{client.inbox_prefix}.refused")
    await client.flush()
    assert client.permission_violations == before + 1, subject


def _stream(name: str, subject: str, republish_to: str | None = None) -> bytes:
    config: dict[str, object] = {"name": name, "subjects": [subject], "storage": "memory"}
    if republish_to is not None:
        config["republish"] = {"src": subject, "dest": republish_to}
    return msgspec.json.encode(config)


def _create(stream: str, **config: object) -> bytes:
    return msgspec.json.encode({"stream_name": stream, "config": config})


#: A read model's consumer of the event stream, as a node in a cluster names it.
READMODEL = node_durable("n1", clustered=True)
#: Subjects the admin may publish, and what a stream of its own could republish them as
#: (an audit record, an event, a WhatsApp send).
FORGERIES = {
    "iceshop.windows.forged-1.get": "iceshop.audit.window.W1",
    "iceshop.windows.forged-2.get": "iceshop.events.window.W1.sold_out",
    "iceshop.windows.forged-3.get": "iceshop.notifications.N9.requested",
}
#: A send lease's key in the notifier's bucket.
LEASE = lease_key("+905550000000")


async def _the_nodes_jetstream(node: NatsTransport) -> None:
    """The streams, the claims bucket and the consumers nodes and notifiers keep."""
    assert await ensure_audit_stream(node, "iceshop")
    outbox = JetStreamOutbox(node)
    await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
    await outbox.ensure_stream("ICESHOP_NOTIFICATIONS", ["iceshop.notifications.>"])
    js = node.jetstream(timeout=5.0)
    kv = await js.create_key_value(bucket=NOTIFY_BUCKET)
    await kv.put(LEASE, b"notifier-a")  # the send lease of a sending number
    await kv.put(record_key("N1"), b"{}")  # a notification's claim
    for n in range(3):
        await js.publish(f"iceshop.events.window.W{n}.created", b'{"n": %d}' % n)
        await js.publish(f"iceshop.notifications.N{n}.requested", b"{}")
        await js.publish(f"iceshop.audit.window.W{n}", b"{}")
    # As the read model's projector makes it (iceshop.readmodel.projector).
    await js.add_consumer(
        EVENT_STREAM,
        config=ConsumerConfig(
            name=READMODEL,
            durable_name=READMODEL,
            filter_subject="iceshop.events.>",
            ack_policy=AckPolicy.ALL,
            max_deliver=-1,
        ),
    )
    await js.add_consumer(
        "ICESHOP_NOTIFICATIONS",
        config=ConsumerConfig(
            name=NOTIFIER_DURABLE,
            durable_name=NOTIFIER_DURABLE,
            filter_subject="iceshop.notifications.>",
            ack_policy=AckPolicy.EXPLICIT,
        ),
    )


@pytest.mark.anyio
async def test_the_admin_reads_jetstream_but_manages_nothing_in_it(server: NatsServer) -> None:
    """The admin's JetStream rights are an allow-list of reads (and its own consumers of
    the audit trail): no new stream (one republishing into iceshop.audit.> or on command
    subjects would forge records or store buyers' tokens), no purge or delete in the
    notifier's claims bucket (every retained request would be sent again; a deleted lease
    gives two holders), no change to the notifier's or a read model's consumer."""
    async with login(server, "node") as node, login(server, "admin") as admin:
        await _the_nodes_jetstream(node)
        js = node.jetstream(timeout=5.0)
        streams = {s.config.name: s.state.messages for s in await js.streams_info()}
        consumers = {
            (stream, name): await js.consumer_info(stream, name)
            for stream, name in (
                (EVENT_STREAM, READMODEL),
                ("ICESHOP_NOTIFICATIONS", NOTIFIER_DURABLE),
            )
        }

        forging = [
            # new streams: republishing audit records, events, notification requests ...
            *(
                (f"$JS.API.STREAM.CREATE.FORGE{n}", _stream(f"FORGE{n}", src, dest))
                for n, (src, dest) in enumerate(FORGERIES.items())
            ),
            # ... or storing commands (and their bearer tokens), answering with PubAcks
            (
                "$JS.API.STREAM.CREATE.TOKENS",
                _stream("TOKENS", "iceshop.buyers.>"),
            ),
            # the notifier's claims and leases
            (f"$JS.API.STREAM.PURGE.KV_{NOTIFY_BUCKET}", b"{}"),
            (
                f"$JS.API.STREAM.PURGE.KV_{NOTIFY_BUCKET}",
                b'{"filter": "$KV.ICESHOP_NOTIFY.lease.>"}',
            ),
            (f"$JS.API.STREAM.MSG.DELETE.KV_{NOTIFY_BUCKET}", b'{"seq": 1}'),
            (f"$JS.API.STREAM.DELETE.KV_{NOTIFY_BUCKET}", b""),
            (f"$JS.API.STREAM.UPDATE.KV_{NOTIFY_BUCKET}", b"{}"),
            (f"$KV.{NOTIFY_BUCKET}.{LEASE}", b"admin"),
            # the notification requests and the notifier's consumer
            ("$JS.API.STREAM.PURGE.ICESHOP_NOTIFICATIONS", b"{}"),
            ("$JS.API.STREAM.UPDATE.ICESHOP_NOTIFICATIONS", b"{}"),
            (f"$JS.API.CONSUMER.DELETE.ICESHOP_NOTIFICATIONS.{NOTIFIER_DURABLE}", b""),
            ("$JS.API.CONSUMER.CREATE.ICESHOP_NOTIFICATIONS", b"{}"),
            # a read model's consumer: pulled (and left unacked), changed through a
            # create request that names it, deleted
            (f"$JS.API.CONSUMER.MSG.NEXT.{EVENT_STREAM}.{READMODEL}", b'{"batch": 10}'),
            (
                f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}",
                _create(EVENT_STREAM, name=READMODEL, filter_subject="iceshop.events.none"),
            ),
            (
                f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}.{READMODEL}",
                _create(EVENT_STREAM, name=READMODEL, filter_subject="iceshop.events.>"),
            ),
            (f"$JS.API.CONSUMER.DELETE.{EVENT_STREAM}.{READMODEL}", b""),
            ("$JS.API.ACCOUNT.PURGE.$G", b""),
        ]
        for subject, body in forging:
            await refused_publish(admin, subject, body)
        for subject in FORGERIES:  # an admin's command subjects: nothing republishes them
            await admin.publish(subject, b'{"forged": true}')
        await admin.flush()

        assert {s.config.name: s.state.messages for s in await js.streams_info()} == streams
        kv = await js.key_value(NOTIFY_BUCKET)
        assert (await kv.get(LEASE)).value == b"notifier-a"
        for (stream, name), info in consumers.items():
            now = await js.consumer_info(stream, name)
            assert now.config.filter_subject == info.config.filter_subject, name
            assert now.delivered.stream_seq == 0 and now.num_pending == 3, name

        # What the admin reads: `nats stream ls/info/get`, `nats consumer ls/info`.
        ajs = admin.jetstream(timeout=5.0)
        violations = admin.permission_violations
        assert {s.config.name for s in await ajs.streams_info()} >= {
            "ICESHOP_AUDIT",
            EVENT_STREAM,
            "ICESHOP_NOTIFICATIONS",
            f"KV_{NOTIFY_BUCKET}",
        }
        assert (await ajs.stream_info(EVENT_STREAM)).state.messages == 3
        assert (await ajs.get_msg(EVENT_STREAM, 2)).data == b'{"n": 1}'
        assert (await ajs.consumer_info(EVENT_STREAM, READMODEL)).num_pending == 3
        assert [c.name for c in await ajs.consumers_info("ICESHOP_NOTIFICATIONS")] == [
            NOTIFIER_DURABLE
        ]
        assert (await ajs.account_info()).streams >= 4
        # Consumers of the audit trail, as the `nats` CLI makes them (named, pulled,
        # deleted); `iceshop audit`'s ordered push consumer is tested in test_audit.py.
        view = ConsumerConfig(
            name="audit-view",
            filter_subject="iceshop.audit.>",
            ack_policy=AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=60.0,
        )
        await ajs.add_consumer("ICESHOP_AUDIT", config=view)
        records = await ajs.pull_subscribe_bind("audit-view", stream="ICESHOP_AUDIT")
        assert [m.subject for m in await records.fetch(3, timeout=2.0)] == [
            f"iceshop.audit.window.W{n}" for n in range(3)
        ]
        await records.unsubscribe()
        assert await ajs.delete_consumer("ICESHOP_AUDIT", "audit-view")
        assert admin.permission_violations == violations
        assert node.permission_violations == 0


@pytest.mark.anyio
async def test_events_reader_consumes_the_event_stream_and_nothing_else(
    server: NatsServer,
) -> None:
    async with login(server, "node") as node, login(server, "events") as reader:
        await _the_nodes_jetstream(node)
        js = node.jetstream(timeout=5.0)

        # Its own durable consumer, "events": pull, ack.
        rjs = reader.jetstream(timeout=2.0)
        sub = await rjs.pull_subscribe("iceshop.events.>", durable="events", stream=EVENT_STREAM)
        (msg,) = await sub.fetch(1, timeout=2.0)
        assert (msg.subject, msg.data) == ("iceshop.events.window.W0.created", b'{"n": 0}')
        await msg.ack_sync(timeout=2.0)  # answered by the server: the ack is in
        info = await rjs.consumer_info(EVENT_STREAM, "events")
        assert info.num_ack_pending == 0 and info.num_pending == 2
        assert (await rjs.get_msg(EVENT_STREAM, 3)).data == b'{"n": 2}'
        assert reader.permission_violations == 0

        # Never a read model's consumer: not pulled, acked, changed, made or deleted.
        ack = f"$JS.ACK.{EVENT_STREAM}.{READMODEL}.1.1.1.1800000000000000000.2"
        for subject, body in (
            (f"$JS.API.CONSUMER.MSG.NEXT.{EVENT_STREAM}.{READMODEL}", b'{"batch": 10}'),
            (ack, b""),
            (f"$JS.API.CONSUMER.DELETE.{EVENT_STREAM}.{READMODEL}", b""),
            (f"$JS.API.CONSUMER.INFO.{EVENT_STREAM}.{READMODEL}", b""),
            (
                f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}",  # names the consumer in the body
                _create(EVENT_STREAM, name=READMODEL, filter_subject="iceshop.events.none"),
            ),
            (
                f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}.{READMODEL}.iceshop.events.>",
                _create(EVENT_STREAM, name=READMODEL, filter_subject="iceshop.events.>"),
            ),
            (
                f"$JS.API.CONSUMER.DURABLE.CREATE.{EVENT_STREAM}.{READMODEL}",
                _create(EVENT_STREAM, durable_name=READMODEL, inactive_threshold=1_000_000),
            ),
            (f"$JS.API.CONSUMER.LIST.{EVENT_STREAM}", b"{}"),
            # nor anything else: streams, notification requests, commands
            ("$JS.API.STREAM.CREATE.MINE", b"{}"),
            (f"$JS.API.STREAM.DELETE.{EVENT_STREAM}", b""),
            (f"$JS.API.STREAM.PURGE.{EVENT_STREAM}", b"{}"),
            ("$JS.API.CONSUMER.CREATE.ICESHOP_NOTIFICATIONS", b"{}"),
            ("$JS.API.STREAM.MSG.GET.ICESHOP_NOTIFICATIONS", b'{"seq": 1}'),
            (f"$JS.API.CONSUMER.DELETE.ICESHOP_NOTIFICATIONS.{NOTIFIER_DURABLE}", b""),
            (f"$JS.API.STREAM.PURGE.KV_{NOTIFY_BUCKET}", b"{}"),
            ("iceshop.windows.W1.get", b"{}"),
        ):
            await refused_publish(reader, subject, body)
        await refused_subscription(reader, "iceshop.notifications.>")

        # A create request names the consumer it makes or changes: under its own name
        # only, and the server holds the body to that name.
        for body in (
            _create(EVENT_STREAM, durable_name=READMODEL, filter_subject="iceshop.events.none"),
            _create(EVENT_STREAM, name=READMODEL, filter_subject="iceshop.events.none"),
        ):
            raw, _ = await reader.request(
                f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}.events", body, timeout=2.0
            )
            reply = msgspec.json.decode(raw)
            assert "error" in reply or reply["name"] == "events", reply
        readmodel = await js.consumer_info(EVENT_STREAM, READMODEL)
        assert readmodel.config.filter_subject == "iceshop.events.>"
        assert readmodel.config.inactive_threshold is None
        assert readmodel.delivered.stream_seq == 0 and readmodel.num_pending == 3
        assert node.permission_violations == 0


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
    assert sorted(env) == sorted(password_env(role) for role in NATS_ROLES)
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


# -- one NATS user per seller: `iceshop nats users` -----------------------------------------


def test_nats_users_prints_one_user_per_seller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["nats", "users"]) == 0
    assert capsys.readouterr().out == authorization_block()  # the shipped block

    sellers = tmp_path / "sellers.txt"
    sellers.write_text("# one seller id a line\nS2\n\nS-3  # a comment\nS1\n")
    out = tmp_path / "nats-sellers.conf"
    argv = ["nats", "users", "S1", "--sellers-file", str(sellers), "--base", str(NATS_CONF)]
    assert main([*argv, "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    expected = replace_authorization(
        NATS_CONF.read_text(), authorization_block(["S1", "S2", "S-3"])
    )
    assert out.read_text() == expected
    assert expected.startswith(NATS_CONF.read_text()[:200])  # the rest of nats.conf is kept
    assert captured.err.splitlines() == [
        "seller S1: user seller_S1, password $ICESHOP_NATS_SELLER_S1_PASSWORD, "
        "inbox prefix _INBOX_seller_S1",
        "seller S2: user seller_S2, password $ICESHOP_NATS_SELLER_S2_PASSWORD, "
        "inbox prefix _INBOX_seller_S2",
        "seller S-3: user seller_S-3, password $ICESHOP_NATS_SELLER_S_3_PASSWORD, "
        "inbox prefix _INBOX_seller_S-3",
    ]
    block = authorization_block(["S-3"])
    assert '"iceshop.sellers.S-3.listings.upsert"' in block
    assert '"_INBOX_seller_S-3.>"' in block
    # No password, only the variables that hold them.
    assert re.findall(r"password: (\S+),", block) == [
        *(f"${password_env(role)}" for role in ROLES),
        "$ICESHOP_NATS_SELLER_S_3_PASSWORD",
    ]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["S.1"], "seller id 'S.1': must be 1-64 characters"),
        (["S*"], "seller id 'S\\*'"),
        (["S1", "s1"], "'S1' and 's1' would share the variable ICESHOP_NATS_SELLER_S1_PASSWORD"),
        (["a-b", "a_b"], "would share the variable ICESHOP_NATS_SELLER_A_B_PASSWORD"),
    ],
)
def test_nats_users_refuses_ids_it_cannot_keep_apart(
    ids: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["nats", "users", *ids]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(message, captured.err)
