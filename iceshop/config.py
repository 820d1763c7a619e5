"""Load node settings: defaults, then a TOML file, then ``ICESHOP_<KEY>`` variables,
then command-line values. A bad setting is refused with a message naming its key.

TOML has types, so a file's values must already have the setting's type (``shards =
"64"`` is refused, not guessed at). Environment variables are text, so each one is
converted on its own to its setting's type, and a failure names the variable as well as
the key. Durations must be finite: ``inf`` is a valid TOML and Python float but not a
time anything can wait for.

A few ``ICESHOP_`` variables are secrets, not settings, and are skipped here:
``ICESHOP_NATS_PASSWORD`` (the password of ``nats_user``, read where the connection is
made, :mod:`iceshop.connection`) and the ``ICESHOP_NATS_<ROLE>_PASSWORD`` variables that
nats-server's config reads, which may well be in the same environment; and
``ICESHOP_TOKEN``, the credential of the client verbs (:mod:`iceshop.cli.client`); and
``ICESHOP_WHATSAPP_TOKEN``, ``ICESHOP_WHATSAPP_APP_SECRET`` and
``ICESHOP_WHATSAPP_VERIFY_TOKEN``, the Cloud API's token and the status receiver's
secrets (:mod:`iceshop.notify.service`).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from iceshop.settings import Settings

__all__ = ["ConfigError", "load_settings"]

ENV_PREFIX = "ICESHOP_"
#: ``ICESHOP_`` variables that hold secrets rather than settings (see the docstring).
NOT_SETTINGS = re.compile(
    r"ICESHOP_NATS_(?:[A-Z0-9_]+_)?PASSWORD|ICESHOP_TOKEN"
    r"|ICESHOP_WHATSAPP_(?:TOKEN|APP_SECRET|VERIFY_TOKEN)"
)


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names the key."""


def _fields() -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(Settings)}


def _key_of(error: msgspec.ValidationError) -> str:
    """The key a validation message points at (``... - at `$.shards` ``), or ``""``."""
    text = str(error)
    return text.rsplit("$.", 1)[1].rstrip("`") if "$." in text else ""


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = _fields()
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or NOT_SETTINGS.fullmatch(name):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in known:
            raise ConfigError(f"{name}: unknown setting {key!r}")
        try:
            # strict=False: the text "5", "2.5" becomes the setting's number.
            converted = msgspec.convert(value, known[key], strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{key}: {name}={value!r}: {exc}") from None
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ConfigError(f"{key}: {name}={value!r}: must be a finite number")
        values[key] = converted
    return values


def _read_file(file: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(file)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_settings(
    file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from ``file`` (TOML), the environment and ``overrides``, in that order."""
    merged: dict[str, Any] = {}
    if file is not None:
        merged.update(_read_file(file))
    merged.update(_from_env(os.environ if environ is None else environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(merged, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{_key_of(exc) or 'settings'}: {exc}") from None
    for key in _fields():
        value = getattr(settings, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
    return settings
