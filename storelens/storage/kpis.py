"""A store's KPIs from its own history: one computation for ``GET /v1/kpis`` and the chain roll-up.

:func:`store_kpis` reads what the KPIs need over the whole buckets of the store's calendar
(entrance ``in`` crossings by track, staff tracks, buying units, sales, zone exits) and puts
them through the pure rules (:mod:`storelens.domain.kpis`, :mod:`storelens.domain.staff`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from storelens.config import SiteConfig, entrance_lines_of
from storelens.domain import kpis as K
from storelens.domain import staff as ST
from storelens.domain.calendar import Bucket, StoreCalendar
from storelens.storage import business as bq
from storelens.storage import groups as gq


@dataclass
class StoreKpis:
    """Per bucket (parallel lists) and in total."""

    buckets: list[Bucket]
    per: list[K.KpiBucket]
    total: K.KpiBucket
    staff_per: list[int]
    staff_total: int
    #: Buying units per bucket (zeros when ``groups.enabled`` is false: see :attr:`groups_on`).
    units_per: list[int]
    units_total: int
    groups_on: bool
    currency: str | None
    #: Per bucket: the sales in each currency other than :attr:`currency` (``KpiBucket`` with ``transactions``
    #: and ``sales_minor`` only), by currency; a currency without a sale in the bucket is left out.
    other_sales: list[dict[str, K.KpiBucket]]
    #: Whether a staff cue is configured (staff_only zones with ``staff.zones``, or ``staff.uniform``).
    staff_excluded: bool


def staff_excluded(config: SiteConfig) -> bool:
    staff_cfg = config.staff
    return staff_cfg.uniform is not None or (staff_cfg.faces is not None and staff_cfg.faces.enabled) or (
        staff_cfg.zones and any(z.kind == "staff_only" for c in config.cameras for z in c.zones))


def store_kpis(config: SiteConfig, storage: Any, buckets: list[Bucket], default_lo: int, default_hi: int,
               currency: str | None = None) -> StoreKpis:
    """The KPIs of ``buckets`` (of the store's calendar); ``currency`` default: the most frequent in the range."""
    cfg = config.store
    lo = min((b.start_ms for b in buckets), default=default_lo)
    hi = max((b.end_ms for b in buckets), default=default_hi)
    entrance = entrance_lines_of(config)  # the site file's: a line a site version removed keeps its stored crossings
    lines = None if entrance is None else [tuple(x.split("/", 1)) for x in entrance]
    staff = gq.staff_track_ids(storage, lo - ST.STAFF_DAY_MS, hi + ST.STAFF_DAY_MS)
    visitors, staff_times = ST.split_entries(gq.in_crossings_by_track(storage, lines, lo, hi), staff)
    sales = bq.sales(storage, cfg.id, lo, hi)
    if currency is None and sales:
        currency = Counter(s.currency for s in sales).most_common(1)[0][0]
    # staff are no shoppers in the dwell and queue medians either (the visitors' rule: a day either side of the cue)
    exits = [e for e in bq.zone_exits(storage, (*K.DWELL_ZONE_KINDS, "queue"), lo, hi)
             if not ST._is_staff(staff, e.camera_id, e.track_id, e.ts_ms)]
    per, total = K.compute(buckets, visitors, [(s.ts_ms, s.amount_minor) for s in sales if s.currency == currency],
                           [(e.ts_ms, e.zone_kind, e.dwell_ms, e.how) for e in exits])
    other_sales: list[dict[str, K.KpiBucket]] = [{} for _ in buckets]
    for cur in sorted({s.currency for s in sales} - {currency}):  # the same bucketing as the currency's own
        for i, b in enumerate(K.compute(buckets, (), [(s.ts_ms, s.amount_minor) for s in sales
                                                      if s.currency == cur], ())[0]):
            if b.transactions:
                other_sales[i][cur] = b
    staff_per, staff_total = ST.per_bucket(buckets, staff_times)
    groups_on = config.groups.enabled
    units_per, units_total = ST.per_bucket(
        buckets, ST.unit_entries(gq.unit_entries(storage, lines, lo, hi), staff) if groups_on else [])
    return StoreKpis(buckets, per, total, staff_per, staff_total, units_per, units_total, groups_on, currency,
                     other_sales, staff_excluded(config))


def calendar(config: SiteConfig) -> StoreCalendar:
    return StoreCalendar(config.store.timezone, config.store.opening_minutes())
