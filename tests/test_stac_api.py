"""Discovery through a STAC API (sitewatch/io/stac_api.py), against a real HTTP server on
127.0.0.1: search, paging, datetime and cloud filters, retries, bad items, assets on S3."""

from __future__ import annotations

import copy
import os

import pytest
from shapely.geometry import shape

from sitewatch.io import discovery as D
from sitewatch.io import store

from discovery_sites import FAR, SITE, api_items_for, site_footprint, upload, when  # tests/ is on sys.path
from stac_api_server import CONFORMS_TO, StacApiServer  # tests/ is on sys.path (rootdir conftest)


@pytest.fixture(scope="module")
def api_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-scenes")
    specs = [(f"S{d:02d}", d, SITE, float(d * 5), "s2") for d in range(1, 8)]  # cloud 5 ... 35 %
    specs += [("FAR", 4, FAR, 0.0, "s2"), ("NOCLOUD", 8, SITE, None, "s2"), ("L8", 5, SITE, 1.0, "landsat")]
    return api_items_for(root, specs)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("SITEWATCH_RETRIES", "2")
    monkeypatch.setenv("SITEWATCH_RETRY_DELAY", "0.05")


def _self_links(items: list[dict], url: str) -> list[dict]:
    out = copy.deepcopy(items)
    for it in out:
        it["links"] = [{"rel": "self", "href": f"{url}/collections/{it['collection']}/items/{it['id']}"}]
    return out


def test_stac_api_search_intersects_collections_and_paging(api_items):
    with StacApiServer(api_items) as api:
        d = D.discover(api.url, site_footprint(), collections=["s2"], page_size=3)
        assert d.method == "stac-api" and d.problems == ()
        assert [s.scene_id for s in d.scenes] == ["S01", "S02", "S03", "S04", "S05", "S06", "S07", "NOCLOUD"]
        reqs = api.search_requests()
        assert len(reqs) == 3  # 8 matches at 3 per page
        method, _, body = reqs[0]
        assert method == "POST" and body["collections"] == ["s2"] and body["limit"] == 3
        assert shape(body["intersects"]).equals(shape(site_footprint()))
        assert [r[2].get("token") for r in reqs] == [None, 3, 6]
        ref = d.scenes[0]
        assert ref.collection == "s2" and ref.cloud_cover == 5.0 and os.path.isfile(ref.assets["red"])
        assert ref.asset_meta["red"]["nodata"] == 0
        assert ref.item_href == f"{api.url}/collections/s2/items/S01"  # no self link: built from collection and id
        # without a footprint or collections: everything, FAR and L8 included
        assert len(D.find_scenes(api.url, method="stac-api")[0]) == 10


def test_stac_api_get_only_server_pages_through_get_links(api_items):
    with StacApiServer(api_items, methods=("GET",)) as api:
        found, problems = D.find_scenes(api.url, site_footprint(), collections=("s2",), start="2026-01-03")
        assert problems == []
        assert [s.scene_id for s in found] == ["S03", "S04", "S05", "S06", "S07", "NOCLOUD"]
        d = D.discover(api.url, site_footprint(), collections=("s2",), start="2026-01-03", page_size=4)
        assert len(d.scenes) == 6 and {r[0] for r in api.search_requests()} == {"GET"}
        assert len(api.search_requests()) == 1 + 2


def test_stac_api_datetime_ranges(api_items):
    with StacApiServer(api_items) as api:
        ids = lambda **kw: [s.scene_id for s in D.find_scenes(api.url, collections=["s2"], **kw)[0]]  # noqa: E731
        assert ids(start=when(6)) == ["S06", "S07", "NOCLOUD"]
        assert ids(end=when(2)) == ["S01", "S02"]
        assert ids(start=when(3), end=when(4)) == ["S03", "FAR", "S04"]
        sent = [r[2]["datetime"] for r in api.search_requests()]
        assert sent[0].endswith("/..") and sent[1].startswith("../") and ".." not in sent[2]


