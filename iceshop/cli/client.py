"""Client verbs: send one command over NATS and report the reply.

One connection per invocation, one request, one reply. Where the server is:
``--nats``, else ``ICESHOP_NATS_URL``, else the URL ``iceshop up`` wrote to
``./data/nats.url``, else ``nats://127.0.0.1:4222``. The subject prefix: ``--prefix``,
else ``ICESHOP_PREFIX``, else ``iceshop``. The NATS login: ``ICESHOP_NATS_USER`` with
``ICESHOP_NATS_PASSWORD_FILE`` or ``ICESHOP_NATS_PASSWORD``, else the login ``iceshop up``
wrote to ``./data/secrets/nats-client.json``, else none (a server without users). The
credential each command carries (``Authorization: Bearer``): ``--token``, else
``ICESHOP_TOKEN``, else the admin token ``iceshop up`` wrote to
``./data/auth/admin.token``, else none. A ``TRACEPARENT`` variable (W3C trace context,
as OpenTelemetry passes it through the environment) is sent as the request's
``traceparent``, so the command shows up in the caller's trace.

A reply ``ok: true`` prints its ``data`` and exits 0; ``ok: false`` prints
``code: message`` to stderr and exits 1 (with ``--json`` the error object also goes to
stdout); no responders, a timeout or an unreachable NATS exit 3 with ``unavailable``,
which the contract says to retry with the same ids. An id the CLI generated is printed
to stderr before the request goes out, so a retry after a timeout can repeat it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec

from actors.errors import NoResponders, NotPermitted, RequestTimeout, TransportError
from actors.nats import NatsTransport
from iceshop.auth.provision import read_admin_token
from iceshop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from iceshop.cli.lifecycle import configure_logging
from iceshop.cli.output import format_error, render, render_json
from iceshop.cli.secrets import read_client_login
from iceshop.cli.up import URL_FILE
from iceshop.cli.verbs import Request, Verb, build_request
from iceshop.config import ConfigError, load_settings
from iceshop.connection import NatsLogin, nats_login
from iceshop.wire import AUTHORIZATION, DEFAULT_PREFIX, TRACEPARENT, ShopError, validate_prefix

__all__ = [
    "DEFAULT_NATS_URL",
    "DEFAULT_TIMEOUT_S",
    "UNAVAILABLE",
    "exit_status",
    "request_for",
    "request_headers",
    "resolve_nats_login",
    "resolve_nats_url",
    "resolve_prefix",
    "resolve_token",
    "run_verb",
]

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_DATA_DIR: Final = "data"
UNAVAILABLE: Final = "unavailable: no node answered"
#: A credential for the client verbs (a JWT or an API key); not a node setting.
TOKEN_ENV: Final = "ICESHOP_TOKEN"


def resolve_nats_url(given: str | None, environ: Mapping[str, str], cwd: Path) -> str:
    """Where the client connects (see the module docstring for the order)."""
    if given:
        return given
    if environ.get("ICESHOP_NATS_URL"):
        return environ["ICESHOP_NATS_URL"]
    try:
        written = (cwd / DEFAULT_DATA_DIR / URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        written = ""
    return written or DEFAULT_NATS_URL


#: The variables of a login given in the environment (the node's settings' names).
LOGIN_ENV = ("ICESHOP_NATS_USER", "ICESHOP_NATS_PASSWORD_FILE", "ICESHOP_NATS_INBOX_PREFIX")


def resolve_nats_login(environ: Mapping[str, str], cwd: Path) -> NatsLogin | None:
    """Who the client logs in as (see the module docstring for the order)."""
    try:
        if environ.get("ICESHOP_NATS_USER"):
            given = {k: environ[k] for k in LOGIN_ENV if k in environ}
            return nats_login(load_settings(environ=given), environ)
        return read_client_login(cwd / DEFAULT_DATA_DIR)
    except (ConfigError, ValueError, NotPermitted) as exc:
        raise CliError(f"NATS login: {exc}", EXIT_USAGE) from exc


def resolve_token(given: str | None, environ: Mapping[str, str], cwd: Path) -> str | None:
    """The credential sent as ``Authorization: Bearer``: ``--token``, else
    ``ICESHOP_TOKEN``, else the admin token ``iceshop up`` provisioned in
    ``./data/auth/admin.token``, else none (a node with authentication off)."""
    if given:
        return given.strip()
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip()
    return read_admin_token(cwd / DEFAULT_DATA_DIR)


def resolve_prefix(given: str | None, environ: Mapping[str, str]) -> str:
    prefix = given or environ.get("ICESHOP_PREFIX") or DEFAULT_PREFIX
    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}", EXIT_USAGE) from exc
    return prefix


def request_for(verb: Verb, args: argparse.Namespace, prefix: str) -> Request:
    """The request a parsed command line sends; a bad id is a usage error."""
    try:
        return build_request(verb, vars(args), prefix)
    except ShopError as exc:
        raise CliError(f"{exc.code.value}: {exc.message}", EXIT_USAGE) from exc


def request_headers(token: str | None, traceparent: str | None) -> dict[str, str] | None:
    """The request's headers: the credential, and the caller's trace context if any."""
    headers: dict[str, str] = {}
    if token:
        headers[AUTHORIZATION] = f"Bearer {token}"
    if traceparent and traceparent.strip():
        headers[TRACEPARENT] = traceparent.strip()
    return headers or None


def exit_status(reply: Any) -> int:
    """0 for ``ok: true``, 1 for anything else (an error or a malformed reply)."""
    return EXIT_OK if isinstance(reply, dict) and reply.get("ok") is True else EXIT_FAILED


async def _send(
    urls: list[str],
    request: Request,
    timeout: float,  # noqa: ASYNC109 - the request's own deadline
    login: NatsLogin | None = None,
    token: str | None = None,
    traceparent: str | None = None,
) -> bytes:
    transport = NatsTransport(
        urls,
        name="iceshop-cli",
        connect_timeout=min(2.0, timeout),
        initial_connect_timeout=timeout,
        max_reconnect_attempts=1,
        **(login.transport_options() if login is not None else {}),
    )
    try:
        await transport.connect()
    except NotPermitted as exc:
        raise CliError(f"unauthorized: {exc}", EXIT_FAILED) from exc
    except TransportError as exc:
        raise CliError(
            f"unavailable: cannot reach NATS at {', '.join(urls)} (is `iceshop up` running?)",
            EXIT_UNAVAILABLE,
        ) from exc
    try:
        payload, _ = await transport.request(
            request.subject,
            msgspec.json.encode(request.body),
            headers=request_headers(token, traceparent),
            timeout=timeout,
        )
    except (NoResponders, RequestTimeout) as exc:
        refused = transport.last_permission_violation
        if refused is not None:  # the server dropped the request: nobody could answer
            user = login.user if login is not None else "(none)"
            raise CliError(f"forbidden: NATS user {user}: {refused}", EXIT_FAILED) from exc
        raise CliError(UNAVAILABLE, EXIT_UNAVAILABLE) from exc
    except TransportError as exc:
        raise CliError(f"unavailable: {exc}", EXIT_UNAVAILABLE) from exc
    finally:
        await transport.close()
    return payload


def _report(reply: Any, as_json: bool) -> int:
    status = exit_status(reply)
    if status == EXIT_OK:
        data = reply.get("data")
        print(render_json(data) if as_json else render(data))
        return status
    error = reply.get("error") if isinstance(reply, dict) else None
    if not isinstance(error, dict):
        error = {"code": "internal", "message": "malformed reply", "retryable": True}
    if as_json:
        print(render_json(error))
    print(format_error(error), file=sys.stderr)
    return status


def run_verb(args: argparse.Namespace) -> int:
    configure_logging("warning")
    verb: Verb = args.verb
    prefix = resolve_prefix(args.prefix, os.environ)
    url = resolve_nats_url(args.nats, os.environ, Path.cwd())
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT_S
    if timeout <= 0:
        raise CliError("--timeout must be a positive number of seconds", EXIT_USAGE)
    request = request_for(verb, args, prefix)
    for name, value in request.generated.items():
        print(f"{name} {value} (generated; repeat it to retry)", file=sys.stderr)
    urls = [u.strip() for u in url.split(",") if u.strip()]
    login = resolve_nats_login(os.environ, Path.cwd())
    token = resolve_token(getattr(args, "token", None), os.environ, Path.cwd())
    traceparent = os.environ.get("TRACEPARENT")
    payload = anyio.run(_send, urls, request, timeout, login, token, traceparent)
    try:
        reply = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        reply = None
    return _report(reply, args.json)
