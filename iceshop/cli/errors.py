"""Exit statuses of the ``iceshop`` command, and the one error that carries them.

Scripts branch on the status, so each one means one thing:

- ``0`` the command did what was asked (for a verb: the node replied ``ok: true``);
- ``1`` the node refused (``ok: false``; code and message on stderr), or a command failed
  at run time (a node that cannot reach NATS, a server that would not start);
- ``2`` the command line or the settings are wrong (a bad id, a bad setting, a taken port,
  no ``nats-server`` binary): fixing the invocation is needed, retrying is not enough;
- ``3`` nobody answered: no responders, a timeout, or NATS itself unreachable. The
  contract calls this ``unavailable``: retry with the same ids.

A sub-command raises :class:`CliError`; ``main`` prints its message on one line, prefixed
with the command, and exits with its status.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "CliError"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3


class CliError(Exception):
    """A failure to report on one line and exit with ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
