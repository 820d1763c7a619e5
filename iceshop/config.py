"""Load node settings: defaults, then a TOML file, then ``ICESHOP_<KEY>`` variables,
then command-line values. A bad setting is refused with a message naming its key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from iceshop.settings import Settings

__all__ = ["ConfigError", "load_settings"]

ENV_PREFIX = "ICESHOP_"


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names the key."""


def _fields() -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(Settings)}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = _fields()
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in known:
            raise ConfigError(f"{name}: unknown setting {key!r}")
        values[key] = value
    return values


def load_settings(
    file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from ``file`` (TOML), the environment and ``overrides``, in that order."""
    merged: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    merged.update(_from_env(os.environ if environ is None else environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        # strict=False: environment values arrive as strings ("5", "2.5", "on").
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        key = text.rsplit("$.", 1)[1].rstrip("`") if "$." in text else ""
        raise ConfigError(f"{key or 'settings'}: {text}") from None
