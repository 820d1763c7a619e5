"""``python -m iceshop.node --nats URL --data DIR [--config FILE]``: run one node until
interrupted (SIGINT/SIGTERM stop it cleanly)."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from iceshop.config import ConfigError, load_settings
from iceshop.node.app import ShopNode


async def serve(node: ShopNode) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with node:
            print(f"node {node.node_id} ready", flush=True)
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iceshop.node")
    parser.add_argument("--nats", help="NATS URL(s), comma separated")
    parser.add_argument("--data", help="data directory")
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument("--node-id")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            overrides={"nats_url": args.nats, "data_dir": args.data, "node_id": args.node_id},
        )
    except ConfigError as exc:
        print(f"iceshop node: {exc}", file=sys.stderr)
        return 2
    anyio.run(serve, ShopNode(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
