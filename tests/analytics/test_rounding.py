from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bourse.analytics.rounding import EXTRA_PLACES, PricePlaces, divide
from bourse.model.instruments import DEFAULT_UNIVERSE

D = Decimal


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        ("4500.0000", "400", "11.25"),  # terminates: exact
        ("20.00", "2", "10.00"),  # at least the price places
        ("200.03", "2", "100.015"),  # exact beyond them
        ("1", "1024", "0.0009765625"),
        ("1", "3", "0.333333"),  # 2 price places + 4
        ("2", "3", "0.666667"),
        ("-1", "3", "-0.333333"),
        ("5", "-3", "-1.666667"),
    ],
)
def test_exact_when_the_quotient_terminates_else_rounded(
    numerator: str, denominator: str, expected: str
) -> None:
    result = divide(D(numerator), D(denominator), price_places=2)
    assert result == D(expected)
    assert str(result) == expected


def test_a_quotient_that_would_be_a_tie_terminates_so_it_is_exact() -> None:
    assert divide(1, 8, price_places=0, extra_places=1) == D("0.125")
    assert divide(D(1), D(7), price_places=0, extra_places=3) == D("0.143")
    assert divide(D(-1), D(7), price_places=0, extra_places=3) == D("-0.143")


def test_division_by_zero_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        divide(D(1), D(0), price_places=2)


def test_price_places_come_from_the_instruments() -> None:
    places = PricePlaces(DEFAULT_UNIVERSE, unknown=6)
    assert places("AAPL") == 2 and places("BTC-USD") == 2 and places("XYZ") == 6


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-(10**6), max_value=10**6).filter(bool),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=0, max_value=6),
)
def test_divide_is_exact_or_within_half_a_quantum(
    numerator: int, denominator: int, num_places: int, price_places: int
) -> None:
    n = D(numerator).scaleb(-num_places)
    result = divide(n, denominator, price_places=price_places)
    exact = Fraction(numerator, 10**num_places) / denominator
    places = price_places + EXTRA_PLACES
    if Fraction(result) != exact:
        assert abs(Fraction(result) - exact) <= Fraction(1, 2 * 10**places)
        assert result.as_tuple().exponent == -places
    else:
        assert -int(result.as_tuple().exponent) >= price_places


def _reference_divide(numerator: Decimal, denominator: int, price_places: int) -> Decimal:
    """The rule spelt out with fractions: exact with at least `price_places` places when the
    quotient terminates, else rounded to the nearest at price places + EXTRA_PLACES."""
    exact = Fraction(numerator) / denominator
    bottom, places = exact.denominator, 0
    while bottom % 2 == 0 or bottom % 5 == 0:
        bottom //= 2 if bottom % 2 == 0 else 5
    if bottom == 1:
        while (exact * 10**places).denominator != 1:
            places += 1
        places = max(places, price_places)
        # From a string, which Decimal reads exactly: scaleb() would round to the default
        # context's 28 digits (10000000.000000476837158203125 has 29).
        return D(f"{int(exact * 10**places)}E-{places}")
    places = price_places + EXTRA_PLACES
    return D(f"{round(exact * 10**places)}E-{places}")


@given(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=1, max_value=10**9),
    st.sampled_from([1, 2, 4, 5, 8, 25, 64, 125, 625, 1024, 3125, 3, 7, 12, 40, 390625]),
    st.integers(min_value=0, max_value=8),
)
# Found by Hypothesis in CI: an exact quotient of 29 digits (the reference rounded it to 28).
@example(numerator=20971520000001, num_places=0, factor=2**21, power_of_2_or_5=1, price_places=0)
def test_divide_gives_exactly_the_digits_of_the_rule(
    numerator: int, num_places: int, factor: int, power_of_2_or_5: int, price_places: int
) -> None:
    n = D(numerator).scaleb(-num_places)
    denominator = factor * power_of_2_or_5
    result = divide(n, denominator, price_places=price_places)
    expected = _reference_divide(n, denominator, price_places)
    assert result == expected and result.as_tuple().exponent == expected.as_tuple().exponent
