"""The demo's shop: sellers, listings, buyers and their intents, made up but plausible.

Everything is generated from a seed, so two runs with the same seed send the same
requests. The products are chosen so that each exercises one path of the campaign
policy (``docs/policy.md``), and the scenario checks exactly that path:

==========================  ==========  =============================================
product                     role        what should happen
==========================  ==========  =============================================
``cay-bardagi-seti``        crowd       strong demand, stock far below it: a window
                                        that a flash crowd sells out
``turk-kahvesi-makinesi``   succeeds    a window that reaches its tipping point
``bakir-cezve``             fails       a window too few buyers join: it fails
``hereke-ipek-hali``        price_gap   buyers' limits are all below the floor: no window
``antep-fistikli-lokum``    below_min   too little demand: no window
==========================  ==========  =============================================

Money is in kuruş (``TRY`` minor units). Phones are E.164: Turkish mobiles (+90 5xx) and
a few UK mobiles in Ofcom's range reserved for drama (+44 7700 900xxx).
"""

# Turkish text is meant: its dotless i is a letter, not a lookalike.
# ruff: noqa: RUF001

from __future__ import annotations

import random
from typing import Final, Literal

import msgspec

__all__ = ["Buyer", "Catalog", "Intent", "Listing", "Product", "Role", "Seller", "build_catalog"]

Role = Literal["crowd", "succeeds", "fails", "price_gap", "below_min"]

#: Roles whose product the campaign should give a window.
WINDOW_ROLES: Final = ("crowd", "succeeds", "fails")


class Buyer(msgspec.Struct, frozen=True, kw_only=True):
    buyer_id: str
    name: str
    phone: str
    locale: Literal["tr", "en"]
    whatsapp_opt_in: bool


class Seller(msgspec.Struct, frozen=True, kw_only=True):
    seller_id: str
    name: str
    max_active_windows: int = 3


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    seller_id: str
    product_id: str
    title: str
    list_price_minor: int
    floor_price_minor: int
    stock: int
    currency: str = "TRY"


