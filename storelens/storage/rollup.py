"""The chain roll-up in the history store: a store's hours out, every store's hours in.

* :func:`kpi_hours` -- the store side: the hours of the store's own calendar as ``StoreKpiHour``
  messages, computed from its history like ``GET /v1/kpis`` (:func:`storelens.storage.kpis.store_kpis`).
* the chain side: ``StoreKpiHour`` records (from the ``chain-rollup`` stage) are upserted into
  ``chain_kpi_hours`` (a newer ``computed_ms`` replaces; an hour announcing its window deletes the store's
  unlisted hours of the window, :func:`storelens.storage.records._sweep_hours`), their store into ``chain_stores``;
  :func:`chain_stores` and :func:`hour_rows` read them back for the API.

Example (see tests/test_chain_rollup.py):
    >>> hours = kpi_hours(config, storage, start_ms, end_ms, now_ms)      # doctest: +SKIP
    >>> chain_storage.write_records(hours)                                  # doctest: +SKIP
    >>> [s.store_id for s in chain_stores(chain_storage)]                   # doctest: +SKIP
    ['store-berlin-01']
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import sqlalchemy as sa

from storelens.config import SiteConfig
from storelens.contract import messages as m
from storelens.domain.rollup import ChainKpis, ChainStore, CurrencySales, HourRow, histogram, sales_only
from storelens.runtime.retention import purge_clock
from storelens.runtime.rollup import KpiPublisher
from storelens.storage import business as bq
from storelens.storage.kpis import calendar, store_kpis
from storelens.storage.schema import ROLLUP_BINS, ROLLUP_HIST_COLUMNS, chain_kpi_days, chain_kpi_hours
from storelens.storage.schema import chain_stores as chain_stores_table


def kpi_hours(config: SiteConfig, storage: Any, start_ms: int, end_ms: int, now_ms: int) -> list[m.StoreKpiHour]:
    """The store's hour buckets overlapping ``[start_ms, end_ms)`` that have begun by ``now_ms``, as messages.

    An hour's sales are in ``currency`` (the most frequent over the range) and, for a store taking several,
    in ``other_sales`` (one entry per other currency it sold in that hour): no sale is left out."""
    buckets = [b for b in calendar(config).buckets("hour", start_ms, end_ms) if b.start_ms <= now_ms]
    if not buckets:
        return []
    r = store_kpis(config, storage, buckets, start_ms, end_ms)
    s = config.store
    # without a sale in the look-back: the currency it sold in last (a chain never reads "" as "any currency")
    currency = r.currency or bq.last_currency(storage, s.id) or ""
    out = []
    for b, k, n_staff, n_units, other in zip(r.buckets, r.per, r.staff_per, r.units_per, r.other_sales):
        out.append(m.StoreKpiHour(
            store_id=s.id, store_name=s.name or s.id, region=s.region or "", timezone=s.timezone,
            start_ms=b.start_ms, end_ms=b.end_ms, day=b.day.isoformat(), label=b.label, hours=b.hours,
            visitors=k.visitors, staff_in=n_staff, buying_units=n_units if r.groups_on else -1,
            transactions=k.transactions, sales_minor=k.sales_minor, currency=currency,
            dwell_hist=histogram(k.dwell_ms), queue_wait_hist=histogram(k.queue_waits_ms),
            abandonments=k.abandonments, computed_ms=now_ms,
            other_sales=[m.CurrencySales(currency=cur, transactions=o.transactions, sales_minor=o.sales_minor)
                         for cur, o in sorted(other.items())]))
    return out


def kpi_now_ms(config: SiteConfig, storage: Any) -> int:
    """The store's "now" of :func:`kpi_publisher` (the newest stored frame when every camera is a recorded video),
    the wall clock when that has no frame yet."""
    newest = storage.newest_frame_ms() if purge_clock(config) != "wall" else None
    return int(time.time() * 1000) if newest is None else int(newest)


def kpi_publisher(config: SiteConfig, storage: Any, publish) -> KpiPublisher:
    """The store's :class:`~storelens.runtime.rollup.KpiPublisher` over its history: "now" is the wall clock,
    or the newest stored frame when every camera is a recorded video (``privacy.retention.clock``'s rule)."""
    clock = {} if purge_clock(config) == "wall" else {"now_ms": storage.newest_frame_ms}
    return KpiPublisher(config, lambda lo, hi, now: kpi_hours(config, storage, lo, hi, now), publish, **clock)


# -- the chain side: queries ------------------------------------------------------------------


def chain_stores(storage: Any) -> list[ChainStore]:
    """Every store of the roll-up, by id; ``currency``: the one of its newest hour that had one (an hour
    published without sales, ``""``, does not hide the currency the store sells in)."""
    c = chain_stores_table.c
    rows = storage._rows(sa.select(c.store_id, c.store_name, c.region, c.timezone, c.currency, c.updated_ms,
                                   c.last_hour_ms).order_by(c.store_id))
    blank = [r[0] for r in rows if not r[4]]
    known: dict[str, str] = {}
    if blank:
        h = chain_kpi_hours.c
        newest = (sa.select(h.store_id, sa.func.max(h.start_ms).label("start_ms"))
                  .where(h.store_id.in_(blank), h.currency != "").group_by(h.store_id).subquery())
        known = dict(storage._rows(sa.select(h.store_id, h.currency).join(
            newest, sa.and_(h.store_id == newest.c.store_id, h.start_ms == newest.c.start_ms))))
    return [ChainStore(sid, name, region, tz, cur or known.get(sid, ""), int(upd), int(last))
            for sid, name, region, tz, cur, upd, last in rows]


def _in_range(q: Any, h: Any, stores: Sequence[str] | None, from_day: str | None, to_day: str | None,
              start_ms: int | None, end_ms: int | None) -> Any:
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
    return q


def sales_currencies(storage: Any, *, stores: Sequence[str] | None = None, from_day: str | None = None,
                     to_day: str | None = None, start_ms: int | None = None, end_ms: int | None = None
                     ) -> dict[str, CurrencySales]:
    """Currency -> its sales in the stored hours of the range (what :func:`hour_rows` would add up), sorted:
    every currency sold, as an hour's currency or another one (a sales-only row)."""
    h = chain_kpi_hours.c
    q = sa.select(h.currency, sa.func.sum(h.transactions), sa.func.sum(h.sales_minor),
                  sa.func.count(sa.distinct(h.store_id))).where(
        h.currency != "", sa.or_(h.transactions > 0, h.sales_minor > 0)).group_by(h.currency).order_by(h.currency)
    return {cur: CurrencySales(int(n or 0), int(sales or 0), int(k)) for cur, n, sales, k
            in storage._rows(_in_range(q, h, stores, from_day, to_day, start_ms, end_ms))}


def hour_rows(storage: Any, *, stores: Sequence[str] | None = None, from_day: str | None = None,
              to_day: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
              per: str = "hour", currency: str | None = None) -> list[HourRow]:
    """Stored hours of ``stores`` (default all) whose business day is in ``[from_day, to_day]`` and/or that
    start in ``[start_ms, end_ms)``, with the region their store has now; ``per="day"``: added up per store
    and business day (table ``chain_kpi_days``: a quarter of a 200-store chain is 18,000 rows, not 200,000).

    ``currency``: only the hours whose sales are in it, and the hours without sales of the stores that sell
    in it (or whose currency is not known yet): a store in another currency adds nothing, not even visitors.
    Its sales in ``currency`` as a second currency of its hour (``other_sales``) come without the hour's
    visitors: they are ``sales_only`` rows (:func:`storelens.domain.rollup.sales_only`: transactions and sales,
    no store, in no ratio over visitors). The rule: a row with ``hours`` 0 and ``visitors`` 0 (no flag is
    stored). An hour's own row always has open hours (a bucket of the store's calendar is never empty, also
    clipped to opening hours), its other currencies' rows never do; and whatever a row is, sales without
    visitors or open hours cannot go over visitors. Without ``currency`` every row of an hour is there (one
    currency sold, else the API refuses): the other currencies' rows count with the hour's visitors.
    The KPIs' numerators of conversion per buying unit and shoppers per staff member count the stores that
    count the denominator only (buying units reported; staff recognised in the rows returned)."""
    summed = ("hours", "visitors", "staff_in", "transactions", "sales_minor", "abandonments", *ROLLUP_HIST_COLUMNS)
    infos = chain_stores(storage)
    region = {s.store_id: s.region for s in infos}
    if per not in ("hour", "day"):
        raise ValueError(f"per must be 'hour' or 'day', not {per!r}")
    # constants inline (bound parameters would make PostgreSQL's GROUP BY differ from the column selected)
    zero, one = sa.literal_column("0"), sa.literal_column("1")
    if per == "day" and currency is None:  # kept in step with the hours when they are written (storage.records)
        h = chain_kpi_days.c
        q = sa.select(h.store_id, h.day, h.start_ms, h.end_ms, h.label, h.buying_units,
                      sa.case((h.buying_units.is_not(None), h.transactions), else_=0), zero, *(h[c] for c in summed))
        first: Any = h.start_ms
    else:
        h = chain_kpi_hours.c
        counts = h.buying_units >= 0  # -1: the store does not count buying units
        units, tx_units = sa.case((counts, h.buying_units)), sa.case((counts, h.transactions), else_=0)
        only = zero if currency is None else sa.case((sa.and_(h.hours == zero, h.visitors == zero), one), else_=zero)
        if per == "hour":
            q = sa.select(h.store_id, h.day, h.start_ms, h.end_ms, h.label, units, tx_units, only,
                          *(h[c] for c in summed))
            first = h.start_ms
        else:  # the days of one currency: added up here from the hours (chain_kpi_days mixes currencies)
            first = sa.func.min(h.start_ms)
            q = sa.select(h.store_id, h.day, first, sa.func.max(h.end_ms), sa.func.min(h.label), sa.func.sum(units),
                          sa.func.sum(tx_units), only, *(sa.func.sum(h[c]) for c in summed)
                          ).group_by(h.store_id, h.day, only)
        q = _of_currency(q, h, infos, currency)
    raw = storage._rows(_in_range(q, h, stores, from_day, to_day, start_ms, end_ms).order_by(h.store_id, first))
    with_staff = {r[0] for r in raw if int(r[10] or 0) > 0}  # the stores that recognise staff
    out = []
    n = ROLLUP_BINS
    for r in raw:
        sid, day, start, end, label, bu, tx_units, only = r[:8]
        hours, vis, staff, tx, sales, aband = r[8:14]
        if only:
            out.append(HourRow(sid, region.get(sid, ""), int(start), day, label, sales_only(int(tx), int(sales)),
                               int(end), sales_only=True))
            continue
        bins = [int(v or 0) for v in r[14:]]
        out.append(HourRow(sid, region.get(sid, ""), int(start), day, label, ChainKpis(
            visitors=int(vis), staff_in=int(staff), buying_units=None if bu is None else int(bu),
            transactions=int(tx), sales_minor=int(sales), abandonments=int(aband), hours=float(hours),
            dwell_hist=bins[:n], queue_wait_hist=bins[n:], stores={sid}, transactions_with_units=int(tx_units or 0),
            visitors_with_staff_cue=int(vis) if sid in with_staff else 0), int(end)))
    return out


def _of_currency(q: Any, h: Any, infos: Sequence[ChainStore], currency: str | None) -> Any:
    """``q`` on ``chain_kpi_hours`` kept to the hours in ``currency`` and the hours without sales of the stores
    selling in it or in none yet (:func:`hour_rows`); ``None``: every hour."""
    if currency is None:
        return q
    plain = [s.store_id for s in infos if s.currency in (currency, "")]
    return q.where(sa.or_(h.currency == currency, sa.and_(
        h.currency == "", h.transactions == 0, h.sales_minor == 0, h.store_id.in_(plain))))


def buckets_at_least(storage: Any, *, period: str, group_by: str, stores: Sequence[str] | None = None,
                     from_day: str | None = None, to_day: str | None = None, currency: str | None = None
                     ) -> tuple[int, int]:
    """At least how many buckets :func:`storelens.domain.rollup.roll_up` makes of what :func:`hour_rows` returns
    (the same selection), in all and in the largest group: each group's distinct local hours (``hour``) or
    business days (``day``; ``week``: a seventh of them, rounded up) of its rows with open hours or visitors,
    counted in SQL without reading the rows (a chain's year of store-hours is millions of them: a request for
    too many buckets is refused before they are read, not after)."""
    h, s = chain_kpi_hours.c, chain_stores_table.c
    key = sa.func.substr(h.label, 1, 16) if period == "hour" else h.day  # domain.rollup.period_key's
    n = sa.func.count(sa.distinct(key))
    if group_by == "store":
        q = sa.select(n).group_by(h.store_id)
    elif group_by == "region":  # the store's region now, as hour_rows gives it
        region = sa.func.coalesce(s.region, "")
        q = sa.select(n).select_from(chain_kpi_hours.outerjoin(chain_stores_table, s.store_id == h.store_id)
                                     ).group_by(region)
    else:
        q = sa.select(n).select_from(chain_kpi_hours)
    q = q.where(sa.or_(h.hours > 0, h.visitors > 0))  # a sales-only row makes no group
    q = _in_range(_of_currency(q, h, chain_stores(storage), currency), h, stores, from_day, to_day, None, None)
    counts = [int(c) for (c,) in storage._rows(q)]
    if period == "week":
        counts = [-(-c // 7) for c in counts]
    return sum(counts), max(counts, default=0)


def newest_day(storage: Any, stores: Sequence[str]) -> str | None:
    """The newest business day any of ``stores`` reported (``None``: none)."""
    h = chain_kpi_hours.c
    rows = storage._rows(sa.select(sa.func.max(h.day)).where(h.store_id.in_(list(stores))))
    return rows[0][0] if rows else None
