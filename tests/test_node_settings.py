"""Settings a node cannot honour are refused at start, naming the key: leases renewed
too seldom to stay valid, and authentication on without any key to verify a token with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("env", "key"),
    [
        (
            {
                "ICESHOP_JOURNAL": "jetstream",
                "ICESHOP_AUTH": "off",
                "ICESHOP_LEASE_TTL_S": "2",
                "ICESHOP_LEASE_HEARTBEAT_S": "1.5",
            },
            "lease_heartbeat_s",
        ),
        ({"ICESHOP_AUTH": "on"}, "auth"),  # the data directory has no auth/keys
    ],
)
def test_node_refuses_what_it_cannot_do_yet(tmp_path: Path, env: dict[str, str], key: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iceshop.node",
            "--nats",
            "nats://127.0.0.1:1",
            "--data",
            str(tmp_path),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"iceshop node: {key}: "), result.stderr
    assert not (tmp_path / "journal.db").exists()  # nothing was started
