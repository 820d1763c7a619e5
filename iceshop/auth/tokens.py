"""``Authorization: Bearer <JWT>``: verify a token into a principal, and mint one.

What the contract asks of a token: signed with HS256 or EdDSA, ``aud`` = ``iceshop``,
``exp`` present (a token never lives for ever), ``sub`` the principal id and ``role`` one
of the four roles, with 30 s of leeway for clocks that disagree. Beyond it: the header
must name its key (``kid``) and that key's algorithm (no algorithm is taken from the
token alone), ``sub`` must be a subject-safe id, and ``nbf``, when present, is honoured.

Times are checked against the runtime's :class:`~actors.Clock`, not the machine's, so
expiry is testable on a virtual clock and agrees with every other time the node uses
(pyjwt's own ``exp`` check reads the machine clock and is turned off; the claims are
checked here instead).

Every failure is ``unauthorized`` with a message that says what was wrong and never
repeats the token. Routing verifies a token on every request, and a signature check
costs tens of microseconds (Ed25519 more than HS256), so verified tokens are cached
briefly: a bounded LRU keyed by the raw token, each entry still checked against its
``exp`` on every hit, and emptied when the key ring changes (a removed key must stop
its tokens at once).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Final

import jwt
from jwt.types import Options

from actors import Clock
from iceshop.auth.keyring import KeyRing, TokenKey
from iceshop.auth.principal import principal_of
from iceshop.protocol import Principal
from iceshop.wire import ErrorCode, ShopError

__all__ = [
    "AUDIENCE",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_LEEWAY_S",
    "MAX_TOKEN_BYTES",
    "TokenVerifier",
    "mint",
]

AUDIENCE: Final = "iceshop"
DEFAULT_LEEWAY_S: Final = 30.0
DEFAULT_CACHE_SIZE: Final = 10_000
#: A longer Authorization value is refused unread.
MAX_TOKEN_BYTES: Final = 8192

_OPTIONS: Final[Options] = {
    "require": ["exp", "aud", "sub"],
    "verify_signature": True,
    "verify_aud": True,
    "verify_exp": False,  # against the runtime clock, below
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": False,
}


def _unauthorized(message: str) -> ShopError:
    return ShopError(ErrorCode.UNAUTHORIZED, message)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class _Cached:
    __slots__ = ("exp", "nbf", "principal")

    def __init__(self, principal: Principal, exp: float, nbf: float | None) -> None:
        self.principal = principal
        self.exp = exp
        self.nbf = nbf


class TokenVerifier:
    """Turns a bearer JWT into a :class:`Principal` or raises ``unauthorized``."""

    __slots__ = ("_cache", "_version", "audience", "cache_size", "clock", "leeway_s", "ring")

    def __init__(
        self,
        ring: KeyRing,
        clock: Clock,
        *,
        leeway_s: float = DEFAULT_LEEWAY_S,
        audience: str = AUDIENCE,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.ring = ring
        self.clock = clock
        self.leeway_s = leeway_s
        self.audience = audience
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._version = ring.version

    def verify(self, token: str) -> Principal:
        """The principal ``token`` speaks for; ``ShopError(unauthorized)`` otherwise."""
        if self._version != self.ring.version:
            self._cache.clear()
            self._version = self.ring.version
        cached = self._cache.get(token)
        if cached is not None:
            self._check_times(cached.exp, cached.nbf)
            self._cache.move_to_end(token)
            return cached.principal
        entry = self._verify(token)
        cache = self._cache
        cache[token] = entry
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return entry.principal

    def _verify(self, token: str) -> _Cached:
        if len(token) > MAX_TOKEN_BYTES:
            raise _unauthorized("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthorized("the bearer token is not a well-formed JWT") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _unauthorized("the token's header names no key (kid)")
        key = self.ring.get(kid)
        if key is None:
            raise _unauthorized("the token is signed with a key this node does not know")
        if header.get("alg") != key.alg:
            raise _unauthorized(f"the token's algorithm is not {key.alg}, its key's")
        claims = self._decode(token, key)
        exp = _number(claims.get("exp"))
        if exp is None:
            raise _unauthorized("the token's exp is not a time")
        nbf = None
        if "nbf" in claims:
            nbf = _number(claims["nbf"])
            if nbf is None:
                raise _unauthorized("the token's nbf is not a time")
        self._check_times(exp, nbf)
        principal = principal_of(claims.get("sub"), claims.get("role"))
        if principal is None:
            raise _unauthorized(
                "the token needs sub (1-64 characters of A-Z a-z 0-9 _ -) and role "
                "(buyer, seller, admin or gateway)"
            )
        return _Cached(principal, exp, nbf)

    def _decode(self, token: str, key: TokenKey) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.verify_key,
                algorithms=[key.alg],
                audience=self.audience,
                options=_OPTIONS,
            )
        except jwt.InvalidSignatureError:
            raise _unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthorized(f"the token has no {exc.claim} claim") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise _unauthorized(f"the token is not meant for {self.audience}") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("the bearer token is not a valid JWT") from None
        return claims

    def _check_times(self, exp: float, nbf: float | None) -> None:
        now = self.clock.time()
        if now > exp + self.leeway_s:
            raise _unauthorized("the token has expired")
        if nbf is not None and now + self.leeway_s < nbf:
            raise _unauthorized("the token is not valid yet")

    def cached(self) -> int:
        """How many verified tokens are cached (for tests and metrics)."""
        return len(self._cache)


def mint(
    key: TokenKey,
    *,
    sub: str,
    role: str,
    ttl_s: float,
    now: float,
    audience: str = AUDIENCE,
) -> str:
    """A token for ``sub`` acting as ``role``, valid for ``ttl_s`` seconds from ``now``."""
    if key.sign_key is None:
        raise ValueError(f"key {key.kid} can only verify (it is a public key)")
    if principal_of(sub, role) is None:
        raise ValueError(f"not a valid principal: sub={sub!r} role={role!r}")
    if not ttl_s > 0 or not math.isfinite(ttl_s):
        raise ValueError("ttl_s must be a positive number of seconds")
    claims = {
        "sub": sub,
        "role": role,
        "aud": audience,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    return jwt.encode(
        claims,
        key.sign_key,
        algorithm=key.alg,
        headers={"kid": key.kid},
    )
