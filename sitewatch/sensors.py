"""Sensor band profiles: which asset keys hold which band, and how to turn pixel values into
reflectance.

A :class:`SensorProfile` lists its bands (:class:`BandSpec`): the cube variable name (an eo
common name such as ``blue`` or ``swir16``, or a QA name such as ``scl``), the asset keys that
may hold it as the providers name them (Earth Search ``blue``/``nir08``, Planetary Computer
``B02``/``B8A``, USGS ``SR_B2``, ...; matched case-insensitively, in order of preference), and
the default ``scale``/``offset``/``nodata`` (reflectance = DN * scale + offset). What a STAC item
says about an asset (``raster:bands`` scale/offset/nodata, in ``SceneRef.asset_meta``) wins over
the profile's defaults.

Profiles: ``generic`` (what the synthetic demo writes: asset keys are the common names),
``sentinel2-l1c``, ``sentinel2-l2a`` (SCL kept as QA band ``scl``), ``landsat-c2-l2`` (Landsat 8/9
Collection 2 Level-2, QA_PIXEL kept as ``qa_pixel``), ``landsat-c2-l2-tm-etm`` (Landsat 4-7
Collection 2 Level-2), ``landsat-tm-etm-fmask`` (Landsat 5/7 surface reflectance with an Fmask
class raster, as in the shipped Colorado series) and ``commercial-4band`` (sub-metre RGB+NIR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .models import SceneRef


class SceneError(ValueError):
    """A scene that cannot be used: unreadable file, missing band, no overlap with the site.
    (Defined here so that profiles can raise it; :mod:`sitewatch.io.scenes` re-exports it.)"""


@dataclass(frozen=True)
class BandSpec:
    """One band of a sensor: cube variable ``name``, the asset keys that may hold it
    (``aliases``, in order of preference, case-insensitive), default scaling (reflectance = DN *
    ``scale`` + ``offset``), ``nodata``, native ``resolution`` in metres (informational) and
    whether it is a quality/class band (``qa``: nearest resampling, values stored as they are,
    not part of ``valid``)."""

    name: str
    aliases: tuple[str, ...]
    scale: float = 1e-4
    offset: float = 0.0
    nodata: float | None = 0
    resolution: float | None = None
    qa: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"band name got {self.name!r}; expected a non-empty cube variable name")
        if not self.aliases or not all(isinstance(a, str) and a for a in self.aliases):
            raise ValueError(f"band {self.name!r}: aliases got {self.aliases!r}; expected at least one asset key")
        if not (self.scale != 0):
            raise ValueError(f"band {self.name!r}: scale got {self.scale!r}; expected a non-zero number")
        if self.resolution is not None and not (self.resolution > 0):
            raise ValueError(f"band {self.name!r}: resolution got {self.resolution!r}; expected metres > 0 or None")


@dataclass(frozen=True)
class SensorProfile:
    """A product's bands, the reflectance bands ingested by default, and its QA band (if any)
    with the decoder ``qa_kind`` that :mod:`sitewatch.kernels.qa` uses for it.

    ``baseline_offset``: ``(property, minimum version, offset)``: items whose ``property`` is at
    least ``minimum version`` get ``offset`` for their reflectance bands unless the item states
    an offset itself (Sentinel-2 processing baseline 04.00 and later: DN - 1000, i.e. -0.1).
    ``offset_applied_flags``: item properties that, when true, say the provider already took the
    offset out of the pixel values (Earth Search ``earthsearch:boa_offset_applied``): offset 0
    for reflectance bands, whatever ``raster:bands`` says."""

    name: str
    bands: tuple[BandSpec, ...]
    default_bands: tuple[str, ...]
    qa_band: str | None = None
    qa_kind: str | None = None
    description: str = ""
    baseline_offset: tuple[str, float, float] | None = None
    offset_applied_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [b.name for b in self.bands]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sensor profile {self.name!r}: bands got duplicate names {dupes!r}; expected unique names")
        lacking = [b for b in self.default_bands if b not in names]
        if lacking:
            raise ValueError(f"sensor profile {self.name!r}: default_bands got {lacking!r}, which it has no BandSpec for")
        if any(self.band(b).qa for b in self.default_bands):
            raise ValueError(f"sensor profile {self.name!r}: default_bands got a QA band; expected reflectance bands only")
        if (self.qa_band is None) != (self.qa_kind is None):
            raise ValueError(f"sensor profile {self.name!r}: qa_band/qa_kind got {(self.qa_band, self.qa_kind)!r}; "
                             "expected both or neither")
        if self.qa_band is not None and (self.qa_band not in names or not self.band(self.qa_band).qa):
            raise ValueError(f"sensor profile {self.name!r}: qa_band got {self.qa_band!r}; expected one of its bands with qa=True")

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def reflectance_bands(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands if not b.qa)

    def band(self, name: str) -> BandSpec:
        for b in self.bands:
            if b.name == name:
                return b
        raise ValueError(f"sensor profile {self.name!r}: band got {name!r}; expected one of {list(self.band_names)!r}")

    def resolve(self, ref: "SceneRef", names: Sequence[str]) -> dict[str, tuple[str, BandSpec]]:
        """cube band name -> (asset key in ``ref.assets``, spec). An asset matches a band when its
        key equals one of the band's aliases (case-insensitive; the first alias found wins), or
        else when its STAC ``eo:bands`` common name (``ref.asset_meta[key]["common_name"]``) is
        the band's name and no other asset claims it. Raises :class:`SceneError` naming the
        scene, the band, the keys looked for and the keys found when a band is missing."""
        by_lower: dict[str, str] = {}
        for key in ref.assets:
            by_lower.setdefault(key.lower(), key)
        out: dict[str, tuple[str, BandSpec]] = {}
        missing: list[str] = []
        for name in names:
            spec = self.band(name)
            key = next((by_lower[a.lower()] for a in spec.aliases if a.lower() in by_lower), None)
            if key is None:
                named = [k for k in ref.assets if (ref.asset_meta.get(k) or {}).get("common_name") == name]
                key = named[0] if len(named) == 1 else None
            if key is None:
                missing.append(f"{name!r} (looked for asset keys {list(spec.aliases)!r})")
            else:
                out[name] = (key, spec)
        if missing:
            raise SceneError(
                f"scene {ref.scene_id!r} ({ref.item_href or 'no item'}) lacks band(s) {', '.join(missing)} that sensor "
                f"profile {self.name!r} needs; found assets {sorted(ref.assets)!r}")
        return out

    def pixel_meta(self, ref: "SceneRef", key: str, spec: BandSpec) -> dict[str, Any]:
        """``scale``, ``offset`` and ``nodata`` for asset ``key`` of ``ref``: the item's own
        ``raster:bands`` values (``ref.asset_meta[key]``) where it states them, else the
        processing-baseline rule (``baseline_offset``) for the offset of reflectance bands, else
        the profile's defaults; an ``offset_applied_flags`` property that is true makes the
        offset 0. ``nodata`` is ``None`` when neither says; the caller may then
        use the file's own nodata."""
        meta = ref.asset_meta.get(key) or {}
        scale = meta.get("scale") if meta.get("scale") is not None else spec.scale
        offset = meta.get("offset")
        if offset is None:
            offset = spec.offset
            if self.baseline_offset is not None and not spec.qa:
                prop, minimum, off = self.baseline_offset
                version = _version(ref.properties.get(prop))
                if version is not None and version >= minimum:
                    offset = off
        if not spec.qa and any(ref.properties.get(f) is True for f in self.offset_applied_flags):
            offset = 0.0
        return {"scale": float(scale), "offset": float(offset), "nodata": meta.get("nodata"),
                "nodata_default": spec.nodata}


