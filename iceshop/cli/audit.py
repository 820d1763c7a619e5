"""``iceshop audit``: read the decision audit back.

::

    iceshop audit [--kind K] [--id ID] [--since TIME] [--limit N] [--json]

Prints the audit records (see :mod:`iceshop.audit`) oldest first, one line each: time,
who, action, entity, why. ``--kind`` (``decision``, ``offer``, ``window``, ``apikey``,
``seller``) and ``--id`` select by the record's subject, so the server sends only the
matching records; ``--since`` takes a contract time (``2027-01-15T08:00:00.000Z``), an
ISO date or time (UTC unless it says otherwise), or an age (``90s``, ``15m``, ``2h``,
``7d``); ``--limit`` caps the count (default 100; 0 for all). ``--json`` prints each
record as stored, one JSON object per line. "Why was window W proposed": ``iceshop
window get W`` names its ``decision_id``, and ``iceshop audit --kind decision --id D``
shows that decision's reasons and inputs.

It reads the ``ICESHOP_AUDIT`` stream directly through JetStream (an ordered ephemeral
consumer), not through a node: a NATS login that may use the JetStream API and read its
own inbox is all it needs (``admin`` in nats.conf). The server, prefix and login are
found as for the client verbs (``iceshop.cli.client``); no token is sent. Exit status 0
when the read completed (also with no record), 3 when NATS or JetStream did not answer.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio

from actors.errors import NoResponders, NotPermitted, RequestTimeout, TransportError
from actors.nats import NatsTransport
from iceshop.audit import AuditQuery, AuditRecord, read_audit
from iceshop.cli.client import (
    DEFAULT_TIMEOUT_S,
    resolve_nats_login,
    resolve_nats_url,
    resolve_prefix,
)
from iceshop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from iceshop.cli.lifecycle import configure_logging
from iceshop.connection import NatsLogin
from iceshop.wire import ShopError, parse_time, validate_id

__all__ = ["DEFAULT_LIMIT", "add_parser", "format_record", "parse_since", "run"]

DEFAULT_LIMIT: Final = 100
KINDS: Final = ("decision", "offer", "window", "apikey", "seller")
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        parents=parents,
        help="show the audit trail: decisions, offer answers, admin actions (who, what, why)",
        description="Print audit records oldest first: time, who, action, entity, why.",
    )
    p.add_argument("--kind", metavar="KIND", help=f"entity kind: {', '.join(KINDS)}")
    p.add_argument("--id", dest="entity_id", metavar="ID", help="entity id (e.g. a decision_id)")
    p.add_argument(
        "--since",
        metavar="TIME",
        help="records at or after TIME: 2027-01-15T08:00:00.000Z, 2027-01-15, or an age "
        "such as 15m, 2h, 7d",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N records (default {DEFAULT_LIMIT}; 0: all)",
    )
    group = p.add_argument_group("client options")
    group.add_argument("--nats", metavar="URL[,URL...]", default=argparse.SUPPRESS)
    group.add_argument("--prefix", default=argparse.SUPPRESS)
    group.add_argument("--timeout", type=float, metavar="SECONDS", default=argparse.SUPPRESS)
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="one JSON object per record, as stored",
    )
    p.set_defaults(handler=run)


def parse_since(text: str, now: float) -> float:
    """``--since`` as epoch seconds (see the module docstring for the forms)."""
    age = _AGE.fullmatch(text)
    if age is not None:
        return now - float(age[1]) * _UNIT_S[age[2]]
    try:
        return parse_time(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since: {text!r} is neither a time (2027-01-15T08:00:00.000Z, 2027-01-15) "
            "nor an age (15m, 2h, 7d)",
            EXIT_USAGE,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_record(record: AuditRecord) -> str:
    """One line: time, who, action, entity, why (the outcome first, for a decision)."""
    why = " ".join(r.text for r in record.why if r.text)
    if record.entity == "decision" and record.outcome is not None:
        why = f"[{record.outcome}] {why}".rstrip()
    entity = f"{record.entity}/{record.entity_id}"
    return f"{record.at}  {record.actor!s:<22} {record.action:<18} {entity:<28} {why or '-'}"


def _query(args: argparse.Namespace) -> AuditQuery:
    for value, what in ((args.kind, "--kind"), (args.entity_id, "--id")):
        if value is not None:
            try:
                validate_id(value, what)
            except ShopError as exc:
                raise CliError(f"{what}: {value!r} is not an id token", EXIT_USAGE) from exc
    if args.limit < 0:
        raise CliError("--limit must be 0 (all) or more", EXIT_USAGE)
    since = None if args.since is None else parse_since(args.since, time.time())
    return AuditQuery(
        entity=args.kind,
        entity_id=args.entity_id,
        since=since,
        limit=args.limit or None,
    )


async def _read(
    urls: list[str],
    prefix: str,
    query: AuditQuery,
    as_json: bool,
    timeout: float,  # noqa: ASYNC109 - each JetStream call's deadline
    login: NatsLogin | None,
) -> int:
    transport = NatsTransport(
        urls,
        name="iceshop-audit",
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
            f"unavailable: cannot reach NATS at {', '.join(urls)}", EXIT_UNAVAILABLE
        ) from exc

    def show(record: AuditRecord, raw: bytes) -> None:
        print(raw.decode("utf-8") if as_json else format_record(record))

    try:
        return await read_audit(transport, prefix, query, show, timeout=timeout)
    except (NoResponders, RequestTimeout) as exc:
        refused = transport.last_permission_violation
        if refused is not None:
            user = login.user if login is not None else "(none)"
            raise CliError(f"forbidden: NATS user {user}: {refused}", EXIT_FAILED) from exc
        raise CliError(f"unavailable: {exc}", EXIT_UNAVAILABLE) from exc
    except TransportError as exc:
        raise CliError(f"unavailable: {exc}", EXIT_UNAVAILABLE) from exc
    finally:
        await transport.close()


def run(args: argparse.Namespace) -> int:
    configure_logging("warning")
    query = _query(args)
    prefix = resolve_prefix(args.prefix, os.environ)
    url = resolve_nats_url(args.nats, os.environ, Path.cwd())
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT_S
    if timeout <= 0:
        raise CliError("--timeout must be a positive number of seconds", EXIT_USAGE)
    urls = [u.strip() for u in url.split(",") if u.strip()]
    login = resolve_nats_login(os.environ, Path.cwd())
    count = anyio.run(_read, urls, prefix, query, args.json, timeout, login)
    if not args.json:
        print(f"({count} record{'s' if count != 1 else ''})", file=sys.stderr)
    return EXIT_OK
