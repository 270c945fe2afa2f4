"""Value types shared by several producers' events: money and order lines."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Base of every event payload: unknown fields are kept so additive changes never break readers."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Money(WireModel):
    """An amount in integer minor units (cents) with an ISO 4217 currency code."""

    amount: int
    currency: str = Field(min_length=3, max_length=3)


class Line(WireModel):
    """A quantity of one sku."""

    sku: str
    quantity: int = Field(gt=0)


class BackorderedLine(Line):
    """Issue 13: units of an order promised from incoming stock (a purchase order) rather than
    from the shelf; `expected_at` is when the stock is expected (None: not known)."""

    expected_at: datetime | None = None


class PricedLine(Line):
    """An order line with the prices the customer was quoted (all per line, in minor units)."""

    unit_price: Money
    discount: Money
    tax: Money
    total: Money


# ISO 4217 List One, the active alphabetic codes as published by SIX (the maintenance agency,
# https://www.six-group.com/en/products-services/financial-information/data-standards.html),
# checked against amendment 179 (2025). Left out on purpose, as nothing a shop prices in:
# precious metals (XAU, XAG, XPD, XPT), bond-market units (XBA, XBB, XBC, XBD), XDR, XSU, XUA,
# the testing code XTS and XXX ("no currency"). ANG stays while XCG replaces it (2025-2026).
# Validated at the HTTP edge only (`libs.kit.validation.CurrencyCode`): `Money` in events keeps
# accepting any three letters, so no event already published is refused by a reader.
_ISO_4217 = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD
    EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD
    IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL
    MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES
    VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
ISO_4217_CURRENCIES = frozenset(_ISO_4217.split())


def is_iso_currency(code: str) -> bool:
    """Whether `code` is an active ISO 4217 currency (upper case, as the standard writes it)."""
    return code in ISO_4217_CURRENCIES
