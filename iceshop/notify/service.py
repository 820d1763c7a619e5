"""A notifier wired from the node's settings: provider, store, pacing, retries.

Shared by the node (``notifier = "node"``: one notifier inside the node's process) and
``iceshop notifier`` (``notifier = "external"``: as many processes as wanted), so both
read the same settings the same way and bind the same durable consumer: switching
between them resumes where the other left off.

The WhatsApp token is a secret, not a setting: it comes from the environment variable
``ICESHOP_WHATSAPP_TOKEN`` or from the file named by ``whatsapp_token_file``, so it is in
no settings file and no ``repr(Settings)``, and it is never logged. A provider that
lacks what it needs is refused at start, naming the setting.

With ``status_webhook_port`` set, the notifier also serves the WhatsApp delivery-status
receiver (:mod:`iceshop.notify.receiver`), whose verified callbacks update the same
store; its app secret and verify token come from ``ICESHOP_WHATSAPP_APP_SECRET`` /
``ICESHOP_WHATSAPP_VERIFY_TOKEN`` or the files the settings name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import structlog

from actors.clock import Clock, RealClock
from actors.nats import NatsTransport
from actors.tracing import Tracer
from iceshop.notify.log_provider import LOG_FILE, LogProvider
from iceshop.notify.provider import Provider
from iceshop.notify.ratelimit import RateLimiter
from iceshop.notify.receiver import StatusReceiver
from iceshop.notify.retry import Backoff
from iceshop.notify.store import NotificationStore, StatusUpdate
from iceshop.notify.webhook_provider import WebhookProvider
from iceshop.notify.whatsapp import WhatsAppProvider
from iceshop.notify.worker import DEFAULT_DURABLE, Notifier
from iceshop.settings import Settings
from iceshop.wire import ShopError

__all__ = [
    "build_notifier",
    "open_provider",
    "receiver_secrets",
    "secret",
    "start_notifier",
    "whatsapp_token",
]

log = structlog.get_logger("iceshop.notify")


TOKEN_ENV = "ICESHOP_WHATSAPP_TOKEN"


APP_SECRET_ENV = "ICESHOP_WHATSAPP_APP_SECRET"
VERIFY_TOKEN_ENV = "ICESHOP_WHATSAPP_VERIFY_TOKEN"


async def secret(
    name: str, env_name: str, path: str, environ: Mapping[str, str] | None = None
) -> str:
    """A secret from the variable ``env_name`` or else the file ``path``; refused (naming
    ``name``) when neither gives one. The value is never logged."""
    env = os.environ if environ is None else environ
    if env.get(env_name, "").strip():
        return env[env_name].strip()
    field = f"{name}_file"
    if not path:
        raise ShopError.invalid(f"{name}: set {env_name} or {field}", field=name)
    try:
        value = (await anyio.Path(path).read_text("utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShopError.invalid(
            f"{field}: cannot read {path}: {type(exc).__name__}", field=field
        ) from exc
    if not value:
        raise ShopError.invalid(f"{field}: {path} is empty", field=field)
    return value


async def whatsapp_token(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The Cloud API token: ``ICESHOP_WHATSAPP_TOKEN`` (from ``environ``, by default the
    process's environment) or else the token file."""
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV, "").strip():
        return env[TOKEN_ENV].strip()
    if not settings.whatsapp_token_file:
        raise ShopError.invalid(
            f"whatsapp_token: set {TOKEN_ENV} or whatsapp_token_file for "
            'notify_provider = "whatsapp"',
            field="whatsapp_token",
        )
    try:
        token = (await anyio.Path(settings.whatsapp_token_file).read_text("utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShopError.invalid(
            f"whatsapp_token_file: cannot read {settings.whatsapp_token_file}: "
            f"{type(exc).__name__}",
            field="whatsapp_token_file",
        ) from exc
    if not token:
        raise ShopError.invalid(
            f"whatsapp_token_file: {settings.whatsapp_token_file} is empty",
            field="whatsapp_token_file",
        )
    return token


async def open_provider(settings: Settings) -> AbstractAsyncContextManager[Provider]:
    """The provider ``settings`` name, not yet entered (enter it with ``async with``)."""
    kind = settings.notify_provider
    if kind == "log":
        return LogProvider(Path(settings.data_dir) / LOG_FILE)
    if kind == "webhook":
        if not settings.notify_webhook_url.startswith(("http://", "https://")):
            raise ShopError.invalid(
                'notify_webhook_url: an http(s) URL is required for notify_provider = "webhook"',
                field="notify_webhook_url",
            )
        return WebhookProvider(
            settings.notify_webhook_url,
            timeout=settings.notify_timeout_s,
            max_connections=settings.notify_concurrency,
        )
    if not settings.whatsapp_phone_number_id:
        raise ShopError.invalid(
            'whatsapp_phone_number_id: required for notify_provider = "whatsapp"',
            field="whatsapp_phone_number_id",
        )
    return WhatsAppProvider(
        token=await whatsapp_token(settings),
        phone_number_id=settings.whatsapp_phone_number_id,
        api_base=settings.whatsapp_api_base,
        api_version=settings.whatsapp_api_version,
        timeout=settings.notify_timeout_s,
        max_connections=settings.notify_concurrency,
    )


def build_notifier(
    transport: NatsTransport,
    provider: Provider,
    settings: Settings,
    *,
    clock: Clock | None = None,
    tracer: Tracer | None = None,
) -> Notifier:
    """A notifier on ``transport`` sending through ``provider`` (already entered)."""
    clock = clock if clock is not None else RealClock()
    longest = settings.notify_timeout_s + settings.notify_recipient_spacing_s
    if settings.notify_claim_ttl_s <= longest:
        # A claim must outlive the longest wait-and-send, or a second notifier takes a
        # slow send over and the buyer gets the message twice.
        log.warning(
            "notify_claim_ttl_s should exceed notify_timeout_s + notify_recipient_spacing_s",
            notify_claim_ttl_s=settings.notify_claim_ttl_s,
            longest_send_s=longest,
        )
    store = NotificationStore(
        transport,
        replicas=settings.stream_replicas,
        # Records outlive the requests (kept stream_max_age_s), so a late redelivery
        # still finds its record; status callbacks come within days.
        max_age=2 * settings.stream_max_age_s,
    )
    return Notifier(
        transport,
        store,
        provider,
        clock=clock,
        limiter=RateLimiter(
            clock,
            rate_per_s=settings.notify_rate_per_s,
            spacing_s=settings.notify_recipient_spacing_s,
        ),
        backoff=Backoff(
            base=settings.notify_retry_base_s,
            cap=max(settings.notify_retry_cap_s, settings.notify_retry_base_s),
            max_attempts=settings.notify_max_attempts,
        ),
        prefix=settings.prefix,
        durable=DEFAULT_DURABLE,
        template=settings.whatsapp_template,
        claim_ttl=settings.notify_claim_ttl_s,
        concurrency=settings.notify_concurrency,
        lease_ttl=settings.notify_lease_ttl_s,
        tracer=tracer,
    )


async def start_notifier(
    stack: contextlib.AsyncExitStack,
    transport: NatsTransport,
    settings: Settings,
    *,
    clock: Clock | None = None,
    wait: bool = False,
    tracer: Tracer | None = None,
) -> Notifier:
    """Open the provider and run a notifier, both on ``stack`` (left in reverse: the
    notifier stops before its provider closes). The notifier waits for its stream if
    no node created it yet; with ``wait`` this returns only once it is consuming (or
    standing by: another notifier holds the send lease).

    ``tracer``: a span per notification when given (the node's, or the one ``iceshop
    notifier`` opens); none is opened here."""
    provider = await stack.enter_async_context(await open_provider(settings))
    secrets = await receiver_secrets(settings) if settings.status_webhook_port else None
    notifier = build_notifier(transport, provider, settings, clock=clock, tracer=tracer)
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)
    if wait:
        await tg.start(notifier.run)
    else:
        tg.start_soon(notifier.run)
    if secrets is not None:

        async def on_status(update: StatusUpdate) -> None:
            await notifier.apply_status(update)

        app_secret, verify_token = secrets
        receiver = StatusReceiver(
            app_secret=app_secret.encode(), verify_token=verify_token, on_status=on_status
        )
        port = await tg.start(
            receiver.serve, settings.status_webhook_host, settings.status_webhook_port
        )
        log.info(
            "delivery-status receiver listening",
            host=settings.status_webhook_host,
            port=port,
            path=receiver.path,
        )
    return notifier


async def receiver_secrets(settings: Settings) -> tuple[str, str]:
    """The status receiver's app secret and verify token; refused, naming the setting,
    when one is missing."""
    app_secret = await secret(
        "whatsapp_app_secret", APP_SECRET_ENV, settings.whatsapp_app_secret_file
    )
    verify_token = await secret(
        "whatsapp_verify_token", VERIFY_TOKEN_ENV, settings.whatsapp_verify_token_file
    )
    return app_secret, verify_token
