"""pytest fixtures for a real nats-server. Import them into a test module::

    from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

and ask for them by their fixture names, ``nats_server`` and ``nats_url`` (the functions
have other names so a test's parameter never shadows an import).

``nats_server`` is function scoped: every test gets a fresh server with JetStream
enabled, its store in the test's ``tmp_path``, on a free loopback port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.nats import NatsServer

__all__ = ["nats_server_fixture", "nats_url_fixture"]


@pytest.fixture(name="nats_server")
def nats_server_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(jetstream=True, store_dir=tmp_path / "jetstream") as server:
        yield server


@pytest.fixture(name="nats_url")
def nats_url_fixture(nats_server: NatsServer) -> str:
    return nats_server.url
