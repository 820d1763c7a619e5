"""The deployment files are real: servers accept them, they refer to what exists, and the
three-server cluster of ``deploy/cluster`` runs a node that takes a window through its life.

Docker, Kubernetes and systemd cannot run in a test, so their files are checked for what
would break them first: a service, file, key or name that is missing or misspelled.
PyYAML is not a dependency; where it happens to be installed the YAML files are parsed
too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import msgspec
import nats.js.errors
import pytest

from actors import VirtualClock
from actors.errors import NoResponders, TransportError
from actors.nats import JetStreamOutbox, NatsServer, NatsTransport, find_nats_server, free_port
from iceshop.cli.nats_users import (
    AUTHORIZATION_BLOCK,
    authorization_block,
    helm_sellers,
    replace_authorization,
    seller_password_env,
)
from iceshop.cli.secrets import NATS_ROLES, password_env
from iceshop.config import load_settings
from iceshop.node import ShopNode
from iceshop.node.app import NOTIFICATION_STREAM
from iceshop.settings import Settings
from iceshop.wire import EVENT_STREAM
from tests.shop_client import Client, VirtualShop

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CLUSTER = DEPLOY / "cluster"
NATS_CONFIGS = [ROOT / "nats.conf", *sorted(DEPLOY.rglob("*.conf"))]
CONTRACT_SETTINGS = [
    "nats_url",
    "data_dir",
    "node_id",
    "journal",
    "shards",
    "window_lead_s",
    "window_duration_s",
    "campaign_min_quantity",
    "campaign_interval_s",
    "window_min_participants",
    "window_max_per_buyer",
    "auth",
]


# -- nats-server configs --------------------------------------------------------------------

#: The passwords the configs' users read from the environment.
PASSWORDS = {password_env(role): f"test-{role}-password" for role in NATS_ROLES}
NODE_LOGIN: dict[str, Any] = {
    "user": "node",
    "password": PASSWORDS[password_env("node")],
    "inbox_prefix": "_INBOX_node",
}


def nats_server_test(
    path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_nats_server(), "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(PASSWORDS if env is None else env)},
    )


def test_the_configs_under_test_are_all_there() -> None:
    names = [p.relative_to(ROOT).as_posix() for p in NATS_CONFIGS]
    assert names == [
        "nats.conf",
        "deploy/cluster/n1.conf",
        "deploy/cluster/n2.conf",
        "deploy/cluster/n3.conf",
    ]


@pytest.mark.parametrize("path", NATS_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_nats_server_accepts_the_config(path: Path) -> None:
    result = nats_server_test(path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "is valid" in result.stderr + result.stdout


@pytest.mark.parametrize("path", NATS_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_config_without_its_passwords_does_not_start(path: Path) -> None:
    """No password has a default: a server started without them refuses to run."""
    env = {k: v for k, v in PASSWORDS.items() if k != password_env("gateway")}
    result = nats_server_test(path, env)
    assert result.returncode != 0
    assert "ICESHOP_NATS_GATEWAY_PASSWORD" in result.stderr + result.stdout


def test_the_cluster_users_are_those_of_nats_conf() -> None:
    """deploy/cluster/users.inc is nats.conf's authorization block, word for word, and
    both are what `iceshop nats users` prints without sellers."""
    conf = (ROOT / "nats.conf").read_text()
    users = (CLUSTER / "users.inc").read_text()
    block = conf[conf.index("\nauthorization {") :]
    assert block.count("\nauthorization {") == 1 and block.rstrip().endswith("}")
    assert users[users.index("\nauthorization {") :] == block
    assert block == "\n" + AUTHORIZATION_BLOCK
    for n in (1, 2, 3):
        assert re.search(r"^include \./users\.inc$", (CLUSTER / f"n{n}.conf").read_text(), re.M)


def test_no_nats_user_is_shared_by_sellers() -> None:
    """Sellers get one user each (`iceshop nats users`); none is shipped."""
    users = parse_conf(AUTHORIZATION_BLOCK)["authorization"]["users"]
    assert [u["user"] for u in users] == ["node", "gateway", "admin", "events"]
    for path in NATS_CONFIGS:
        text = path.read_text()
        assert "ICESHOP_NATS_SELLER_PASSWORD" not in text, path
        assert "_INBOX_seller." not in text, path


@pytest.mark.parametrize("base", ["nats.conf", "deploy/cluster/users.inc"])
def test_nats_server_accepts_a_config_with_seller_users(tmp_path: Path, base: str) -> None:
    source = ROOT / base
    conf = tmp_path / source.name
    conf.write_text(replace_authorization(source.read_text(), authorization_block(["S1", "a-b"])))
    if base.endswith(".inc"):  # run it as n1.conf does, from a copy next to it
        (tmp_path / "n1.conf").write_text((CLUSTER / "n1.conf").read_text())
        conf = tmp_path / "n1.conf"
    env = {**PASSWORDS, seller_password_env("S1"): "s1-pw", seller_password_env("a-b"): "ab-pw"}
    result = nats_server_test(conf, env)
    assert result.returncode == 0, result.stderr + result.stdout
    # Each seller's password is its own variable, and a server without it does not start.
    del env["ICESHOP_NATS_SELLER_A_B_PASSWORD"]
    result = nats_server_test(conf, env)
    assert result.returncode != 0
    assert "ICESHOP_NATS_SELLER_A_B_PASSWORD" in result.stderr + result.stdout


# A reader of nats-server's config syntax, enough for the authorization blocks: maps
# ({ } with ":" or "="), arrays, quoted strings, bare words, comments.
_CONF_TOKEN = re.compile(
    r'\s+|#[^\n]*|//[^\n]*|"(?P<str>[^"]*)"|(?P<punct>[{}\[\]:=,])|(?P<word>[^\s{}\[\]:=,"#]+)'
)


def parse_conf(text: str) -> dict[str, Any]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _CONF_TOKEN.match(text, pos)
        assert match is not None, text[pos : pos + 40]
        pos = match.end()
        for kind in ("str", "punct", "word"):
            if match.group(kind) is not None:
                tokens.append((kind, match.group(kind)))
    i = 0

    def skip(*separators: str) -> tuple[str, str] | None:
        """Skip ``separators``; the token after them."""
        nonlocal i
        while i < len(tokens) and tokens[i][0] == "punct" and tokens[i][1] in separators:
            i += 1
        return tokens[i] if i < len(tokens) else None

    def value() -> Any:
        nonlocal i
        kind, token = tokens[i]
        i += 1
        if (kind, token) == ("punct", "{"):
            mapping: dict[str, Any] = {}
            while skip(",") != ("punct", "}"):
                key = tokens[i][1]
                i += 1
                skip(":", "=")
                mapping[key] = value()
            i += 1
            return mapping
        if (kind, token) == ("punct", "["):
            items = []
            while skip(",") != ("punct", "]"):
                items.append(value())
            i += 1
            return items
        if kind == "word" and token in ("true", "false"):
            return token == "true"
        return token

    top: dict[str, Any] = {}
    while i < len(tokens):
        key = tokens[i][1]
        i += 1
        skip(":", "=")
        top[key] = value()
    return top


def conf_users(block: str) -> list[dict[str, Any]]:
    """The users of an authorization block, their ``$ROLE`` permissions resolved."""
    authorization = parse_conf(block)["authorization"]
    users = []
    for user in authorization["users"]:
        permissions = user["permissions"]
        if isinstance(permissions, str):
            permissions = authorization[permissions.removeprefix("$")]
        users.append({**user, "permissions": permissions})
    return users


def test_nats_server_t_refuses_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: an unknown key is an error, not a warning."""
    broken = tmp_path / "broken.conf"
    broken.write_text((ROOT / "nats.conf").read_text() + "\nmax_paylod: 1MB\n")
    result = nats_server_test(broken)
    assert result.returncode != 0
    assert "max_paylod" in result.stderr + result.stdout


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.load(response)
        return data


