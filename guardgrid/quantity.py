"""Kubernetes resource quantities ("128Gi", "500m", "1.5e3") parsed exactly.

Why hand-written: the `kubernetes` client's own parser returns floats through string munging and accepts
some malformed input; GuardGrid compares memory to the byte, so we follow the grammar of
k8s.io/apimachinery/pkg/api/resource exactly, with `Decimal` arithmetic, and name the bad value in every
error so an operator can find it.
"""

from __future__ import annotations

import bisect
import math
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

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
    if isinstance(value, str):
        return _memory_bytes_of_text(value)
    return _memory_bytes(value)


@lru_cache(maxsize=4096)
def _memory_bytes_of_text(value: str) -> int:
    """Cached: a cluster uses a few dozen distinct memory strings, and Decimal parsing costs ~3 us each; the
    extender reads the pod's requests and limits on every request."""
    return _memory_bytes(value)


def _memory_bytes(value: str | int | float) -> int:
    amount = parse_quantity(value)
    if amount < 0:
        raise QuantityError(f"invalid memory quantity {value!r}: negative")
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


_UNIT_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti")
_UNIT_STEP_LIST = [2.0**10, 2.0**20, 2.0**30, 2.0**40]
_UNIT_SCALE_LIST = [1.0, 2.0**10, 2.0**20, 2.0**30, 2.0**40]


def format_bytes(amount: float) -> str:
    """Human form used in filter messages: '58.2Gi', '512Mi', '1.5Ti'; one decimal at most."""
    magnitude = abs(float(amount))
    unit = bisect.bisect_right(_UNIT_STEP_LIST, magnitude) if magnitude == magnitude else 0  # NaN: bytes
    return _shown(amount < 0, magnitude / _UNIT_SCALE_LIST[unit], unit)


def _shown(negative: bool, number: float, unit: int) -> str:
    digits = f"{number:.1f}".removesuffix(".0") if unit else f"{number:.0f}"
    return f"-{digits}{_UNIT_SUFFIXES[unit]}" if negative else digits + _UNIT_SUFFIXES[unit]
