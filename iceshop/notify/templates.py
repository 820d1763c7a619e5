"""What a buyer reads: the flash-window message, in Turkish and in English.

WhatsApp only lets a business open a conversation with a *template* approved in
advance: a name, a language, and numbered body parameters filled in per message. So a
message is built here as a template name, a language code and its parameters, and also
as the same message in plain text for the providers that take text (``log``,
``webhook``). Both come from one table per locale, so they cannot drift apart.

The template (registered with Meta under one name, here ``iceshop_flash_window`` by
default, with a ``tr`` and an ``en`` translation) has four body parameters::

    {{1}} product   {{2}} unit price with currency   {{3}} closing time   {{4}} window id

Prices are in minor units on the wire; they are shown with the currency's own number of
decimals (2 unless the currency says otherwise) in the locale's number format:
``1.234,50 TL`` in Turkish, ``TRY 1,234.50`` in English. The closing time is shown in
Turkey's time (UTC+3 all year since 2016) for Turkish and in UTC for English, the zone
named, since the wire's UTC would confuse a buyer in Istanbul. A locale other than
``tr`` or ``en`` falls back to ``tr``, the contract's default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from iceshop.notify.provider import Outbound
from iceshop.notify.request import NotifyRequest
from iceshop.wire import parse_time

__all__ = [
    "DEFAULT_TEMPLATE",
    "LOCALES",
    "format_closing",
    "format_price",
    "render",
]

DEFAULT_TEMPLATE: Final = "iceshop_flash_window"

#: Currencies whose minor unit is not a hundredth (ISO 4217).
_EXPONENTS: Final[dict[str, int]] = {
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
}


@dataclass(frozen=True)
class _Locale:
    language: str
    """The template language code WhatsApp expects."""
    thousands: str
    decimal: str
    currency_first: bool
    utc_offset_s: int
    zone: str
    time_format: str
    text: str
    """The plain-text message, with ``{product}``, ``{price}``, ``{closes}``, ``{window}``."""


LOCALES: Final[dict[str, _Locale]] = {
    "tr": _Locale(
        language="tr",
        thousands=".",
        decimal=",",
        currency_first=False,
        utc_offset_s=3 * 3600,
        zone="TSİ",
        time_format="%d.%m.%Y %H:%M",
        text=(
            "Flaş satış başladı: {product}, tanesi {price}. "  # noqa: RUF001 - Turkish dotless i
            "Son katılım {closes}. Katılmak için pencere: {window}"  # noqa: RUF001
        ),
    ),
    "en": _Locale(
        language="en",
        thousands=",",
        decimal=".",
        currency_first=True,
        utc_offset_s=0,
        zone="UTC",
        time_format="%Y-%m-%d %H:%M",
        text=(
            "Flash sale on: {product} at {price} each. Join by {closes}. Window to join: {window}"
        ),
    ),
}

_CURRENCY_NAMES: Final[dict[tuple[str, str], str]] = {("tr", "TRY"): "TL"}


def _locale(code: str) -> tuple[str, _Locale]:
    key = code if code in LOCALES else "tr"
    return key, LOCALES[key]


def format_price(amount_minor: int, currency: str, locale: str) -> str:
    """``123450, "TRY"`` as ``1.234,50 TL`` (tr) or ``TRY 1,234.50`` (en)."""
    key, loc = _locale(locale)
    exponent = _EXPONENTS.get(currency, 2)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**exponent)
    digits = f"{whole:,}".replace(",", loc.thousands)
    if exponent:
        digits += loc.decimal + str(fraction).rjust(exponent, "0")
    name = _CURRENCY_NAMES.get((key, currency), currency)
    return f"{sign}{name} {digits}" if loc.currency_first else f"{sign}{digits} {name}"


def format_closing(wire_time: str, locale: str) -> str:
    """A wire time (``...Z``) as the locale shows it, zone named."""
    _, loc = _locale(locale)
    shifted = time.gmtime(int(parse_time(wire_time)) + loc.utc_offset_s)
    return f"{time.strftime(loc.time_format, shifted)} {loc.zone}"


def render(request: NotifyRequest, template: str = DEFAULT_TEMPLATE) -> Outbound:
    """The message telling ``request``'s buyer about its window."""
    key, loc = _locale(request.locale)
    params = (
        request.product_id,
        format_price(request.unit_price_minor, request.currency, key),
        format_closing(request.expires_at, key),
        request.window_id,
    )
    product, price, closes, window = params
    return Outbound(
        notification_id=request.notification_id,
        to=request.phone,
        locale=loc.language,
        template=template,
        params=params,
        text=loc.text.format(product=product, price=price, closes=closes, window=window),
    )
