"""The ``iceshop`` command line.

::

    iceshop up      [--data DIR] [--port N] [--monitor-port N] [--nats-conf FILE] [--config FILE]
    iceshop node    [--nats URL[,URL...]] [--data DIR] [--config FILE] [--node-id ID]
    iceshop projector [--nats URL[,URL...]] [--data DIR] [--config FILE]
    iceshop notifier [--nats URL[,URL...]] [--data DIR] [--config FILE]
    iceshop token   mint --role R --sub S [--ttl SECONDS] | keygen [--alg A]  (admin tools)
    iceshop audit   [--kind K] [--id ID] [--since TIME] [--limit N] [--json]  (who, what, why)
    iceshop nats    users [SELLER_ID ...] [--base CONF] [--output FILE]  (one NATS user per seller)
    iceshop demo    [...]
    iceshop <noun> <verb> ...   one client verb per command of the contract, e.g.
    iceshop window join W1 --buyer B1 [--join J1] [--quantity 2] [--json]

The client options (``--nats``, ``--prefix``, ``--token``, ``--timeout``, ``--json``) are
accepted before the noun or after the verb. Exit statuses are listed in
``iceshop.cli.errors``: 0 done, 1 refused, 2 bad invocation or settings, 3 no node
answered.

The parser is built from the verb table (``iceshop.cli.verbs``); each long-lived command
has its own module (``up``, ``node``, ``projector``), and ``iceshop demo`` lives in
``iceshop.demo``, imported only when asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from iceshop.cli import audit, nats_users, node, notifier, projector, token, up
from iceshop.cli.client import run_verb
from iceshop.cli.errors import EXIT_FAILED, EXIT_USAGE, CliError
from iceshop.cli.verbs import VERBS, Arg, Verb

__all__ = ["build_parser", "main"]

_PROG = "iceshop"
_INTERRUPTED = 130


def _client_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options of every client verb; ``suppress`` on the verbs' own parsers so a value
    given before the noun is not reset by the verb's default."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("client options")
    group.add_argument(
        "--nats",
        metavar="URL[,URL...]",
        default=default(None),
        help="NATS URL (default: $ICESHOP_NATS_URL, else ./data/nats.url from `iceshop up`, "
        "else nats://127.0.0.1:4222)",
    )
    group.add_argument(
        "--prefix",
        default=default(None),
        help="subject prefix (default: $ICESHOP_PREFIX or iceshop)",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=default(None),
        help="credential sent as Authorization: Bearer (a JWT or an API key; default: "
        "$ICESHOP_TOKEN, else ./data/auth/admin.token from `iceshop up`)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(None),
        help="how long to wait for the reply (default 5)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the reply's data (or error) as JSON",
    )


def _add_arg(parser: argparse.ArgumentParser, arg: Arg) -> None:
    text = arg.help or None
    if arg.flag is None:
        nargs = "?" if arg.fresh is not None else None
        parser.add_argument(
            arg.name, metavar=arg.name.upper(), type=arg.type, nargs=nargs, help=text
        )
    elif arg.switch:
        parser.add_argument(
            arg.flag, dest=arg.name, action=argparse.BooleanOptionalAction, default=None, help=text
        )
    else:
        parser.add_argument(
            arg.flag,
            dest=arg.name,
            metavar=arg.name.upper() if arg.choices is None else None,
            type=arg.type,
            required=arg.required,
            choices=arg.choices,
            help=text,
        )


def _add_verb(groups: dict[tuple[str, ...], Any], root: Any, verb: Verb) -> None:
    """Add ``verb`` under its words, creating the noun groups (``admin window``) on the way."""
    sub = root
    for depth in range(1, len(verb.words)):
        key = verb.words[:depth]
        if key not in groups:
            noun = sub.add_parser(key[-1], help=f"{' '.join(key)} commands")
            groups[key] = noun.add_subparsers(
                dest=f"_{'_'.join(key)}", metavar="VERB", required=True
            )
        sub = groups[key]
    parser = sub.add_parser(
        verb.words[-1],
        help=verb.help,
        description=f"{verb.help} (sends {verb.kind.value}).",
    )
    for arg in verb.args:
        _add_arg(parser, arg)
    _client_options(parser, suppress=True)
    parser.set_defaults(handler=run_verb, verb=verb)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Flash sales driven by aggregated demand, on NATS.",
        epilog="Exit status: 0 done, 1 refused (ok: false), 2 bad invocation or settings, "
        "3 no node answered.",
    )
    _client_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up.add_parser(sub, [])
    node.add_parser(sub, [])
    projector.add_parser(sub, [])
    notifier.add_parser(sub, [])
    token.add_parser(sub, [])
    audit.add_parser(sub, [])
    nats_users.add_parser(sub, [])
    # Everything after `demo` belongs to the demo: no prefix character, so no option.
    demo = sub.add_parser(
        "demo",
        help="the whole happy path on the embedded default, with live progress",
        add_help=False,
        prefix_chars="\0",
    )
    demo.add_argument("rest", nargs="*")
    demo.set_defaults(handler=lambda args: run_demo(args.rest))
    groups: dict[tuple[str, ...], Any] = {}
    for verb in VERBS:
        _add_verb(groups, sub, verb)
    return parser


def run_demo(argv: list[str]) -> int:
    """``iceshop demo``: hand the rest of the command line to ``iceshop.demo``."""
    try:
        demo = importlib.import_module("iceshop.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("iceshop.demo", "iceshop"):
            raise CliError(f"cannot load the demo: {exc}") from exc
        raise CliError("not available: this installation has no iceshop.demo") from exc
    entry = getattr(demo, "main", None) or getattr(demo, "run", None)
    if entry is None:
        raise CliError("not available: iceshop.demo has no main()")
    return int(entry(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    label = _PROG
    try:
        if words[:1] == ["demo"]:
            label = f"{_PROG} demo"
            return run_demo(words[1:])
        args = build_parser().parse_args(words)
        verb = getattr(args, "verb", None)
        label = f"{_PROG} {' '.join(verb.words) if verb is not None else args.command}"
        status: int = args.handler(args)
        return status
    except CliError as exc:
        print(f"{label}: {exc.message}", file=sys.stderr)
        return exc.status
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        return _INTERRUPTED
    except BrokenPipeError:  # the reader went away (`iceshop windows list | head -1`)
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
