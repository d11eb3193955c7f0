"""Versions of the site's cameras, lines, zones and alert rules edited through the API (table ``site_versions``).

The site file is version 0; each edit saves the whole ``cameras`` list as the next version
(optimistic: an edit based on an older version is refused, the caller reloads and retries).
:func:`site_update` turns the newest version into the ``SiteUpdate`` message the running
stages apply (embedded: read from here; distributed: the compacted ``site-config`` topic).
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import sqlalchemy as sa

from storelens.config.base import check_storable
from storelens.contract import messages as m
from storelens.storage.schema import site_versions


def has_rows(storage: Any, tables: Iterable[sa.Table], **equal: str) -> bool:
    """Whether a row of one of ``tables`` has the column values ``equal`` (``camera_id="door"``): the history of a
    camera (or its zone) that a site version removed, which the history routes still answer for."""
    return any(storage._rows(exists_query(t, **equal)) for t in tables)


def exists_query(table: sa.Table, **equal: str) -> sa.Select:
    """:func:`has_rows`' query of one table: ``SELECT 1 ... LIMIT 1`` (an index of ``equal``'s columns serves it:
    ``crossings_by_line``, ``zone_events_by_zone``, the primary keys)."""
    return sa.select(sa.literal(1)).select_from(table).where(*[table.c[k] == v for k, v in equal.items()]).limit(1)


def latest_site(storage: Any) -> tuple[int, dict[str, Any]] | None:
    """``(version, site)`` of the newest site version saved through the API; ``None`` when none was."""
    rows = storage._rows(sa.select(site_versions).order_by(site_versions.c.version.desc()).limit(1))
    return (int(rows[0].version), json.loads(rows[0].site_json)) if rows else None


def save_site(storage: Any, expected_version: int, site: dict[str, Any], actor: str, ts_ms: int) -> int | None:
    """Save ``site`` as version ``expected_version + 1``; ``None`` when another edit saved that version first.
    :class:`~storelens.errors.ConfigError` naming the field when a text of ``site`` is one the database cannot
    store (NUL, a lone surrogate: every read of the site would fail), nothing saved."""
    check_storable("", site)
    def write(c: sa.Connection) -> int | None:
        newest = c.execute(sa.select(sa.func.max(site_versions.c.version))).scalar()
        if (newest or 0) != expected_version:
            return None
        c.execute(sa.insert(site_versions).values(version=expected_version + 1, ts_ms=ts_ms, actor=actor,
                                                  site_json=json.dumps(site, sort_keys=True)))
        return expected_version + 1
    try:
        return storage._write(write)
    except sa.exc.IntegrityError:  # PostgreSQL: a concurrent edit inserted that version first
        return None


def latest_version(storage: Any) -> int:
    """The newest version saved through the API (0: none, the site file is in force)."""
    return int(storage._rows(sa.select(sa.func.coalesce(sa.func.max(site_versions.c.version), 0)))[0][0])


def site_update(storage: Any, store_id: str, after_version: int = 0) -> m.SiteUpdate | None:
    """The newest saved version as a ``SiteUpdate`` when it is newer than ``after_version``, else ``None``."""
    if latest_version(storage) <= after_version:
        return None
    rows = storage._rows(sa.select(site_versions).order_by(site_versions.c.version.desc()).limit(1))
    r = rows[0]
    site = json.loads(r.site_json)
    rules = site.get("alert_rules")
    return m.SiteUpdate(version=int(r.version), ts_ms=int(r.ts_ms), actor=r.actor, store_id=store_id,
                        cameras_json=json.dumps(site["cameras"], sort_keys=True),
                        alert_rules_json="" if rules is None else json.dumps(rules, sort_keys=True))
