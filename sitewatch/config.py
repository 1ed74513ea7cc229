"""Site configuration files (YAML) and their validation.

Pydantic lives here, at the edge: a ``sites.yaml`` (and Prefect flow parameters) are validated
into :class:`SiteConfig`, which builds the library's frozen :class:`~sitewatch.models.Site`.
Errors name the file, the site and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .models import Site
from .sensors import PROFILES, S2CLOUDLESS_BANDS, SensorProfile, get_profile

DEFAULT_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
SPECTRAL_MASK_BANDS = ("blue", "green", "red", "nir")  # swir16 sharpens the snow and shadow tests when present
SPECTRAL_RNS_BANDS = ("red", "nir", "swir16")  # the reduced red/NIR/SWIR rules (no blue/green)


# ---------------------------------------------------------------- alert lifecycle and channels

_CHANNEL_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class AlertConfig(BaseModel):
    """Alert lifecycle settings (see :class:`sitewatch.alerts.AlertParams`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provisional_at: int = Field(2, ge=1, description="Observations for an alert to become 'provisional'")
    confirmed_at: int = Field(3, ge=1, description="Observations for an alert to become 'confirmed'")
    close_after_clear: int = Field(2, ge=1, description="Clear views of the footprint without change that close an alert")
    close_after_days: float = Field(90.0, gt=0, description="Days without support that close an alert")
    min_clear_fraction: float = Field(0.9, gt=0, le=1, description="Share of the footprint clear for a clear view")
    not_observed_days: float = Field(30.0, gt=0, description="Days without a clear scene after which the site is reported 'not observed'")

    @model_validator(mode="after")
    def _order(self) -> "AlertConfig":
        if self.provisional_at > self.confirmed_at:
            raise ValueError(f"provisional_at {self.provisional_at} > confirmed_at {self.confirmed_at}; expected provisional_at <= confirmed_at")
        return self

    def to_params(self) -> Any:
        from .alerts import AlertParams

        return AlertParams(**self.model_dump())


def _statuses_field() -> Any:
    from .models import ALERT_STATUSES

    return Field(ALERT_STATUSES, description="Deliver updates that leave an alert in one of these statuses "
                 f"(default all: {', '.join(ALERT_STATUSES)})")


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Channel name (outbox folder, run report)", pattern=_CHANNEL_NAME)
    statuses: tuple[str, ...] = _statuses_field()
    timeout: float = Field(10.0, gt=0, le=300, description="Seconds before a delivery attempt gives up")

    @field_validator("statuses")
    @classmethod
    def _known_statuses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from .models import ALERT_STATUSES

        bad = [x for x in v if x not in ALERT_STATUSES]
        if bad or not v:
            raise ValueError(f"got {list(bad) or 'none'}; expected some of {list(ALERT_STATUSES)}")
        return v


class WebhookChannel(_Channel):
    """Generic webhook: JSON body, ``X-Sitewatch-Signature: sha256=<HMAC-SHA256 of the body>``."""

    type: Literal["webhook"]
    url: str = Field(description="http(s) URL the JSON body is POSTed to")
    secret_env: Optional[str] = Field(None, pattern=_ENV_NAME, description="Environment variable holding the HMAC secret")
    secret_block: Optional[str] = Field(None, description="Prefect Secret block holding the HMAC secret")


class SlackChannel(_Channel):
    """Slack-compatible incoming webhook; its URL is a secret, so only where to find it is configured."""

    type: Literal["slack"]
    url_env: Optional[str] = Field(None, pattern=_ENV_NAME, description="Environment variable holding the webhook URL")
    url_block: Optional[str] = Field(None, description="Prefect Secret block holding the webhook URL")

    @model_validator(mode="after")
    def _one_source(self) -> "SlackChannel":
        if (self.url_env is None) == (self.url_block is None):
            raise ValueError("expected exactly one of url_env / url_block (the incoming-webhook URL is a secret)")
        return self


class EmailChannel(_Channel):
    type: Literal["email"]
    host: str = Field(description="SMTP server host")
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field(description="From address")
    to: tuple[str, ...] = Field(description="Recipient addresses", min_length=1)
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS")
    username: Optional[str] = Field(None, description="SMTP login user (password from password_env/password_block)")
    password_env: Optional[str] = Field(None, pattern=_ENV_NAME)
    password_block: Optional[str] = None


class PrefectEventsChannel(_Channel):
    """Prefect events (``sitewatch.alert.<status>``) for Prefect automations; emitted by the flow's tasks."""

    type: Literal["prefect-events"]


ChannelConfig = Annotated[Union[WebhookChannel, SlackChannel, EmailChannel, PrefectEventsChannel], Field(discriminator="type")]


def channel_spec(ch: Any, resolve_block: Optional[Callable[[str], str]] = None) -> Any:
    """The library spec (:mod:`sitewatch.channels`) for a configured channel, secrets resolved from
    the environment or through ``resolve_block`` (Prefect Secret blocks; given by ``tasks/``).
    Raises :class:`sitewatch.channels.ChannelError` naming the channel and the missing secret's
    *name* (never a value)."""
    from .channels import ChannelError, EmailSpec, SlackSpec, WebhookSpec, env_secret

    def secret(env: Optional[str], block: Optional[str], what: str) -> Optional[str]:
        if block:
            if resolve_block is None:
                raise ChannelError(f"channel {ch.name!r}: {what} is in Prefect block {block!r}, which only a flow run can read")
            try:
                return resolve_block(block)
            except Exception as exc:  # the block API's own error; no value in it
                raise ChannelError(f"channel {ch.name!r}: could not read {what} from Prefect block {block!r}: {type(exc).__name__}") from None
        return env_secret(ch.name, env, what)

    if isinstance(ch, WebhookChannel):
        return WebhookSpec(ch.name, ch.url, secret(ch.secret_env, ch.secret_block, "secret"), ch.statuses, ch.timeout)
    if isinstance(ch, SlackChannel):
        return SlackSpec(ch.name, secret(ch.url_env, ch.url_block, "webhook URL") or "", ch.statuses, ch.timeout)
    if isinstance(ch, EmailChannel):
        pw = secret(ch.password_env, ch.password_block, "password")
        return EmailSpec(ch.name, ch.host, ch.port, ch.sender, ch.to, ch.starttls, ch.username, pw, ch.statuses, ch.timeout)
    raise ValueError(f"channel {ch.name!r}: type got {getattr(ch, 'type', None)!r}; expected webhook, slack or email "
                     "(prefect-events are sent by tasks/)")


class SiteConfig(BaseModel):
    """One site to watch. In the Prefect UI this renders as the run form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short id: lowercase letters, digits, '-' or '_'", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    bbox: Optional[tuple[float, float, float, float]] = Field(None, description="lon/lat bounding box: west, south, east, north")
    geometry: Optional[dict[str, Any]] = Field(None, description="GeoJSON polygon in lon/lat (instead of bbox)")
    bounds: Optional[tuple[float, float, float, float]] = Field(
        None, description="Projected bounds (left, bottom, right, top) in 'crs' units, instead of bbox/geometry")
    resolution: float = Field(10.0, gt=0, description="Pixel size of the site grid in metres")
    crs: Optional[str] = Field(None, description="Site CRS, e.g. EPSG:32636; default: UTM zone of the centroid")
    source: str = Field(description="Where scenes are found: a folder or fsspec URL (s3://bucket/prefix) holding STAC items")
    store: str = Field(description="Where sitewatch writes this site's cube and alerts: folder or fsspec URL")
    sensor: str = Field("generic", description="Sensor profile: how asset keys map to bands and how to scale them: "
                        + ", ".join(PROFILES))
    bands: tuple[str, ...] = Field(DEFAULT_BANDS, description="Reflectance bands (STAC eo common names) to ingest; "
                                   "default: the sensor profile's default bands")
    min_alert_area_m2: float = Field(1000.0, ge=0, description="Smallest change object that raises an alert")
    chunk_size: int = Field(1024, ge=64, le=8192, description="Spatial chunk size (pixels) of the cube as stored, and of the Dask arrays of ingest (default 1024: about 1M pixels per chunk)")
    work_chunk_size: int = Field(2048, ge=64, le=16384, description="Spatial chunk size (pixels) of the Dask arrays the analysis works on, "
                                 "rounded down to a multiple of chunk_size (at least one): larger means fewer Dask tasks, more memory per task")
    hold_max_mib: Optional[int] = Field(None, ge=0, description="Memory (MiB) a date's analysis may hold for the site's whole-site "
                                        "arrays (about 120 bytes per pixel; default: a quarter of a Dask worker's memory, or of "
                                        "this machine's); a larger site streams them through a scratch store beside the cube "
                                        "instead: 1.4-1.6x slower, but memory follows the strip size (strip_size), not the site's area")
    strip_size: int = Field(1024, ge=64, le=8192, description="A streamed site is analysed in full-width strips of about "
                            "strip_size^2 pixels (fitted to the stored rows): smaller strips need less memory and more Dask "
                            "tasks (4096^2 px, 6 dates on 2 cores: 1024 -> 1348 MiB, 218 s; 512 -> 720 MiB, 402 s)")
    baseline_window: int = Field(8, ge=1, le=100, description="Clear observations per pixel in the clear-sky baseline (the last W in earlier scenes; "
                                 "default 8, or 60 with baseline_season_days)")
    baseline_season_days: Optional[int] = Field(
        None, ge=1, le=182, description="Seasonal baseline: only the observations within this many days of the scene's "
        "day of year (any year, across the year end); none: the last W. W must then reach back a year (about 60 at a 5-day revisit)")
    change_threshold: float = Field(7.0, gt=0, description="Change score above which a pixel starts a change region; its "
                                    "neighbours join it above min(5.0, this) (hysteresis)")
    discovery: Literal["auto", "stac-static", "stac-api", "layout"] = Field(
        "auto", description="How scenes are found in 'source': STAC items/catalog/ItemCollection in a store, a STAC API, "
        "or a plain folder layout without STAC (auto: STAC API for http(s) URLs, else static STAC, else layout)")
    collections: tuple[str, ...] = Field((), description="STAC API collections to search (stac-api discovery)")
    max_cloud: Optional[float] = Field(None, ge=0, le=100, description="Skip scenes whose eo:cloud_cover exceeds this (percent)")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Non-secret fsspec options for s3:// (endpoint_url, region, anon); "
        "credentials come from the environment or 'credentials_block', never from this file")
    mask_method: Literal["auto", "spectral", "provider", "s2cloudless"] = Field(
        "auto", description="Cloud/shadow masks: sitewatch's spectral+temporal rules, the sensor's QA band "
        "(SCL, QA_PIXEL, Fmask), s2cloudless (Sentinel-2 L1C; clouds only), or auto: the union of whichever "
        "the site's bands and sensor allow")
    credentials_block: Optional[str] = Field(None, description="Name of a Prefect block holding S3 credentials")
    alerts: AlertConfig = Field(default_factory=AlertConfig, description="Alert lifecycle: counts, closing, 'not observed'")
    channels: tuple[ChannelConfig, ...] = Field((), description="Where alert updates go besides the GeoJSON feed, STAC "
                                                "items and the Prefect artifacts: webhook, slack, email, prefect-events")

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"got duplicate channel names {dupes!r}; expected each channel name once")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_bands(cls, data: Any) -> Any:
        # bands not given: the sensor profile's default bands (an unknown sensor is reported by its own field)
        if isinstance(data, dict) and "bands" not in data and isinstance(data.get("sensor", "generic"), str):
            prof = PROFILES.get(data.get("sensor", "generic"))
            if prof is not None:
                data = {**data, "bands": prof.default_bands}
        return data

    @model_validator(mode="before")
    @classmethod
    def _seasonal_window(cls, data: Any) -> Any:
        # a seasonal baseline needs last year's season in the ring: a longer default window
        if isinstance(data, dict) and data.get("baseline_season_days") is not None and "baseline_window" not in data:
            from .kernels.baseline import SEASONAL_WINDOW

            data = {**data, "baseline_window": SEASONAL_WINDOW}
        return data

    @field_validator("sensor")
    @classmethod
    def _sensor_known(cls, v: str) -> str:
        get_profile(v)  # ValueError naming the known profiles
        return v

    @field_validator("bands")
    @classmethod
    def _bands_known(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not v:
            raise ValueError("got no bands; expected at least one reflectance band")
        if len(set(v)) != len(v):
            raise ValueError(f"got duplicate bands {sorted({b for b in v if v.count(b) > 1})!r}; expected each band once")
        sensor = info.data.get("sensor")
        if sensor is None:  # the sensor field failed: reported there
            return v
        prof = get_profile(sensor)
        unknown = [b for b in v if b not in prof.reflectance_bands]
        if unknown:
            raise ValueError(f"got {unknown!r}, which sensor profile {sensor!r} has no reflectance band for; expected "
                             f"some of {list(prof.reflectance_bands)!r} (its QA band {prof.qa_band!r} is read when present)"
                             if prof.qa_band else
                             f"got {unknown!r}, which sensor profile {sensor!r} has no band for; expected some of "
                             f"{list(prof.reflectance_bands)!r}")
        lacking = [b for b in SPECTRAL_MASK_BANDS if b not in v]
        if lacking and prof.qa_band is None and not all(b in v for b in SPECTRAL_RNS_BANDS):
            raise ValueError(f"bands lack {lacking}; cloud masking needs blue, green, red and nir, or red, nir and "
                             f"swir16 (or a sensor profile with a QA band; {sensor!r} has none)")
        return v

    @field_validator("mask_method")
    @classmethod
    def _mask_method_possible(cls, v: str, info: ValidationInfo) -> str:
        sensor, bands = info.data.get("sensor"), info.data.get("bands")
        if sensor is None or bands is None:
            return v
        if v == "provider" and get_profile(sensor).qa_band is None:
            raise ValueError(f"got 'provider' but sensor profile {sensor!r} has no QA band; expected 'spectral' or 'auto'")
        lacking = [b for b in SPECTRAL_MASK_BANDS if b not in bands]
        if v == "spectral" and lacking and not all(b in bands for b in SPECTRAL_RNS_BANDS):
            raise ValueError(f"got 'spectral' but bands lack {lacking}; expected 'provider' or 'auto', or those bands "
                             f"(or {list(SPECTRAL_RNS_BANDS)} for the red/NIR/SWIR rules)")
        s2_lacking = [b for b in S2CLOUDLESS_BANDS.values() if b not in bands]
        if v == "s2cloudless" and s2_lacking:
            raise ValueError(f"got 's2cloudless' but bands lack {s2_lacking}; expected the Sentinel-2 L1C model bands "
                             f"{list(S2CLOUDLESS_BANDS.values())} (sensor 'sentinel2-l1c')")
        return v

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Site files and flow parameters are stored and shown (Prefect UI, logs): no credentials.
        def walk(d: dict[str, Any], where: str) -> None:
            for k, val in d.items():
                low = str(k).lower()
                if any(w in low for w in ("key", "secret", "token", "password", "passwd", "credential")):
                    raise ValueError(
                        f"got a secret-looking key {where + str(k)!r}; expected only non-secret options (endpoint_url, "
                        "region, anon): put credentials in the environment or a Prefect block named by credentials_block")
                if isinstance(val, dict):
                    walk(val, f"{where}{k}.")

        walk(v, "")
        return v

    @field_validator("bbox")
    @classmethod
    def _bbox_ok(cls, v: Optional[tuple[float, float, float, float]]) -> Optional[tuple[float, float, float, float]]:
        if v is None:
            return v
        w, s, e, n = v
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ValueError(f"got {v!r}; expected west < east in [-180, 180] and south < north in [-90, 90] (lon/lat degrees)")
        return v

    @model_validator(mode="after")
    def _one_geometry(self) -> "SiteConfig":
        given = [k for k in ("bbox", "geometry", "bounds") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"got {given or 'none'} of bbox/geometry/bounds; expected exactly one")
        if self.bounds is not None and not self.crs:
            raise ValueError("'bounds' are projected coordinates and need 'crs'")
        return self

    def profile(self) -> SensorProfile:
        """The site's :class:`~sitewatch.sensors.SensorProfile` (``sensor``)."""
        return get_profile(self.sensor)

    def to_site(self) -> Site:
        from shapely.geometry import box, mapping

        if self.bounds is not None:
            from rasterio.warp import transform_bounds

            geom = mapping(box(*transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21)))
        elif self.geometry is not None:
            geom = self.geometry
        else:
            geom = mapping(box(*self.bbox))  # type: ignore[misc]
        return Site(
            name=self.name, geometry=dict(geom), resolution=self.resolution, source=self.source,
            store=self.store, crs=self.crs, min_alert_area_m2=self.min_alert_area_m2, chunk_size=self.chunk_size,
            bounds=self.bounds,
        )


class SitesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    defaults: dict[str, Any] = Field(default_factory=dict)
    sites: list[SiteConfig]

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        # A non-mapping 'defaults' is left for field validation to report (a ConfigError).
        if isinstance(data, dict) and isinstance(data.get("sites"), list) and isinstance(data.get("defaults") or {}, dict):
            defaults = data.get("defaults") or {}
            data = dict(data)
            data["sites"] = [{**defaults, **s} if isinstance(s, dict) else s for s in data["sites"]]
        return data


class ConfigError(ValueError):
    """A site config file that cannot be used; the message names the file and the field."""


def _format(err: ValidationError, path: str, data: Any) -> str:
    lines = [f"{path}: invalid site configuration"]
    for e in err.errors():
        loc = list(e["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "sites" and isinstance(loc[1], int):
            try:
                name = data["sites"][loc[1]].get("name", f"#{loc[1]}")
            except Exception:
                name = f"#{loc[1]}"
            field = ".".join(str(x) for x in loc[2:]) or "(site)"
            where = f"site {name!r}, field {field!r}"
        else:
            where = f"field {'.'.join(str(x) for x in loc) or '(top level)'!r}"
        shown = "" if "storage_options" in loc else f" (got {e.get('input')!r})"  # may hold a misplaced secret
        lines.append(f"  {where}: {e['msg']}{shown}" if e["type"] != "missing" else f"  {where}: required field missing")
    return "\n".join(lines)


def load_sites(path: str | os.PathLike[str]) -> list[SiteConfig]:
    """Read and validate a sites YAML file. Relative local ``source``/``store`` paths are taken
    relative to the file's folder. Raises :class:`ConfigError` naming the field."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such site config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level got {type(data).__name__}; expected a mapping with a 'sites' list")
    try:
        cfg = SitesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, str(p), data)) from None
    names = [s.name for s in cfg.sites]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: site names must be unique; got duplicates {dupes!r}")
    out = []
    for s in cfg.sites:
        upd = {}
        for key in ("source", "store"):
            v = getattr(s, key)
            if "://" not in v and not os.path.isabs(v):
                upd[key] = str((p.parent / v).resolve())
        out.append(s.model_copy(update=upd) if upd else s)
    return out