@pytest.mark.integration
def test_nats_conf_limits_apply_when_the_launcher_adds_its_options(tmp_path: Path) -> None:
    """``iceshop up`` passes -sd, -p, -m and -n on top of the file; all of it must hold."""
    store = tmp_path / "js"
    with NatsServer(
        config=ROOT / "nats.conf", monitor_port=0, store_dir=store, env=PASSWORDS
    ) as server:
        assert server.monitor_url is not None
        varz = get_json(server.monitor_url + "/varz")
    assert varz["port"] == server.port and varz["server_name"] == server.name
    assert 64 * 1024 < varz["max_payload"] <= 1024 * 1024
    assert varz["max_payload"] == 256 * 1024
    assert varz["max_pending"] == 32 * 1024 * 1024
    assert varz["max_connections"] == 4096
    assert varz["write_deadline"] == 5_000_000_000  # nanoseconds
    js = varz["jetstream"]["config"]
    assert Path(js["store_dir"]).parent == store
    assert js["max_memory"] == 256 * 1024 * 1024
    assert js["max_storage"] == 4 * 1024 * 1024 * 1024


# -- the cluster configs --------------------------------------------------------------------


class ServerConf(NamedTuple):
    path: Path
    name: str
    client: int
    monitor: int
    cluster_name: str
    cluster: int
    routes: tuple[int, ...]


