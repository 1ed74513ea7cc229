"""Tests for sitewatch.config: loading and validating sites YAML files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sitewatch.config import DEFAULT_BANDS, ConfigError, SiteConfig, load_sites
from sitewatch.models import Site

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "sites.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_sites(path)
    assert isinstance(exc.value, ValueError)
    return str(exc.value)


# ---------------------------------------------------------------- valid files

def test_valid_file_merges_defaults_and_resolves_paths(tmp_path):
    p = _write(tmp_path, """
        version: 1
        defaults:
          resolution: 20
          source: scenes
          store: ./out/store
          min_alert_area_m2: 2500
        sites:
          - name: khmeimim
            bbox: [35.93, 35.39, 35.97, 35.42]
          - name: other
            bbox: [10.0, 50.0, 10.1, 50.1]
            resolution: 10
            source: s3://bucket/scenes
            store: /abs/store
            chunk_size: 256
            bands: [blue, green, red, nir, swir16]
    """)
    sites = load_sites(p)
    assert [s.name for s in sites] == ["khmeimim", "other"]
    a, b = sites
    assert all(isinstance(s, SiteConfig) for s in sites)
    # defaults apply where the site does not override
    assert a.resolution == 20.0 and a.min_alert_area_m2 == 2500.0
    assert b.resolution == 10.0 and b.min_alert_area_m2 == 2500.0
    # model defaults where neither gives a value
    assert a.bands == DEFAULT_BANDS and a.chunk_size == 1024 and a.work_chunk_size == 2048 and a.baseline_window == 8
    assert b.bands == ("blue", "green", "red", "nir", "swir16") and b.chunk_size == 256
    # relative local paths are taken relative to the file's folder
    assert a.source == str((tmp_path / "scenes").resolve())
    assert a.store == str((tmp_path / "out" / "store").resolve())
    # URLs and absolute paths are left alone
    assert b.source == "s3://bucket/scenes"
    assert b.store == "/abs/store"


def test_relative_paths_resolve_against_file_not_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "conf"
    sub.mkdir()
    p = _write(sub, """
        sites:
          - name: a
            bbox: [1, 2, 3, 4]
            source: ../scenes
            store: store
    """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (s,) = load_sites(Path("..") / "conf" / "sites.yaml")
    assert s.source == str((tmp_path / "scenes").resolve())
    assert s.store == str((sub / "store").resolve())


def test_to_site_from_bbox_geometry_and_bounds(tmp_path):
    p = _write(tmp_path, """
        sites:
          - name: by-bbox
            bbox: [35.93, 35.39, 35.97, 35.42]
            source: s3://b/scenes
            store: s3://b/store
          - name: by-geometry
            geometry:
              type: Polygon
              coordinates: [[[35.93, 35.39], [35.97, 35.39], [35.95, 35.42], [35.93, 35.39]]]
            source: s3://b/scenes
            store: s3://b/store
          - name: by-bounds
            crs: EPSG:32636
            bounds: [700000, 3919000, 701000, 3920000]
            source: s3://b/scenes
            store: s3://b/store
    """)
    sites = [c.to_site() for c in load_sites(p)]
    assert all(isinstance(s, Site) for s in sites)
    bb, geo, bo = sites
    assert bb.shape.bounds == pytest.approx((35.93, 35.39, 35.97, 35.42))
    assert geo.geometry["type"] == "Polygon"
    assert bo.grid.bounds == (700000.0, 3919000.0, 701000.0, 3920000.0)
    assert bo.grid.crs == "EPSG:32636"
    # the lon/lat geometry derived from projected bounds is where the bounds are (UTM 36N, ~35 N)
    minx, miny, maxx, maxy = bo.shape.bounds
    assert 35.0 < minx < maxx < 36.5 and 35.0 < miny < maxy < 36.0


def test_model_validate_directly():
    cfg = SiteConfig(name="x", bbox=(1, 2, 3, 4), source="s", store="t")
    assert cfg.bbox == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(Exception):
        cfg.name = "y"  # frozen


def test_seasonal_baseline_gets_a_longer_default_window():
    from sitewatch.kernels.baseline import SEASONAL_WINDOW, BaselineParams

    plain = SiteConfig(name="x", bbox=(1, 2, 3, 4), source="s", store="t")
    assert (plain.baseline_window, plain.baseline_season_days) == (8, None)
    seasonal = SiteConfig(name="x", bbox=(1, 2, 3, 4), source="s", store="t", baseline_season_days=30)
    assert (seasonal.baseline_window, seasonal.baseline_season_days) == (SEASONAL_WINDOW, 30) == (60, 30)
    own = SiteConfig(name="x", bbox=(1, 2, 3, 4), source="s", store="t", baseline_season_days=30, baseline_window=80)
    assert own.baseline_window == 80
    # the kernel parameters accept what the config accepts
    BaselineParams(window=own.baseline_window, season_days=own.baseline_season_days)


# ---------------------------------------------------------------- errors name the site and field

SITE_OK = """
sites:
  - name: good
    bbox: [1, 2, 3, 4]
    source: s
    store: t
