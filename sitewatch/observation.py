"""What the site's scenes saw: clear views of alert footprints, and the site's observation state.

:func:`clear_views` reads the cube's ``valid``/``cloud``/``shadow`` layers inside each open
alert's bounding box (only those windows, one read per alert) and says, per analysed scene, how
much of the footprint was seen clearly. :func:`sitewatch.alerts.merge` uses a clear view of a
footprint without a supporting detection as evidence that the pixels are back to baseline.

:func:`site_state` says when the site was last seen at all and last seen clearly, so a site
hidden by clouds (or without new scenes) for ``not_observed_days`` is reported as *not observed*
in the run summary and artifact rather than silently producing no alerts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np
import xarray as xr

from .alerts import AlertParams, ClearView, _days
from .models import Alert


def iso(t: Any) -> str:
    """ISO UTC (``YYYY-MM-DDTHH:MM:SSZ``) for a numpy datetime64."""
    return np.datetime_as_string(np.datetime64(t, "s"), unit="s") + "Z"


REFLECTANCE = ("blue", "green", "red", "nir", "swir16", "swir22")
UNION_READ_BYTES = 256 * 2**20  # read all open alerts' windows at once when they fit in this


def _before_index(frac: np.ndarray, first: int, min_clear: float) -> int | None:
    """The latest time before ``first`` whose footprint was clear enough (else the clearest one)."""
    earlier = [t for t in range(first) if frac[t] >= min_clear]
    if earlier:
        return earlier[-1]
    return int(np.argmax(frac[:first])) if first > 0 and frac[:first].max() > 0 else None


def _returned(x: np.ndarray, ok: np.ndarray, foot: np.ndarray, i: int, before: int, after: int) -> bool | None:
    """Whether scene ``i`` looks more like the ``before`` scene than like the ``after`` (first
    seen) scene over the footprint pixels clear in all three: mean absolute difference over bands."""
    px = foot & ok[i] & ok[before] & ok[after]
    if not px.any():
        return None
    xi, xb, xa = (x[:, t][:, px].astype(np.float64) for t in (i, before, after))
    return bool(np.abs(xi - xb).mean() < np.abs(xi - xa).mean())


def clear_views(cube: xr.Dataset, alerts: Iterable[Alert], scene_ids: Sequence[str] | None = None,
                min_clear: float = 0.9) -> list[ClearView]:
    """Per open alert and per analysed scene (of ``scene_ids``, default all), the fraction of the
    alert's bounding box that was valid and neither cloud nor shadow, and whether the scene
    looks like the place *before* the alert rather than like its first view (``returned``; None
    when that cannot be told): a change the rolling baseline has absorbed is then not mistaken
    for pixels back to baseline. ``cube`` is the committed, time-sorted site cube
    (:func:`sitewatch.io.cube.open_cube`); ``min_clear`` picks the "before" scene. One read of
    the alert's window (all times) per alert."""
    alerts = list(alerts)
    for v in ("valid", "cloud", "shadow", "scene_id"):
        if v not in cube.variables:
            raise ValueError(f"clear views: cube variables got {sorted(cube.variables)!r}; expected {v!r} among them")
    bands = [b for b in REFLECTANCE if b in cube.data_vars]
    sids = [str(s) for s in cube.scene_id.values]
    analysed = np.asarray(cube["analysed"].values, bool) if "analysed" in cube else np.ones(len(sids), bool)
    wanted = set(sids if scene_ids is None else scene_ids)
    idx = [i for i, s in enumerate(sids) if s in wanted and analysed[i]]
    out: list[ClearView] = []
    if not idx:
        return out
    h, w = cube.sizes["y"], cube.sizes["x"]
    boxes = {}
    for a in alerts:
        if not a.is_open:
            continue
        r0, c0, r1, c1 = a.bbox_pixels
        r0, c0, r1, c1 = max(0, r0), max(0, c0), min(h, r1), min(w, c1)
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"alert {a.id!r}: bbox_pixels got {a.bbox_pixels!r}; expected a window inside the {h} x {w} site grid")
        boxes[a.id] = (r0, c0, r1, c1)
    if not boxes:
        return out
    layers = cube[bands + ["valid", "cloud", "shadow"] + [v for v in ("change",) if v in cube.data_vars]]
    # One read of the union of the alerts' windows (all times) when it is small enough, else one
    # read per alert: many alerts on a small site must not read the same chunks again and again.
    u0, v0 = min(b[0] for b in boxes.values()), min(b[1] for b in boxes.values())
    u1, v1 = max(b[2] for b in boxes.values()), max(b[3] for b in boxes.values())
    nbytes = (u1 - u0) * (v1 - v0) * cube.sizes["time"] * sum(layers[v].dtype.itemsize for v in layers.data_vars)
    union = layers.isel(y=slice(u0, u1), x=slice(v0, v1)).compute() if len(boxes) > 1 and nbytes <= UNION_READ_BYTES else None
    for a in alerts:
        if a.id not in boxes:
            continue
        r0, c0, r1, c1 = boxes[a.id]
        if union is not None:
            win = union.isel(y=slice(r0 - u0, r1 - u0), x=slice(c0 - v0, c1 - v0))
        else:
            win = layers.isel(y=slice(r0, r1), x=slice(c0, c1)).compute()
        ok = win["valid"].values & ~win["cloud"].values & ~win["shadow"].values
        frac = ok.mean(axis=(1, 2))
        first = sids.index(a.first_scene) if a.first_scene in sids else None
        before = _before_index(frac, first, min_clear) if first is not None else None
        x = np.stack([win[b].values for b in bands]) if bands else None
        foot = np.ones(ok.shape[1:], bool)
        if first is not None and "change" in win and win["change"].values[first].any():
            foot = win["change"].values[first].astype(bool)
        for i in idx:
            ret = None
            if x is not None and first is not None and before is not None and i > first:
                ret = _returned(x, ok, foot, i, before, first)
            out.append(ClearView(a.id, sids[i], iso(cube.time.values[i]), float(frac[i]), ret))
    return out


