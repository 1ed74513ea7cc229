"""Tests for sitewatch.grid: UTM zone choice, the snapped site grid and its georeference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Transformer

from sitewatch.grid import SiteGrid, utm_crs_for


# ---------------------------------------------------------------- utm_crs_for

@pytest.mark.parametrize(
    "lon, lat, epsg",
    [
        (35.95, 35.40, 32636),  # Khmeimim: zone 36 north
        (35.95, -35.40, 32736),  # same longitude, southern hemisphere
        (0.0, 0.0, 32631),  # equator counts as north; lon 0 starts zone 31
        (-0.000001, 0.0, 32630),  # just west of Greenwich: zone 30
        (-180.0, 10.0, 32601),  # west edge of zone 1
        (-174.0, 10.0, 32602),  # exact zone boundary belongs to the zone to the east
        (-174.000001, 10.0, 32601),
        (6.0, 50.0, 32632),
        (5.999999, 50.0, 32631),
        (179.999, -45.0, 32760),
        (180.0, 45.0, 32660),  # the antimeridian is clamped to zone 60, not a zone 61
        (12.0, -0.000001, 32733),  # just south of the equator
    ],
)
def test_utm_crs_for_zones(lon, lat, epsg):
    crs = utm_crs_for(lon, lat)
    assert isinstance(crs, CRS)
    assert crs.to_epsg() == epsg


def test_utm_crs_for_zone_contains_point():
    # The chosen zone's central meridian is within 3 degrees of the longitude.
    for lon in np.linspace(-179.5, 179.5, 37):
        crs = utm_crs_for(float(lon), 20.0)
        zone = crs.to_epsg() - 32600
        central = -183.0 + 6.0 * zone
        assert abs(lon - central) <= 3.0 + 1e-9


@pytest.mark.parametrize("lon, lat", [(181.0, 0.0), (-180.5, 0.0), (0.0, 90.5), (0.0, -91.0), (float("nan"), 0.0)])
def test_utm_crs_for_out_of_range(lon, lat):
    with pytest.raises(ValueError, match="lon/lat"):
        utm_crs_for(lon, lat)


# ---------------------------------------------------------------- SiteGrid construction

def test_from_bounds_snaps_outwards():
    g = SiteGrid.from_bounds((500003.0, 3900001.0, 500097.0, 3900049.5), 10.0, "EPSG:32636")
    assert (g.x0, g.y0) == (500000.0, 3900050.0)
    assert g.width == 10  # 500000 .. 500100
    assert g.height == 5  # 3900000 .. 3900050
    left, bottom, right, top = g.bounds
    assert (left, bottom, right, top) == (500000.0, 3900000.0, 500100.0, 3900050.0)
    # contains the requested bounds
    assert left <= 500003.0 and bottom <= 3900001.0 and right >= 500097.0 and top >= 3900049.5


def test_from_bounds_exact_pixels_do_not_grow():
    g = SiteGrid.from_bounds((500000.0, 3900000.0, 500100.0, 3900050.0), 10.0, "EPSG:32636")
    assert (g.x0, g.y0, g.width, g.height) == (500000.0, 3900050.0, 10, 5)
    # floating-point noise just above a pixel edge does not add a column
    g2 = SiteGrid.from_bounds((500000.0, 3900000.0, 500100.0 + 1e-12, 3900050.0), 10.0, "EPSG:32636")
    assert g2.width == 10


def test_from_bounds_whole_pixels_off_the_resolution_lattice_are_kept():
    # a Landsat scene's own grid: 61 x 61 px at 30 m, corner at 336375 (not a multiple of 30)
    g = SiteGrid.from_bounds((336375.0, 4460595.0, 338205.0, 4462425.0), 30.0, "EPSG:32613")
    assert (g.x0, g.y0, g.width, g.height) == (336375.0, 4462425.0, 61, 61)
    assert g.bounds == (336375.0, 4460595.0, 338205.0, 4462425.0)


def test_from_bounds_negative_coordinates_snap_outwards():
    g = SiteGrid.from_bounds((-15.0, -25.0, 14.0, -6.0), 10.0, "EPSG:32631")
    assert (g.x0, g.y0) == (-20.0, 0.0)
    assert g.bounds == (-20.0, -30.0, 20.0, 0.0)
    assert g.shape == (3, 4)


@pytest.mark.parametrize("bounds", [(10.0, 0.0, 10.0, 5.0), (10.0, 0.0, 0.0, 5.0), (0.0, 5.0, 10.0, 0.0)])
def test_from_bounds_rejects_degenerate_bounds(bounds):
    with pytest.raises(ValueError, match="bounds"):
        SiteGrid.from_bounds(bounds, 10.0, "EPSG:32636")


@pytest.mark.parametrize("resolution", [0.0, -10.0, float("nan")])
def test_bad_resolution_names_field(resolution):
    with pytest.raises(ValueError, match="resolution"):
        SiteGrid(crs="EPSG:32636", x0=0.0, y0=0.0, resolution=resolution, width=4, height=4)


@pytest.mark.parametrize("width, height", [(0, 4), (4, 0), (-1, 3)])
def test_bad_shape_names_field(width, height):
    with pytest.raises(ValueError, match="shape"):
        SiteGrid(crs="EPSG:32636", x0=0.0, y0=0.0, resolution=10.0, width=width, height=height)


def test_unknown_crs_raises():
    from pyproj.exceptions import CRSError

    # documented: pyproj's own error (a RuntimeError, not a ValueError) naming the CRS
    with pytest.raises(CRSError, match="999999"):
        SiteGrid(crs="EPSG:999999", x0=0.0, y0=0.0, resolution=10.0, width=4, height=4)


def test_grid_is_frozen_and_hashable():
    g = SiteGrid(crs="EPSG:32636", x0=0.0, y0=100.0, resolution=10.0, width=4, height=4)
    with pytest.raises(Exception):
        g.width = 5  # type: ignore[misc]
    assert g == SiteGrid(crs="EPSG:32636", x0=0.0, y0=100.0, resolution=10.0, width=4, height=4)
    assert len({g, SiteGrid(crs="EPSG:32636", x0=0.0, y0=100.0, resolution=10.0, width=4, height=4)}) == 1


def test_centred_default_crs_is_utm_and_grid_is_centred():
    lon, lat = 35.95, 35.40
    g = SiteGrid.centred(lon, lat, width=64, height=48, resolution=10.0)
    assert g.crs == "EPSG:32636"
    assert g.shape == (48, 64)
    x, y = Transformer.from_crs(4326, 32636, always_xy=True).transform(lon, lat)
    left, bottom, right, top = g.bounds
    # even sizes: the snapped point is the exact centre of the grid
    assert (left + right) / 2 == pytest.approx(round(x / 10.0) * 10.0)
    assert (bottom + top) / 2 == pytest.approx(round(y / 10.0) * 10.0)
    assert abs((left + right) / 2 - x) <= 5.0 and abs((bottom + top) / 2 - y) <= 5.0
    # the origin is on the pixel lattice
    assert g.x0 % 10.0 == 0.0 and g.y0 % 10.0 == 0.0


def test_centred_explicit_crs_and_odd_size():
    g = SiteGrid.centred(35.95, 35.40, width=5, height=3, resolution=20.0, crs="EPSG:32637")
    assert g.crs == "EPSG:32637"
    x, y = Transformer.from_crs(4326, 32637, always_xy=True).transform(35.95, 35.40)
    cx, cy = round(x / 20.0) * 20.0, round(y / 20.0) * 20.0
    assert g.x0 == pytest.approx(cx - 2 * 20.0)
    assert g.y0 == pytest.approx(cy + 1 * 20.0)
    # the point lies inside the grid
    left, bottom, right, top = g.bounds
    assert left < x < right and bottom < y < top


def test_centred_southern_hemisphere():
    g = SiteGrid.centred(-58.38, -34.60, width=32, height=32, resolution=10.0)  # Buenos Aires
    assert g.crs == "EPSG:32721"
    lon, lat = g.pixel_to_lonlat(16.0, 16.0)  # the grid centre (a pixel corner)
    assert lon == pytest.approx(-58.38, abs=1e-4)
    assert lat == pytest.approx(-34.60, abs=1e-4)


# ---------------------------------------------------------------- georeference

@pytest.fixture
def grid() -> SiteGrid:
    return SiteGrid(crs="EPSG:32636", x0=700000.0, y0=3920000.0, resolution=10.0, width=7, height=5)


def test_transform(grid):
    assert grid.transform == Affine(10.0, 0.0, 700000.0, 0.0, -10.0, 3920000.0)
    assert grid.transform @ (0, 0) == (700000.0, 3920000.0)
    assert grid.transform @ (grid.width, grid.height) == (700070.0, 3919950.0)
    assert grid.bounds == (700000.0, 3919950.0, 700070.0, 3920000.0)
    assert grid.shape == (5, 7)
    assert grid.pixel_area_m2 == 100.0


def test_coords_are_pixel_centres_y_descending(grid):
    c = grid.coords()
    assert set(c) == {"x", "y"}
    assert c["x"].shape == (7,) and c["y"].shape == (5,)
    np.testing.assert_allclose(c["x"], 700005.0 + 10.0 * np.arange(7))
    np.testing.assert_allclose(c["y"], 3919995.0 - 10.0 * np.arange(5))
    assert np.all(np.diff(c["y"]) < 0)
    assert np.all(np.diff(c["x"]) > 0)
    # the centre of pixel (row, col) is transform * (col + 0.5, row + 0.5)
    for row, col in [(0, 0), (4, 6), (2, 3)]:
        x, y = grid.transform @ (col + 0.5, row + 0.5)
        assert (c["x"][col], c["y"][row]) == (x, y)


def test_pixel_to_lonlat_round_trip(grid):
    to_xy = Transformer.from_crs(4326, grid.crs, always_xy=True)
    inv = ~grid.transform
    for row, col in [(0.5, 0.5), (4.5, 6.5), (2.25, 3.75), (0.0, 0.0)]:
        lon, lat = grid.pixel_to_lonlat(row, col)
        assert -180 <= lon <= 180 and -90 <= lat <= 90
        x, y = to_xy.transform(lon, lat)
        c, r = inv @ (x, y)
        assert r == pytest.approx(row, abs=1e-6)
        assert c == pytest.approx(col, abs=1e-6)


def test_pixel_to_lonlat_orientation(grid):
    lon00, lat00 = grid.pixel_to_lonlat(0.5, 0.5)
    lon_e, lat_e = grid.pixel_to_lonlat(0.5, 6.5)
    lon_s, lat_s = grid.pixel_to_lonlat(4.5, 0.5)
    assert lon_e > lon00  # columns go east
    assert lat_s < lat00  # rows go south
    # 60 m east at ~35 N is ~6.6e-4 degrees of longitude
    assert (lon_e - lon00) == pytest.approx(60.0 / (111320.0 * math.cos(math.radians(lat00))), rel=0.02)


def test_to_lonlat_vectorised(grid):
    c = grid.coords()
    lon, lat = grid.to_lonlat(c["x"], np.full(7, c["y"][0]))
    assert np.asarray(lon).shape == (7,)
    assert np.all(np.diff(lon) > 0)
