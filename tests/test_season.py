"""Tests for sitewatch.kernels.season: observation days and the seasonal window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from sitewatch.kernels.season import (
    MAX_DAY, SEASON_DAY, check_season_days, epoch_day, epoch_days, in_season_np,
)


def _d(s: str) -> int:
    return epoch_day(np.datetime64(s))


def test_epoch_day_of_every_date_form():
    assert epoch_day(np.datetime64("1970-01-01")) == 0
    assert epoch_day("2026-07-01") == epoch_day(dt.date(2026, 7, 1)) == 20635
    assert epoch_day(np.datetime64("2026-07-01T23:59:59.999")) == 20635
    # an aware datetime counts by its UTC date
    assert epoch_day(dt.datetime(2026, 7, 2, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))) == 20635
    assert epoch_day(pd.Timestamp("2026-07-02T01:00+03:00")) == 20635
    assert epoch_day(20635) == 20635
    np.testing.assert_array_equal(epoch_days(np.array(["2026-07-01T08", "1970-01-02"], "datetime64[ns]")), [20635, 1])
    assert epoch_days(["2026-07-01", dt.date(1970, 1, 2)]).dtype == np.uint16


@pytest.mark.parametrize("bad", [True, -1, MAX_DAY + 1, "2150-01-01", "not a date", np.datetime64("NaT"), 1.5])
def test_bad_dates_are_named(bad):
    with pytest.raises(ValueError, match="observation date"):
        epoch_day(bad)


def test_bad_date_arrays_are_named():
    with pytest.raises(ValueError, match="NaT"):
        epoch_days(np.array(["2026-01-01", "NaT"], "datetime64[D]"))
    with pytest.raises(ValueError, match="one date per time step"):
        epoch_days(np.zeros((2, 2), "datetime64[D]"))


def test_season_day_by_month_and_day_in_every_year():
    assert SEASON_DAY.shape == (MAX_DAY + 1,) and SEASON_DAY.min() == 0 and SEASON_DAY.max() == 364
    for year in (1970, 2023, 2024, 2100):  # 2100 is not a leap year
        assert SEASON_DAY[_d(f"{year}-01-01")] == 0
        assert SEASON_DAY[_d(f"{year}-02-28")] == 58
        assert SEASON_DAY[_d(f"{year}-03-01")] == 59
        assert SEASON_DAY[_d(f"{year}-12-31")] == 364
    assert SEASON_DAY[_d("2024-02-29")] == 58  # the leap day counts as 28 February
    # every day of a non-leap year once; a leap year repeats only 28 February
    days = SEASON_DAY[_d("2023-01-01"):_d("2024-01-01")]
    np.testing.assert_array_equal(days, np.arange(365))
    leap = SEASON_DAY[_d("2024-01-01"):_d("2025-01-01")]
    assert len(leap) == 366 and np.array_equal(np.unique(leap), np.arange(365)) and (leap == 58).sum() == 2


def test_in_season_wraps_over_the_year_end():
    target = _d("2026-01-03")
    days = np.array([_d(s) for s in ("2025-12-26", "2025-12-27", "2024-12-27", "2026-01-10", "2026-01-11",
                                     "2025-07-01", "2026-01-03")], np.uint16)
    np.testing.assert_array_equal(in_season_np(days, target, 7), [False, True, True, True, False, False, True])
    np.testing.assert_array_equal(in_season_np(days, _d("2025-12-30"), 3), [False, True, True, False, False, False, False])


def test_in_season_across_leap_years():
    # 29 February is within 1 day of 1 March and 0 days of 28 February, whatever the year
    leap = np.array([_d("2024-02-29")], np.uint16)
    assert in_season_np(leap, _d("2025-03-01"), 1)[0] and in_season_np(leap, _d("2023-02-28"), 1)[0]
    assert in_season_np(leap, _d("2025-03-02"), 2)[0] and not in_season_np(leap, _d("2025-03-02"), 1)[0]
    assert not in_season_np(np.array([_d("2024-02-27")], np.uint16), _d("2025-03-02"), 2)[0]
    assert in_season_np(np.array([_d("2024-03-31")], np.uint16), _d("2025-03-01"), 30)[0]
    assert not in_season_np(np.array([_d("2024-04-01")], np.uint16), _d("2025-03-01"), 30)[0]
    # a target on the leap day: the window is that of 28 February
    days = np.array([_d("2025-02-28"), _d("2025-03-14"), _d("2025-03-15"), _d("2025-02-14"), _d("2025-02-13")], np.uint16)
    np.testing.assert_array_equal(in_season_np(days, _d("2024-02-29"), 14), [True, True, False, True, False])


def test_the_widest_window_is_the_whole_year():
    days = np.arange(_d("2024-01-01"), _d("2026-01-01"), dtype=np.uint16)
    assert in_season_np(days, _d("2025-06-15"), 182).all()
    assert not in_season_np(days, _d("2025-06-15"), 181).all()


@pytest.mark.parametrize("bad", [0, 183, -5, True, 1.5, "30"])
def test_season_days_validated(bad):
    with pytest.raises(ValueError, match="season_days got"):
        check_season_days(bad)
    assert check_season_days(None) is None and check_season_days(np.int64(30)) == 30
