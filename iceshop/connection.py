"""How an ICESHOP process logs in to NATS: its settings become one :class:`NatsTransport`.

Nodes, ``iceshop projector`` and ``iceshop notifier`` all connect the same way, so the
login is decided here once: the user is the ``nats_user`` setting; the password comes
from the file named by ``nats_password_file`` (re-read on every reconnect, so a rotated
password needs no restart), else from the ``ICESHOP_NATS_PASSWORD`` variable. Passwords
are never settings: a settings file is shared and copied around, and command lines show
up in process listings.

The inbox prefix defaults to ``_INBOX_<user>``, the only inbox the repository's
``nats.conf`` lets a user subscribe to: replies to this process's requests, including
JetStream's, arrive there and nobody else can read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from actors.errors import NotPermitted
from actors.nats import NatsTransport
from iceshop.settings import Settings

__all__ = [
    "PASSWORD_ENV",
    "NatsLogin",
    "inbox_prefix_for",
    "nats_login",
    "nats_servers",
    "nats_transport",
]

#: The password of ``nats_user`` when no ``nats_password_file`` is set.
PASSWORD_ENV: Final = "ICESHOP_NATS_PASSWORD"


class NatsLogin(msgspec.Struct, frozen=True, kw_only=True):
    """Who a connection logs in as. ``password`` is the secret itself (left out of
    ``repr``); ``password_file`` a file the transport reads it from."""

    user: str
    password: str | None = None
    password_file: str | None = None
    inbox_prefix: str | None = None

    def __repr__(self) -> str:
        secret = "file " + self.password_file if self.password_file else "***"
        return f"NatsLogin(user={self.user!r}, password={secret}, inbox={self.inbox_prefix!r})"

    def transport_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`NatsTransport`."""
        return {
            "user": self.user,
            "password": self.password,
            "password_file": self.password_file,
            "inbox_prefix": self.inbox_prefix,
        }


def inbox_prefix_for(user: str) -> str:
    """The inbox prefix nats.conf gives ``user``."""
    return f"_INBOX_{user}"


def nats_servers(settings: Settings) -> list[str]:
    """The server URLs of ``nats_url`` (comma separated)."""
    return [u.strip() for u in settings.nats_url.split(",") if u.strip()]


def nats_login(settings: Settings, environ: Mapping[str, str] | None = None) -> NatsLogin | None:
    """The login of ``settings`` (``None``: connect without one).

    Raises :class:`~actors.errors.NotPermitted` when a user is set without a password:
    the server would refuse it, and saying why here beats "authorization violation"."""
    if not settings.nats_user:
        return None
    env = os.environ if environ is None else environ
    prefix = settings.nats_inbox_prefix or inbox_prefix_for(settings.nats_user)
    if settings.nats_password_file:
        return NatsLogin(
            user=settings.nats_user,
            password_file=str(Path(settings.nats_password_file).expanduser()),
            inbox_prefix=prefix,
        )
    password = env.get(PASSWORD_ENV, "")
    if not password:
        raise NotPermitted(
            f"nats_user {settings.nats_user!r} has no password: set nats_password_file "
            f"or the {PASSWORD_ENV} environment variable"
        )
    return NatsLogin(user=settings.nats_user, password=password, inbox_prefix=prefix)


def nats_transport(
    settings: Settings,
    *,
    name: str,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> NatsTransport:
    """A transport to ``nats_url`` logged in as ``settings`` say; ``options`` go to
    :class:`NatsTransport` as they are."""
    login = nats_login(settings, environ)
    credentials = login.transport_options() if login is not None else {}
    if settings.nats_inbox_prefix and login is None:
        credentials["inbox_prefix"] = settings.nats_inbox_prefix
    return NatsTransport(nats_servers(settings), name=name, **credentials, **options)
