"""Local credentials for the embedded default: a signing key and an admin token.

``iceshop up`` (and ``iceshop demo``) run with authentication on, so something must
sign tokens and the operator at the keyboard must hold one. :func:`provision` makes
both under ``<data>/auth/`` the first time and reuses them afterwards:

- ``<data>/auth/keys/<kid>.key``: an Ed25519 private key (mode 0600), the node's key
  directory (setting ``auth_keys_dir``) and what ``iceshop token mint`` signs with;
- ``<data>/auth/admin.token``: a JWT with role ``admin`` (mode 0600), which the CLI
  client sends by itself when it runs next to that data directory. It is minted again
  when it is missing, no longer verifies (its key was removed) or has less than a week
  left.

Nothing here is a secret shared with anyone else: a production deployment brings its
own keys (see ``iceshop.auth.keyring``) and mints its own tokens.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

import jwt
import msgspec

from actors import RealClock
from iceshop.auth.keyring import KeyDirectory, KeyRing, generate_ed25519, write_key_file
from iceshop.auth.principal import ADMIN
from iceshop.auth.tokens import TokenVerifier, mint
from iceshop.wire import ShopError

__all__ = [
    "ADMIN_SUB",
    "ADMIN_TOKEN_FILE",
    "ADMIN_TOKEN_TTL_S",
    "AUTH_DIR",
    "KEYS_DIR",
    "LocalAuth",
    "keys_dir_of",
    "provision",
    "read_admin_token",
]

AUTH_DIR: Final = "auth"
KEYS_DIR: Final = "keys"
ADMIN_TOKEN_FILE: Final = "admin.token"
ADMIN_SUB: Final = "admin"
ADMIN_TOKEN_TTL_S: Final = 90 * 86_400.0
_RENEW_BEFORE_S: Final = 7 * 86_400.0


class LocalAuth(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`provision` made or found."""

    keys_dir: str
    kid: str
    admin_token_file: str
    admin_token: str
    #: Whether this call created the signing key (a first run).
    created_key: bool
    #: Whether this call minted the admin token (a first run, or a renewal).
    minted_token: bool


def keys_dir_of(data_dir: str | os.PathLike[str]) -> Path:
    """``<data>/auth/keys``: where :func:`provision` keeps the signing keys."""
    return Path(data_dir) / AUTH_DIR / KEYS_DIR


def read_admin_token(data_dir: str | os.PathLike[str]) -> str | None:
    """The admin token :func:`provision` left under ``data_dir``, if any."""
    try:
        token = (Path(data_dir) / AUTH_DIR / ADMIN_TOKEN_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return token.strip() or None


def provision(data_dir: str | os.PathLike[str]) -> LocalAuth:
    """Create (once) or reuse the local signing key and admin token (blocking I/O)."""
    auth = Path(data_dir) / AUTH_DIR
    keys = auth / KEYS_DIR
    auth.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys.mkdir(exist_ok=True, mode=0o700)
    ring = KeyRing(KeyDirectory(keys).read())
    key = ring.signing_key()
    created = key is None
    if key is None:
        kid = f"local-{secrets.token_hex(4)}"
        key, pem = generate_ed25519(kid)
        write_key_file(keys / f"{kid}.key", pem)
        ring = KeyRing([key])
    clock = RealClock()
    token_file = auth / ADMIN_TOKEN_FILE
    token = read_admin_token(data_dir)
    minted = token is None or not _still_good(token, ring, clock)
    if minted:
        token = mint(key, sub=ADMIN_SUB, role=ADMIN, ttl_s=ADMIN_TOKEN_TTL_S, now=clock.time())
        _write_private(token_file, token + "\n")
    assert token is not None
    return LocalAuth(
        keys_dir=str(keys),
        kid=key.kid,
        admin_token_file=str(token_file),
        admin_token=token,
        created_key=created,
        minted_token=minted,
    )


def _still_good(token: str, ring: KeyRing, clock: RealClock) -> bool:
    try:
        principal = TokenVerifier(ring, clock, leeway_s=0.0).verify(token)
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    except (ShopError, jwt.InvalidTokenError, KeyError):
        return False
    return principal.role == ADMIN and float(exp) - clock.time() > _RENEW_BEFORE_S


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
