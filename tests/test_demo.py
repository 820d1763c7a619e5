"""The demo's scenario, run against a real nats-server and a real node.

The node runs on a virtual clock that the scenario's clock moves (firing the node's
timers at their exact time), so the nine steps, windows of minutes included, take
seconds. One more test runs ``iceshop demo`` itself, the embedded default on the real
clock with very short windows, as ``make demo`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from actors import VirtualClock
from actors.nats import NatsServer, NatsTransport
from actors.testkit import settle
from iceshop.demo import (
    Board,
    DemoClient,
    Expectations,
    ScenarioResult,
    Timings,
    build_catalog,
    main,
    run_scenario,
)
from iceshop.node import ShopNode

pytestmark = [pytest.mark.integration]

TIMINGS = Timings(window_lead_s=30.0, window_duration_s=300.0)


class NodeClock:
    """The scenario's clock for a node on a :class:`VirtualClock`: letting time pass
    moves the node's clock and fires every timer due on the way, at its own time."""

    def __init__(self, node: ShopNode, clock: VirtualClock) -> None:
        self.node = node
        self.clock = clock

    def now(self) -> float:
        return self.clock.time()

    async def sleep(self, seconds: float) -> None:
        system = self.node.system
        assert system is not None
        target = self.clock.monotonic() + max(0.0, seconds)
        while True:
            await settle(system)
            due = system.timers.next_due()
            if due is None or due > target:
                break
            self.clock.set(max(due, self.clock.monotonic()))
            system.timers.fire_due()
        self.clock.set(max(target, self.clock.monotonic()))  # another sleeper may be ahead
        await settle(system)
        await anyio.sleep(0.002)  # replies and events cross NATS on the real clock


class Shop:
    def __init__(self, client: DemoClient, clock: NodeClock) -> None:
        self.client = client
        self.clock = clock

    async def run(self, lines: list[str], **kw: object) -> ScenarioResult:
        board = Board(echo=lines.append)
        return await run_scenario(
            self.client,
            self.clock,
            TIMINGS,
            board,
            catalog=build_catalog(7, buyers=30),
            crowd=150,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = TIMINGS.settings(
            nats_url=server.url, data_dir=str(tmp_path / "node"), auth="off"
        )
        clock = VirtualClock(start=0.0, epoch=1_800_000_000.0)
        async with (
            ShopNode(settings, clock=clock) as node,
            NatsTransport(server.url) as transport,
        ):
            yield Shop(DemoClient(transport), NodeClock(node, clock))


@pytest.mark.anyio
async def test_every_step_of_the_happy_path_holds(shop: Shop) -> None:
    lines: list[str] = []
    result = await shop.run(lines)

    assert result.verdict().startswith("all 9 steps held"), result.verdict()
    assert result.ok and result.exit_code == 0
    assert [s.status for s in result.steps] == ["ok"] * 9
    crowd = result.facts["crowd"]
    assert crowd["attempts"] == 150
    assert crowd["oversell"] == 0
    assert crowd["held_quantity"] == crowd["quantity_total"] > 0
    assert crowd["codes"]["sold_out"] > 0
    assert set(crowd["codes"]) <= {"reserved", "sold_out", "insufficient_stock", "limit_exceeded"}
    assert crowd["pages"] >= 1
    windows = result.facts["windows"]
    assert set(windows) == {"crowd", "succeeds", "fails"}
    assert result.facts["outcomes"] == {
        windows["crowd"]: "succeeded",
        windows["succeeds"]: "succeeded",
        windows["fails"]: "failed",
    }
    assert result.facts["activation_late_s"] == 0.0  # the virtual clock fires on the dot
    assert set(result.facts["decisions"]) == {
        "cay-bardagi-seti",
        "turk-kahvesi-makinesi",
        "bakir-cezve",
        "hereke-ipek-hali",
        "antep-fistikli-lokum",
    }
    # The plain progress names every step and its verdict.
    for n in range(1, 10):
        assert any(f"] step {n} (" in line and ") ok: " in line for line in lines), n


@pytest.mark.anyio
async def test_a_step_that_does_not_hold_is_named_and_ends_the_run(shop: Shop) -> None:
    lines: list[str] = []
    # A window activates exactly on time here; demanding it be early cannot hold.
    result = await shop.run(lines, expect=Expectations(activation_tolerance_s=-1.0))

    assert not result.ok and result.exit_code == 1
    failed = result.failed
    assert failed is not None and failed.number == 7
    assert result.verdict().startswith("step 7 (window activated): window w-")
    assert "after its activation time (allowed -1 s)" in result.verdict()
    assert [s.status for s in result.steps] == ["ok"] * 6 + ["failed", "pending", "pending"]
    assert any("step 7 (window activated) FAILED: window w-" in line for line in lines)


@pytest.mark.slow  # the real clock: activation and expiry are waited for (make test-slow)
def test_iceshop_demo_runs_on_the_embedded_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--plain", "--data", str(tmp_path / "demo"), "--buyers", "20", "--crowd", "80"]
    code = main([*args, "--lead", "1", "--duration", "4"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "ICESHOP demo: all 9 steps held" in out
    assert "oversell 0" in out
    node_log = (tmp_path / "demo" / "node.log").read_text()
    # The demo's node runs with authentication on, as `iceshop up` does.
    assert '"authentication on"' in node_log
    assert "AUTHENTICATION IS OFF" not in node_log


def test_a_used_data_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "journal.db").write_text("x")
    assert main(["--plain", "--data", str(tmp_path / "old")]) == 2
    assert "is not empty" in capsys.readouterr().err
