"""Publishing alerts: the GeoJSON feed in the store, before/after image chips, markdown text.

The feed ``<site>/alerts/alerts.geojson`` is the site's alert record: a FeatureCollection of
every alert, replaced atomically on each update. Chips are true-colour PNGs of the site grid
around the alert, before (latest clear view before it was first seen) and after (first seen),
with the changed pixels outlined. Sites without all three visible bands get a false-colour
composite of what they have (see ``CHIP_COMPOSITES``), the combination named in the PNG's
``composite`` text chunk.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import xarray as xr
from PIL import Image, PngImagePlugin

from .models import Alert
from .io import store

FEED_NAME = "alerts.geojson"

#: Band triples for chips, in order of preference: true colour, then the usual false-colour
#: composites (SWIR/NIR/red shows bare ground and burn scars; NIR/red/green vegetation).
CHIP_COMPOSITES: tuple[tuple[str, str, str], ...] = (
    ("red", "green", "blue"),
    ("swir16", "nir", "red"),
    ("nir", "red", "green"),
)


def chip_bands(names: Sequence[str]) -> tuple[str, str, str]:
    """The band triple chips are drawn with for a cube holding bands ``names``: the first of
    ``CHIP_COMPOSITES`` fully present, else one band as grey."""
    have = set(names)
    for triple in CHIP_COMPOSITES:
        if have.issuperset(triple):
            return triple
    for b in ("red", "nir", "green", "blue", "swir16", "swir22"):
        if b in have:
            return (b, b, b)
    raise ValueError(f"chip bands: cube bands got {sorted(have)!r}; expected at least one of red, green, blue, nir, swir16, swir22")


def feed_url(alerts_root: str) -> str:
    return store.join(alerts_root, FEED_NAME)


def read_feed(alerts_root: str, storage_options: dict[str, Any] | None = None) -> list[Alert]:
    url = feed_url(alerts_root)
    if not store.exists(url, storage_options):
        return []
    fc = store.read_json(url, storage_options)
    if fc.get("type") != "FeatureCollection":
        raise ValueError(f"alert feed {url!r} type got {fc.get('type')!r}; expected 'FeatureCollection'")
    return [Alert.from_feature(f) for f in fc.get("features", [])]


def write_feed(alerts_root: str, site: str, alerts: Sequence[Alert], storage_options: dict[str, Any] | None = None) -> str:
    url = feed_url(alerts_root)
    fc = {"type": "FeatureCollection", "name": f"sitewatch alerts: {site}", "features": [a.to_feature() for a in alerts]}
    store.write_json(url, fc, storage_options)
    return url


# ---------------------------------------------------------------- people's actions

ACTIONS_DIR = "actions"


def record_action(alerts_root: str, action: Any, storage_options: dict[str, Any] | None = None) -> str:
    """Store a person's action (:class:`sitewatch.alerts.UserAction`) as its own object
    ``<alerts_root>/actions/<alert id>/<time>-<action>.json`` (never a read-modify-write, so a
    running flow cannot lose it: every merge applies the stored actions)."""
    url = store.join(alerts_root, ACTIONS_DIR, action.alert_id, f"{action.time.replace(':', '')}-{action.action}.json")
    store.write_json(url, action.to_dict(), storage_options)
    return url


def read_actions(alerts_root: str, storage_options: dict[str, Any] | None = None) -> list[Any]:
    from .alerts import UserAction

    urls = store.list_files(store.join(alerts_root, ACTIONS_DIR), ".json", storage_options)
    return [UserAction.from_dict(store.read_json(u, storage_options)) for u in urls]


# ---------------------------------------------------------------- chips

def true_colour(red: np.ndarray, green: np.ndarray, blue: np.ndarray, valid: np.ndarray, vmax: float = 3500.0, gamma: float = 0.8) -> np.ndarray:
    """uint8 RGB (h, w, 3) from reflectance x 10000 bands; invalid pixels black."""
    rgb = np.stack([red, green, blue], axis=-1).astype(np.float32) / np.float32(vmax)
    rgb = np.clip(rgb, 0, 1) ** np.float32(gamma)
    out = (rgb * 255).astype(np.uint8)
    out[~np.asarray(valid, bool)] = 0
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of ``mask`` (pixels in the mask with a 4-neighbour outside it)."""
    m = np.asarray(mask, bool)
    p = np.pad(m, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def chip_window(bbox: Sequence[int], shape: tuple[int, int], min_size: int = 64, margin: int = 16) -> tuple[slice, slice]:
    r0, c0, r1, c1 = bbox
    h, w = shape
    half_h = max((r1 - r0) // 2 + margin, min_size // 2)
    half_w = max((c1 - c0) // 2 + margin, min_size // 2)
    cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
    rs = slice(max(0, cr - half_h), min(h, cr + half_h))
    cs = slice(max(0, cc - half_w), min(w, cc + half_w))
    return rs, cs


def png_bytes(rgb: np.ndarray, highlight: np.ndarray | None = None, scale: int = 4, composite: str = "red/green/blue") -> bytes:
    img = rgb.copy()
    if highlight is not None:
        img[outline(highlight)] = (255, 40, 40)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("composite", composite)
    Image.fromarray(img, "RGB").save(buf, format="PNG", optimize=True, pnginfo=info)
    return buf.getvalue()


def quicklook_png(cube: xr.Dataset, scene_id: str, max_px: int = 512) -> bytes:
    """A quicklook of one scene of an open cube (:func:`sitewatch.io.cube.open_cube`): the
    chip composite (:func:`chip_bands`) sampled every ``step`` pixels so that the longer side is at
    most ``max_px``, with the scene's changed pixels outlined in red (a change anywhere in a
    ``step x step`` block marks the block, so single changed pixels stay visible) and cloud or
    shadow tinted. Reads one time slice of the chip bands and masks."""
    ids = [str(v) for v in cube["scene_id"].values]
    if scene_id not in ids:
        raise ValueError(f"quicklook scene got {scene_id!r}; expected one of the cube's scenes {ids[-5:]!r} ...")
    if max_px < 16:
        raise ValueError(f"quicklook max_px got {max_px!r}; expected >= 16")
    sl = cube.isel(time=ids.index(scene_id))
    h, w = sl.sizes["y"], sl.sizes["x"]
    step = max(1, int(np.ceil(max(h, w) / max_px)))
    names = chip_bands([str(v) for v in cube.data_vars])
    sub = sl[list(dict.fromkeys(names)) + ["valid", "cloud", "shadow"]].isel(y=slice(None, None, step), x=slice(None, None, step)).compute()
    rgb = true_colour(*(sub[b].values for b in names), sub["valid"].values)
    obscured = sub["cloud"].values | sub["shadow"].values
    rgb[obscured] = (rgb[obscured] * 0.6 + np.array([40, 90, 160]) * 0.4).astype(np.uint8)
    change = sl["change"]
    if step > 1:
        change = change.coarsen(y=step, x=step, boundary="pad").max()
    change = change.values.astype(bool)[: rgb.shape[0], : rgb.shape[1]]
    return png_bytes(rgb, highlight=change, scale=1, composite="/".join(dict.fromkeys(names)))


def shrink_png(data: bytes, max_px: int) -> bytes:
    """``data`` (a PNG) scaled down so its longer side is at most ``max_px`` (nearest neighbour,
    so outlines stay pure red); returned unchanged when already small enough."""
    img = Image.open(io.BytesIO(data))
    if max(img.size) <= max_px:
        return data
    info = PngImagePlugin.PngInfo()
    for k, v in img.text.items():
        info.add_text(k, v)
    img.thumbnail((max_px, max_px), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, pnginfo=info)
    return buf.getvalue()


def before_after_chips(cube: xr.Dataset, alert: Alert, min_clear: float = 0.9) -> tuple[bytes, bytes, str, str]:
    """PNG bytes (before, after) for ``alert`` from ``cube`` (committed, time-sorted) and the
    scene ids they show. The outline is the change mask in the after scene within the chip,
    restricted to the alert's bounding box."""
    sids = [str(s) for s in cube.scene_id.values]
    if alert.first_scene not in sids:
        raise ValueError(f"alert {alert.id!r}: first scene got {alert.first_scene!r}; expected a scene in the cube")
    after_i = sids.index(alert.first_scene)
    rs, cs = chip_window(alert.bbox_pixels, (cube.sizes["y"], cube.sizes["x"]))
    triple = chip_bands([str(v) for v in cube.data_vars])
    bands = list(dict.fromkeys(triple))
    win = cube[bands + ["valid", "cloud", "shadow", "change"]].isel(y=rs, x=cs)
    # Walk back from the alert's first scene to the latest view of the window that is clear
    # enough; read a few slices at a time rather than the whole history.
    before_i = None
    step = 4
    for end in range(after_i, 0, -step):
        start = max(0, end - step)
        m = win[["valid", "cloud", "shadow"]].isel(time=slice(start, end)).compute()
        frac = (m["valid"] & ~m["cloud"] & ~m["shadow"]).mean(("y", "x")).values
        ok = [start + k for k in range(len(frac)) if frac[k] >= min_clear]
        if ok:
            before_i = ok[-1]
            break
    if before_i is None:
        before_i = max(after_i - 1, 0)
    r0, c0, r1, c1 = alert.bbox_pixels
    in_box = np.zeros((rs.stop - rs.start, cs.stop - cs.start), bool)
    in_box[max(r0 - rs.start, 0):r1 - rs.start, max(c0 - cs.start, 0):c1 - cs.start] = True
    pair = win[bands + ["valid", "change"]].isel(time=[before_i, after_i]).compute()
    after_change = pair["change"].values[1] & in_box
    out = []
    for k in (0, 1):
        s = pair.isel(time=k)
        rgb = true_colour(*(s[b].values for b in triple), s["valid"].values)
        out.append(png_bytes(rgb, after_change, composite="/".join(triple)))
    return out[0], out[1], sids[before_i], sids[after_i]


def render_alert_chips(cube: xr.Dataset, alerts: Sequence[Alert], alerts_root: str,
                       storage_options: dict[str, Any] | None = None) -> list[Alert]:
    """Before/after PNGs for each alert written to ``<alerts_root>/<id>/{before,after}.png``;
    returns the alerts with their image URLs. A chip that cannot be rendered never blocks its
    alert: the alert keeps ``images = {"error": ...}`` (and is tried again on the next run)."""
    from dataclasses import replace

    out = []
    for alert in alerts:
        try:
            before, after, before_id, after_id = before_after_chips(cube, alert)
            folder = store.join(alerts_root, alert.id)
            urls = {"before": store.join(folder, "before.png"), "after": store.join(folder, "after.png")}
            store.write_bytes(urls["before"], before, storage_options)
            store.write_bytes(urls["after"], after, storage_options)
            out.append(replace(alert, images={**urls, "before_scene": before_id, "after_scene": after_id}))
        except Exception as exc:  # any failure to draw: the alert goes out without pictures
            out.append(replace(alert, images={"error": store.redact(f"{type(exc).__name__}: {exc}")[:500]}))
    return out


def markdown_report(site: str, alerts: Sequence[Alert], new_ids: Sequence[str], updated_ids: Sequence[str], scenes: Sequence[dict[str, Any]],
                    quarantined: Sequence[dict[str, Any]] = (), site_state: dict[str, Any] | None = None,
                    channels: Sequence[dict[str, Any]] = (), quicklook: dict[str, Any] | None = None) -> str:
    """A markdown summary of a monitor run (for a Prefect artifact or a log); ``quarantined``
    are the site's quarantine entries (``scene_id``, ``object``, ``error``, ``attempts``, ...);
    ``site_state`` the site's observation state (:func:`sitewatch.observation.site_state`);
    ``channels`` the delivery report per channel (``channel``, ``sent``, ``failed``, ``error``);
    ``quicklook`` the newest scene's quicklook (``scene_id``, ``url``, optional ``data_uri``, or
    ``error``)."""
    lines = [f"# sitewatch: {site}", ""]
    if site_state:
        lines += [f"**Site observation:** {site_state.get('text', '')}", ""]
    if scenes:
        lines += ["## Scenes analysed", "", "| scene | date | valid | cloud/shadow | masks | change objects |", "|---|---|---|---|---|---|"]
        for s in scenes:
            cloud = "not observed (no valid pixel)" if s["cloud_fraction"] != s["cloud_fraction"] else f"{s['cloud_fraction']:.0%}"
            masks = "+".join(s.get("mask_methods") or ()) or "-"
            state = s.get("change_state") or "ok"  # "not enough history" / "no clear pixels": nothing compared
            found = s["n_detections"] if state == "ok" else f"none ({state})"
            lines.append(f"| {s['scene_id']} | {s['time'][:10]} | {s['valid_fraction']:.0%} | {cloud} | {masks} | {found} |")
        lines.append("")
        notes = sorted({n for s in scenes for n in s.get("mask_notes") or ()})
        if notes:  # mask methods that "auto" left out, and why
            lines += ["Cloud masks:", ""] + [f"- {_cell(n)}" for n in notes] + [""]
    else:
        lines += ["No new scenes: nothing to analyse.", ""]
    if quicklook:
        if quicklook.get("error"):
            lines += [f"Quicklook of the newest scene {quicklook.get('scene_id', '')}: not drawn ({_cell(str(quicklook['error']))})", ""]
        else:
            lines += [f"## Newest scene: {quicklook['scene_id']}", "",
                      f"Change outlined in red, cloud and shadow tinted blue: `{quicklook['url']}`", "",
                      f"![quicklook of {quicklook['scene_id']}]({quicklook.get('data_uri') or quicklook['url']})", ""]
    fresh = [a for a in alerts if a.id in set(new_ids) | set(updated_ids)]
    if fresh:
        lines += ["## New and updated alerts", "", "| alert | status | confidence | first seen | last seen | area m2 | lon, lat | score | what |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a in fresh:
            tag = "new" if a.id in new_ids else "updated"
            lines.append(f"| {a.id} ({tag}) | {a.status} | {a.confidence:.2f} | {a.first_seen} | {a.last_seen} | {a.area_m2:,.0f} | "
                         f"{a.lon:.5f}, {a.lat:.5f} | {a.score_max:.1f} | {_cell(a.description)} |")
        lines.append("")
        for a in fresh:
            if a.images.get("before") or a.images.get("after"):
                lines.append(f"**{a.id}**: before `{a.images.get('before', '')}`, after `{a.images.get('after', '')}`")
                lines.append("")
                lines.append(f"![before]({a.images.get('before', '')}) ![after]({a.images.get('after', '')})")
                lines.append("")
            elif a.images.get("error"):
                lines.append(f"**{a.id}**: no pictures ({_cell(a.images['error'])})")
                lines.append("")
            if a.cube:
                lines.append(f"{a.id} in the cube: {cube_link_text(a)}")
                lines.append("")
    else:
        lines += ["No new alerts.", ""]
    if channels:
        lines += ["## Deliveries", "", "| channel | sent | already sent | failed | error |", "|---|---|---|---|---|"]
        for c in channels:
            lines.append(f"| {c['channel']} | {c.get('sent', 0)} | {c.get('skipped', 0)} | {c.get('failed', 0)} | {_cell(c.get('error') or '')} |")
        lines.append("")
    if quarantined:
        lines += [f"## Quarantined scenes ({len(quarantined)})", "",
                  "Skipped: they could not be used. Each is tried again on the next run and leaves this list once ingested.", "",
                  "| scene | object | attempts | first attempt | last attempt | error |", "|---|---|---|---|---|---|"]
        for q in quarantined:
            lines.append(f"| {q['scene_id']} | `{q['object']}` | {q.get('attempts', 1)} | {q.get('first_attempt', '')} | "
                         f"{q.get('last_attempt', '')} | {_cell(q['error'])} |")
        lines.append("")
    lines.append(f"Open alerts at this site: {sum(1 for a in alerts if a.is_open)}")
    return "\n".join(lines)


def cube_link_text(a: Alert) -> str:
    """How to open an alert's place and time in the cube (``sitewatch.open_site``)."""
    c = a.cube
    if not c:
        return ""
    r0, c0, r1, c1 = c["window"]
    t0, t1 = c["time"]
    return (f"`sitewatch.open_site({c['url']!r}).sel(time=slice({t0[:10]!r}, {t1[:10]!r}))"
            f".isel(y=slice({r0}, {r1}), x=slice({c0}, {c1}))`")


def open_alerts_table(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Rows of open alerts for a table (Prefect table artifact, CLI)."""
    return [{"id": a.id, "status": a.status, "confidence": round(a.confidence, 2), "first_seen": a.first_seen,
             "last_seen": a.last_seen, "area_m2": round(a.area_m2), "lon": round(a.lon, 5), "lat": round(a.lat, 5),
             "observations": a.n_observations, "description": a.description}
            for a in alerts if a.is_open]


# ---------------------------------------------------------------- STAC items

STAC_DIR = "stac"


def stac_item(a: Alert) -> dict[str, Any]:
    """A STAC 1.0 Item for an alert: geometry, its time range and the alert's fields as properties,
    the before/after chips and the cube as assets."""
    from shapely.geometry import shape

    geom = a.geometry or {"type": "Point", "coordinates": [a.lon, a.lat]}
    bbox = list(shape(geom).bounds)
    props = {"datetime": None, "start_datetime": f"{a.first_seen}T00:00:00Z", "end_datetime": f"{a.last_seen}T23:59:59Z",
             "title": a.description}
    for k in ("site", "status", "confidence", "area_m2", "lon", "lat", "direction", "n_observations", "first_seen",
              "last_seen", "update_seq", "closed_reason"):
        props[f"sitewatch:{k}"] = getattr(a, k)
    props["sitewatch:cube"] = dict(a.cube)
    assets = {}
    for k in ("before", "after"):
        if a.images.get(k):
            assets[k] = {"href": a.images[k], "type": "image/png", "roles": ["overview"], "title": f"{k} (true colour, change outlined)"}
    if a.cube.get("url"):
        assets["cube"] = {"href": a.cube["url"], "type": "application/vnd+zarr", "roles": ["data"], "title": "site datacube (Zarr v3)"}
    return {"type": "Feature", "stac_version": "1.0.0", "id": a.id, "geometry": geom, "bbox": bbox,
            "properties": props, "links": [], "assets": assets}


def write_stac_items(alerts_root: str, alerts: Sequence[Alert], storage_options: dict[str, Any] | None = None) -> list[str]:
    """Write (replace) ``<alerts_root>/stac/<id>.json`` for each alert; returns the URLs."""
    urls = []
    for a in alerts:
        url = store.join(alerts_root, STAC_DIR, f"{a.id}.json")
        store.write_json(url, stac_item(a), storage_options)
        urls.append(url)
    return urls


def _cell(text: str, limit: int = 300) -> str:
    """Text for one markdown table cell: one line, no pipes, at most ``limit`` characters."""
    t = " ".join(str(text).split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"