"""


def test_missing_source(tmp_path):
    msg = _error(_write(tmp_path, """
        sites:
          - name: alpha
            bbox: [1, 2, 3, 4]
            store: t
    """))
    assert "'alpha'" in msg and "'source'" in msg and "missing" in msg
    assert str(tmp_path / "sites.yaml") in msg


def test_bad_bbox_order(tmp_path):
    msg = _error(_write(tmp_path, """
        sites:
          - name: good
            bbox: [1, 2, 3, 4]
            source: s
            store: t
          - name: flipped
            bbox: [3, 2, 1, 4]
            source: s
            store: t
    """))
    assert "'flipped'" in msg and "'bbox'" in msg
    assert "'good'" not in msg


@pytest.mark.parametrize("bbox", ["[1, 4, 3, 2]", "[-190, 0, 1, 1]", "[0, 0, 1, 95]", "[1, 2, 3]"])
def test_bad_bbox_values(tmp_path, bbox):
    msg = _error(_write(tmp_path, f"""
        sites:
          - name: beta
            bbox: {bbox}
            source: s
            store: t
    """))
    assert "'beta'" in msg and "bbox" in msg


def test_unknown_key(tmp_path):
    msg = _error(_write(tmp_path, """
        sites:
          - name: gamma
            bbox: [1, 2, 3, 4]
            source: s
            store: t
            colour: red
    """))
    assert "'gamma'" in msg and "'colour'" in msg


def test_unknown_top_level_key(tmp_path):
    msg = _error(_write(tmp_path, SITE_OK + "extra: 1\n"))
    assert "'extra'" in msg


def test_bands_lacking_nir(tmp_path):
    msg = _error(_write(tmp_path, """
        sites:
          - name: delta
            bbox: [1, 2, 3, 4]
            source: s
            store: t
            bands: [blue, green, red, swir16, swir22]
    """))
    assert "'delta'" in msg and "'bands'" in msg and "nir" in msg


def test_bad_default_is_reported_for_the_site(tmp_path):
    msg = _error(_write(tmp_path, """
        defaults:
          chunk_size: 16
        sites:
          - name: eps
            bbox: [1, 2, 3, 4]
            source: s
            store: t
    """))
    assert "'eps'" in msg and "'chunk_size'" in msg


@pytest.mark.parametrize("field, value", [("resolution", "0"), ("resolution", "-10"), ("chunk_size", "32"),
                                          ("chunk_size", "10000"), ("work_chunk_size", "32"), ("baseline_window", "0"), ("change_threshold", "0"),
                                          ("baseline_season_days", "0"), ("baseline_season_days", "183"),
                                          ("min_alert_area_m2", "-1"), ("name", "Bad Name")])
def test_out_of_range_fields(tmp_path, field, value):
    name = "zeta" if field != "name" else value
    text = f"sites:\n  - name: {name}\n    bbox: [1, 2, 3, 4]\n    source: s\n    store: t\n"
    if field != "name":
        text += f"    {field}: {value}\n"
    msg = _error(_write(tmp_path, text))
    assert f"'{field}'" in msg and repr(name) in msg


def test_duplicate_names(tmp_path):
    msg = _error(_write(tmp_path, """
        sites:
          - {name: twin, bbox: [1, 2, 3, 4], source: s, store: t}
          - {name: solo, bbox: [1, 2, 3, 4], source: s, store: t}
          - {name: twin, bbox: [5, 6, 7, 8], source: s, store: t}
    """))
    assert "twin" in msg and "name" in msg and "unique" in msg
    assert "solo" not in msg


@pytest.mark.parametrize(
    "geo, given",
    [
        ("bbox: [1, 2, 3, 4]\n    geometry: {type: Polygon, coordinates: [[[1, 2], [3, 2], [3, 4], [1, 2]]]}", "bbox"),
        ("bbox: [1, 2, 3, 4]\n    crs: 'EPSG:32631'\n    bounds: [0, 0, 100, 100]", "bounds"),
        ("", "none"),
    ],
)
def test_exactly_one_of_bbox_geometry_bounds(tmp_path, geo, given):
    text = "sites:\n  - name: eta\n    source: s\n    store: t\n"
    if geo:
        text += f"    {geo}\n"
    msg = _error(_write(tmp_path, text))
    assert "'eta'" in msg and "exactly one" in msg and given in msg


def test_bounds_need_crs(tmp_path):
    msg = _error(_write(tmp_path, """
        sites:
          - name: theta
            bounds: [0, 0, 100, 100]
            source: s
            store: t
    """))
    assert "'theta'" in msg and "crs" in msg


def test_not_yaml(tmp_path):
    msg = _error(_write(tmp_path, "sites: [\n  - name: a\n  bad: : :\n"))
    assert "not valid YAML" in msg and str(tmp_path / "sites.yaml") in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_top_level_not_a_mapping(tmp_path, text):
    msg = _error(_write(tmp_path, text))
    assert "mapping" in msg and "sites" in msg


def test_missing_sites_list(tmp_path):
    msg = _error(_write(tmp_path, "defaults: {resolution: 10}\n"))
    assert "'sites'" in msg


def test_sites_entry_not_a_mapping(tmp_path):
    msg = _error(_write(tmp_path, "sites:\n  - just-a-name\n"))
    assert "#0" in msg


def test_defaults_not_a_mapping(tmp_path):
    msg = _error(_write(tmp_path, "defaults: [1, 2]\n" + SITE_OK))
    assert "'defaults'" in msg


def test_bad_version(tmp_path):
    msg = _error(_write(tmp_path, "version: 2\n" + SITE_OK))
    assert "'version'" in msg


def test_missing_file(tmp_path):
    msg = _error(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "no such" in msg


# ---------------------------------------------------------------- the shipped example

def test_shipped_example_config_loads():
    example = ROOT / "infra" / "sites.example.yaml"
    if not example.is_file():
        pytest.skip(f"{example} not present")
    sites = load_sites(example)
    assert sites, "the example config should define at least one site"
    names = [s.name for s in sites]
    assert len(set(names)) == len(names)
    for s in sites:
        site = s.to_site()
        assert site.grid.width >= 1 and site.grid.height >= 1


# ---------------------------------------------------------------- sensor profiles and bands

def test_sensor_profile_defaults_bands_and_helper():
    base = dict(name="x", bbox=(1, 2, 3, 4), source="s", store="t")
    assert SiteConfig(**base).bands == DEFAULT_BANDS and SiteConfig(**base).profile().name == "generic"
    fm = SiteConfig(**base, sensor="landsat-tm-etm-fmask")
    assert fm.bands == ("red", "nir", "swir16") and fm.profile().qa_band == "fmask"
    # given bands win; a profile with a QA band does not need all five spectral-mask bands
    assert SiteConfig(**base, sensor="sentinel2-l2a", bands=("red", "nir")).bands == ("red", "nir")


def test_unknown_sensor_names_field_and_profiles(tmp_path):
    msg = _error(_write(tmp_path, SITE_OK + "    sensor: sentinel-3\n"))
    assert "'good'" in msg and "'sensor'" in msg and "sentinel-3" in msg and "sentinel2-l2a" in msg and "landsat-c2-l2" in msg


def test_band_unknown_to_the_profile(tmp_path):
    msg = _error(_write(tmp_path, SITE_OK + "    sensor: landsat-c2-l2\n    bands: [red, nir, rededge1]\n"))
    assert "'good'" in msg and "'bands'" in msg and "rededge1" in msg and "landsat-c2-l2" in msg


def test_spectral_bands_needed_without_a_qa_band(tmp_path):
    msg = _error(_write(tmp_path, SITE_OK + "    sensor: sentinel2-l1c\n    bands: [red, nir]\n"))
    assert "'bands'" in msg and "blue" in msg and "QA band" in msg


def test_four_band_commercial_site_is_accepted(tmp_path):
    cfg = load_sites(_write(tmp_path, SITE_OK + "    sensor: commercial-4band\n    resolution: 0.5\n"))[0]
    assert cfg.bands == ("blue", "green", "red", "nir") and cfg.profile().qa_band is None


def test_mask_method_must_be_possible(tmp_path):
    msg = _error(_write(tmp_path, SITE_OK + "    mask_method: provider\n"))
    assert "'mask_method'" in msg and "no QA band" in msg
    msg = _error(_write(tmp_path, SITE_OK + "    sensor: sentinel2-l2a\n    bands: [red, nir]\n    mask_method: spectral\n"))
    assert "'mask_method'" in msg and "blue" in msg


@pytest.mark.parametrize("opts, bad", [
    ({"endpoint_url": "http://minio:9000", "secret": "hunter22xyz"}, "secret"),
    ({"key": "AKIAXXXX"}, "key"),
    ({"client_kwargs": {"aws_session_token": "tok-value"}}, "client_kwargs.aws_session_token"),
    ({"password": "pw-value"}, "password"),
])
def test_storage_options_reject_secrets_without_echoing_them(tmp_path, opts, bad):
    import yaml

    p = tmp_path / "sites.yaml"
    p.write_text(yaml.safe_dump({"sites": [{"name": "a", "bbox": [0, 0, 1, 1], "source": "s3://b/s", "store": "s3://b/o",
                                             "storage_options": opts}]}))
    with pytest.raises(ConfigError) as err:
        load_sites(p)
    msg = str(err.value)
    assert f"secret-looking key {bad!r}" in msg and "credentials_block" in msg
    for v in ("hunter22xyz", "AKIAXXXX", "tok-value", "pw-value"):
        assert v not in msg


def test_storage_options_non_secret_pass():
    cfg = SiteConfig(name="a", bbox=(0, 0, 1, 1), source="s3://b/s", store="s3://b/o",
                     storage_options={"endpoint_url": "http://minio:9000", "region": "eu-west-1", "anon": False})
    assert cfg.storage_options["region"] == "eu-west-1"