def read_server_conf(path: Path) -> ServerConf:
    """The few settings of a deploy/cluster file that the tests need (not a parser)."""
    text = path.read_text()

    def one(pattern: str, within: str = text) -> str:
        match = re.search(pattern, within, re.MULTILINE | re.DOTALL)
        assert match is not None, f"{path.name}: nothing matches {pattern!r}"
        return match.group(1)

    block = one(r"^cluster\s*\{(.*?)^\}")
    return ServerConf(
        path=path,
        name=one(r"^server_name:\s*(\S+)"),
        client=int(one(r"^listen:\s*127\.0\.0\.1:(\d+)")),
        monitor=int(one(r"^http_port:\s*(\d+)")),
        cluster_name=one(r"^\s*name:\s*(\S+)", block),
        cluster=int(one(r"^\s*listen:\s*127\.0\.0\.1:(\d+)", block)),
        routes=tuple(int(p) for p in re.findall(r"nats://127\.0\.0\.1:(\d+)", block)),
    )


def cluster_confs() -> list[ServerConf]:
    return [read_server_conf(CLUSTER / f"n{i}.conf") for i in (1, 2, 3)]


def test_cluster_configs_route_to_each_other() -> None:
    confs = cluster_confs()
    assert [c.name for c in confs] == ["n1", "n2", "n3"]
    assert {c.cluster_name for c in confs} == {"iceshop"}
    ports = [p for c in confs for p in (c.client, c.monitor, c.cluster)]
    assert len(set(ports)) == 9, ports
    for conf in confs:
        others = {c.cluster for c in confs if c is not conf}
        assert set(conf.routes) == others, conf


def ports_free(ports: Iterable[int]) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server does
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def cluster_servers(tmp_path: Path) -> tuple[list[NatsServer], str]:
    """The three servers of deploy/cluster, each with its own store under ``tmp_path``.

    When every port the files name is free they run exactly as written (only -sd and the
    client port, the file's own, are given). Otherwise the same files run with free
    ports given on the command line, which wins over the file."""
    confs = cluster_confs()
    if ports_free(p for c in confs for p in (c.client, c.monitor, c.cluster)):
        servers = [
            NatsServer(
                config=c.path,
                port=c.client,
                name=c.name,
                store_dir=tmp_path / c.name,
                env=PASSWORDS,
            )
            for c in confs
        ]
        return servers, "ports of the files"
    cluster_ports = [free_port() for _ in confs]
    servers = [
        NatsServer(
            config=c.path,
            name=c.name,
            store_dir=tmp_path / c.name,
            monitor_port=0,
            cluster_name=c.cluster_name,
            cluster_port=cluster_ports[i],
            routes=[f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i],
            env=PASSWORDS,
        )
        for i, c in enumerate(confs)
    ]
    return servers, "free ports"


