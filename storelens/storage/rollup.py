"""The chain roll-up in the history store: a store's hours out, every store's hours in.

* :func:`kpi_hours` -- the store side: the hours of the store's own calendar as ``StoreKpiHour``
  messages, computed from its history like ``GET /v1/kpis`` (:func:`storelens.storage.kpis.store_kpis`).
* the chain side: ``StoreKpiHour`` records (from the ``chain-rollup`` stage) are upserted into
  ``chain_kpi_hours`` (a newer ``computed_ms`` replaces), their store into ``chain_stores``;
  :func:`chain_stores` and :func:`hour_rows` read them back for the API.

Example (see tests/test_chain_rollup.py):
    >>> hours = kpi_hours(config, storage, start_ms, end_ms, now_ms)      # doctest: +SKIP
    >>> chain_storage.write_records(hours)                                  # doctest: +SKIP
    >>> [s.store_id for s in chain_stores(chain_storage)]                   # doctest: +SKIP
    ['store-berlin-01']
"""
from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa

from storelens.config import SiteConfig
from storelens.contract import messages as m
from storelens.domain.rollup import ChainKpis, ChainStore, HourRow, histogram
from storelens.runtime.retention import purge_clock
from storelens.runtime.rollup import KpiPublisher
from storelens.storage.kpis import calendar, store_kpis
from storelens.storage.schema import ROLLUP_BINS, ROLLUP_HIST_COLUMNS, chain_kpi_days, chain_kpi_hours
from storelens.storage.schema import chain_stores as chain_stores_table


def kpi_hours(config: SiteConfig, storage: Any, start_ms: int, end_ms: int, now_ms: int) -> list[m.StoreKpiHour]:
    """The store's hour buckets overlapping ``[start_ms, end_ms)`` that have begun by ``now_ms``, as messages."""
    buckets = [b for b in calendar(config).buckets("hour", start_ms, end_ms) if b.start_ms <= now_ms]
    if not buckets:
        return []
    r = store_kpis(config, storage, buckets, start_ms, end_ms)
    s = config.store
    out = []
    for b, k, n_staff, n_units in zip(r.buckets, r.per, r.staff_per, r.units_per):
        out.append(m.StoreKpiHour(
            store_id=s.id, store_name=s.name or s.id, region=s.region or "", timezone=s.timezone,
            start_ms=b.start_ms, end_ms=b.end_ms, day=b.day.isoformat(), label=b.label, hours=b.hours,
            visitors=k.visitors, staff_in=n_staff, buying_units=n_units if r.groups_on else -1,
            transactions=k.transactions, sales_minor=k.sales_minor, currency=r.currency or "",
            dwell_hist=histogram(k.dwell_ms), queue_wait_hist=histogram(k.queue_waits_ms),
            abandonments=k.abandonments, computed_ms=now_ms))
    return out


def kpi_publisher(config: SiteConfig, storage: Any, publish) -> KpiPublisher:
    """The store's :class:`~storelens.runtime.rollup.KpiPublisher` over its history: "now" is the wall clock,
    or the newest stored frame when every camera is a recorded video (``privacy.retention.clock``'s rule)."""
    clock = {} if purge_clock(config) == "wall" else {"now_ms": storage.newest_frame_ms}
    return KpiPublisher(config, lambda lo, hi, now: kpi_hours(config, storage, lo, hi, now), publish, **clock)


# -- the chain side: queries ------------------------------------------------------------------


def chain_stores(storage: Any) -> list[ChainStore]:
    """Every store of the roll-up, by id."""
    c = chain_stores_table.c
    rows = storage._rows(sa.select(c.store_id, c.store_name, c.region, c.timezone, c.currency, c.updated_ms,
                                   c.last_hour_ms).order_by(c.store_id))
    return [ChainStore(sid, name, region, tz, cur, int(upd), int(last)) for sid, name, region, tz, cur, upd, last in rows]


def hour_rows(storage: Any, *, stores: Sequence[str] | None = None, from_day: str | None = None,
              to_day: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
              per: str = "hour") -> list[HourRow]:
    """Stored hours of ``stores`` (default all) whose business day is in ``[from_day, to_day]`` and/or that
    start in ``[start_ms, end_ms)``, with the region their store has now; ``per="day"``: added up per store
    and business day (table ``chain_kpi_days``: a quarter of a 200-store chain is 18,000 rows, not 200,000)."""
    summed = ("hours", "visitors", "staff_in", "transactions", "sales_minor", "abandonments", *ROLLUP_HIST_COLUMNS)
    if per == "day":  # kept in step with the hours when they are written (storelens.storage.records)
        h = chain_kpi_days.c
        units: Any = h.buying_units
    elif per == "hour":
        h = chain_kpi_hours.c
        units = sa.case((h.buying_units >= 0, h.buying_units))  # -1: the store does not count buying units
    else:
        raise ValueError(f"per must be 'hour' or 'day', not {per!r}")
    q = sa.select(h.store_id, h.day, h.start_ms, h.end_ms, h.label, units, *(h[c] for c in summed))
    if stores is not None:
        q = q.where(h.store_id.in_(list(stores)))
    if from_day is not None:
        q = q.where(h.day >= from_day)
    if to_day is not None:
        q = q.where(h.day <= to_day)
    if start_ms is not None:
        q = q.where(h.start_ms >= start_ms)
    if end_ms is not None:
        q = q.where(h.start_ms < end_ms)
    region = {s.store_id: s.region for s in chain_stores(storage)}
    out = []
    n = ROLLUP_BINS
    for r in storage._rows(q.order_by(h.store_id, h.start_ms)):
        sid, day, start, end, label, bu = r[:6]
        hours, vis, staff, tx, sales, aband = r[6:12]
        bins = [int(v or 0) for v in r[12:]]
        out.append(HourRow(sid, region.get(sid, ""), int(start), day, label, ChainKpis(
            visitors=int(vis), staff_in=int(staff), buying_units=None if bu is None else int(bu),
            transactions=int(tx), sales_minor=int(sales), abandonments=int(aband), hours=float(hours),
            dwell_hist=bins[:n], queue_wait_hist=bins[n:], stores={sid}), int(end)))
    return out


def newest_day(storage: Any, stores: Sequence[str]) -> str | None:
    """The newest business day any of ``stores`` reported (``None``: none)."""
    h = chain_kpi_hours.c
    rows = storage._rows(sa.select(sa.func.max(h.day)).where(h.store_id.in_(list(stores))))
    return rows[0][0] if rows else None
