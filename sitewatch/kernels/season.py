"""Calendar of the baseline state: observation days and the seasonal window around a date.

The baseline state (:mod:`.baseline_ring`) records when each observation was taken as a
``day``: whole days since 1970-01-01 (UTC date of the acquisition), uint16, so days 0 .. 65535
(1970-01-01 .. 2149-06-06). A seasonal baseline (``BaselineParams.season_days = d``) uses only
the observations whose date is within ``d`` days of the target date's, by month and day, in
any year: dates are placed on a 365-day year (1 January = 0 .. 31 December = 364, 29 February
counts as 28 February) and compared circularly, so 28 December and 3 January are 6 days apart
and a leap year shifts nothing (1 March is 1 day after 28/29 February in every year).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

DAY_DTYPE = np.uint16
EPOCH = np.datetime64("1970-01-01", "D")
MAX_DAY = int(np.iinfo(DAY_DTYPE).max)
YEAR = 365
#: ``d`` beyond this covers the whole year (the largest circular distance on 365 days is 182).
MAX_SEASON_DAYS = YEAR // 2


def _season_day_table() -> np.ndarray:
    """Position of every epoch day 0 .. MAX_DAY on a 365-day year (int16)."""
    dates = EPOCH + np.arange(MAX_DAY + 1)
    month = dates.astype("datetime64[M]")
    dom = (dates - month).astype(np.int64)  # 0-based day of the month
    moy = (month.astype(np.int64) % 12)  # 0 = January
    first = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30])  # non-leap month starts
    pos = first[moy] + np.minimum(dom, 27 + (moy != 1) * 4)  # 29 Feb -> 28 Feb (other months: dom <= 30)
    return pos.astype(np.int16)


#: ``SEASON_DAY[day]``: the epoch day's position on the 365-day year (0 .. 364).
SEASON_DAY = _season_day_table()


def epoch_day(t: Any) -> int:
    """Whole days since 1970-01-01 of ``t`` (a ``datetime``/``date`` (aware: its UTC date),
    ``numpy.datetime64``, ISO string, pandas Timestamp, or an int already in days)."""
    if isinstance(t, (bool, np.bool_)):
        raise ValueError(f"observation date got {t!r}; expected a date, datetime, datetime64 or int days since 1970-01-01")
    if isinstance(t, (int, np.integer)):
        d = int(t)
    else:
        if isinstance(t, dt.datetime) and t.tzinfo is not None:
            t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
        elif hasattr(t, "tz_convert") and getattr(t, "tzinfo", None) is not None:  # pandas Timestamp
            t = t.tz_convert("UTC").tz_localize(None)
        try:
            d64 = np.datetime64(t, "D")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"observation date got {t!r}; expected a date, datetime, datetime64 or int days "
                             "since 1970-01-01") from exc
        if np.isnat(d64):
            raise ValueError(f"observation date got {t!r} (not a time); expected a date")
        d = int((d64 - EPOCH).astype(np.int64))
    if not 0 <= d <= MAX_DAY:
        raise ValueError(f"observation date got day {d} since 1970-01-01; expected 0 .. {MAX_DAY} (1970-01-01 .. 2149-06-06)")
    return d


def epoch_days(times: Any) -> np.ndarray:
    """:func:`epoch_day` of each of ``times`` (a sequence or 1-d array), as uint16."""
    arr = np.asarray(times)
    if arr.ndim != 1:
        raise ValueError(f"observation dates got shape {arr.shape!r}; expected one date per time step (1-d)")
    if np.issubdtype(arr.dtype, np.datetime64):
        if np.isnat(arr).any():
            raise ValueError(f"observation dates got a NaT among {arr!r}; expected a date per time step")
        d = (arr.astype("datetime64[D]") - EPOCH).astype(np.int64)
        if d.size and (d.min() < 0 or d.max() > MAX_DAY):
            raise ValueError(f"observation dates got days {d.min()} .. {d.max()} since 1970-01-01; expected 0 .. {MAX_DAY}")
        return d.astype(DAY_DTYPE)
    return np.array([epoch_day(t) for t in arr.tolist()], dtype=DAY_DTYPE)


def check_season_days(season_days: Any) -> int | None:
    """``season_days`` validated: ``None`` (no seasonal window) or an int in 1 .. 182."""
    if season_days is None:
        return None
    if isinstance(season_days, (bool, np.bool_)) or not isinstance(season_days, (int, np.integer)) \
            or not 1 <= int(season_days) <= MAX_SEASON_DAYS:
        raise ValueError(f"baseline season_days got {season_days!r}; expected None (the last N clear observations) or "
                         f"an int in 1 .. {MAX_SEASON_DAYS} (days either side of the target's day of year)")
    return int(season_days)


def in_season_np(day: np.ndarray, target_day: int, season_days: int) -> np.ndarray:
    """Whether each epoch ``day`` (any shape, uint16) lies within ``season_days`` of
    ``target_day``'s month and day, circularly over the year end (bool, ``day``'s shape)."""
    target = epoch_day(target_day)
    d = SEASON_DAY[np.asarray(day, dtype=DAY_DTYPE)]
    diff = np.abs(d - SEASON_DAY[target])
    return np.minimum(diff, YEAR - diff) <= check_season_days(season_days)
