"""Kubernetes resource quantities ("128Gi", "500m", "1.5e3") parsed exactly.

Why hand-written: the `kubernetes` client's own parser returns floats through string munging and accepts
some malformed input; GuardGrid compares memory to the byte, so we follow the grammar of
k8s.io/apimachinery/pkg/api/resource exactly, with `Decimal` arithmetic, and name the bad value in every
error so an operator can find it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["QuantityError", "parse_quantity", "memory_bytes", "format_bytes"]


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message names the value."""


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# <signedNumber><suffix>; the number is digits with at most one point and at least one digit.
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([A-Za-z]*|[eE][+-]?\d+)$")
_EXPONENT = re.compile(r"^[eE][+-]?\d+$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity into an exact Decimal in base units (bytes, cores, GPUs).

    Ints and finite floats pass through (JSON from hand-written cluster files sometimes has them).
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: a boolean is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}: not a finite number")
        return Decimal(str(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a string like '128Gi'")
    text = value.strip()
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(f"invalid quantity {value!r}: expected <number><suffix>, e.g. '128Gi' or '500m'")
    number_text, suffix = match.groups()
    try:
        number = Decimal(number_text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise QuantityError(f"invalid quantity {value!r}: bad number") from exc
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if _EXPONENT.match(suffix):
        exponent = int(suffix[1:])
        if abs(exponent) > 40:
            raise QuantityError(f"invalid quantity {value!r}: exponent out of range")
        return number.scaleb(exponent)
    raise QuantityError(
        f"invalid quantity {value!r}: unknown suffix {suffix!r} (use Ki Mi Gi Ti Pi Ei, n u m k M G T P E or e<N>)"
    )


def memory_bytes(value: str | int | float) -> int:
    """A memory quantity in whole bytes, rounded up as Kubernetes does for `Value()`."""
    amount = parse_quantity(value)
    if amount < 0:
        raise QuantityError(f"invalid memory quantity {value!r}: negative")
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


def format_bytes(amount: float) -> str:
    """Human form used in filter messages: '58.2Gi', '512Mi', '1.5Ti'; one decimal at most."""
    sign = "-" if amount < 0 else ""
    amount = abs(float(amount))
    for suffix, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if amount >= scale:
            shown = f"{amount / scale:.1f}".removesuffix(".0")
            return f"{sign}{shown}{suffix}"
    return f"{sign}{amount:.0f}"
