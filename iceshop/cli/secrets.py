"""Local secrets for the embedded default: NATS passwords made once, kept in the data dir.

``iceshop up`` (and ``iceshop demo``) run the repository's ``nats.conf``, whose users take
their passwords from ``ICESHOP_NATS_<ROLE>_PASSWORD`` variables. On the first run
:func:`provision` generates one random password per role into ``<data>/secrets/``
(directory mode 0700, files 0600, created once and reused by later runs, so clients
configured once keep working); ``up`` then starts nats-server with
:meth:`NatsSecrets.server_env` in its environment and logs the node in as ``node``.

It also writes the login the command line uses, ``<data>/secrets/nats-client.json``
(the ``admin`` user and the file holding its password): client verbs run from the
directory that holds ``data/`` find it there, as they find ``data/nats.url``.

Nothing here is a production secret store: in a deployment the passwords come from the
platform's secrets (environment or mounted files), see SECURITY.md. To rotate the local
ones, stop ``up``, delete ``<data>/secrets/nats-*.password`` and start it again.

:func:`provision` is the one entry point for everything ``up`` makes up locally, so
other local credentials belong in it too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from iceshop.connection import NatsLogin, inbox_prefix_for

__all__ = [
    "CLIENT_LOGIN_FILE",
    "CLIENT_USER",
    "NATS_ROLES",
    "NODE_USER",
    "SECRETS_DIR",
    "LocalSecrets",
    "NatsSecrets",
    "new_password",
    "password_env",
    "provision",
    "provision_nats",
    "read_client_login",
    "write_client_login",
]

SECRETS_DIR: Final = "secrets"
#: The users of nats.conf shared by a role (seller users are per seller: `iceshop nats users`).
NATS_ROLES: Final = ("node", "gateway", "admin", "events")
NODE_USER: Final = "node"
#: The user the command line logs in as.
CLIENT_USER: Final = "admin"
CLIENT_LOGIN_FILE: Final = "nats-client.json"
_PASSWORD_BYTES: Final = 32


def password_env(role: str) -> str:
    """The variable nats.conf reads ``role``'s password from."""
    return f"ICESHOP_NATS_{role.upper()}_PASSWORD"


class NatsSecrets(msgspec.Struct, frozen=True):
    """The NATS passwords of one data directory (files; read when needed)."""

    directory: Path

    def password_file(self, role: str) -> Path:
        return self.directory / f"nats-{role}.password"

    def password(self, role: str) -> str:
        return self.password_file(role).read_text(encoding="utf-8").strip()

    def server_env(self) -> dict[str, str]:
        """What nats-server needs in its environment to run nats.conf."""
        return {password_env(role): self.password(role) for role in NATS_ROLES}

    def login(self, role: str) -> NatsLogin:
        """Log in as ``role``, the password read from its file by the transport."""
        return NatsLogin(
            user=role,
            password_file=str(self.password_file(role)),
            inbox_prefix=inbox_prefix_for(role),
        )


class LocalSecrets(msgspec.Struct, frozen=True):
    """Everything :func:`provision` made (or found) in a data directory."""

    nats: NatsSecrets
    #: The login file of the command line.
    client_login: Path


def _create_once(path: Path, content: str) -> bool:
    """Write ``content`` to a new file readable by its owner only; ``False`` when the file
    is already there (it is kept as it is)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    return True


def _secrets_dir(data: Path) -> Path:
    directory = data / SECRETS_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):  # made earlier with a laxer umask, say
        directory.chmod(0o700)
    return directory


def new_password() -> str:
    """A random password nats-server can take from its environment.

    nats-server parses a ``$VARIABLE``'s value as a config value, so a password starting
    with ``_``, ``-`` or a digit (as ``token_urlsafe`` makes one time in a few) stops
    it with a parse error: a letter, then hex digits only."""
    return "p" + secrets.token_hex(_PASSWORD_BYTES)


def provision_nats(data: Path) -> NatsSecrets:
    """One random password per role under ``<data>/secrets/``, made on the first call."""
    nats = NatsSecrets(_secrets_dir(data))
    for role in NATS_ROLES:
        path = nats.password_file(role)
        _create_once(path, new_password() + "\n")
        if not nats.password(role):
            raise ValueError(f"{path} is empty: delete it to have a new password made")
    return nats


def write_client_login(nats: NatsSecrets, user: str = CLIENT_USER) -> Path:
    """The command line's login file (points at ``user``'s password file); kept if present."""
    path = nats.directory / CLIENT_LOGIN_FILE
    login = {"user": user, "password_file": nats.password_file(user).name}
    _create_once(path, msgspec.json.encode(login).decode() + "\n")
    return path


def read_client_login(data: Path) -> NatsLogin | None:
    """The login in ``<data>/secrets/nats-client.json``, or ``None`` when there is none.

    Raises ``ValueError`` for a file that is there but unusable."""
    path = data / SECRETS_DIR / CLIENT_LOGIN_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        fields: Mapping[str, str] = msgspec.json.decode(raw, type=dict[str, str])
        user = fields["user"]
        password_file = path.parent / fields["password_file"]
    except (msgspec.DecodeError, KeyError) as exc:
        raise ValueError(f"{path}: not a login file ({exc})") from exc
    return NatsLogin(
        user=user, password_file=str(password_file), inbox_prefix=inbox_prefix_for(user)
    )


def provision(data: Path) -> LocalSecrets:
    """Everything ``up`` needs that is secret, made once under ``<data>``."""
    nats = provision_nats(data)
    return LocalSecrets(nats=nats, client_login=write_client_login(nats))
