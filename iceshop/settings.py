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
    #: With the JetStream journal (a cluster): a shard's lease lapses for the other nodes
    #: when its owner has not renewed it for this long (the owner stops half a second
    #: sooner); a lost node's shards serve again after about this long.
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=1.0, le=60.0)] = 3.0
    #: How often a node renews its leases and heartbeat (below lease_ttl_s - 0.5).
    lease_heartbeat_s: Annotated[float, msgspec.Meta(gt=0, le=20.0)] = 0.75
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
    #: Audit records (decisions, offer answers, admin actions) older than this leave the
    #: append-only ICESHOP_AUDIT stream; nothing else removes them.
    audit_max_age_s: Seconds = 365 * 86_400.0
    #: Authentication of commands (``Authorization: Bearer <JWT or API key>``). "off" is
    #: for development only: any client can act as anyone (the node says so loudly).
    auth: Literal["on", "off"] = "on"
    #: The NATS user this process logs in as ("" = no login: a server without users).
    #: Nodes, projectors and notifiers are "node" (see nats.conf for the roles).
    nats_user: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]*$")] = ""
    #: A file holding that user's NATS password (one line; re-read on every reconnect,
    #: so a rotated password needs no restart). "" = the ICESHOP_NATS_PASSWORD variable,
    #: which is never a setting of its own: a password belongs in neither a settings file
    #: nor a process listing.
    nats_password_file: str = ""
    #: Where replies to this process's requests arrive; "" = "_INBOX_<nats_user>" (the
    #: only inbox nats.conf lets a user read), or NATS's "_INBOX" without a user.
    nats_inbox_prefix: Annotated[
        str, msgspec.Meta(pattern=r"^([A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*)?$")
    ] = ""
    #: Where the node finds the keys that verify tokens (``<kid>.key``: an HS256 secret or
    #: an Ed25519 PEM; ``<kid>.pub``: an Ed25519 public key); "" = <data_dir>/auth/keys.
    #: Re-read every few seconds, so keys rotate without a restart.
    auth_keys_dir: str = ""
    #: Clock skew tolerated on a token's ``exp`` and ``nbf``.
    auth_leeway_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    #: Joins one buyer may send per second (token bucket; 0 = no limit) and in a burst.
    buyer_join_rate_per_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    buyer_join_burst: Annotated[int, msgspec.Meta(ge=1)] = 20
    #: Intent submits one buyer may send per second (0 = no limit) and in a burst.
    buyer_intent_rate_per_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    buyer_intent_burst: Annotated[int, msgspec.Meta(ge=1)] = 10
    #: Open intents one buyer may hold at once; a submit beyond is ``limit_exceeded``.
    max_open_intents_per_buyer: Annotated[int, msgspec.Meta(ge=1)] = 20
    #: Where the read model's projector runs: "node" in this process, "external" in a
    #: process of its own (``iceshop projector`` on the same data_dir); then this node
    #: only reads the read model's file to answer ``windows.list``.
    readmodel_projector: Literal["node", "external"] = "node"
    #: Where notifications are sent from: "node" (a notifier in this process), "external"
    #: (``iceshop notifier`` processes, as many as wanted, sharing one durable consumer),
    #: "off" (requests wait in their stream).
    notifier: Literal["node", "external", "off"] = "node"
    #: How buyers are reached: "log" (writes what would be sent to
    #: <data_dir>/notifications.jsonl; development), "whatsapp", "webhook".
    notify_provider: Literal["log", "whatsapp", "webhook"] = "log"
    #: Sends per second from one sending number, however many notifiers run: only the
    #: holder of the number's send lease sends (the others stand by).
    notify_rate_per_s: Annotated[float, msgspec.Meta(gt=0)] = 80.0
    #: The send lease's lifetime: a standby takes over this long after the holder's last
    #: renewal (the holder starts no send with less than a quarter of it left and cuts off
    #: sends still unanswered when it ends); a stop hands it over at once.
    notify_lease_ttl_s: Seconds = 6.0
    #: Minimum time between two messages to one recipient (WhatsApp's pair rate).
    notify_recipient_spacing_s: Annotated[float, msgspec.Meta(ge=0)] = 6.0
    #: Attempts before a notification becomes a dead letter.
    notify_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    #: Backoff between attempts: full jitter up to base * 2^(attempt-1), at most the cap.
    notify_retry_base_s: Seconds = 1.0
    notify_retry_cap_s: Seconds = 300.0
    #: A claim older than this is presumed abandoned (its notifier died) and is taken
    #: over; also the consumer's ack wait. Keep it well above one send's timeout.
    notify_claim_ttl_s: Seconds = 60.0
    #: Sends in flight per notifier process.
    notify_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    #: One HTTP request's time limit (whatsapp and webhook providers).
    notify_timeout_s: Seconds = 10.0
    whatsapp_api_base: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v21.0"
    whatsapp_phone_number_id: str = ""
    #: The approved message template's name (with a "tr" and an "en" translation).
    whatsapp_template: str = "iceshop_flash_window"
    #: A file holding the Cloud API access token (one line). The token may instead come
    #: from the ICESHOP_WHATSAPP_TOKEN variable, which is a secret, not a setting.
    whatsapp_token_file: str = ""
    #: Where the webhook provider POSTs each message.
    notify_webhook_url: str = ""
    #: Port of the WhatsApp delivery-status receiver (GET handshake and POST callbacks at
    #: /whatsapp/webhook), served by the notifier (in the node or ``iceshop notifier``);
    #: 0 = none. Its app secret and verify token are secrets, not settings: from the
    #: ICESHOP_WHATSAPP_APP_SECRET / ICESHOP_WHATSAPP_VERIFY_TOKEN variables or the files.
    status_webhook_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    status_webhook_host: str = "127.0.0.1"
    whatsapp_app_secret_file: str = ""
    whatsapp_verify_token_file: str = ""
    #: Port of the node's Prometheus endpoint (``GET /metrics``); 0 = no endpoint. Off by
    #: default so that several nodes (and tests) share a machine without a clash; the
    #: conventional port is 9464. The node also answers NATS service discovery
    #: (``$SRV.PING.iceshop``) whatever this is.
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    #: Address the metrics endpoint listens on (loopback unless a scraper is elsewhere).
    metrics_host: str = "127.0.0.1"
    #: Where the node's OpenTelemetry spans go: "none" (no tracing at all, the default:
    #: the hot path pays nothing), "console" (JSON on stderr; development), "otlp"
    #: (OTLP over HTTP to ``trace_endpoint``). Requests carry W3C ``traceparent`` either way.
    trace_exporter: Literal["none", "console", "otlp"] = "none"
    #: The OTLP/HTTP traces URL; "" = http://127.0.0.1:4318/v1/traces (a local collector).
    trace_endpoint: str = ""
    #: Share of new traces recorded (requests that arrive without a ``traceparent``); a
    #: request whose ``traceparent`` is sampled is always traced (parent-based sampling).
    #: A recorded join costs more CPU than the join itself (a span is ~50 us in the
    #: OpenTelemetry SDK with its OTLP encoding): keep it small on a busy node. 0.001 of a
    #: node's 20,000 requests/s is still 20 traces a second (1 to trace everything in
    #: development).
    trace_sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.001
