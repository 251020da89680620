import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from guardgrid.risk import MIN_SPREAD_BYTES, erfc, normal_sf, oom_risk


def test_erfc_matches_the_standard_library_to_a_tenth_of_a_millionth():
    xs = np.linspace(-6, 6, 2001)
    expected = np.array([math.erfc(x) for x in xs])
    assert np.max(np.abs(erfc(xs) - expected) / np.maximum(expected, 1e-300)) < 1.2e-7 or \
        np.max(np.abs(erfc(xs) - expected)) < 1e-9


def test_normal_tail_is_half_at_zero_and_falls_with_z():
    assert normal_sf(0.0) == np.float64(0.5) or abs(normal_sf(0.0) - 0.5) < 1e-7
    assert abs(normal_sf(1.6448536) - 0.05) < 1e-6
    assert normal_sf(3.0) < normal_sf(2.0) < normal_sf(1.0)


def test_risk_grows_with_demand_and_with_forecast_spread_when_close_to_capacity():
    gib = 2**30
    low, mid, high = oom_risk([50 * gib, 60 * gib, 70 * gib], 64 * gib, 4 * gib)
    assert low < 0.01 < mid < 0.9 < high
    assert oom_risk(60 * gib, 64 * gib, 8 * gib) > oom_risk(60 * gib, 64 * gib, 2 * gib)


def test_zero_spread_is_floored_and_a_node_without_memory_is_certain_to_fail():
    assert oom_risk(10.0, 10.0 + 10 * MIN_SPREAD_BYTES, 0.0) < 1e-6
    assert oom_risk(0.0, 0.0, 1.0) == 1.0


def _textbook_erfc(x: np.ndarray) -> np.ndarray:
    """Numerical Recipes `erfcc` exactly as printed: the reference the in-place version must equal bit for bit."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    ans = t * np.exp(poly)
    return np.where(x >= 0, ans, 2.0 - ans)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=600))
def test_in_place_erfc_gives_the_textbook_formulas_bits(values):
    x = np.array(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        expected = _textbook_erfc(x)
        actual = erfc(x)
    assert actual.shape == x.shape
    assert np.array_equal(actual.view(np.int64), expected.view(np.int64))