def _version(v: Any) -> float | None:
    try:
        return float(str(v).strip())
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- QA band descriptions (CF flags)

QA_FLAGS: dict[str, dict[str, Any]] = {
    "scl": {
        "long_name": "Sentinel-2 L2A scene classification (SCL)",
        "flag_values": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        "flag_meanings": "no_data saturated_or_defective dark_area_pixels cloud_shadows vegetation not_vegetated "
                         "water unclassified cloud_medium_probability cloud_high_probability thin_cirrus snow",
    },
    "fmask": {
        "long_name": "Fmask classification",
        "flag_values": [0, 1, 2, 3, 4, 255],
        "flag_meanings": "clear water cloud_shadow snow cloud fill",
    },
    "qa_pixel": {
        "long_name": "Landsat Collection 2 QA_PIXEL bit flags",
        "flag_masks": [1, 2, 4, 8, 16, 32, 64, 128],
        "flag_meanings": "fill dilated_cloud cirrus cloud cloud_shadow snow clear water",
        "comment": "bits 8-9 cloud, 10-11 cloud shadow, 12-13 snow/ice, 14-15 cirrus confidence (0 none .. 3 high)",
    },
    "bqa": {
        "long_name": "Landsat 8 pre-Collection BQA bit flags",
        "flag_masks": [1],
        "flag_meanings": "fill",
        "comment": "two-bit confidences: 4-5 water, 10-11 snow/ice, 12-13 cirrus, 14-15 cloud",
    },
}