def test_stac_api_max_cloud_through_query_extension(api_items):
    with StacApiServer(api_items) as api:
        found, problems = D.find_scenes(api.url, site_footprint(), collections=["s2"], max_cloud=20)
        assert problems == []
        assert [s.scene_id for s in found] == ["S01", "S02", "S03", "S04"]  # NOCLOUD: the server drops it
        assert api.search_requests()[0][2]["query"] == {"eo:cloud_cover": {"lte": 20}}
    # a server without the query extension: sitewatch filters, and scenes without cloud cover pass
    plain = [c for c in CONFORMS_TO if not c.endswith("#query")]
    with StacApiServer(api_items, conforms_to=plain) as api:
        found, _ = D.find_scenes(api.url, site_footprint(), collections=["s2"], max_cloud=20)
        assert [s.scene_id for s in found] == ["S01", "S02", "S03", "S04", "NOCLOUD"]
        assert "query" not in api.search_requests()[0][2]


def test_stac_api_bbox_on_the_test_server(api_items):
    """The test server's bbox filter (sitewatch sends intersects; other clients send bbox)."""
    from pystac_client import Client

    with StacApiServer(api_items) as api:
        west, south, east, north = shape(site_footprint()).bounds
        got = sorted(i.id for i in Client.open(api.url).search(bbox=[west, south, east, north], method="GET").items())
        assert got == sorted(i["id"] for i in api_items if i["id"] != "FAR")


def test_stac_api_transient_500_is_retried(api_items, fast_retries):
    with StacApiServer(api_items) as api:
        api.fail_with(503, times=2)
        found, problems = D.find_scenes(api.url, collections=["landsat"])
        assert problems == [] and [s.scene_id for s in found] == ["L8"]
        assert len(api.search_requests()) == 3  # two 503s, then the answer


def test_stac_api_lasting_500_is_a_problem_naming_the_url(api_items, fast_retries):
    with StacApiServer(api_items) as api:
        api.fail_with(500, times=10, from_token=4)  # page 2 onwards keeps failing
        d = D.discover(api.url, collections=["s2"], page_size=4)
        assert [s.scene_id for s in d.scenes] == ["S01", "S02", "S03", "S04"]  # page 1 kept
        assert len(d.problems) == 1
        p = d.problems[0]
        assert p.startswith(f"{api.url}/search: STAC API search failed on page 2 (HTTP 500)")
        assert "injected HTTP 500" in p
        assert len(api.search_requests()) == 1 + 3  # page 1, then page 2 tried 1 + 2 retries


def test_stac_api_bad_items_are_problems_naming_them(api_items):
    nodate = copy.deepcopy(api_items[0])
    nodate["id"], nodate["properties"]["datetime"] = "NODATE", None
    noassets = copy.deepcopy(api_items[1])
    noassets["id"], noassets["assets"] = "NOASSETS", {}
    items = _self_links(api_items[:2] + [nodate, noassets], "http://placeholder")
    with StacApiServer(items + ["not an item"]) as api:
        found, problems = D.find_scenes(api.url)
        assert [s.scene_id for s in found] == ["S01", "S02"]
        assert found[0].item_href == "http://placeholder/collections/s2/items/S01"
        assert len(problems) == 3
        assert problems[0].startswith("http://placeholder/collections/s2/items/NODATE: ") and "no datetime" in problems[0]
        assert problems[1].startswith("http://placeholder/collections/s2/items/NOASSETS: ") and "no data assets" in problems[1]
        assert problems[2].startswith(f"{api.url}/search#page1[4]: ") and "type got 'str'" in problems[2]


def test_stac_api_gone_or_not_an_api(api_items, fast_retries):
    api = StacApiServer(api_items)
    url = api.start()
    api.stop()
    found, problems = D.find_scenes(url, method="stac-api")
    assert found == [] and len(problems) == 1
    assert problems[0].startswith(f"{url}: STAC API landing page cannot be read") and "onnection" in problems[0]
    with StacApiServer(api_items, conforms_to=["https://api.stacspec.org/v1.0.0/core"]) as api:
        found, problems = D.find_scenes(api.url, method="stac-api")
        assert found == [] and problems == [f"{api.url}: not a STAC API with item search; conformsTo lacks "
                                            "'https://api.stacspec.org/v1.0.*/item-search'"]


def test_stac_api_items_pointing_to_s3(s3_server, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="api-assets")
    items = api_items_for(tmp_path, [("A", 1, SITE, 3.0, "s2"), ("B", 2, SITE, 90.0, "s2")], asset_root="s3://api-assets/cogs")
    upload(s3, "api-assets", tmp_path, "cogs")
    with StacApiServer(items) as api:
        found, problems = D.find_scenes(api.url, site_footprint(), max_cloud=50)
    assert problems == [] and [s.scene_id for s in found] == ["A"]
    assert store.exists(found[0].assets["blue"])
