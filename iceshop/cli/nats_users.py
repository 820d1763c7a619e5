"""``iceshop nats users``: nats.conf's users, with one NATS user per seller.

::

    iceshop nats users [SELLER_ID ...] [--sellers-file FILE] [--base CONF | --helm]
                       [--output FILE]

Prints the ``authorization`` block of nats.conf (and of deploy/cluster/users.inc, which
is the same block) with one user per seller id added: ``seller_<id>``, whose password
comes from the server's environment variable ``ICESHOP_NATS_SELLER_<ID>_PASSWORD`` (the
id upper-cased, ``-`` as ``_``), who may publish only that seller's commands and the
window and decision reads, and who may subscribe only below its own inbox prefix
``_INBOX_seller_<id>``. Without seller ids the block is exactly the shipped one, which
has no seller user: a test keeps nats.conf, users.inc and this module in step.

``--base CONF`` prints the whole of CONF (nats.conf, say) with its ``authorization``
block replaced, ready for ``iceshop up --nats-conf`` or ``nats-server -c``. ``--helm``
prints the sellers' users for deploy/kubernetes/nats-values.yaml instead: the entries of
``config.merge.authorization.users`` and of ``container.env`` (the password from the
Secret ``iceshop-nats``, key ``seller_<id>``). The output
holds no password: only the names of the variables, listed on stderr with each seller's
user and inbox prefix. Give each password to that seller's integration alone (its
``nats_user`` is ``seller_<id>``; its inbox prefix follows from it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from iceshop.cli.errors import EXIT_OK, EXIT_USAGE, CliError
from iceshop.connection import inbox_prefix_for
from iceshop.wire import ID_PATTERN, ID_RULE

__all__ = [
    "AUTHORIZATION_BLOCK",
    "HELM_SECRET",
    "add_parser",
    "authorization_block",
    "helm_sellers",
    "replace_authorization",
    "run",
    "seller_password_env",
    "seller_user",
]

#: The contract's ids (iceshop.wire), which are also valid NATS user names and subject
#: tokens.
_ID = re.compile(ID_PATTERN)

_HEAD: Final = """\
authorization {
    # Subjects every user of a role needs; the users below refer to these blocks.

    # Nodes, `iceshop projector` and `iceshop notifier` processes: the whole shop.
    NODE = {
        publish: {
            allow: [
                "iceshop.>"          # events and notification requests (JetStream), and
                                     # commands to other nodes
                "$JS.API.>"          # streams and consumers: create, info, fetch
                "$JS.ACK.>"          # acknowledging consumed messages
                "$JS.FC.>"           # flow control of push consumers
                "$KV.>"              # key-value buckets (the notifier's claims)
                "$SRV.>"             # service discovery answers
            ]
        }
        subscribe: {
            allow: [
                "iceshop.>"          # command subjects; demand events
                "$SRV.>"
                "_INBOX_node.>"      # replies to the node's own requests, JetStream
                                     # deliveries
            ]
        }
        # One reply per request received, to whatever reply subject the request named.
        allow_responses: true
    }

    # A gateway (the web or app back end in front of buyers): buyer commands and the
    # window commands a buyer's app needs, for any buyer. The JWT names the buyer.
    GATEWAY = {
        publish: {
            allow: [
                "iceshop.buyers.*.register"
                "iceshop.buyers.*.intents.submit"
                "iceshop.buyers.*.intents.*.cancel"
                "iceshop.windows.*.join"
                "iceshop.windows.*.leave"
                "iceshop.windows.*.get"
                "iceshop.windows.list"
            ]
        }
        subscribe: { allow: ["_INBOX_gateway.>"] }
    }

    # Sellers: one user per seller, made by `iceshop nats users S1 S2 ...` (this block with
    # the sellers' users added at the end of the list below). Seller S1 logs in as
    # seller_S1 with the password of $ICESHOP_NATS_SELLER_S1_PASSWORD and may publish
    #     iceshop.sellers.S1.listings.upsert, iceshop.sellers.S1.offers.*.approve and
    #     .reject (its own commands only), iceshop.windows.*.get, .reservations,
    #     iceshop.windows.list and iceshop.decisions.*.get (reservations and decisions
    #     of the owning seller only: the node checks the token's seller)
    # and subscribe only to _INBOX_seller_S1.> (its inbox prefix): no seller publishes
    # another's commands or reads another's replies. There is deliberately no user
    # shared by all sellers. Seller registration is the admin's.

    # Operators and the `iceshop` command line: every command (seller registration,
    # admin subjects, cluster.status included), service discovery of the nodes
    # ($SRV.PING/INFO/STATS: `nats micro ls`), and reading events and audit records live.
    # Never publishing events, notification requests or audit records: those come from
    # nodes only, after a commit.
    #
    # JetStream read only, by an allow-list: information on every stream and consumer
    # (`nats stream ls`, `nats stream info`, `nats consumer ls`) and single messages by
    # sequence or subject (`nats stream get`). No stream is created, changed, purged,
    # deleted or restored and no consumer is created, changed or deleted as admin (a new
    # stream could republish into iceshop.audit.>, .events.> or .notifications.>;
    # purged claims and a deleted notifier consumer would send every retained
    # notification again, a deleted lease key would give two send-lease holders): stream
    # management is done logged in as `node`. The one exception is the audit trail,
    # which only admins consume: `iceshop audit` reads it with an ordered consumer (made
    # through $JS.API, delivered to the admin's inbox, flow control answered on $JS.FC).
    # The event stream has no such exception: its consumers include the nodes' read
    # models, and a consumer-create request may name, and so change, an existing one.
    ADMIN = {
        publish: {
            allow: [
                "iceshop.>"
                "$SRV.>"
                "$JS.API.INFO"
                "$JS.API.STREAM.LIST"
                "$JS.API.STREAM.NAMES"
                "$JS.API.STREAM.INFO.*"
                "$JS.API.STREAM.MSG.GET.*"
                "$JS.API.DIRECT.GET.*"
                "$JS.API.DIRECT.GET.*.>"
                "$JS.API.CONSUMER.LIST.*"
                "$JS.API.CONSUMER.NAMES.*"
                "$JS.API.CONSUMER.INFO.*.*"
                "$JS.API.CONSUMER.CREATE.ICESHOP_AUDIT"
                "$JS.API.CONSUMER.CREATE.ICESHOP_AUDIT.>"
                "$JS.API.CONSUMER.DELETE.ICESHOP_AUDIT.*"
                "$JS.API.CONSUMER.MSG.NEXT.ICESHOP_AUDIT.*"
                "$JS.FC.ICESHOP_AUDIT.>"
            ]
            deny: [
                "iceshop.events.>"
                "iceshop.notifications.>"
                "iceshop.audit.>"
                # Cluster mode: the nodes' journal and their messages to each other
                # (which carry principals the sending node has checked).
                "iceshop.journal.>"
                "iceshop.internal.>"
            ]
        }
        subscribe: { allow: ["_INBOX_admin.>", "iceshop.events.>", "iceshop.audit.>"] }
    }

    # A reader of events (analytics, a search index, a CRM feed): live events, single
    # events of the ICESHOP_EVENTS stream by sequence or subject, and one durable consumer
    # of that stream of its own, named "events" (pull, acks; a consumer-create request
    # names the consumer it makes or changes, so the name is fixed here: a permission
    # cannot require a prefix within a name). Never the nodes' consumers of the stream
    # (iceshop-readmodel-<node>: pulling and acking there would keep events from the read
    # model), nothing else. Another reader with a consumer of its own: a user like this one
    # with another consumer name.
    EVENTS = {
        publish: {
            allow: [
                "$JS.API.INFO"
                "$JS.API.STREAM.INFO.ICESHOP_EVENTS"
                "$JS.API.STREAM.MSG.GET.ICESHOP_EVENTS"
                "$JS.API.DIRECT.GET.ICESHOP_EVENTS"
                "$JS.API.DIRECT.GET.ICESHOP_EVENTS.>"
                "$JS.API.CONSUMER.CREATE.ICESHOP_EVENTS.events"
                "$JS.API.CONSUMER.CREATE.ICESHOP_EVENTS.events.>"
                "$JS.API.CONSUMER.DURABLE.CREATE.ICESHOP_EVENTS.events"
                "$JS.API.CONSUMER.INFO.ICESHOP_EVENTS.events"
                "$JS.API.CONSUMER.DELETE.ICESHOP_EVENTS.events"
                "$JS.API.CONSUMER.MSG.NEXT.ICESHOP_EVENTS.events"
                "$JS.ACK.ICESHOP_EVENTS.events.>"
                "$JS.FC.ICESHOP_EVENTS.events.>"
            ]
        }
        subscribe: { allow: ["_INBOX_events.>", "iceshop.events.>"] }
    }

    users = [
        { user: node,    password: $ICESHOP_NATS_NODE_PASSWORD,    permissions: $NODE }
        { user: gateway, password: $ICESHOP_NATS_GATEWAY_PASSWORD, permissions: $GATEWAY }
        { user: admin,   password: $ICESHOP_NATS_ADMIN_PASSWORD,   permissions: $ADMIN }
        { user: events,  password: $ICESHOP_NATS_EVENTS_PASSWORD,  permissions: $EVENTS }
"""

_NO_SELLERS: Final = """\
        # No sellers here: `iceshop nats users S1 S2 ...` adds one user per seller.
"""

_SELLER: Final = """\
        { user: "{user}", password: ${env}, permissions: {
            publish: {
                allow: [
                    "iceshop.sellers.{id}.listings.upsert"
                    "iceshop.sellers.{id}.offers.*.approve"
                    "iceshop.sellers.{id}.offers.*.reject"
                    "iceshop.windows.*.get"
                    "iceshop.windows.*.reservations"
                    "iceshop.windows.list"
                    "iceshop.decisions.*.get"
                ]
            }
            subscribe: { allow: ["{inbox}.>"] }
        } }
"""

_TAIL: Final = """\
    ]
}
"""

#: The block as shipped in nats.conf and deploy/cluster/users.inc: no seller users.
AUTHORIZATION_BLOCK: Final = _HEAD + _NO_SELLERS + _TAIL


#: The Kubernetes Secret the Helm values take the passwords from.
HELM_SECRET: Final = "iceshop-nats"

_HELM_USER: Final = """\
    - user: {user}
      password: "<< ${env} >>"
      permissions:
        publish:
          allow:
            - "iceshop.sellers.{id}.listings.upsert"
            - "iceshop.sellers.{id}.offers.*.approve"
            - "iceshop.sellers.{id}.offers.*.reject"
            - "iceshop.windows.*.get"
            - "iceshop.windows.*.reservations"
            - "iceshop.windows.list"
            - "iceshop.decisions.*.get"
        subscribe:
          allow:
            - "{inbox}.>"
