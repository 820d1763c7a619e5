"""The flash crowd's shop: a node in a process of its own, and a contract client for it.

:class:`NodeProcess` runs ``python -m iceshop.node`` as a child with settings suited to a
benchmark (a window activates a second after it is proposed and stays open for ten
minutes; the campaign looks every 0.2 s and proposes on any demand; one unit per buyer;
a tipping point of one). By default the node leaves its read model projector out
(``readmodel_projector = "external"``) and :class:`ProjectorProcess` runs ``iceshop
projector`` beside it on the same data directory, so the hot path has the node's process
to itself. Its output goes to a log file, so a chatty node never blocks
on a full pipe, and the tail of that log is shown when something fails. Readiness is
proven over NATS (``cluster.status`` answers), not guessed from a sleep.

:class:`ShopClient` does everything else over the contract's subjects only: the seller,
its listing, the crowd's registrations (many requests in flight), the intents that make
the campaign propose the window, the wait for the window to activate, and the read-back
of the window's reservations for the oversell and durability checks. With
:meth:`ShopClient.setup_products` it lists several products, each with its own seller
and intents, so the campaign proposes one window per product (and a cluster spreads
them over its shards).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import msgspec

from actors.errors import TransportError
from actors.nats import NatsTransport

__all__ = [
    "NODE_SETTINGS",
    "PRODUCT_ID",
    "REPO_ROOT",
    "SELLER_ID",
    "BenchError",
    "NodeProcess",
    "ProjectorProcess",
    "Reservations",
    "ShopClient",
    "child_env",
    "cpu_seconds_of",
    "fan_out",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SELLER_ID = "FLASHSELLER"
PRODUCT_ID = "FLASHITEM"
LIST_PRICE = 100_000
FLOOR_PRICE = 80_000
DEMAND_BUYERS = 20
"""Buyers whose intents make the campaign propose the window (apart from the crowd)."""

NODE_SETTINGS: dict[str, str] = {
    "node_id": "flash",
    "window_lead_s": "1",
    "window_duration_s": "600",
    "campaign_interval_s": "0.2",
    "campaign_min_quantity": "1",
    "window_max_per_buyer": "1",
    "window_min_participants": "1",
    "auth": "off",
}


class BenchError(RuntimeError):
    """The benchmark could not run as planned (a failed setup step, a node that died)."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours without any ``ICESHOP_*`` setting (the
    node must get exactly the benchmark's), with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICESHOP_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


async def fan_out(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """``await one(i)`` for every ``i`` in ``range(count)``, ``concurrency`` at a time."""
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            await one(i)

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, count)):
            tg.start_soon(worker)


def _process_cpu_clock(pid: int) -> int:
    """The Linux clock id of process ``pid``'s CPU time (``clock_getcpuclockid(3)``,
    which Python does not expose: ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``)."""
    return ((~pid) << 3) | 2


async def cpu_seconds_of(pid: int | None) -> float | None:
    """CPU time process ``pid`` has used so far, all its threads (those that ended too);
    None off Linux or when it is gone. Read to the nanosecond from the process's CPU
    clock; ``/proc/<pid>/stat`` (10 ms ticks, too coarse for a crowd of a few thousand
    replies) when that clock cannot be read."""
    if pid is None:
        return None
    if sys.platform == "linux":
        try:
            return time.clock_gettime_ns(_process_cpu_clock(pid)) / 1e9
        except OSError:
            pass
    try:
        stat = await anyio.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


