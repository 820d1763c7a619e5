"""The node's checks on every command, in the contract's order, for routing to call.

Routing is synchronous and runs before any actor sees a request, so everything here is
in memory: :meth:`Gate.authenticate` turns the ``Authorization`` header into a
principal (a JWT through :class:`~iceshop.auth.tokens.TokenVerifier`, an API key
through :class:`~iceshop.auth.apikeys.ApiKeyRegistry`) or ``unauthorized``; after the
subject and body have decoded (``invalid_request``), :meth:`Gate.admit` applies the
role rules (``forbidden``, :mod:`iceshop.auth.policy`) and the per-buyer rates
(``overloaded``, :mod:`iceshop.auth.limits`).

With authentication off there is no principal and every role rule passes; the rate
limits still apply, since they protect the node, not a principal's rights.
"""

from __future__ import annotations

from collections.abc import Mapping

from iceshop.auth.apikeys import ApiKeyRegistry, is_api_key
from iceshop.auth.limits import BuyerLimits
from iceshop.auth.policy import authorize
from iceshop.auth.tokens import TokenVerifier
from iceshop.protocol import Principal
from iceshop.wire import Command, CommandKind, ErrorCode, RequestHeaders, ShopError

__all__ = ["Gate"]


class Gate:
    """Authentication, authorization and rate limits of one node."""

    __slots__ = ("apikeys", "limits", "required", "verifier")

    def __init__(
        self,
        *,
        required: bool,
        verifier: TokenVerifier | None = None,
        apikeys: ApiKeyRegistry | None = None,
        limits: BuyerLimits | None = None,
    ) -> None:
        self.required = required
        self.verifier = verifier
        self.apikeys = apikeys if apikeys is not None else ApiKeyRegistry()
        self.limits = limits

    def authenticate(self, headers: RequestHeaders) -> Principal | None:
        """The principal of the request; ``None`` when authentication is off."""
        if not self.required:
            return None
        token = headers.bearer_token()
        if token is None:
            if headers.authorization is None:
                raise ShopError(
                    ErrorCode.UNAUTHORIZED,
                    "missing credentials: send Authorization: Bearer <token or API key>",
                )
            raise ShopError(
                ErrorCode.UNAUTHORIZED, "the Authorization header must be Bearer <token>"
            )
        if is_api_key(token):
            return self.apikeys.verify(token)
        if self.verifier is None:
            raise ShopError(ErrorCode.UNAUTHORIZED, "this node accepts API keys only")
        return self.verifier.verify(token)

    def admit(
        self,
        principal: Principal | None,
        kind: CommandKind,
        ids: Mapping[str, str],
        body: Command,
    ) -> None:
        """Raise ``forbidden`` or ``overloaded`` if the command may not go on."""
        self.authorize(principal, kind, ids, body)
        self.throttle(kind, ids, body)

    def authorize(
        self,
        principal: Principal | None,
        kind: CommandKind,
        ids: Mapping[str, str],
        body: Command,
    ) -> None:
        """Raise ``forbidden`` if the principal may not send this command."""
        refused = authorize(principal, kind, ids, body)
        if refused is not None:
            raise refused

    def throttle(self, kind: CommandKind, ids: Mapping[str, str], body: Command) -> None:
        """Raise ``overloaded`` when the buyer is over its rate; takes a token otherwise.
        Call it last, once nothing else refuses the request: a refused request must not
        use up the buyer's rate."""
        if self.limits is not None:
            refused = self.limits.check(kind, ids, body)
            if refused is not None:
                raise refused
