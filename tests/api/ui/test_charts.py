from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.ui.charts import bars, histogram, rates

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_rates_spread_each_amount_over_its_own_seconds() -> None:
    # 100 tokens over seconds 0-10, then 50 over seconds 30-40: 4 buckets of 10 s.
    series = rates([(at(10), 10.0, 100), (at(40), 10.0, 50)], buckets=4)
    assert series.start == T0 and series.seconds == 10.0 and series.span == 40.0
    assert series.values == [10.0, 0.0, 0.0, 5.0]
    # One batch across two buckets splits by overlap; the amounts are kept whole.
    split = rates([(at(15), 10.0, 100), (at(20), 20.0, 0)], buckets=2)
    assert split.values == pytest.approx([50 / 10, 50 / 10])
    assert sum(v * split.seconds for v in split.values) == pytest.approx(100)


def test_rates_of_nothing_and_of_an_instant() -> None:
    assert rates([]).values == []
    assert rates([(at(5), 0.0, 7)]).values == []  # no time passed: no rate to give


def test_histogram_bins_cover_every_value() -> None:
    assert histogram([]) == []
    assert histogram([3, 3, 5]) == [("3", 2), ("4", 0), ("5", 1)]
    wide = histogram(list(range(1, 101)), bins=4)
    assert wide == [("1-25", 25), ("26-50", 25), ("51-75", 25), ("76-100", 25)]


def test_bars_are_escaped_svg_with_the_peak_on_the_axis() -> None:
    svg = str(bars([1.0, 4.0, 2.0], title="<t>", unit="tok/s", labels=("a&b", "+3s")))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('<rect class="bar"') == 3
    assert "4.0 tok/s" in svg and "&lt;t&gt;" in svg and "a&amp;b" in svg
    assert '<rect class="bar"' not in str(bars([], title="t", unit="u", labels=("", "")))
