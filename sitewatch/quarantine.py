"""The quarantine list: scenes that could not be used, kept between runs.

``<store>/<site>/quarantine.json`` lists every scene (or unusable STAC item) that failed, with
the object that failed (URL), the error, first and last attempt (UTC ISO times) and the number of
attempts. A quarantined scene is not in the cube, so the next run tries it again; when it is
ingested it leaves the list. Entries for scenes a run did not try (e.g. gone from the source)
stay until they succeed or someone deletes them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Sequence

from .io import store

QUARANTINE_NAME = "quarantine.json"
UNKNOWN_SCENE = "?"


@dataclass(frozen=True)
class QuarantineEntry:
    """One scene (or unusable STAC item, ``scene_id == "?"``) that could not be used."""

    scene_id: str
    object: str
    error: str
    first_attempt: str
    last_attempt: str
    attempts: int = 1

    @property
    def key(self) -> str:
        return self.scene_id if self.scene_id != UNKNOWN_SCENE else self.object

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Failure:
    """One failure in one run: the scene, the object (URL) that failed and the error text."""

    scene_id: str
    object: str
    error: str

    @property
    def key(self) -> str:
        return self.scene_id if self.scene_id != UNKNOWN_SCENE else self.object


def quarantine_url(site_root: str) -> str:
    return store.join(site_root, QUARANTINE_NAME)


_QUOTED_URL = re.compile(r"'((?:[a-z][a-z0-9+.-]*://|/)[^']+)'", re.IGNORECASE)
_VSI_PATH = re.compile(r"/vsi(s3|gs|curl)/([^\s:,']+)")


def object_named(error: str, default: str) -> str:
    """The object an error text names: the first quoted URL or path, else a GDAL ``/vsis3/``
    path (given back as ``s3://``), else ``default``."""
    m = _QUOTED_URL.search(error)
    if m:
        return _from_vsi(m.group(1))
    m = _VSI_PATH.search(error)
    if m:
        return _from_vsi(m.group(0))
    return default


def _from_vsi(path: str) -> str:
    m = _VSI_PATH.match(path)
    if not m:
        return path
    kind, rest = m.groups()
    return rest if kind == "curl" else f"{kind}://{rest}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def update(
    previous: Sequence[QuarantineEntry],
    failures: Sequence[Failure],
    succeeded: Iterable[str],
    now: str | None = None,
    retried_unknown: bool = True,
) -> list[QuarantineEntry]:
    """The list after a run: ``failures`` added or updated (attempts counted, first attempt
    kept), scenes in ``succeeded`` removed. With ``retried_unknown`` (discovery ran), entries for
    unusable STAC items (``scene_id == "?"``) not failing again are removed too. Pure."""
    when = now or _now()
    done = set(succeeded)
    failing = {f.key: f for f in failures}
    out: list[QuarantineEntry] = []
    for e in previous:
        if e.key in failing:
            f = failing.pop(e.key)
            out.append(replace(e, object=f.object, error=f.error, last_attempt=when, attempts=e.attempts + 1))
        elif e.scene_id in done or (retried_unknown and e.scene_id == UNKNOWN_SCENE):
            continue
        else:
            out.append(e)
    for f in failures:
        if f.key in failing:
            out.append(QuarantineEntry(f.scene_id, f.object, f.error, when, when, 1))
    return sorted(out, key=lambda e: (e.scene_id, e.object))


def read(url: str, storage_options: dict[str, Any] | None = None) -> list[QuarantineEntry]:
    """The quarantine list at ``url`` (empty when there is none)."""
    if not store.exists(url, storage_options):
        return []
    doc = store.read_json(url, storage_options)
    entries = doc.get("scenes") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"quarantine list {url!r} got {type(doc).__name__} without a 'scenes' list; "
                         "expected {'site': ..., 'scenes': [...]}")
    fields = set(QuarantineEntry.__dataclass_fields__)
    try:
        return [QuarantineEntry(**{k: v for k, v in e.items() if k in fields}) for e in entries]
    except TypeError as exc:
        raise ValueError(f"quarantine list {url!r} has an entry lacking fields: {exc}") from None


def write(url: str, site: str, entries: Sequence[QuarantineEntry], storage_options: dict[str, Any] | None = None) -> None:
    """Replace the list at ``url`` (atomically, see :func:`sitewatch.io.store.write_bytes`)."""
    store.write_json(url, {"site": site, "scenes": [e.to_dict() for e in entries]}, storage_options)