async def retrying(step: Callable[[], Awaitable[Any]], *, within: float = 15.0) -> Any:
    """A new JetStream cluster answers "no responders" or nothing while it elects its
    leaders (for the cluster, then for each stream); retry until it stops doing so."""
    with anyio.fail_after(within):
        while True:
            try:
                return await step()
            except TransportError:
                await anyio.sleep(0.05)


INTERVAL = 10.0
LEAD = 60.0
DURATION = 600.0


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_window_lives_its_life_on_the_three_server_cluster(tmp_path: Path) -> None:
    servers, mode = cluster_servers(tmp_path)
    async with AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        urls = [s.url for s in servers]
        # Everything below runs as the node user: the only one that may create streams.
        transport = await stack.enter_async_context(
            NatsTransport(urls, reconnect_time_wait=0.05, **NODE_LOGIN)
        )
        # Three replicas: every event survives the loss of any one server. The node
        # leaves streams that exist as they are.
        outbox = JetStreamOutbox(transport, timeout=1.0)
        await retrying(lambda: outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"], replicas=3))
        await retrying(
            lambda: outbox.ensure_stream(
                NOTIFICATION_STREAM, ["iceshop.notifications.>"], replicas=3
            )
        )
        password_file = tmp_path / "node.password"
        password_file.write_text(NODE_LOGIN["password"] + "\n")
        settings = Settings(
            nats_url=",".join(urls),
            data_dir=str(tmp_path / "node"),
            node_id="node-1",
            auth="off",
            nats_user="node",
            nats_password_file=str(password_file),
            stream_replicas=3,
            campaign_min_quantity=3,
            campaign_interval_s=INTERVAL,
            campaign_cooldown_s=3600,
            window_lead_s=LEAD,
            window_duration_s=DURATION,
            window_min_participants=2,
            window_max_per_buyer=2,
        )
        clock = VirtualClock(start=0.0, epoch=1_800_000_000.0)
        node = await stack.enter_async_context(ShopNode(settings, clock=clock))
        shop = VirtualShop(node, clock, Client(transport))
        c = shop.client

        # The node's subscriptions reach the other servers over the routes a moment
        # after it is ready; until then a client on another server sees no responders,
        # and retries as the contract says.
        with anyio.fail_after(10):
            while True:
                try:
                    status = await c.ok("cluster.status")
                    break
                except NoResponders:
                    await anyio.sleep(0.05)
        assert [n["node_id"] for n in status["nodes"]] == ["node-1"], mode

        # A seller with stock, buyers with intents: demand the campaign acts on.
        assert (await c.ok("sellers.S1.register", {"name": "Glassworks"}))["created"]
        listing = {
            "product_id": "P1",
            "title": "Tea glasses, set of 6",
            "list_price_minor": 1000,
            "floor_price_minor": 700,
            "stock": 8,
            "currency": "TRY",
        }
        assert (await c.ok("sellers.S1.listings.upsert", listing))["stock"] == 8
        buyers = ["B1", "B2", "B3", "B4"]
        for i, buyer in enumerate(buyers):
            contact = {"name": f"Buyer {i}", "phone": "+905551112233", "whatsapp_opt_in": True}
            assert (await c.ok(f"buyers.{buyer}.register", contact))["created"]
            intent = {"intent_id": f"I{i}", "product_id": "P1", "max_price_minor": 900}
            assert (await c.ok(f"buyers.{buyer}.intents.submit", intent))["status"] == "open"

        # The campaign proposes a window.
        listed = await shop.until(
            "windows.list", {}, lambda d: len(d["windows"]) == 1, tick=INTERVAL
        )
        window = listed["windows"][0]
        wid = window["window_id"]
        assert window["state"] == "scheduled"
        assert (window["seller_id"], window["product_id"]) == ("S1", "P1")
        assert 700 <= window["unit_price_minor"] <= 1000
        assert (
            await c.error(f"windows.{wid}.join", {"join_id": "J0", "buyer_id": "B1"})
            == "window_not_active"
        )

        # It activates on time and takes joins.
        await shop.advance(LEAD)
        active = await shop.until(f"windows.{wid}.get", {}, lambda d: d["state"] == "active")
        assert active["quantity_total"] >= 4, active  # four buyers asked; room is left below
        joins = [("J1", "B1", 2), ("J2", "B2", 1)]
        for join_id, buyer, quantity in joins:
            body = {"join_id": join_id, "buyer_id": buyer, "quantity": quantity}
            reply = await c.ok(f"windows.{wid}.join", body)
            assert (reply["status"], reply["quantity"]) == ("reserved", quantity)
        view = await c.ok(f"windows.{wid}.get")
        assert (view["quantity_reserved"], view["participants"]) == (3, 2)

        # It expires and closes, succeeded: two participants, two needed.
        await shop.advance(DURATION)
        closed = await shop.until(f"windows.{wid}.get", {}, lambda d: d["state"] == "closed")
        assert (closed["outcome"], closed["close_reason"]) == ("succeeded", "expired")
        assert (
            await c.error(f"windows.{wid}.join", {"join_id": "J3", "buyer_id": "B3"})
            == "window_closed"
        )
        reservations = await c.ok(f"windows.{wid}.reservations")
        assert {r["join_id"]: r["status"] for r in reservations["reservations"]} == {
            "J1": "confirmed",
            "J2": "confirmed",
        }

        # The events are in the replicated stream, the close among them.
        js = transport.jetstream(timeout=2.0)
        subject = f"iceshop.events.window.{wid}.closed"

        async def last_closed() -> Any:
            try:
                return await js.get_last_msg(EVENT_STREAM, subject)
            except nats.js.errors.NotFoundError as exc:  # the outbox publishes after commit
                raise TransportError(str(exc)) from exc

        stored = await retrying(last_closed, within=5.0)
        event = msgspec.json.decode(stored.data)
        assert event["type"] == "closed" and event["data"]["outcome"] == "succeeded"
        info = await js.stream_info(EVENT_STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        assert {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])} == {
            "n1",
            "n2",
            "n3",
        }


