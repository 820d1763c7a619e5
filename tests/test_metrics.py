"""Metrics and discovery: the runtime's histograms, the node's ``/metrics`` after a real
scenario, ``$SRV.PING`` finding every node, and the Grafana dashboard's queries.

The integration tests run nodes on a real nats-server with their real SQLite files, on
the real clock (the window is created active, so nothing waits for a timer), and read the
endpoint over HTTP as Prometheus would.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors import Actor, ActorSystem, VirtualClock
from actors.errors import CommitFailed
from actors.nats import NatsServer, NatsTransport
from actors.stats import TURN_BUCKETS, Histogram
from bench import metrics_overhead as overhead
from bench.flash_crowd import Sizes, crowd, report_crowd
from iceshop.buyer.directory import KnownBuyers
from iceshop.cli.notifier import start_external_notifier
from iceshop.cli.projector import start_projector
from iceshop.node import ShopNode
from iceshop.notify.worker import NotifierStats
from iceshop.observability import ShopCounters, node_version
from iceshop.observability.discovery import status_subject
from iceshop.observability.metrics import METRIC_NAMES, NodeMetrics
from iceshop.settings import Settings
from iceshop.window import WindowActor
from iceshop.wire import ErrorCode, JoinReply, ShopError
from tests.notify_support import ensure_streams, make_request, publish_requests
from tests.shop_client import Client, until
from tests.test_nats_permissions import NATS_CONF, PASSWORDS, SERVER_ENV, login
from tests.window_support import ACTIVATE_IN, Shop, node_window

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "iceshop.json"

# -- the histogram ----------------------------------------------------------------------------


def test_histogram_counts_by_upper_bound_like_prometheus() -> None:
    h = Histogram([0.1, 1.0, 10.0])
    for value in (0.05, 0.1, 0.5, 1.0, 7.0, 11.0, 50.0):
        h.observe(value)
    snap = h.snapshot()
    assert snap.bounds == (0.1, 1.0, 10.0)
    # le semantics: a value equal to a bound is in that bound's bucket
    assert snap.cumulative == (2, 4, 5)
    assert snap.count == 7
    assert snap.sum == pytest.approx(69.65)
    assert snap.quantile(0.5) == 1.0  # the 4th of 7 observations is <= 1.0
    assert snap.quantile(0.25) == 0.1
    assert snap.quantile(1.0) == 10.0  # beyond the last bound: the last bound
    h.reset()
    assert h.snapshot().count == 0 and h.snapshot().quantile(0.99) == 0.0


def test_histogram_refuses_bounds_that_do_not_rise() -> None:
    for bad in ([], [1.0, 1.0], [2.0, 1.0]):
        with pytest.raises(ValueError, match="strictly rising"):
            Histogram(bad)


class _Echo(Actor):
    max_failures = 1  # a failing message goes to the dead letters at once

    def receive(self, message: object) -> object:
        if message == "boom":
            raise RuntimeError("boom")
        return message


@pytest.mark.anyio
async def test_runtime_stats_count_messages_failures_turns_and_mailboxes() -> None:
    clock = VirtualClock()
    async with ActorSystem(clock=clock) as system:
        system.register("echo", _Echo)
        for key in ("a", "b", "c"):
            assert await system.ref("echo", key).ask("hi") == "hi"
        ref = system.ref("echo", "a")
        ref.tell("boom")
        await system.drain()
        stats = system.stats()
        (echo,) = [k for k in stats.kinds if k.kind == "echo"]
        assert echo.handled == 3 and echo.failed == 1
        assert echo.activations == 3 and echo.active == 3
        assert echo.turn_seconds.count >= 4  # one turn per ask, one for the failure
        assert echo.turn_seconds.bounds == TURN_BUCKETS
        assert stats.commit_seconds is None  # no journal
        assert stats.dead_letters == 1
        # Mail waiting right now: the dispatcher has not run between these tells.
        for _ in range(5):
            system.ref("echo", "b").tell("x")
        system.ref("echo", "c").tell("y")
        total, most = system.kind("echo").mailbox_depth()
        assert (total, most) == (6, 5)
        system.dispatcher.timed = False
        before = system.kind("echo").turn_seconds.snapshot().count
        await system.drain()
        assert system.kind("echo").turn_seconds.snapshot().count == before
        assert system.kind("echo").handled == 9
        assert system.kind("echo").mailbox_depth() == (0, 0)


def test_shop_counters_count_joins_by_outcome() -> None:
    counters = ShopCounters()
    reply = JoinReply(
        join_id="J1",
        window_id="W1",
        status="reserved",
        quantity=1,
        unit_price_minor=100,
        currency="TRY",
    )
    counters.count_join(reply)
    counters.count_join(reply)
    counters.count_join(ShopError(ErrorCode.SOLD_OUT, "sold out"))
    assert counters.joins == {"accepted": 2, "sold_out": 1}


class _StubNotifier:
    """What the collector reads of a notifier: its ``stats``."""

    def __init__(self, **counts: int) -> None:
        self.stats = NotifierStats(**counts)


def test_collector_exports_only_its_declared_names_before_the_node_starts() -> None:
    metrics = NodeMetrics("n1", ShopCounters(), version="1.2.3")
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert {_family_name(n) for n in families} <= METRIC_NAMES
    (sample,) = families["iceshop_node_info"].samples
    assert sample.labels == {"node_id": "n1", "version": "1.2.3", "role": "node"}
    assert {s.labels["state"] for s in families["iceshop_windows"].samples} == {
        "scheduled",
        "active",
        "closed",
        "cancelled",
    }
    assert families["iceshop_notifications"].samples == []  # no notifier in this node
    metrics.notifier = _StubNotifier(sent=3, dead=1)  # type: ignore[assignment]
    samples = _samples(metrics.exposition().decode())
    assert _value(samples, "iceshop_notifications_total", outcome="sent") == 3
    assert _value(samples, "iceshop_notifications_total", outcome="dead") == 1
    assert ("iceshop_notifications_total", (("outcome", "retried"),)) in samples


def test_a_notifier_process_exports_its_notifications_and_no_node_series() -> None:
    metrics = NodeMetrics("nf", version="1.2.3", role="notifier")
    metrics.notifier = _StubNotifier(sent=2)  # type: ignore[assignment]
    families = {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert families == {"iceshop_node_info", "iceshop_notifications"}
    samples = _samples(metrics.exposition().decode())
    assert _value(samples, "iceshop_node_info", node_id="nf", version="1.2.3", role="notifier")
    assert _value(samples, "iceshop_notifications_total", outcome="sent") == 2
    projector = NodeMetrics("np", version="1.2.3", role="projector")
    families = {f.name for f in text_string_to_metric_families(projector.exposition().decode())}
    assert families == {"iceshop_node_info"}  # windows once its read model is attached


@pytest.mark.anyio
async def test_turn_histogram_says_it_times_turns_not_messages() -> None:
    async with ActorSystem(clock=VirtualClock()) as system:
        system.register("echo", _Echo)
        await system.ref("echo", "a").ask("hi")
        metrics = NodeMetrics("n1", version="0")
        metrics.system = system
        text = metrics.exposition().decode()
    (turns,) = [
        f for f in text_string_to_metric_families(text) if f.name == "iceshop_actor_turn_seconds"
    ]
    assert "not per-message" in turns.documentation


@pytest.mark.anyio
async def test_mailbox_gauges_show_mail_waiting_at_the_scrape() -> None:
    async with ActorSystem(clock=VirtualClock()) as system:
        system.register("echo", _Echo)
        for key in ("a", "b"):
            await system.ref("echo", key).ask("hi")
        metrics = NodeMetrics("n1", version="0")
        metrics.system = system
        for _ in range(5):  # the dispatcher does not run between these tells
            system.ref("echo", "a").tell("x")
        system.ref("echo", "b").tell("y")
        waiting = _samples(metrics.exposition().decode())
        await system.drain()
        drained = _samples(metrics.exposition().decode())
    assert _value(waiting, "iceshop_mailbox_depth", kind="echo") == 5
    assert _value(waiting, "iceshop_mailbox_messages", kind="echo") == 6
    assert _value(drained, "iceshop_mailbox_depth", kind="echo") == 0
    assert _value(drained, "iceshop_mailbox_messages", kind="echo") == 0
    assert _value(drained, "iceshop_actor_messages_total", kind="echo") == 8


# -- joins are counted when answered, after their commit -----------------------------------


def _counted_window(counters: ShopCounters) -> type[WindowActor]:
    class Counted(WindowActor):
        def __init__(
            self,
            settings: Settings | None = None,
            _counters: ShopCounters | None = None,
            known: KnownBuyers | None = None,
        ) -> None:
            super().__init__(settings, counters, known)

    return Counted


@pytest.mark.anyio
async def test_a_join_is_counted_after_its_commit_and_not_when_the_commit_fails() -> None:
    counters = ShopCounters()
    async with Shop(window_cls=_counted_window(counters)) as shop:
        await shop.create(min_participants=1)
        await shop.advance(ACTIVATE_IN)
        first = await shop.join("j1", "b1")
        assert isinstance(first, JoinReply)
        assert counters.joins == {"accepted": 1}
        # The next write fails: the join is answered CommitFailed, and not counted.
        shop.journal.fail_next_write()
        with pytest.raises(CommitFailed):
            await shop.join("j2", "b2")
        await shop.advance(5)  # the window is rebuilt from its journal
        assert counters.joins == {"accepted": 1}
        # A rejection stores nothing and is counted with its reply.
        assert code_of(await shop.join("j3", "ghost-1")) == "unknown_buyer"
        again = await shop.join("j2", "b2")
        assert isinstance(again, JoinReply)
        assert counters.joins == {"accepted": 2, "unknown_buyer": 1}


def code_of(reply: object) -> str:
    assert isinstance(reply, ShopError), reply
    return reply.code.value


def _family_name(parsed: str) -> str:
    """The parser drops ``_total`` from counter family names; METRIC_NAMES keeps it."""
    return parsed if parsed in METRIC_NAMES else f"{parsed}_total"


# -- a node, scraped ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _settings(url: str, data: Path, node_id: str, metrics_port: int = 0) -> Settings:
    return Settings(
        nats_url=url,
        data_dir=str(data),
        node_id=node_id,
        auth="off",
        metrics_port=metrics_port,
        campaign_interval_s=3600.0,
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as nats:
        yield nats


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.anyio
@pytest.mark.integration
async def test_metrics_endpoint_serves_the_series_after_a_scenario(
    server: NatsServer, tmp_path: Path
) -> None:
    settings = _settings(server.url, tmp_path / "node", "n1", _free_port())
    async with ShopNode(settings) as node, NatsTransport(server.url) as t:
        assert node.metrics_port == settings.metrics_port
        c = Client(t)
        for b in ("B1", "B2", "B3"):
            await c.ok(f"buyers.{b}.register", {"name": b, "phone": "+905551112233"})
        assert node.system is not None
        now = node.clock.time()
        created = await node.system.ref("window", "W1").ask(node_window(now, 2), timeout=5.0)
        assert created.window_id == "W1"
        await c.ok("windows.W1.join", {"join_id": "J1", "buyer_id": "B1"})
        assert await c.error("windows.W1.join", {"join_id": "J2", "buyer_id": "GHOST"}) == (
            "unknown_buyer"
        )
        await c.ok("windows.W1.join", {"join_id": "J3", "buyer_id": "B2"})  # sells out
        assert await c.error("windows.W1.join", {"join_id": "J4", "buyer_id": "B3"}) in (
            "sold_out",
            "window_closed",
        )
        assert await c.error("windows.NOPE.join", {"join_id": "J5", "buyer_id": "B1"}) == (
            "unknown_window"
        )

        url = f"http://127.0.0.1:{node.metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=5.0) as http:
            samples: Samples = {}
            for _ in range(200):  # the projector applies the window's events asynchronously
                response = await http.get(url)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                samples = _samples(response.text)
                if _value(samples, "iceshop_windows", state="closed") == 1:
                    break
                await anyio.sleep(0.02)
            missing = await http.get(f"http://127.0.0.1:{node.metrics_port}/nope")
            assert missing.status_code == 404
            posted = await http.post(url, content=b"x")
            assert posted.status_code == 405

    exported = {_family_name(f.name) for f in text_string_to_metric_families(response.text)}
    assert exported == METRIC_NAMES
    assert _value(samples, "iceshop_joins_total", outcome="accepted") == 2
    assert _value(samples, "iceshop_joins_total", outcome="unknown_buyer") == 1
    assert _value(samples, "iceshop_joins_total", outcome="unknown_window") == 1
    rejected_closed = _value(samples, "iceshop_joins_total", outcome="sold_out") + _value(
        samples, "iceshop_joins_total", outcome="window_closed"
    )
    assert rejected_closed == 1
    assert _value(samples, "iceshop_windows", state="closed") == 1
    assert _value(samples, "iceshop_windows", state="active") == 0
    # window: create + 5 joins (W1 and NOPE); buyers: 3 registers + the window's checks
    assert _value(samples, "iceshop_actor_messages_total", kind="window") >= 6
    assert _value(samples, "iceshop_actor_messages_total", kind="buyer") >= 3
    assert _value(samples, "iceshop_actor_failures_total", kind="window") == 0
    assert _value(samples, "iceshop_actors_active", kind="window") >= 1
    turns = _value(samples, "iceshop_actor_turn_seconds_count", kind="window")
    assert turns >= 1
    assert _value(samples, "iceshop_actor_turn_seconds_bucket", kind="window", le="+Inf") == turns
    assert 0 < _value(samples, "iceshop_actor_turn_seconds_sum", kind="window") < 5.0
    commits = _value(samples, "iceshop_journal_commit_seconds_count")
    assert commits >= 2  # the window's creation and its joins at least
    assert _value(samples, "iceshop_journal_batch_size_count") == commits
    assert _value(samples, "iceshop_journal_batch_size_sum") >= commits  # >= 1 turn each
    assert 0 < _value(samples, "iceshop_journal_commit_seconds_sum") < 10.0
    assert _value(samples, "iceshop_journal_events_total") >= 5  # created..closed
    # Everything was answered: nothing waits in the window's mailbox (mail waiting is
    # test_mailbox_gauges_show_mail_waiting_at_the_scrape).
    assert ("iceshop_mailbox_depth", (("kind", "window"),)) in samples
    assert _value(samples, "iceshop_timer_lag_seconds_count") >= 1  # the window's deadlines
    assert _value(samples, "iceshop_shards_owned") == 64
    info = {"node_id": "n1", "version": node.metrics.version, "role": "node"}
    assert _value(samples, "iceshop_node_info", **info) == 1


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_taken_metrics_port_stops_the_node_from_starting(
    server: NatsServer, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Exception, match="cannot listen"):
            async with ShopNode(_settings(server.url, tmp_path / "n", "n1", port)):
                pass


@pytest.mark.anyio
@pytest.mark.integration
async def test_an_external_notifier_serves_its_notifications_by_outcome(
    server: NatsServer, tmp_path: Path
) -> None:
    """``notifier = "external"``: the ``iceshop notifier`` process serves /metrics from
    the same settings, and counts what it handled (sent; refused without opt-in)."""
    settings = msgspec.structs.replace(
        _settings(server.url, tmp_path / "notifier", "nf1", _free_port()), notifier="external"
    )
    async with NatsTransport(server.url) as t, contextlib.AsyncExitStack() as stack:
        await ensure_streams(t)
        notifier = await start_external_notifier(stack, settings)
        await publish_requests(t, [make_request(i) for i in range(3)])
        await publish_requests(t, [make_request(9)], extra={"whatsapp_opt_in": False})
        with anyio.fail_after(15):
            while notifier.stats.sent + notifier.stats.refused < 4:
                await anyio.sleep(0.02)
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
        assert response.status_code == 200
    samples = _samples(response.text)
    assert _value(samples, "iceshop_notifications_total", outcome="sent") == 3
    assert _value(samples, "iceshop_notifications_total", outcome="refused") == 1
    assert _value(samples, "iceshop_notifications_total", outcome="dead") == 0
    assert _value(
        samples, "iceshop_node_info", node_id="nf1", version=node_version(), role="notifier"
    )
    assert "iceshop_joins_total" not in response.text  # a notifier answers no joins


@pytest.mark.anyio
@pytest.mark.integration
async def test_an_external_projector_serves_windows_by_state(
    server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "node"
    node_settings = msgspec.structs.replace(
        _settings(server.url, data, "n1"), readmodel_projector="external"
    )
    projector_settings = msgspec.structs.replace(node_settings, metrics_port=_free_port())
    async with ShopNode(node_settings) as node, contextlib.AsyncExitStack() as stack:
        await start_projector(stack, projector_settings)
        assert node.system is not None
        now = node.clock.time()
        await node.system.ref("window", "W1").ask(node_window(now, 2), timeout=5.0)
        url = f"http://127.0.0.1:{projector_settings.metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=5.0) as http:
            with anyio.fail_after(15):
                while True:  # the projector applies the window's events asynchronously
                    samples = _samples((await http.get(url)).text)
                    if _value(samples, "iceshop_windows", state="active") == 1:
                        break
                    await anyio.sleep(0.02)
    assert _value(
        samples, "iceshop_node_info", node_id="n1", version=node_version(), role="projector"
    )


# -- discovery --------------------------------------------------------------------------------


async def _gather(t: NatsTransport, subject: str, want: int) -> list[dict[str, Any]]:
    """Replies to one request on ``subject`` from every responder (until ``want`` came)."""
    inbox = t.new_inbox()
    got: list[dict[str, Any]] = []
    arrived = anyio.Event()

    async def collect(msg: Any) -> None:
        got.append(msgspec.json.decode(msg.data))
        if len(got) >= want:
            arrived.set()

    sub = await t.subscribe(inbox, collect)
    try:
        await t.client.publish(subject, b"", reply=inbox)
        with anyio.move_on_after(5.0):
            await arrived.wait()
    finally:
        await t.unsubscribe(sub, drain=False)
    return got


@pytest.mark.anyio
@pytest.mark.integration
async def test_micro_ping_finds_every_node(server: NatsServer, tmp_path: Path) -> None:
    async with (
        ShopNode(_settings(server.url, tmp_path / "a", "na")),
        ShopNode(_settings(server.url, tmp_path / "b", "nb")) as nb,
        NatsTransport(server.url) as t,
    ):
        pings = await _gather(t, "$SRV.PING.iceshop", 2)
        assert sorted(p["metadata"]["node_id"] for p in pings) == ["na", "nb"]
        assert {p["name"] for p in pings} == {"iceshop"}
        assert {p["type"] for p in pings} == {"io.nats.micro.v1.ping_response"}
        assert {p["version"] for p in pings} == {nb.metrics.version}

        (info,) = [
            i for i in await _gather(t, "$SRV.INFO.iceshop", 2) if i["metadata"]["node_id"] == "nb"
        ]
        assert [e["subject"] for e in info["endpoints"]] == [status_subject("iceshop", "nb")]
        stats = await _gather(t, "$SRV.STATS.iceshop", 2)
        assert len(stats) == 2
        # each node woke its campaign at start: at least that actor is in memory
        assert all(s["endpoints"][0]["data"]["actors_active"] >= 1 for s in stats)

        reply, _ = await t.request(status_subject("iceshop", "nb"), b"", timeout=5.0)
        status = msgspec.json.decode(reply)
        assert status["node_id"] == "nb" and status["messages_handled"] >= 1  # the campaign


@pytest.mark.anyio
@pytest.mark.integration
async def test_micro_ping_finds_a_node_through_the_nats_users(tmp_path: Path) -> None:
    """With the users of nats.conf (deploy/cluster/users.inc has the same rules) the node
    logs in as "node" and answers $SRV.* to the admin (`nats micro ls`)."""
    password_file = tmp_path / "node.password"
    password_file.write_text(PASSWORDS["node"] + "\n")
    settings = msgspec.structs.replace(
        _settings("", tmp_path / "node", "n1"),
        nats_user="node",
        nats_password_file=str(password_file),
    )
    with NatsServer(
        config=NATS_CONF, env=SERVER_ENV, store_dir=tmp_path / "js", monitor_port=0
    ) as nats:
        settings = msgspec.structs.replace(settings, nats_url=nats.url)
        async with ShopNode(settings), login(nats, "admin") as admin:
            (ping,) = await _gather(admin, "$SRV.PING.iceshop", 1)
            assert ping["metadata"]["node_id"] == "n1"
            (stats,) = await _gather(admin, "$SRV.STATS.iceshop", 1)
            assert stats["endpoints"][0]["data"]["messages_handled"] >= 1  # the campaign
            reply, _ = await admin.request(status_subject("iceshop", "n1"), b"", timeout=5.0)
            assert msgspec.json.decode(reply)["node_id"] == "n1"


@pytest.mark.anyio
@pytest.mark.integration
async def test_cluster_nodes_export_the_shards_they_own(server: NatsServer, tmp_path: Path) -> None:
    shards = 8

    def cluster(node_id: str) -> Settings:
        return msgspec.structs.replace(
            _settings(server.url, tmp_path / node_id, node_id),
            journal="jetstream",
            shards=shards,
            lease_ttl_s=2.0,
            lease_heartbeat_s=0.25,
        )

    def owned(node: ShopNode) -> float:
        return _value(_samples(node.metrics.exposition().decode()), "iceshop_shards_owned")

    async with ShopNode(cluster("n1")) as n1:

        async def all_to_n1() -> bool:
            return owned(n1) == shards

        await until(all_to_n1, "n1 owns every shard")
        async with ShopNode(cluster("n2")) as n2:

            async def split() -> bool:
                a, b = owned(n1), owned(n2)
                return a > 0 and b > 0 and a + b == shards

            await until(split, "n1 and n2 split the shards")
            assert n2.member is not None
            assert owned(n2) == len(n2.member.leases.owned())
        await until(all_to_n1, "n1 owns every shard again")


# -- the Grafana dashboard ----------------------------------------------------------------------

_SUFFIXES = ("_bucket", "_sum", "_count")


def _series(expr: str) -> set[str]:
    names = set(re.findall(r"\biceshop_[a-z_]+", expr))
    out = set()
    for name in names:
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
                name = name.removesuffix(suffix)
        out.add(name)
    return out


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        if isinstance(node.get("query"), str):
            found.append(node["query"])
        for value in node.values():
            found += _exprs(value)
        return found
    if isinstance(node, list):
        return [e for item in node for e in _exprs(item)]
    return []


def test_grafana_dashboard_queries_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    datasource = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource and datasource[0]["query"] == "prometheus"
    exprs = [e for e in _exprs(dashboard["panels"]) if e]
    assert len(exprs) >= 12
    used: set[str] = set()
    for expr in exprs:
        series = _series(expr)
        assert series, expr
        assert series <= METRIC_NAMES, (expr, series - METRIC_NAMES)
        used |= series
    # Every series the node exports has a panel (node info is used by the variables).
    assert used | {"iceshop_node_info"} == METRIC_NAMES, METRIC_NAMES - used
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


# -- the benchmarks' metrics parts ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.integration
async def test_flash_crowd_with_metrics_scrapes_a_node_process(tmp_path: Path) -> None:
    """``--metrics on``: the node process (ICESHOP_METRICS_PORT) serves /metrics during
    the crowd, and its count of accepted joins is the load's."""
    sizes = Sizes(attempts=200, stock=40, concurrency=40, timeout_s=5.0)
    lines: list[str] = []
    result = await crowd(sizes, tmp_path, ceiling=False, metrics=True, echo=lines.append)
    assert result.load.ok == 40 and result.consistent
    assert result.metrics is not None
    assert result.metrics.failed == 0
    assert result.metrics.accepted == 40
    assert report_crowd(result, sizes, echo=lines.append)
    assert "metrics accepted joins: 40 joins" in lines


def test_metrics_overhead_benchmark_runs_both_sides() -> None:
    for timed in (True, False):
        assert anyio.run(overhead.pingpong, 50, timed, backend="asyncio") > 0
        assert anyio.run(overhead.counting, 100, timed, backend="asyncio") > 0
    seconds, size = anyio.run(overhead.scrape, 50, 1, backend="asyncio")
    assert seconds > 0 and size > 1000