def qa_attrs(name: str) -> dict[str, Any]:
    """CF attributes (``long_name``, ``flag_values``/``flag_masks``, ``flag_meanings``) of a QA band."""
    return dict(QA_FLAGS.get(name, {"long_name": f"quality band {name}"}))


# ---------------------------------------------------------------- profiles

def _b(name: str, *aliases: str, res: float | None = None, **kw: Any) -> BandSpec:
    return BandSpec(name=name, aliases=tuple(aliases), resolution=res, **kw)


SIX = ("blue", "green", "red", "nir", "swir16", "swir22")

# name, Sentinel-2 band id, native resolution (m)
_S2 = [("coastal", "B01", 60), ("blue", "B02", 10), ("green", "B03", 10), ("red", "B04", 10), ("rededge1", "B05", 20),
       ("rededge2", "B06", 20), ("rededge3", "B07", 20), ("nir", "B08", 10), ("nir08", "B8A", 20), ("nir09", "B09", 60),
       ("cirrus", "B10", 60), ("swir16", "B11", 20), ("swir22", "B12", 20)]
#: The s2cloudless model bands (Sentinel-2 L1C TOA) by their names in the cube (eo common names).
S2CLOUDLESS_BANDS = {"B01": "coastal", "B02": "blue", "B04": "red", "B05": "rededge1", "B08": "nir", "B8A": "nir08",
                     "B09": "nir09", "B10": "cirrus", "B11": "swir16", "B12": "swir22"}
_S2_BASELINE = ("s2:processing_baseline", 4.0, -0.1)
_S2_APPLIED = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")


def _s2(l2a: bool) -> SensorProfile:
    bands = [_b(n, n, bid, res=r) for n, bid, r in _S2 if not (l2a and bid == "B10")]
    if l2a:
        bands.append(_b("scl", "scl", "SCL", res=20, scale=1.0, nodata=0, qa=True))
        return SensorProfile("sentinel2-l2a", tuple(bands), SIX, qa_band="scl", qa_kind="scl",
                             description="Sentinel-2 L2A surface reflectance (Earth Search or Planetary Computer keys), SCL",
                             baseline_offset=_S2_BASELINE, offset_applied_flags=_S2_APPLIED)
    return SensorProfile("sentinel2-l1c", tuple(bands), SIX,
                         description="Sentinel-2 L1C top-of-atmosphere reflectance (Earth Search or B01..B12 keys)",
                         baseline_offset=_S2_BASELINE, offset_applied_flags=_S2_APPLIED)