class Product(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    title: str
    role: Role


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    intent_id: str
    buyer_id: str
    product_id: str
    quantity: int
    max_price_minor: int


class Catalog(msgspec.Struct, frozen=True, kw_only=True):
    sellers: list[Seller]
    listings: list[Listing]
    products: list[Product]
    buyers: list[Buyer]
    intents: list[Intent]

    def product(self, role: Role) -> Product:
        return next(p for p in self.products if p.role == role)

    def listings_of(self, product_id: str) -> list[Listing]:
        return [x for x in self.listings if x.product_id == product_id]

    def intents_of(self, product_id: str) -> list[Intent]:
        return [i for i in self.intents if i.product_id == product_id]

    def accepted_quantity(self, product_id: str, price_minor: int) -> int:
        """Open quantity whose limit accepts ``price_minor`` (before anyone joins)."""
        return sum(
            i.quantity for i in self.intents_of(product_id) if i.max_price_minor >= price_minor
        )


SELLERS: Final = [
    Seller(seller_id="kadikoy-zuccaciye", name="Kadıköy Züccaciye"),
    Seller(seller_id="bogazici-ev", name="Boğaziçi Ev Gereçleri"),
    Seller(seller_id="galata-kahve", name="Galata Kahve Evi"),
    Seller(seller_id="anadolu-bakir", name="Anadolu Bakırcılık"),
    Seller(seller_id="ege-hali", name="Ege Halı ve Kilim"),
]

PRODUCTS: Final = [
    Product(
        product_id="cay-bardagi-seti", title="İnce belli çay bardağı seti, 12 parça", role="crowd"
    ),
    Product(product_id="turk-kahvesi-makinesi", title="Türk kahvesi makinesi", role="succeeds"),
    Product(product_id="bakir-cezve", title="El dövmesi bakır cezve", role="fails"),
    Product(product_id="hereke-ipek-hali", title="Hereke ipek halı, 60x90", role="price_gap"),
    Product(
        product_id="antep-fistikli-lokum", title="Antep fıstıklı lokum, 500 g", role="below_min"
    ),
]


def _listing(seller: str, product: str, list_try: float, floor_try: float, stock: int) -> Listing:
    title = next(p.title for p in PRODUCTS if p.product_id == product)
    return Listing(
        seller_id=seller,
        product_id=product,
        title=title,
        list_price_minor=round(list_try * 100),
        floor_price_minor=round(floor_try * 100),
        stock=stock,
    )


LISTINGS: Final = [
    _listing("kadikoy-zuccaciye", "cay-bardagi-seti", 449.90, 329.90, 40),
    _listing("bogazici-ev", "cay-bardagi-seti", 429.00, 349.00, 18),
    _listing("galata-kahve", "turk-kahvesi-makinesi", 1899.00, 1499.00, 12),
    _listing("bogazici-ev", "turk-kahvesi-makinesi", 1999.00, 1650.00, 6),
    _listing("anadolu-bakir", "bakir-cezve", 389.00, 289.00, 10),
    _listing("kadikoy-zuccaciye", "bakir-cezve", 419.00, 339.00, 8),
    _listing("ege-hali", "hereke-ipek-hali", 48000.00, 42000.00, 3),
    _listing("galata-kahve", "antep-fistikli-lokum", 249.00, 199.00, 50),
]

FIRST_NAMES_TR: Final = (  # noqa: SIM905 - a list of names reads better as text
    "Ayşe Mehmet Zeynep Mustafa Elif Emre Fatma Ahmet Merve Burak Selin Can Deniz Hakan "
    "Ece Oğuz Gizem Serkan Yasemin Kerem Büşra Onur Esra Tolga Derya Cem Pınar Umut İrem "
    "Barış"
).split()
LAST_NAMES_TR: Final = (  # noqa: SIM905 - a list of names reads better as text
    "Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım Öztürk Aydın Özdemir Arslan Doğan "
    "Kılıç Aslan Çetin Kara Koç Kurt Özkan Şimşek"
).split()
NAMES_EN: Final = (
    "Emily Clarke",
    "James Walker",
    "Oliver Hughes",
    "Hannah Price",
    "Daniel Brooks",
    "Laura Bennett",
    "Thomas Reed",
    "Chloe Fisher",
    "Jack Morgan",
    "Grace Palmer",
    "Samuel Hayes",
    "Lucy Foster",
)

#: How many buyers hold an intent for each product (at most the number of buyers).
_INTENT_BUYERS: Final[dict[Role, int]] = {
    "succeeds": 14,
    "fails": 7,
    "price_gap": 6,
    "below_min": 2,
}
#: Range of buyers' limits per product, in lira (multiples of 5 TRY are drawn).
_LIMITS_TRY: Final[dict[Role, tuple[int, int]]] = {
    "crowd": (300, 480),
    "succeeds": (1450, 2100),
    "fails": (295, 420),
    "price_gap": (25_000, 38_000),
    "below_min": (200, 260),
}
MIN_BUYERS: Final = 20


def _phone(rng: random.Random, locale: str) -> str:
    if locale == "en" and rng.random() < 0.5:
        return f"+447700900{rng.randrange(1000):03d}"
    return f"+905{rng.choice('0345')}{rng.randrange(10)}{rng.randrange(10_000_000):07d}"


def _buyers(rng: random.Random, count: int) -> list[Buyer]:
    buyers = []
    for n in range(1, count + 1):
        locale: Literal["tr", "en"] = "en" if rng.random() < 0.25 else "tr"
        if locale == "tr":
            name = f"{rng.choice(FIRST_NAMES_TR)} {rng.choice(LAST_NAMES_TR)}"
        else:
            name = rng.choice(NAMES_EN)
        buyers.append(
            Buyer(
                buyer_id=f"b-{n:03d}",
                name=name,
                phone=_phone(rng, locale),
                locale=locale,
                whatsapp_opt_in=rng.random() < 0.6,
            )
        )
    return buyers


def build_catalog(seed: int = 2024, buyers: int = 60) -> Catalog:
    """A shop of ``buyers`` buyers (at least ``MIN_BUYERS``) and the fixed catalogue."""
    if buyers < MIN_BUYERS:
        raise ValueError(f"buyers: at least {MIN_BUYERS}, got {buyers}")
    rng = random.Random(seed)
    people = _buyers(rng, buyers)
    intents: list[Intent] = []
    for product in PRODUCTS:
        # Three in four buyers want the tea glasses; the other products have a fixed few.
        wanted = round(0.75 * buyers) if product.role == "crowd" else _INTENT_BUYERS[product.role]
        low, high = _LIMITS_TRY[product.role]
        for buyer in rng.sample(people, wanted):
            quantity = 1
            if product.role in ("crowd", "succeeds") and rng.random() < 0.2:
                quantity = 2
            intents.append(
                Intent(
                    intent_id=f"i-{product.product_id[:12]}-{buyer.buyer_id}",
                    buyer_id=buyer.buyer_id,
                    product_id=product.product_id,
                    quantity=quantity,
                    max_price_minor=rng.randrange(low, high + 1, 5) * 100,
                )
            )
    return Catalog(
        sellers=list(SELLERS),
        listings=list(LISTINGS),
        products=list(PRODUCTS),
        buyers=people,
        intents=intents,
    )
