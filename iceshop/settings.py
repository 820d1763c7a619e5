"""Node settings, as the contract names them (``ICESHOP_<KEY>`` overrides each one).

Loading from TOML and the environment is the CLI's business; this module is only the
typed value with its defaults and bounds, shared by every actor that needs a number.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["Settings"]

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nats_url: str = "nats://127.0.0.1:4222"
    data_dir: str = "data"
    node_id: str = ""
    prefix: str = "iceshop"
    journal: Literal["sqlite", "jetstream"] = "sqlite"
    shards: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    #: Time from a window's proposal to its activation.
    window_lead_s: Seconds = 60.0
    window_duration_s: Seconds = 900.0
    #: Open intent quantity for a product below which no window is proposed.
    campaign_min_quantity: Annotated[int, msgspec.Meta(ge=1)] = 5
    campaign_interval_s: Seconds = 10.0
    #: A product proposed recently is not proposed again within this time.
    campaign_cooldown_s: Seconds = 300.0
    window_min_participants: Annotated[int, msgspec.Meta(ge=1)] = 2
    window_max_per_buyer: Annotated[int, msgspec.Meta(ge=1)] = 2
    #: Half-life of the decayed demand score.
    demand_half_life_s: Seconds = 21_600.0
    #: Replicas of the JetStream streams the node creates (3 on a three-server cluster).
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    #: Events and notification requests older than this leave the streams.
    stream_max_age_s: Seconds = 7 * 86_400.0
    #: Authentication of commands; "off" until the security layer lands (the node says so
    #: loudly in its log).
    auth: Literal["on", "off"] = "off"
    #: Where the read model's projector runs: "node" in this process, "external" in a
    #: process of its own (``iceshop projector`` on the same data_dir); then this node
    #: only reads the read model's file to answer ``windows.list``.
    readmodel_projector: Literal["node", "external"] = "node"
