"""The pieces of the cluster benchmark that the failover tests rely on, checked alone.

The load generator spreads a crowd over several windows and retries what the contract
says to retry, with the same join id (against a stand-in responder on a real
nats-server that answers ``unavailable``, or nothing, to each join's first attempt); a
``cluster.status`` reply is read the way the harness reads it; the benchmark's verdict
fails on a lost join or an oversell.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest

from actors.cluster import shard_of
from actors.nats import Msg, NatsServer, NatsTransport
from bench._cluster import ClusterStatus
from bench._flash_load import LoadResult, LoadSpec, join_body, run_load
from bench.cluster import CrowdCheck, Sizes, report_crowd
from tests.nats_fixtures import nats_server_fixture  # noqa: F401

WINDOWS = ("iceshop.windows.W0.join", "iceshop.windows.W1.join", "iceshop.windows.W2.join")


def spec(url: str = "nats://127.0.0.1:1", **more: object) -> LoadSpec:
    fields: dict[str, object] = {
        "url": url,
        "subject": WINDOWS[0],
        "subjects": WINDOWS,
        "count": 12,
        "concurrency": 4,
        "buyer_prefix": "B",
        "join_prefix": "J",
        **more,
    }
    return msgspec.convert(fields, LoadSpec)


def test_several_windows_get_every_buyer_once() -> None:
    s = spec()
    assert [s.subject_of(i) for i in range(4)] == [*WINDOWS, WINDOWS[0]]
    assert [s.buyer_of(i) for i in range(7)] == ["B0", "B0", "B0", "B1", "B1", "B1", "B2"]
    assert msgspec.json.decode(join_body(s, 5)) == {"join_id": "J5", "buyer_id": "B1"}
    one = spec(subjects=())
    assert one.subject_of(5) == WINDOWS[0] and one.buyer_of(5) == "B5"


class _Responder:
    """Answers joins: the first attempt of each join id with ``first`` (a reply body,
    or None for no answer at all), every later one ``ok``."""

    def __init__(self, transport: NatsTransport, first: bytes | None) -> None:
        self.transport = transport
        self.first = first
        self.attempts: Counter[str] = Counter()
        self.subjects: Counter[str] = Counter()

    async def answer(self, msg: Msg) -> None:
        join_id = msgspec.json.decode(msg.data)["join_id"]
        self.attempts[join_id] += 1
        self.subjects[msg.subject] += 1
        if self.attempts[join_id] == 1:
            if self.first is not None:
                await self.transport.publish(msg.reply, self.first)
            return
        await self.transport.publish(msg.reply, b'{"ok": true, "data": {}}')


UNAVAILABLE = b'{"ok": false, "error": {"code": "unavailable", "message": "m", "retryable": true}}'


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.parametrize(
    ("first", "retried_outcome"),
    [(UNAVAILABLE, "unavailable"), (None, "transport:timeout")],
    ids=["unavailable", "no-answer"],
)
async def test_the_load_retries_with_the_same_join_id(
    nats_server: NatsServer, first: bytes | None, retried_outcome: str
) -> None:
    async with NatsTransport(nats_server.url) as transport:
        responder = _Responder(transport, first)
        await transport.subscribe("iceshop.windows.*.join", responder.answer)
        await transport.flush()
        url = f"{nats_server.url},{nats_server.url}"  # a list of servers is accepted
        retried = await run_load(spec(url, timeout_s=0.3, retry_for_s=10.0))
        once = await run_load(spec(url, timeout_s=0.3, join_prefix="K"))

    assert retried.ok == 12 and retried.codes == {} and retried.retries == 12
    assert sorted(retried.ok_join_ids) == sorted(f"J{i}" for i in range(12))
    assert all(responder.attempts[f"J{i}"] == 2 for i in range(12))
    assert {s: responder.subjects[s] for s in WINDOWS} == {s: 12 for s in WINDOWS}
    # Without retry_for_s the first outcome is final.
    assert once.ok == 0 and once.retries == 0 and once.codes == {retried_outcome: 12}


def test_cluster_status_is_read_by_shard_and_owner() -> None:
    shards = 4
    data: dict[str, Any] = {
        "nodes": [
            {"node_id": "a", "started_at": "t", "shards": [0, 1]},
            {"node_id": "b", "started_at": "t", "shards": [2]},
        ],
        "shards": [
            {"shard": 0, "owner": "a", "lease_age_s": 0.1},
            {"shard": 1, "owner": "a", "lease_age_s": 0.1},
            {"shard": 2, "owner": "b", "lease_age_s": 0.1},
            {"shard": 3, "owner": None, "lease_age_s": None},
        ],
    }
    status = ClusterStatus.parse(data)
    assert status.nodes == ("a", "b")
    assert status.owned_by("a") == {0, 1} and status.owned_by("c") == frozenset()
    assert not status.all_owned
    owners = ["a", "a", "b", None]
    assert status.owner_of("window", "W1") == owners[shard_of("window", "W1", shards)]
    data["shards"][3]["owner"] = "b"
    assert ClusterStatus.parse(data).all_owned


def _check(lost: int, oversold: int) -> CrowdCheck:
    load = LoadResult(
        sent=10,
        replies=10,
        ok=5,
        codes={"sold_out": 5},
        elapsed_s=1.0,
        ok_elapsed_s=0.5,
        p50_ms=1.0,
        p99_ms=2.0,
        max_ms=3.0,
        ok_p50_ms=1.0,
        ok_p99_ms=2.0,
        cpu_s=0.1,
        ok_join_ids=[f"J{i}" for i in range(5)],
    )
    return CrowdCheck(
        nodes=2,
        load=load,
        setup_s=1.0,
        quantity_total=5,
        held_quantity=5 + oversold - lost,
        lost=lost,
        oversold=oversold,
        held_unacked=0,
    )


def test_the_verdict_fails_on_a_lost_join_or_an_oversell() -> None:
    sizes = Sizes(windows=1, stock=5, buyers=10)
    lines: list[str] = []
    assert report_crowd(_check(0, 0), sizes, lines.append)
    assert "cluster 2 nodes acknowledged joins lost: 0 joins" in lines
    assert not report_crowd(_check(1, 0), sizes, lines.append)
    assert not report_crowd(_check(0, 2), sizes, lines.append)
    assert "cluster 2 nodes oversold: 2 units" in lines
    assert sum(line.startswith("!! ") for line in lines) == 2
