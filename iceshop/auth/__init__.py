"""Who may send a command: credentials, roles, API keys and abuse limits.

The contract's Security section, at the message layer (the NATS layer's users and
permissions are the server's configuration). Every command may carry
``Authorization: Bearer <credential>``; routing (``iceshop.node.routing``) asks a
:class:`Gate`, synchronously and before any actor sees the request:

- ``tokens``: a JWT (HS256 or EdDSA, ``kid`` from the key ``keyring``) becomes a
  ``Principal`` (``principal``), or ``unauthorized``;
- ``apikeys``: an API key (``isk_<key_id>_<secret>``) does the same, checked against the
  node's in-memory copy of the records the ``apikey`` actor stores (``apikey_actor``);
- ``policy``: the role rules the request alone decides (``forbidden``); ownership of a
  window's reservations or a decision is checked by the actor that knows the owner;
- ``limits``: per-buyer token buckets on joins and intent submits (``overloaded``).

``provision`` makes the local signing key and admin token of ``iceshop up``.
"""

from __future__ import annotations

from iceshop.auth.apikey_actor import APIKEY_KIND, REGISTRY_KEY, ApiKeyActor, LoadKeys
from iceshop.auth.apikeys import (
    API_KEY_PREFIX,
    ApiKeyRecord,
    ApiKeyRegistry,
    format_api_key,
    is_api_key,
    parse_api_key,
)
from iceshop.auth.gate import Gate
from iceshop.auth.keyring import (
    RELOAD_INTERVAL_S,
    KeyDirectory,
    KeyRing,
    KeyRingError,
    TokenKey,
    generate_ed25519,
    generate_hs256,
    load_key,
    write_key_file,
)
from iceshop.auth.limits import BuyerLimits, TokenBuckets
from iceshop.auth.policy import ADMIN_ONLY, OWNER_CHECKED_BY_ACTOR, authorize
from iceshop.auth.principal import ROLES, Principal, Role, principal_of
from iceshop.auth.provision import LocalAuth, keys_dir_of, provision, read_admin_token
from iceshop.auth.tokens import AUDIENCE, TokenVerifier, mint

__all__ = [
    "ADMIN_ONLY",
    "APIKEY_KIND",
    "API_KEY_PREFIX",
    "AUDIENCE",
    "OWNER_CHECKED_BY_ACTOR",
    "REGISTRY_KEY",
    "RELOAD_INTERVAL_S",
    "ROLES",
    "ApiKeyActor",
    "ApiKeyRecord",
    "ApiKeyRegistry",
    "BuyerLimits",
    "Gate",
    "KeyDirectory",
    "KeyRing",
    "KeyRingError",
    "LoadKeys",
    "LocalAuth",
    "Principal",
    "Role",
    "TokenBuckets",
    "TokenKey",
    "TokenVerifier",
    "authorize",
    "format_api_key",
    "generate_ed25519",
    "generate_hs256",
    "is_api_key",
    "keys_dir_of",
    "load_key",
    "mint",
    "parse_api_key",
    "principal_of",
    "provision",
    "read_admin_token",
    "write_key_file",
]