class _ChildProcess:
    """A child process whose output goes to ``log_path``; stopped, killed and reaped here."""

    what = "child"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: anyio.abc.Process | None = None
        self._log: IO[bytes] | None = None

    async def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        if self.process is not None:
            raise BenchError(f"the {self.what} is already running")
        self._log = await anyio.to_thread.run_sync(self.log_path.open, "ab")
        self.process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )

    async def kill(self) -> None:
        """SIGKILL: a crash, no shutdown code runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
        await self._reap()

    async def stop(self, within_s: float = 15.0) -> None:
        """SIGTERM (a clean shutdown); SIGKILL if it takes longer than ``within_s``."""
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            with anyio.move_on_after(within_s):
                await process.wait()
        await self.kill()

    async def _reap(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    async def cpu_seconds(self) -> float | None:
        """CPU time the running process has used so far (Linux ``/proc``), else None."""
        return None if self.process is None else await cpu_seconds_of(self.process.pid)

    @property
    def died(self) -> bool:
        """Whether the process is gone although nobody stopped it."""
        return self.process is not None and self.process.returncode is not None

    def tail(self, limit: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-limit:].decode("utf-8", "replace")


def _settings_env(readmodel_projector: str) -> dict[str, str]:
    env = {f"ICESHOP_{k.upper()}": v for k, v in NODE_SETTINGS.items()}
    env["ICESHOP_READMODEL_PROJECTOR"] = readmodel_projector
    return child_env(env)


class ProjectorProcess(_ChildProcess):
    """``iceshop projector`` as a child process on the node's ``data_dir``, with the
    node's settings (the same prefix and node id, so the same durable consumer)."""

    what = "projector"

    def __init__(self, nats_url: str, data_dir: Path, log_path: Path) -> None:
        super().__init__(log_path)
        self.nats_url = nats_url
        self.data_dir = data_dir

    async def start(self, ready_within_s: float = 30.0) -> None:
        """Start it and wait for its ready line in the log."""
        log = anyio.Path(self.log_path)
        offset = (await log.stat()).st_size if await log.exists() else 0
        command = [sys.executable, "-m", "iceshop.cli", "projector", "--nats", self.nats_url]
        command += ["--data", str(self.data_dir)]
        await self._spawn(command, _settings_env("external"))
        with anyio.move_on_after(ready_within_s):
            while True:
                if self.died:
                    await self._reap()
                    raise BenchError(f"the projector exited during start:\n{self.tail()}")
                text = (await log.read_bytes())[offset:].decode("utf-8", "replace")
                if "projector ready" in text.splitlines():
                    return
                await anyio.sleep(0.05)
        await self.kill()
        raise BenchError(f"the projector was not ready in {ready_within_s:g}s:\n{self.tail()}")