"""

_HELM_ENV: Final = """\
    {env}:
      valueFrom:
        secretKeyRef:
          name: {secret}
          key: {user}
"""


def seller_user(seller_id: str) -> str:
    """The NATS user of seller ``seller_id``."""
    return f"seller_{seller_id}"


def seller_password_env(seller_id: str) -> str:
    """The variable nats-server reads seller ``seller_id``'s password from."""
    return f"ICESHOP_NATS_SELLER_{seller_id.upper().replace('-', '_')}_PASSWORD"


def _check(seller_ids: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for seller_id in seller_ids:
        if _ID.fullmatch(seller_id) is None:
            raise ValueError(f"seller id {seller_id!r}: {ID_RULE}")
        env = seller_password_env(seller_id)
        if env in seen and seen[env] != seller_id:
            raise ValueError(
                f"seller ids {seen[env]!r} and {seller_id!r} would share the variable {env}"
            )
        seen[env] = seller_id


def authorization_block(seller_ids: Iterable[str] = ()) -> str:
    """nats.conf's ``authorization`` block with one user per seller id (in the order
    given, duplicates once). Raises :class:`ValueError` for an invalid id, or two ids
    whose password variables would be the same (``S1`` and ``s1``)."""
    ids = list(dict.fromkeys(seller_ids))
    _check(ids)
    if not ids:
        return AUTHORIZATION_BLOCK
    return _HEAD + "".join(_fill(_SELLER, i) for i in ids) + _TAIL


def _fill(template: str, seller_id: str) -> str:
    user = seller_user(seller_id)
    return (
        template.replace("{user}", user)
        .replace("{env}", seller_password_env(seller_id))
        .replace("{inbox}", inbox_prefix_for(user))
        .replace("{secret}", HELM_SECRET)
        .replace("{id}", seller_id)
    )


def helm_sellers(seller_ids: Iterable[str]) -> str:
    """The sellers' users for the Helm values (nats-values.yaml), as YAML to add to
    ``config.merge.authorization.users`` and ``container.env``."""
    ids = list(dict.fromkeys(seller_ids))
    _check(ids)
    users = "".join(_fill(_HELM_USER, i) for i in ids)
    env = "".join(_fill(_HELM_ENV, i) for i in ids)
    return (
        "config:\n  merge:\n    authorization:\n      users:\n"
        "        # ... node, gateway, admin, events as in nats-values.yaml, then:\n"
        + _indent(users, 4)
        + "container:\n  env:\n    # ... the roles' passwords as in nats-values.yaml, then:\n"
        + env
    )


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line if line.strip() else line for line in text.splitlines(True))


