"""Money for people: minor units of an ISO 4217 currency written with its own decimals."""

# ISO 4217 minor-unit exponents that differ from the usual two decimals.
_MINOR_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def minor_unit_digits(currency: str) -> int:
    """Decimals of the currency's minor unit: 2 for EUR, 0 for JPY, 3 for KWD."""
    return _MINOR_DIGITS.get(currency.upper(), 2)


def format_money(amount: int, currency: str) -> str:
    """Minor units as text for people: `format_money(1234, "EUR") == "EUR 12.34"`."""
    digits = minor_unit_digits(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    return f"{currency} {sign}{whole}" + (f".{fraction:0{digits}d}" if digits else "")
