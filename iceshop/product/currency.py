"""One currency per product: the seller asks the product before it stores a listing.

The contract has all listings of one product share one currency. The product is the
only actor that sees every seller's listing, so it decides; the seller must hear the
decision *before* it commits, or its client would be told ``ok`` for a listing the
product then keeps out of its catalog. So an upsert that brings a currency the seller
has not yet listed the product in (a new listing, or a change of currency) first sends
``ClaimCurrency`` to the product and stores the listing only when ``CurrencyGranted``
comes back; a refusal is an ``invalid_request`` naming the field ``currency``, and the
seller stores nothing.

*A claim is a durable reservation.* Two sellers may list a new product at the same
moment in different currencies: both claims reach the product before either listing
does (a listing is announced only after the seller's commit). Checking the catalog alone
would grant both, and the second listing would be refused after its seller said ``ok``.
So a granted claim is recorded by the product as an event (``CurrencyClaimed``, answered
after commit) and counts like a listing until the seller's ``ListingChanged`` in that
currency confirms it (it then gives way to the listing) or until it lapses,
``ProductActor.claim_ttl_s`` after it was granted. The first claim wins; the other seller
is refused until the claim lapses unconfirmed (its seller failed to commit).

Why durable rather than in memory: a product that restarts or is passivated between a
grant and the listing's arrival would otherwise forget the reservation and grant the
other currency too. Claims are rare (a listing's first upsert or a change of currency),
so the extra write costs little; a re-upsert in the listing's stored currency asks
nothing at all. Why a time limit: a seller that crashed before its commit never
confirms, and its claim must not lock the product forever; the limit is far beyond the
seller's wait for the answer, so a seller that got the grant commits well inside it.

A claim never changes the catalog or the product's currency; only listings do.
"""

from __future__ import annotations

import msgspec

__all__ = ["ClaimCurrency", "CurrencyGranted"]


class ClaimCurrency(msgspec.Struct, frozen=True):
    """A seller asks to list the product in ``currency`` (a request to the product)."""

    seller_id: str
    currency: str


class CurrencyGranted(msgspec.Struct, frozen=True):
    """The product holds ``currency`` for the seller's listing (until it lapses)."""

    product_id: str
    seller_id: str
    currency: str