_C2 = dict(scale=2.75e-5, offset=-0.2, nodata=0, res=30)
_QA_PIXEL = _b("qa_pixel", "qa_pixel", "QA_PIXEL", res=30, scale=1.0, nodata=1, qa=True)


def _landsat_c2(oli: bool) -> SensorProfile:
    if oli:  # Landsat 8/9 OLI
        ids = [("coastal", "SR_B1"), ("blue", "SR_B2"), ("green", "SR_B3"), ("red", "SR_B4"), ("nir", "SR_B5"),
               ("swir16", "SR_B6"), ("swir22", "SR_B7")]
    else:  # Landsat 4-5 TM, 7 ETM+
        ids = [("blue", "SR_B1"), ("green", "SR_B2"), ("red", "SR_B3"), ("nir", "SR_B4"), ("swir16", "SR_B5"),
               ("swir22", "SR_B7")]
    bands = [_b(n, *((n, "nir08", sr) if n == "nir" else (n, sr)), **_C2) for n, sr in ids]
    bands.append(_QA_PIXEL)
    name = "landsat-c2-l2" if oli else "landsat-c2-l2-tm-etm"
    what = "Landsat 8/9 OLI" if oli else "Landsat 4-7 TM/ETM+"
    return SensorProfile(name, tuple(bands), SIX, qa_band="qa_pixel", qa_kind="qa_pixel",
                         description=f"{what} Collection 2 Level-2 surface reflectance, QA_PIXEL")


PROFILES: dict[str, SensorProfile] = {
    "generic": SensorProfile(
        "generic",
        tuple(_b(n, n) for n in ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir",
                                 "nir08", "nir09", "cirrus", "swir16", "swir22")),
        SIX, description="asset keys are eo common names; reflectance x 10000 (scale 1e-4), nodata 0"),
    "sentinel2-l1c": _s2(l2a=False),
    "sentinel2-l2a": _s2(l2a=True),
    "landsat-c2-l2": _landsat_c2(oli=True),
    "landsat-c2-l2-tm-etm": _landsat_c2(oli=False),
    "landsat-tm-etm-fmask": SensorProfile(
        "landsat-tm-etm-fmask",
        (_b("blue", "b1", "blue", res=30, nodata=-9999), _b("green", "b2", "green", res=30, nodata=-9999),
         _b("red", "b3", "red", res=30, nodata=-9999), _b("nir", "b4", "nir", res=30, nodata=-9999),
         _b("swir16", "b5", "swir16", res=30, nodata=-9999), _b("swir22", "b7", "swir22", res=30, nodata=-9999),
         _b("fmask", "fmask", res=30, scale=1.0, nodata=255, qa=True)),
        ("red", "nir", "swir16"), qa_band="fmask", qa_kind="fmask",
        description="Landsat 5/7 surface reflectance (int16 x 10000, nodata -9999) with an Fmask class raster"),
    "commercial-4band": SensorProfile(
        "commercial-4band",
        tuple(_b(n, n, f"b{i}", f"band{i}", f"band_{i}", res=0.5) for i, n in enumerate(("blue", "green", "red", "nir"), 1)),
        ("blue", "green", "red", "nir"),
        description="generic sub-metre 4-band RGB+NIR product (b1..b4 / band1..band4 / common-name keys)"),
}


def get_profile(name: "str | SensorProfile") -> SensorProfile:
    """The profile called ``name`` (a :class:`SensorProfile` is returned as it is)."""
    if isinstance(name, SensorProfile):
        return name
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"sensor profile got {name!r}; expected one of {sorted(PROFILES)!r}") from None


__all__ = ["BandSpec", "PROFILES", "QA_FLAGS", "S2CLOUDLESS_BANDS", "SceneError", "SensorProfile", "get_profile", "qa_attrs"]
