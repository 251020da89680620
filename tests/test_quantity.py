from decimal import Decimal

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from guardgrid.quantity import QuantityError, format_bytes, memory_bytes, parse_quantity


@pytest.mark.parametrize(("text", "expected"), [
    ("128Gi", 128 * 2**30), ("1Ki", 1024), ("1Mi", 2**20), ("2Ti", 2 * 2**40), ("1Pi", 2**50), ("1Ei", 2**60),
    ("1k", 1000), ("1M", 10**6), ("1G", 10**9), ("1T", 10**12), ("1P", 10**15), ("1E", 10**18),
    ("500m", Decimal("0.5")), ("250u", Decimal("0.00025")), ("5n", Decimal("5e-9")),
    ("1e3", 1000), ("1E3", 1000), ("1.5e-3", Decimal("0.0015")), ("+2", 2), ("-1", -1), ("0.5Gi", 2**29),
    (".5", Decimal("0.5")), ("12", 12), ("3.", 3),
])
def test_every_suffix_parses_to_its_exact_value(text, expected):
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize("bad", ["", "Gi", "12 Gi", "1.2.3", "12GB", "12gi", "1e", "e3", "--1", "1Zi", "1.5ee3"])
def test_a_bad_quantity_raises_an_error_naming_the_value(bad):
    with pytest.raises(QuantityError) as info:
        parse_quantity(bad)
    assert repr(bad) in str(info.value)


def test_non_strings_are_rejected_unless_they_are_plain_numbers():
    assert parse_quantity(3) == 3
    assert parse_quantity(1.5) == Decimal("1.5")
    for bad in (None, True, [], float("nan")):
        with pytest.raises(QuantityError):
            parse_quantity(bad)


def test_memory_rounds_fractional_bytes_up_like_kubernetes():
    assert memory_bytes("1.5") == 2
    assert memory_bytes("100m") == 1
    assert memory_bytes("8Gi") == 8 * 2**30


def test_negative_memory_is_an_error():
    with pytest.raises(QuantityError, match="negative"):
        memory_bytes("-1Gi")


def test_format_bytes_is_short_and_readable():
    assert format_bytes(58.2 * 2**30) == "58.2Gi"
    assert format_bytes(12 * 2**30) == "12Gi"
    assert format_bytes(512 * 2**20) == "512Mi"
    assert format_bytes(1.5 * 2**40) == "1.5Ti"
    assert format_bytes(100) == "100"


def _format_bytes_reference(amount: float) -> str:
    """The plain definition the bisect-based form must reproduce character for character."""
    sign = "-" if amount < 0 else ""
    amount = abs(float(amount))
    for suffix, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if amount >= scale:
            return f"{sign}{f'{amount / scale:.1f}'.removesuffix('.0')}{suffix}"
    return f"{sign}{amount:.0f}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(min_value=-2**53, max_value=2**53).map(float),
                          st.sampled_from([1023.0, 1024.0, 1023.95, 2.0**30 * 58.25, 2.0**40 - 1, 0.0, -0.0])),
                max_size=40))
def test_formatting_matches_the_plain_definition_for_any_amount(amounts):
    assert [format_bytes(a) for a in amounts] == [_format_bytes_reference(a) for a in amounts]


def test_memory_strings_are_parsed_once_and_still_checked():
    assert memory_bytes("96Gi") == memory_bytes("96Gi") == 96 * 2**30
    with pytest.raises(QuantityError):
        memory_bytes("-1Gi")