class NodeProcess(_ChildProcess):
    """``python -m iceshop.node`` as a child process on ``data_dir``.

    With ``readmodel_projector="external"`` (the default) the node runs without its
    read model projector and a :class:`ProjectorProcess` runs beside it on the same data
    directory: started with the node, stopped with it, but not killed with it (a crash
    of the node leaves the projector running, as it would in production)."""

    what = "node"

    def __init__(
        self,
        nats_url: str,
        data_dir: Path,
        log_path: Path,
        *,
        readmodel_projector: str = "external",
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(log_path)
        self.nats_url = nats_url
        self.data_dir = data_dir
        self.readmodel_projector = readmodel_projector
        #: More node settings, by name (e.g. ``{"metrics_port": "9464"}``).
        self.extra_settings = dict(extra_settings or {})
        self.projector: ProjectorProcess | None = None
        if readmodel_projector == "external":
            projector_log = log_path.with_name(f"{log_path.stem}-projector{log_path.suffix}")
            self.projector = ProjectorProcess(nats_url, data_dir, projector_log)

    async def start(self, client: ShopClient, ready_within_s: float = 60.0) -> float:
        """Start the node (and its projector unless that runs already); return the
        seconds until the node answered over NATS."""
        if self.process is not None:
            raise BenchError("the node is already running")
        if self.projector is not None and self.projector.process is None:
            await self.projector.start()
        command = [sys.executable, "-m", "iceshop.node", "--nats", self.nats_url]
        command += ["--data", str(self.data_dir)]
        started = anyio.current_time()
        env = _settings_env(self.readmodel_projector)
        env.update({f"ICESHOP_{k.upper()}": v for k, v in self.extra_settings.items()})
        await self._spawn(command, env)
        with anyio.move_on_after(ready_within_s):
            while True:
                if self.died:
                    await self._reap()
                    raise BenchError(f"the node exited during start; log tail:\n{self.tail()}")
                if await self.ready(client):
                    return anyio.current_time() - started
                await anyio.sleep(0.05)
        await self.kill()
        raise BenchError(f"the node did not answer within {ready_within_s:g}s:\n{self.tail()}")

    async def ready(self, client: ShopClient) -> bool:
        """Whether the started node serves: ``cluster.status`` answers (a subclass may
        ask more, e.g. that this node is among those it lists)."""
        return await client.answers("cluster.status")

    async def stop(self, within_s: float = 15.0) -> None:
        """SIGTERM the node, then its projector (each SIGKILLed after ``within_s``)."""
        await super().stop(within_s)
        if self.projector is not None:
            await self.projector.stop(within_s)

    async def projector_cpu_seconds(self) -> float | None:
        """CPU time of the projector process so far; None when it runs in the node."""
        return None if self.projector is None else await self.projector.cpu_seconds()


class Reservations(msgspec.Struct, frozen=True, kw_only=True):
    """A window's reservations as its own query answers them (every page)."""

    total: int
    """Reservations listed, released ones included."""
    held_quantity: int
    """Quantity of the reservations not released."""
    held_join_ids: frozenset[str]


class ShopClient:
    """The contract's subjects, from the outside (``iceshop.`` prefix)."""

    def __init__(self, transport: NatsTransport, prefix: str = "iceshop") -> None:
        self.transport = transport
        self.prefix = prefix

    async def call(
        self,
        subject: str,
        body: dict[str, Any] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the request's own bound, passed down
    ) -> dict[str, Any]:
        payload, _ = await self.transport.request(
            f"{self.prefix}.{subject}", msgspec.json.encode(body or {}), timeout=timeout
        )
        reply: dict[str, Any] = msgspec.json.decode(payload)
        return reply

    async def ok(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(subject, body)
        if reply.get("ok") is not True:
            raise BenchError(f"{subject} {body}: {reply}")
        data: dict[str, Any] = reply["data"]
        return data

    async def answers(self, subject: str) -> bool:
        """Whether anything answers ``subject`` within half a second."""
        try:
            await self.transport.request(f"{self.prefix}.{subject}", b"{}", timeout=0.5)
        except TransportError:
            return False
        return True

    async def setup(
        self, crowd: int, stock: int, crowd_prefix: str, concurrency: int = 200
    ) -> None:
        """A seller with ``stock`` units of one product, ``crowd`` registered buyers
        ``<crowd_prefix><i>``, and open intents for the whole stock at the list price."""
        await self.list_product(SELLER_ID, PRODUCT_ID, stock)
        await self.register_crowd(crowd, crowd_prefix, concurrency)
        await self.demand(PRODUCT_ID, stock, "DEMAND", "I", DEMAND_BUYERS)

    async def setup_products(
        self,
        product_ids: Sequence[str],
        crowd: int,
        stock: int | Sequence[int],
        crowd_prefix: str,
        *,
        concurrency: int = 200,
        demand_buyers: int = DEMAND_BUYERS,
    ) -> None:
        """Like :meth:`setup` for several products: ``crowd`` registered buyers (none
        when 0), and for each product ``P`` its own seller ``P-S`` listing ``stock``
        units (one figure for all, or one per product) and ``demand_buyers`` buyers
        ``P-D<i>`` with intents for the whole stock, so the campaign proposes one window
        per product."""
        stocks = [stock] * len(product_ids) if isinstance(stock, int) else list(stock)
        if len(stocks) != len(product_ids):
            raise ValueError("one stock per product, or one for all")
        await self.register_crowd(crowd, crowd_prefix, concurrency)

        async def product(k: int) -> None:
            product_id = product_ids[k]
            await self.list_product(f"{product_id}-S", product_id, stocks[k])
            await self.demand(product_id, stocks[k], f"{product_id}-D", "I", demand_buyers)

        await fan_out(len(product_ids), len(product_ids), product)

    async def register_crowd(self, crowd: int, crowd_prefix: str, concurrency: int = 200) -> None:
        """Buyers ``<crowd_prefix><i>`` for ``i`` in ``range(crowd)``."""

        async def register(i: int) -> None:
            body = {"name": "Crowd buyer", "phone": f"+90555{i:07d}", "locale": "tr"}
            await self.ok(f"buyers.{crowd_prefix}{i}.register", body)

        await fan_out(crowd, concurrency, register)

    async def list_product(self, seller_id: str, product_id: str, stock: int) -> None:
        """Seller ``seller_id`` (registered here) lists ``stock`` units of ``product_id``."""
        await self.ok(f"sellers.{seller_id}.register", {"name": "Flash seller"})
        await self.ok(
            f"sellers.{seller_id}.listings.upsert",
            {
                "product_id": product_id,
                "title": "Flash item",
                "list_price_minor": LIST_PRICE,
                "floor_price_minor": FLOOR_PRICE,
                "stock": stock,
                "currency": "TRY",
            },
        )

    async def demand(
        self, product_id: str, stock: int, buyer_prefix: str, intent_prefix: str, buyers: int
    ) -> None:
        """``buyers`` buyers ``<buyer_prefix><i>`` with open intents for ``stock`` units of
        ``product_id`` in all at the list price: what makes the campaign propose."""
        per_intent = -(-stock // buyers)

        async def one(i: int) -> None:
            buyer = f"{buyer_prefix}{i}"
            body = {"name": "Demand buyer", "phone": f"+90556{i:07d}", "locale": "tr"}
            await self.ok(f"buyers.{buyer}.register", body)
            intent = {
                "intent_id": f"{intent_prefix}{i}",
                "product_id": product_id,
                "quantity": per_intent,
                "max_price_minor": LIST_PRICE,
            }
            await self.ok(f"buyers.{buyer}.intents.submit", intent)

        await fan_out(buyers, buyers, one)

    async def active_windows(
        self, product_ids: Sequence[str], within_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """The windows the campaign proposes for ``product_ids`` (in that order), once
        every one of them is active."""
        views: list[dict[str, Any]] = [{} for _ in product_ids]

        async def one(k: int) -> None:
            views[k] = await self.active_window(within_s, product_id=product_ids[k])

        await fan_out(len(product_ids), len(product_ids), one)
        return views

    async def active_window(
        self, within_s: float = 30.0, *, product_id: str = PRODUCT_ID
    ) -> dict[str, Any]:
        """The window the campaign proposes for the product, once it is active."""
        with anyio.move_on_after(within_s):
            window_id = None
            while window_id is None:
                listed = await self.ok("windows.list", {"product_id": product_id})
                if listed["windows"]:
                    window_id = listed["windows"][0]["window_id"]
                else:
                    await anyio.sleep(0.05)
            while True:
                view = await self.ok(f"windows.{window_id}.get")
                if view["state"] == "active":
                    return view
                if view["state"] != "scheduled":
                    raise BenchError(f"window {window_id} is {view['state']}, not active")
                await anyio.sleep(0.05)
        raise BenchError(f"no active window for {product_id} within {within_s:g}s")

    async def reservations(self, window_id: str) -> Reservations:
        """Every page of ``windows.<id>.reservations``."""
        total = 0
        held_quantity = 0
        held: set[str] = set()
        cursor: str | None = None
        while True:
            body: dict[str, Any] = {"limit": 500}
            if cursor is not None:
                body["cursor"] = cursor
            page = await self.ok(f"windows.{window_id}.reservations", body)
            for r in page["reservations"]:
                total += 1
                if r["status"] != "released":
                    held_quantity += r["quantity"]
                    held.add(r["join_id"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        return Reservations(total=total, held_quantity=held_quantity, held_join_ids=frozenset(held))