def site_state(slots: Iterable[Any], as_of: str | None = None, params: AlertParams = AlertParams(),
               min_clear_fraction: float = 0.1) -> dict[str, Any]:
    """The site's observation state from the cube's slots (:func:`sitewatch.io.cube.slots`):
    last scene, last clear scene (analysed, at least ``min_clear_fraction`` of the site valid and
    clear), days since each at ``as_of`` (ISO UTC; default now) and ``not_observed`` when the last
    clear scene is older than ``params.not_observed_days`` (or there is none)."""
    as_of = as_of or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    last_scene = last_clear = None
    for s in slots:
        if not s.ingested:
            continue
        t = iso(s.time)
        last_scene = max(last_scene or t, t)
        clear = s.valid_fraction * (1.0 - s.cloud_fraction) if s.cloud_fraction == s.cloud_fraction else 0.0
        if s.analysed and clear >= min_clear_fraction:
            last_clear = max(last_clear or t, t)
    d_scene = None if last_scene is None else round(_days(last_scene, as_of), 1)
    d_clear = None if last_clear is None else round(_days(last_clear, as_of), 1)
    not_observed = d_clear is None or d_clear > params.not_observed_days
    if last_scene is None:
        text = "not observed: no scene yet"
    elif last_clear is None:
        text = f"not observed: no clear scene yet (last scene {last_scene[:10]}, cloud or no valid pixels)"
    elif not_observed:
        text = (f"not observed for {d_clear:.0f} days (last clear scene {last_clear[:10]}; last scene {last_scene[:10]}, "
                f"{d_scene:.0f} days ago)")
    else:
        text = f"observed: last clear scene {last_clear[:10]} ({d_clear:.0f} days ago)"
    return {"as_of": as_of, "last_scene": last_scene, "last_clear_scene": last_clear, "days_since_scene": d_scene,
            "days_since_clear": d_clear, "not_observed": not_observed, "not_observed_days": params.not_observed_days, "text": text}