def replace_authorization(config: str, block: str) -> str:
    """``config`` with its top-level ``authorization { ... }`` block (from a line
    ``authorization {`` to the next line ``}``) replaced by ``block``."""
    match = re.search(r"^authorization \{\n.*?^\}\n?", config, re.M | re.S)
    if match is None:
        raise ValueError("no top-level 'authorization {' block (ending with a line '}')")
    return config[: match.start()] + block + config[match.end() :]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "nats",
        parents=parents,
        help="NATS server configuration (operator tools)",
        description="NATS server configuration for ICESHOP.",
    )
    actions = p.add_subparsers(dest="nats_action", metavar="ACTION", required=True)
    u = actions.add_parser(
        "users",
        help="print nats.conf's users with one user per seller",
        description="Print the authorization block of nats.conf with one NATS user per "
        "seller (seller_<id>, password from $ICESHOP_NATS_SELLER_<ID>_PASSWORD, inbox "
        "prefix _INBOX_seller_<id>). No password is written.",
    )
    u.add_argument("seller_ids", nargs="*", metavar="SELLER_ID")
    u.add_argument("--sellers-file", metavar="FILE", help="more seller ids, one a line")
    form = u.add_mutually_exclusive_group()
    form.add_argument(
        "--base",
        metavar="CONF",
        help="print this whole config with its authorization block replaced",
    )
    form.add_argument(
        "--helm",
        action="store_true",
        help="print the sellers' users for the Helm values (nats-values.yaml)",
    )
    u.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    u.set_defaults(handler=run)


def _read_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.seller_ids)
    if args.sellers_file:
        try:
            text = Path(args.sellers_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--sellers-file: {exc}", EXIT_USAGE) from exc
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line)
    return ids


def run(args: argparse.Namespace) -> int:
    ids = list(dict.fromkeys(_read_ids(args)))
    try:
        text = helm_sellers(ids) if args.helm else authorization_block(ids)
        if args.base:
            try:
                base = Path(args.base).read_text(encoding="utf-8")
            except OSError as exc:
                raise CliError(f"--base: {exc}", EXIT_USAGE) from exc
            text = replace_authorization(base, text)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if args.output:
        path = Path(args.output)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise CliError(f"--output: {exc}", EXIT_USAGE) from exc
    else:
        sys.stdout.write(text)
    for seller_id in ids:
        user = seller_user(seller_id)
        print(
            f"seller {seller_id}: user {user}, password ${seller_password_env(seller_id)}, "
            f"inbox prefix {inbox_prefix_for(user)}",
            file=sys.stderr,
        )
    return EXIT_OK
