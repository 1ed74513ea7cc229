"""Where the sun is: solar azimuth and elevation from time and place, and the direction and
length in pixels of a cloud's shadow on a north-up grid.

Used by the shadow projection (:mod:`sitewatch.kernels.shadow`) when a scene carries no sun
angles of its own, and by the synthetic generator to cast its shadows.
"""

from __future__ import annotations

import datetime
import math


def solar_position(when: datetime.datetime, lon: float, lat: float) -> tuple[float, float]:
    """(azimuth degrees clockwise from north, elevation degrees) of the sun at ``when`` (UTC;
    naive values are taken as UTC) seen from (lon, lat), with the NOAA general solar position
    equations (Spencer's Fourier series for the declination and the equation of time;
    accuracy ~0.1-0.5 degree, no refraction)."""
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    year_days = 366 if (when.year % 4 == 0 and (when.year % 100 != 0 or when.year % 400 == 0)) else 365
    hour = when.hour + when.minute / 60.0 + (when.second + when.microsecond * 1e-6) / 3600.0
    g = 2.0 * math.pi / year_days * (when.timetuple().tm_yday - 1 + (hour - 12.0) / 24.0)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
                       - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g))
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
            + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    true_solar_minutes = hour * 60.0 + eqtime + 4.0 * lon
    ha = math.radians(true_solar_minutes / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zenith = math.degrees(math.acos(min(1.0, max(-1.0, cos_zen))))
    azimuth = math.degrees(math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))) + 180.0
    return azimuth % 360.0, 90.0 - zenith


def shadow_step(azimuth: float, elevation: float, resolution: float) -> tuple[float, float]:
    """``(rows, cols)`` a shadow moves per metre of cloud height on a north-up grid of
    ``resolution`` metres (rows grow southward, columns eastward): away from the sun, by
    ``tan(zenith) / resolution`` pixels per metre."""
    if not 0 < elevation <= 90:
        raise ValueError(f"sun elevation got {elevation!r}; expected 0 < elevation <= 90 degrees (sun above the horizon)")
    if not resolution > 0:
        raise ValueError(f"resolution got {resolution!r}; expected metres > 0")
    length = math.tan(math.radians(90.0 - elevation)) / resolution
    az = math.radians(azimuth)
    return length * math.cos(az), -length * math.sin(az)
