"""Two shop nodes sharing the actors through one NATS server (``journal = "jetstream"``).

They split the shards between them; a request reaches one of them (a queue group) and is
served where its actor lives; windows created from either node live on one node only;
``cluster.status`` shows both; a node that leaves hands its shards over and the other
serves them from the replicated journal, with every reservation kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest

from actors.nats import NatsServer, NatsTransport
from iceshop.auth import KeyDirectory, KeyRing, generate_hs256, mint, write_key_file
from iceshop.node import ShopNode
from iceshop.settings import Settings
from tests.shop_client import Client, until
from tests.window_support import node_window

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SHARDS = 8


def settings(url: str, tmp_path: Path, node_id: str) -> Settings:
    return Settings(
        nats_url=url,
        data_dir=str(tmp_path / node_id),
        node_id=node_id,
        auth="off",
        journal="jetstream",
        shards=SHARDS,
        lease_ttl_s=2.0,
        lease_heartbeat_s=0.25,
        campaign_interval_s=3600,
        window_max_per_buyer=1,
        window_min_participants=1,
    )


async def shards_of(client: Client) -> dict[str, list[int]]:
    reply = await client.call("cluster.status")
    assert reply["ok"] is True, reply
    return {n["node_id"]: n["shards"] for n in reply["data"]["nodes"]}


@contextlib.asynccontextmanager
async def node(url: str, tmp_path: Path, node_id: str) -> AsyncIterator[ShopNode]:
    async with ShopNode(settings(url, tmp_path, node_id)) as n:
        yield n


async def test_two_nodes_share_the_shards_and_hand_them_over(tmp_path: Path) -> None:
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        async with NatsTransport(server.url) as t, node(server.url, tmp_path, "n1") as n1:
            client = Client(t)
            async with node(server.url, tmp_path, "n2") as n2:

                async def split() -> bool:
                    owned = await shards_of(client)
                    return (
                        set(owned) == {"n1", "n2"}
                        and all(owned.values())
                        and sum(len(s) for s in owned.values()) == SHARDS
                    )

                await until(split, "the shards split between n1 and n2")
                for i in range(5):
                    assert (
                        await client.call(
                            f"buyers.B{i}.register", {"name": f"B{i}", "phone": f"+90555000000{i}"}
                        )
                    )["ok"] is True
                now = n1.clock.time()
                windows = [f"W{i}" for i in range(6)]
                for i, window_id in enumerate(windows):
                    creator = (n1, n2)[i % 2]
                    assert creator.system is not None
                    await creator.system.ref("window", window_id).ask(
                        node_window(now, 3),
                        timeout=10.0,
                    )

                async def active(window_id: str) -> bool:
                    reply = await client.call(f"windows.{window_id}.get")
                    return bool(reply["ok"] and reply["data"]["state"] == "active")

                for window_id in windows:
                    await until(lambda w=window_id: active(w), f"{window_id} active")
                accepted: dict[str, int] = {}
                for window_id in windows:
                    for b in range(5):
                        reply = await client.call(
                            f"windows.{window_id}.join",
                            {"join_id": f"J-{window_id}-{b}", "buyer_id": f"B{b}"},
                        )
                        if reply["ok"]:
                            accepted[window_id] = accepted.get(window_id, 0) + 1
                        else:
                            assert reply["error"]["code"] == "sold_out", reply
                assert accepted == {w: 3 for w in windows}
                # each window runs on exactly one node
                for window_id in windows:
                    assert [
                        n.node_id
                        for n in (n1, n2)
                        if n.system and n.system.is_active("window", window_id)
                    ] in (["n1"], ["n2"])

            # n2 has left: n1 serves every shard, from the replicated journal
            async def alone() -> bool:
                owned = await shards_of(client)
                return set(owned) == {"n1"} and len(owned["n1"]) == SHARDS

            await until(alone, "n1 holds every shard")
            for window_id in windows:
                reply = await client.call(f"windows.{window_id}.get")
                assert reply["ok"] is True, reply
                assert reply["data"]["quantity_reserved"] == 3, reply
            again = await client.call(
                f"windows.{windows[0]}.join", {"join_id": f"J-{windows[0]}-0", "buyer_id": "B0"}
            )
            # the same answer as before the hand-over (sold out: the window closed, confirmed)
            assert again["ok"] is True and again["data"]["status"] == "confirmed", again


async def test_a_node_leaving_under_load_answers_every_request(tmp_path: Path) -> None:
    """Joins keep coming while n2 hands its shards over: each gets its real answer (none
    is dropped with the mail n2 forwarded, or left waiting for a shard in hand-over)."""
    buyers = 40
    windows = [f"W{i}" for i in range(8)]
    outcomes: dict[str, list[str]] = {w: [] for w in windows}
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        async with NatsTransport(server.url) as t, node(server.url, tmp_path, "n1") as n1:
            client = Client(t)
            left = anyio.Event()

            async def crowd(window_id: str) -> None:
                for b in range(buyers):
                    reply = await client.call(
                        f"windows.{window_id}.join",
                        {"join_id": f"J-{window_id}-{b}", "buyer_id": f"B{b}"},
                        timeout=15.0,
                    )
                    outcomes[window_id].append(
                        "ok"
                        if reply["ok"]
                        else f"{reply['error']['code']}: {reply['error']['message']}"
                    )
                    if b == buyers // 4:
                        left.set()  # n2 leaves while the rest is sent

            # n2 leaves (inner context) while the crowds (the task group) go on
            async with anyio.create_task_group() as tg, node(server.url, tmp_path, "n2") as n2:

                async def split() -> bool:
                    owned = await shards_of(client)
                    return set(owned) == {"n1", "n2"} and all(owned.values())

                await until(split, "the shards split between n1 and n2")
                for b in range(buyers):
                    reply = await client.call(
                        f"buyers.B{b}.register", {"name": f"B{b}", "phone": f"+9055500{b:05d}"}
                    )
                    assert reply["ok"] is True, reply
                now = n1.clock.time()
                assert n2.system is not None
                for window_id in windows:
                    await n2.system.ref("window", window_id).ask(
                        node_window(now, buyers),
                        timeout=10.0,
                    )

                async def active(window_id: str) -> bool:
                    reply = await client.call(f"windows.{window_id}.get")
                    return bool(reply["ok"] and reply["data"]["state"] == "active")

                for window_id in windows:
                    await until(lambda w=window_id: active(w), f"{window_id} active")
                for window_id in windows:
                    tg.start_soon(crowd, window_id)
                await left.wait()
            for window_id in windows:
                bad = [(i, o) for i, o in enumerate(outcomes[window_id]) if o != "ok"]
                assert len(outcomes[window_id]) == buyers and not bad, (window_id, bad)
                reply = await client.call(f"windows.{window_id}.get")
                assert reply["data"]["quantity_reserved"] == buyers, reply


async def test_an_api_key_created_through_one_node_is_known_to_every_node(
    tmp_path: Path,
) -> None:
    keys_dir = tmp_path / "keys"
    key = generate_hs256("hs1")[1]
    write_key_file(keys_dir / "hs1.key", key)
    ring = KeyRing(KeyDirectory(keys_dir).read())
    signing = ring.get("hs1")
    assert signing is not None
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:

        def secured(node_id: str) -> Settings:
            return msgspec.structs.replace(
                settings(server.url, tmp_path, node_id), auth="on", auth_keys_dir=str(keys_dir)
            )

        async with (
            NatsTransport(server.url) as t,
            ShopNode(secured("n1")) as n1,
            ShopNode(secured("n2")) as n2,
        ):
            client = Client(t)
            admin = mint(signing, sub="root", role="admin", ttl_s=600, now=n1.clock.time())
            bearer = {"Authorization": f"Bearer {admin}"}

            async def split() -> bool:
                reply = await client.call("cluster.status", headers=bearer)
                owners = {n["node_id"] for n in reply["data"]["nodes"] if n["shards"]}
                return owners == {"n1", "n2"}

            await until(split, "the shards split between n1 and n2")
            for i in range(4):  # through whichever node the queue group picks
                for _ in range(20):
                    reply = await client.call(
                        f"admin.apikeys.k{i}.create", {"role": "gateway"}, headers=bearer
                    )
                    # A node whose copy of the keys is a moment behind is refused by the
                    # journal's sequence check (retryable); it reloads, the retry lands.
                    if reply["ok"] or reply["error"]["code"] != "unavailable":
                        break
                    await anyio.sleep(0.05)
                assert reply["ok"] is True, reply

            async def everywhere() -> bool:
                return all(
                    n.auth is not None and all(n.auth.apikeys.get(f"k{i}") for i in range(4))
                    for n in (n1, n2)
                )

            await until(everywhere, "every key on every node")