# -- node settings --------------------------------------------------------------------------


def test_example_node_toml_sets_every_setting_and_loads() -> None:
    path = DEPLOY / "node.toml"
    keys = set(tomllib.loads(path.read_text()))
    assert set(CONTRACT_SETTINGS) <= keys
    assert keys == set(Settings.__struct_fields__), "node.toml must show every setting"
    settings = load_settings(path, environ={})
    assert settings.nats_url.split(",") == [
        "nats://127.0.0.1:4222",
        "nats://127.0.0.1:4223",
        "nats://127.0.0.1:4224",
    ]
    assert (settings.data_dir, settings.node_id, settings.auth) == (
        "/var/lib/iceshop",
        "node-1",
        "on",
    )
    # Environment variables override the file, as the systemd unit and compose rely on.
    override = load_settings(path, environ={"ICESHOP_NODE_ID": "node-2"})
    assert override.node_id == "node-2"


def configmap_toml(text: str) -> str:
    """The literal block under ``node.toml: |`` in a ConfigMap, de-indented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "node.toml: |") + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    return "\n".join(body) + "\n"


def test_kubernetes_configmap_holds_loadable_settings(tmp_path: Path) -> None:
    toml = configmap_toml((DEPLOY / "kubernetes" / "node-configmap.yaml").read_text())
    assert set(tomllib.loads(toml)) == set(Settings.__struct_fields__)
    path = tmp_path / "node.toml"
    path.write_text(toml)
    settings = load_settings(path, environ={"ICESHOP_NODE_ID": "iceshop-node-7f9c-x2p4q"})
    assert settings.nats_url == "nats://nats:4222"
    assert settings.data_dir == "/var/lib/iceshop"
    assert settings.node_id == "iceshop-node-7f9c-x2p4q"


# -- compose, Dockerfile, Kubernetes, systemd -----------------------------------------------


def assert_plain_yaml(path: Path) -> None:
    """What a YAML parser would trip over first, without a YAML parser."""
    text = path.read_text()
    assert "\t" not in text, f"{path.name}: tab characters"
    for n, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"{path.name}:{n}: odd indentation"
        assert line == line.rstrip(), f"{path.name}:{n}: trailing whitespace"


YAML_FILES = [
    DEPLOY / "compose" / "docker-compose.yml",
    DEPLOY / "kubernetes" / "kustomization.yaml",
    DEPLOY / "kubernetes" / "node-configmap.yaml",
    DEPLOY / "kubernetes" / "node-pvc.yaml",
    DEPLOY / "kubernetes" / "node-deployment.yaml",
    DEPLOY / "kubernetes" / "nats-values.yaml",
]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_yaml_files_are_plain(path: Path) -> None:
    assert_plain_yaml(path)


def top_level_block(text: str, key: str) -> str:
    match = re.search(rf"^{key}:\n(.*?)(?=^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, key
    return match.group(1)


def test_compose_runs_the_cluster_and_two_nodes_from_files_that_exist() -> None:
    compose = DEPLOY / "compose" / "docker-compose.yml"
    text = compose.read_text()
    services = re.findall(r"^  ([a-z0-9-]+):\s*$", top_level_block(text, "services"), re.M)
    assert services == ["n1", "n2", "n3", "node1", "node2"]
    # Every server runs its own file from deploy/cluster, mounted read-only.
    assert "../cluster:/etc/nats:ro" in text
    for conf in cluster_confs():
        assert f"/etc/nats/{conf.path.name}" in text
        others = sorted(f"nats://{c.name}:{c.cluster}" for c in cluster_confs() if c != conf)
        assert ",".join(others) in text, f"routes of {conf.name}"
        assert f"127.0.0.1:{conf.client}:{conf.client}" in text
        assert f"http://127.0.0.1:{conf.monitor}/healthz" in text
    clients = ",".join(f"nats://{c.name}:{c.client}" for c in cluster_confs())
    assert clients in text
    # Paths on the host are relative to the compose file and must exist.
    for host_path in re.findall(r"^\s*- (\.\.?/[^:]+):", text, re.M):
        assert (compose.parent / host_path).exists(), host_path
    context = re.search(r"context: (\S+)", text)
    dockerfile = re.search(r"dockerfile: (\S+)", text)
    assert context is not None and dockerfile is not None
    assert (compose.parent / context.group(1) / dockerfile.group(1)).resolve() == (
        DEPLOY / "compose" / "Dockerfile"
    )
    assert "iceshop\n    - node\n" in text


def test_compose_gives_the_servers_every_password_their_users_read() -> None:
    compose = (DEPLOY / "compose" / "docker-compose.yml").read_text()
    given = set(re.findall(r"^    (ICESHOP_NATS_\w+_PASSWORD): ", compose, re.M))
    read = set(re.findall(r"password: \$(\w+)", (CLUSTER / "users.inc").read_text()))
    assert read and read <= given, sorted(read - given)


def test_dockerfile_copies_what_exists_and_runs_a_node() -> None:
    dockerfile = (DEPLOY / "compose" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    copied = [
        src for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for src in line.split()[:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", "actors", "iceshop"]
    for src in copied:
        assert (ROOT / src).exists(), src
    ignore = (DEPLOY / "compose" / "Dockerfile.dockerignore").read_text()
    for src in copied:  # the ignore file starts with "*" and lets each of these back in
        assert re.search(rf"^!{re.escape(src)}/?$", ignore, re.M), src
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    assert json.loads(cmd.group(1))[:2] == ["iceshop", "node"]
    assert "USER iceshop" in dockerfile


def test_kubernetes_manifests_refer_to_each_other() -> None:
    kube = DEPLOY / "kubernetes"
    kustomization = (kube / "kustomization.yaml").read_text()
    resources = re.findall(r"^  - (\S+\.yaml)$", kustomization, re.M)
    assert resources == ["node-configmap.yaml", "node-pvc.yaml", "node-deployment.yaml"]
    for resource in resources:
        assert (kube / resource).is_file()
    deployment = (kube / "node-deployment.yaml").read_text()
    assert re.search(r"^kind: Deployment$", deployment, re.M)
    configmap = re.search(r"^  name: (\S+)$", (kube / "node-configmap.yaml").read_text(), re.M)
    pvc = re.search(r"^  name: (\S+)$", (kube / "node-pvc.yaml").read_text(), re.M)
    assert configmap is not None and pvc is not None
    assert f"name: {configmap.group(1)}\n" in deployment
    assert f"claimName: {pvc.group(1)}\n" in deployment
    for arg in ("- node", "- --nats", "- --data", "- /var/lib/iceshop", "- --config"):
        assert arg in deployment
    assert "mountPath: /etc/iceshop\n" in deployment
    assert "ICESHOP_NODE_ID" in deployment


def plain_yaml(text: str) -> Any:
    """Block-style YAML as nats-values.yaml writes it (mappings, "- " sequences, quoted or
    plain scalars, comments; no "|" blocks, anchors or flow style), for where PyYAML is
    not installed. Not a YAML parser: it reads that file as yq does, no more."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((len(raw) - len(raw.lstrip(" ")), stripped))

    def scalar(token: str) -> Any:
        token = re.sub(r"\s+#.*$", "", token) if not token.startswith('"') else token
        if token.startswith('"') and token.endswith('"'):
            return json.loads(token)
        if token in ("true", "false"):
            return token == "true"
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        return token or None

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                item = lines[i][1][2:]
                if re.match(r"[^\s\"]+:( |$)", item):  # a mapping in the sequence
                    lines[i] = (indent + 2, item)
                    value, i = block(i, indent + 2)
                    items.append(value)
                else:
                    items.append(scalar(item))
                    i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            rest = rest.strip()
            i += 1
            if rest:
                mapping[key] = scalar(rest)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                mapping[key], i = block(i, indent)
            else:
                mapping[key] = None
        return mapping, i

    return block(0, 0)[0]


