"""The keys that sign and verify tokens, by key id (``kid``), and where they come from.

A ring holds several keys at once, which is what rotation needs: add the new key to
every node, start signing with it, and remove the old one once the tokens it signed
have expired. A token names its key in its header (``kid``) and is verified with that
key only, with that key's algorithm only (so an HS256 token can never be checked
against an Ed25519 public key used as a secret).

Keys live in a directory, one file each, named by their key id (the contract's id rule):

- ``<kid>.key``: an HS256 secret (at least 32 bytes of text; surrounding white space is
  ignored) or an Ed25519 private key in PEM (``BEGIN PRIVATE KEY``); either can sign.
- ``<kid>.pub``: an Ed25519 public key in PEM; it only verifies, so a node that never
  mints tokens needs no secret at all.

Other files are ignored. Reading is blocking file I/O, so the node reads in a worker
thread (:meth:`KeyDirectory.read_if_changed`) and swaps the result into its
:class:`KeyRing` on the event loop; a directory whose files have not changed is not
read again. A bad file refuses the node's start. On a later reload a bad file (or a key
id found in two files) is skipped, loudly, and every other change still applies: the
keys in good files stay, and a deleted file's key is gone (one unreadable file must not
keep a stolen key alive by freezing the ring as it was).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "MIN_SECRET_BYTES",
    "RELOAD_INTERVAL_S",
    "Algorithm",
    "KeyDirectory",
    "KeyRing",
    "KeyRingError",
    "TokenKey",
    "generate_ed25519",
    "generate_hs256",
    "load_key",
    "write_key_file",
]

log = structlog.get_logger("iceshop.auth")

Algorithm = Literal["HS256", "EdDSA"]

MIN_SECRET_BYTES: Final = 32
#: How often a node looks at its key directory for added, changed or removed keys.
RELOAD_INTERVAL_S: Final = 5.0

_KID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PRIVATE_PEM: Final = b"-----BEGIN PRIVATE KEY-----"
_PUBLIC_PEM: Final = b"-----BEGIN PUBLIC KEY-----"


class KeyRingError(ValueError):
    """A key file that cannot be used; the message names the file."""


class TokenKey:
    """One key: its id, its algorithm, what verifies and (if known) what signs."""

    __slots__ = ("alg", "kid", "sign_key", "verify_key")

    def __init__(
        self,
        kid: str,
        alg: Algorithm,
        verify_key: bytes | Ed25519PublicKey,
        sign_key: bytes | Ed25519PrivateKey | None = None,
    ) -> None:
        if _KID.fullmatch(kid) is None:
            raise KeyRingError(f"key id {kid!r}: must be 1-64 characters of A-Z a-z 0-9 _ -")
        self.kid = kid
        self.alg: Algorithm = alg
        self.verify_key = verify_key
        self.sign_key = sign_key

    @classmethod
    def hs256(cls, kid: str, secret: bytes) -> TokenKey:
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyRingError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes")
        return cls(kid, "HS256", secret, secret)

    @classmethod
    def ed25519(cls, kid: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> TokenKey:
        if isinstance(key, Ed25519PrivateKey):
            return cls(kid, "EdDSA", key.public_key(), key)
        return cls(kid, "EdDSA", key)

    @property
    def can_sign(self) -> bool:
        return self.sign_key is not None

    def fingerprint(self) -> bytes:
        """What identifies the verifying material (to tell a changed key from the same)."""
        if isinstance(self.verify_key, bytes):
            return b"HS256:" + self.verify_key
        return b"EdDSA:" + self.verify_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def __repr__(self) -> str:  # never the secret
        return f"TokenKey({self.kid!r}, {self.alg}, can_sign={self.can_sign})"


class KeyRing:
    """The keys a node knows now, by ``kid``. ``version`` grows on every change, so a
    cache of verified tokens can tell that a key it relied on may be gone."""

    __slots__ = ("_keys", "version")

    def __init__(self, keys: Iterable[TokenKey] = ()) -> None:
        self._keys: dict[str, TokenKey] = {}
        self.version = 0
        self.replace(keys)

    def replace(self, keys: Iterable[TokenKey]) -> None:
        """Swap in a new set of keys (the node does this on the event loop)."""
        new = {key.kid: key for key in keys}
        old = self._keys
        if new.keys() == old.keys() and all(
            new[k].fingerprint() == old[k].fingerprint() and new[k].alg == old[k].alg for k in new
        ):
            self._keys = new  # same verifying keys: verified tokens stay valid
            return
        self._keys = new
        self.version += 1

    def get(self, kid: str) -> TokenKey | None:
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        return sorted(self._keys)

    def signing_key(self, kid: str | None = None) -> TokenKey | None:
        """The key ``kid`` if it can sign, else any key that can (first by id)."""
        if kid is not None:
            key = self._keys.get(kid)
            return key if key is not None and key.can_sign else None
        for name in sorted(self._keys):
            if self._keys[name].can_sign:
                return self._keys[name]
        return None

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({self.kids()}, version={self.version})"


def load_key(path: Path) -> TokenKey:
    """One key file (see the module docstring); :class:`KeyRingError` if unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyRingError(f"{path}: cannot read it: {exc}") from exc
    try:
        return _parse_key(path.stem, path.suffix, data.strip())
    except KeyRingError as exc:
        raise KeyRingError(f"{path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyRingError(f"{path}: not a usable key: {exc}") from exc


def _parse_key(kid: str, suffix: str, text: bytes) -> TokenKey:
    if suffix == ".pub":
        if not text.startswith(_PUBLIC_PEM):
            raise KeyRingError("expected an Ed25519 public key in PEM")
        public = serialization.load_pem_public_key(text)
        if not isinstance(public, Ed25519PublicKey):
            raise KeyRingError("not an Ed25519 public key")
        return TokenKey.ed25519(kid, public)
    if text.startswith(_PRIVATE_PEM):
        private = serialization.load_pem_private_key(text, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyRingError("not an Ed25519 private key")
        return TokenKey.ed25519(kid, private)
    if text.startswith(b"-----BEGIN"):
        raise KeyRingError("only unencrypted Ed25519 keys in PEM are supported")
    return TokenKey.hs256(kid, text)


class KeyDirectory:
    """A directory of key files, read again only when its files change."""

    __slots__ = ("_seen", "path", "skipped")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        #: What the last lenient read (:meth:`read_if_changed`) left out, and why.
        self.skipped: list[str] = []

    def _listing(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    name = entry.name
                    if name.startswith(".") or not name.endswith((".key", ".pub")):
                        continue
                    st = entry.stat()
                    entries.append((name, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise KeyRingError(f"{self.path}: cannot list it: {exc}") from exc
        return tuple(sorted(entries))

    def read(self, *, skip_bad: bool = False) -> list[TokenKey]:
        """Every key in the directory (blocking); a missing directory has none. A bad
        file or a key id in two files raises :class:`KeyRingError`, or with ``skip_bad``
        is left out (both files, for a key id in two: which one is meant is unknown) and
        described in :attr:`skipped`."""
        listing = self._listing()
        keys: dict[str, TokenKey] = {}
        twice: set[str] = set()
        skipped: list[str] = []
        for name, _, _ in listing:
            try:
                key = load_key(self.path / name)
            except KeyRingError as exc:
                if not skip_bad:
                    raise
                skipped.append(str(exc))
                continue
            if key.kid in keys or key.kid in twice:
                problem = f"{self.path}: key id {key.kid!r} is in two files"
                if not skip_bad:
                    raise KeyRingError(problem)
                skipped.append(f"{problem}; neither is used")
                twice.add(key.kid)
                keys.pop(key.kid, None)
                continue
            keys[key.kid] = key
        self._seen = listing
        self.skipped = skipped
        return list(keys.values())

    def read_if_changed(self) -> list[TokenKey] | None:
        """The keys if any file was added, changed or removed since the last read, else
        ``None`` (blocking; call it from a worker thread). Bad files are skipped (see
        :attr:`skipped`): the good ones still apply."""
        if self._listing() == self._seen:
            return None
        return self.read(skip_bad=True)


def generate_ed25519(kid: str) -> tuple[TokenKey, bytes]:
    """A new Ed25519 key and its private PEM (to write with :func:`write_key_file`)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return TokenKey.ed25519(kid, private), pem


def generate_hs256(kid: str) -> tuple[TokenKey, bytes]:
    """A new HS256 key (64 hex characters) and its file content."""
    secret = os.urandom(32).hex().encode("ascii")
    return TokenKey.hs256(kid, secret), secret + b"\n"


def write_key_file(path: Path, content: bytes) -> None:
    """Create ``path`` readable by its owner only; never overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
