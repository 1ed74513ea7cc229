"""Tests for sitewatch.sun: shadow direction and length from the sun's position."""

from __future__ import annotations

import datetime
import math

import pytest

from sitewatch import synthetic
from sitewatch.sun import shadow_step, solar_position


def test_shadow_step_direction_and_length():
    # sun due south at 45 deg elevation on a 10 m grid: 0.1 px per metre of height, northward
    dr, dc = shadow_step(180.0, 45.0, 10.0)
    assert dr == pytest.approx(-0.1) and dc == pytest.approx(0.0, abs=1e-12)
    dr, dc = shadow_step(90.0, 30.0, 30.0)  # sun in the east, low: long shadow to the west
    assert dr == pytest.approx(0.0, abs=1e-12) and dc == pytest.approx(-math.tan(math.radians(60)) / 30)
    assert shadow_step(0.0, 90.0, 10.0) == pytest.approx((0.0, 0.0))
    with pytest.raises(ValueError, match="elevation"):
        shadow_step(180.0, 0.0, 10.0)
    with pytest.raises(ValueError, match="resolution"):
        shadow_step(180.0, 40.0, 0.0)


def test_morning_sun_in_the_south_east_and_synthetic_uses_the_same_function():
    # Khmeimim (35.4 N, 35.9 E) at 08:20 UTC (about 10:45 local solar time) in January
    az, el = solar_position(datetime.datetime(2026, 1, 4, 8, 20, tzinfo=datetime.timezone.utc), 35.9, 35.4)
    assert 140 < az < 170 and 25 < el < 35
    assert synthetic.solar_position is solar_position
