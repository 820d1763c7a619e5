"""``iceshop demo``: the seed's nine-step happy path, run against a real shop and checked.

``main(argv)`` is the command (the embedded default: nats-server and one node, short
timings, a live view or plain lines); ``run_scenario`` is the scenario alone, against
any shop reachable through a :class:`DemoClient`, on any :class:`DemoClock` — tests run
it on a node with a virtual clock.
"""

from __future__ import annotations

from iceshop.demo.app import main
from iceshop.demo.board import Board
from iceshop.demo.client import DemoClient, UnexpectedReply
from iceshop.demo.data import Catalog, build_catalog
from iceshop.demo.scenario import DEFAULT_CROWD, ScenarioResult, run_scenario
from iceshop.demo.steps import STEPS, StepFailed, StepRecord, step_label
from iceshop.demo.timing import DemoClock, Expectations, RealDemoClock, Timings

__all__ = [
    "DEFAULT_CROWD",
    "STEPS",
    "Board",
    "Catalog",
    "DemoClient",
    "DemoClock",
    "Expectations",
    "RealDemoClock",
    "ScenarioResult",
    "StepFailed",
    "StepRecord",
    "Timings",
    "UnexpectedReply",
    "build_catalog",
    "main",
    "run_scenario",
    "step_label",
]
