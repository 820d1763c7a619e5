"""``iceshop token``: admin tools for the message layer's credentials.

::

    iceshop token mint --role R --sub S [--ttl SECONDS] [--keys DIR] [--kid KID]
    iceshop token keygen [--alg EdDSA|HS256] [--kid KID] [--keys DIR]

``mint`` prints a JWT for principal ``S`` acting as role ``R`` (``buyer``, ``seller``,
``admin``, ``gateway``), signed with a key of the key directory (default
``./data/auth/keys``, where ``iceshop up`` keeps its local key; ``--kid`` picks one when
there are several). Give it to a gateway, a seller's service or a person; it is valid
for ``--ttl`` seconds (default one hour).

``keygen`` adds a new key to the directory (mode 0600), which is the first step of a
rotation: put it on every node (they re-read their directory within seconds), mint new
tokens with ``--kid``, and delete the old key file once the tokens it signed have
expired. An ``EdDSA`` key's public half can be given to nodes alone (``<kid>.pub``), so
only the minting side holds the private key.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization

from actors import RealClock
from iceshop.auth import ROLES, KeyDirectory, KeyRing, KeyRingError, mint
from iceshop.auth.keyring import generate_ed25519, generate_hs256, write_key_file
from iceshop.auth.provision import keys_dir_of
from iceshop.cli.errors import EXIT_OK, EXIT_USAGE, CliError

__all__ = ["DEFAULT_TTL_S", "MAX_TTL_S", "add_parser", "run_keygen", "run_mint"]

DEFAULT_TTL_S: Final = 3600.0
MAX_TTL_S: Final = 400 * 86_400.0
_DEFAULT_KEYS: Final = keys_dir_of("data")


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "token",
        parents=parents,
        help="mint tokens and make signing keys (admin tools)",
        description="Mint tokens (JWT) and make signing keys for the message layer.",
    )
    actions = p.add_subparsers(dest="token_action", metavar="ACTION", required=True)
    m = actions.add_parser("mint", help="print a token for a principal and role")
    m.add_argument("--role", required=True, choices=sorted(ROLES))
    m.add_argument("--sub", required=True, metavar="ID", help="the principal id")
    m.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL_S,
        metavar="SECONDS",
        help=f"how long the token is valid (default {DEFAULT_TTL_S:g})",
    )
    m.add_argument("--keys", metavar="DIR", default=str(_DEFAULT_KEYS), help="key directory")
    m.add_argument("--kid", metavar="KID", help="the key to sign with (default: the first)")
    m.set_defaults(handler=run_mint)
    g = actions.add_parser("keygen", help="add a new signing key to the key directory")
    g.add_argument("--alg", choices=("EdDSA", "HS256"), default="EdDSA")
    g.add_argument("--kid", metavar="KID", help="the new key's id (default: generated)")
    g.add_argument("--keys", metavar="DIR", default=str(_DEFAULT_KEYS), help="key directory")
    g.set_defaults(handler=run_keygen)


def _ring(directory: str) -> KeyRing:
    try:
        return KeyRing(KeyDirectory(directory).read())
    except KeyRingError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def run_mint(args: argparse.Namespace) -> int:
    if not 0 < args.ttl <= MAX_TTL_S:
        raise CliError(f"--ttl must be between 0 and {MAX_TTL_S:g} seconds", EXIT_USAGE)
    ring = _ring(args.keys)
    key = ring.signing_key(args.kid)
    if key is None:
        which = f"key {args.kid}" if args.kid else "no key"
        raise CliError(f"{which} in {args.keys} can sign tokens", EXIT_USAGE)
    try:
        token = mint(key, sub=args.sub, role=args.role, ttl_s=args.ttl, now=RealClock().time())
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    print(token)
    return EXIT_OK


def run_keygen(args: argparse.Namespace) -> int:
    kid = args.kid or f"k{secrets.token_hex(4)}"
    directory = Path(args.keys)
    try:
        if args.alg == "HS256":
            key, content = generate_hs256(kid)
        else:
            key, content = generate_ed25519(kid)
        path = directory / f"{kid}.key"
        write_key_file(path, content)
    except FileExistsError as exc:
        raise CliError(f"{exc.filename}: a key with this id exists", EXIT_USAGE) from exc
    except (KeyRingError, OSError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    print(f"key {kid} ({key.alg}) written to {path}")
    if not isinstance(key.verify_key, bytes):
        public = key.verify_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        print(f"nodes that only verify need {kid}.pub:")
        print(public.decode("ascii"), end="")
    return EXIT_OK