def load_yaml(path: Path) -> Any:
    """``path`` parsed by PyYAML where it is installed, else by :func:`plain_yaml`."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ModuleNotFoundError:
        return plain_yaml(path.read_text())
    return yaml.safe_load(path.read_text())


def helm_to_conf(value: Any) -> str:
    """A value of the chart's ``config.merge`` as the chart writes it into nats.conf:
    JSON, with strings "<< ... >>" unquoted."""
    text = json.dumps(value, indent=2)
    return re.sub(r'"<< (.*?) >>"', r"\1", text)


def test_helm_values_have_the_users_of_nats_conf(tmp_path: Path) -> None:
    values = load_yaml(DEPLOY / "kubernetes" / "nats-values.yaml")
    merge = values["config"]["merge"]
    helm_users = merge["authorization"]["users"]
    expected = conf_users(AUTHORIZATION_BLOCK)
    assert [u["user"] for u in helm_users] == [u["user"] for u in expected]
    for helm, conf in zip(helm_users, expected, strict=True):
        assert helm["password"] == f"<< {conf['password']} >>", conf["user"]
        assert helm["permissions"] == conf["permissions"], conf["user"]
    # Every password variable comes from the Secret, none is written in the values.
    env = values["container"]["env"]
    for user in helm_users:
        variable = user["password"].removeprefix("<< $").removesuffix(" >>")
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "iceshop-nats", "key": user["user"]}
    box = values["natsBox"]
    assert box["container"]["env"]["NATS_USER"] == "admin"
    assert box["container"]["env"]["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "admin"
    assert box["contexts"]["default"]["merge"]["inbox_prefix"] == "_INBOX_admin"
    # The merged settings as the chart renders them: nats-server takes them, with the
    # passwords in its environment.
    rendered = tmp_path / "helm.conf"
    rendered.write_text("listen: 127.0.0.1:4222\ninclude ./merge.conf\n")
    (tmp_path / "merge.conf").write_text(helm_to_conf(merge)[1:-1])
    result = nats_server_test(rendered, PASSWORDS)
    assert result.returncode == 0, result.stderr + result.stdout


def test_nats_users_for_helm_are_the_sellers_of_nats_conf() -> None:
    """`iceshop nats users --helm`: the same seller users as for nats.conf, each password
    from its own key of the Secret."""
    snippet = plain_yaml(helm_sellers(["S1", "a-b"]))
    helm_users = snippet["config"]["merge"]["authorization"]["users"]
    expected = conf_users(authorization_block(["S1", "a-b"]))[4:]
    assert [u["user"] for u in helm_users] == ["seller_S1", "seller_a-b"]
    for helm, conf in zip(helm_users, expected, strict=True):
        assert helm["user"] == conf["user"].strip('"')
        assert helm["password"] == f"<< {conf['password']} >>"
        assert helm["permissions"] == conf["permissions"]
    env = snippet["container"]["env"]
    assert env["ICESHOP_NATS_SELLER_A_B_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "iceshop-nats",
        "key": "seller_a-b",
    }


def test_helm_values_ask_for_a_three_server_jetstream_cluster_on_file() -> None:
    text = (DEPLOY / "kubernetes" / "nats-values.yaml").read_text()
    config = top_level_block(text, "config")
    assert re.search(r"^  cluster:\n    enabled: true\n(?:\s*#.*\n)*    replicas: 3$", config, re.M)
    assert re.search(
        r"^  jetstream:\n    enabled: true\n    fileStore:\n      enabled: true", config, re.M
    )
    assert "max_payload: << 256KB >>" in config
    # The node's ConfigMap points at the Service a release named "nats" creates.
    assert "helm upgrade --install nats nats/nats" in text


def unit_entries(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values of a systemd unit (keys may repeat)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


SYSTEMD_UNIT = DEPLOY / "systemd" / "iceshop-node.service"


def test_systemd_unit_runs_a_hardened_node() -> None:
    unit = unit_entries(SYSTEMD_UNIT.read_text())
    (exec_start,) = unit["Service.ExecStart"]
    argv = exec_start.split()
    assert argv[1:3] == ["node", "--nats"]
    assert argv[argv.index("--data") + 1] == "/var/lib/iceshop"
    assert argv[argv.index("--config") + 1] == "/etc/iceshop/node.toml"
    expected = {
        "Service.User": "iceshop",
        "Service.Restart": "on-failure",
        "Service.NoNewPrivileges": "yes",
        "Service.ProtectSystem": "strict",
        "Service.ReadWritePaths": "/var/lib/iceshop",
        "Service.PrivateTmp": "yes",
        "Service.StateDirectory": "iceshop",
        "Install.WantedBy": "multi-user.target",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists; the unit names where it is installed.
    copy = tmp_path / SYSTEMD_UNIT.name
    copy.write_text(SYSTEMD_UNIT.read_text().replace("/opt/iceshop/bin/iceshop", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert copy.name not in result.stderr, result.stderr  # no warning about our file


def test_yaml_parses_where_a_parser_is_installed() -> None:
    yaml = pytest.importorskip("yaml")
    for path in YAML_FILES:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path.name
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    assert sorted(compose["services"]) == ["n1", "n2", "n3", "node1", "node2"]
    assert compose["services"]["node2"]["command"][:2] == ["iceshop", "node"]


def test_deploy_readme_explains_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, path.relative_to(ROOT)
