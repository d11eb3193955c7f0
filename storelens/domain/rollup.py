"""The chain roll-up: stores' hourly KPIs added up by store, region or the whole chain.

Pure. A store publishes one ``StoreKpiHour`` per hour of its own calendar; every figure in it
is additive (counts, sales, histogram bins), so any grouping of hours and stores is a sum:

* by **period**: the store's hours grouped by its business ``day`` (``day``), the ISO week of
  that day (``week``, keyed by its Monday) or the local clock hour (``hour``, keyed by the hour's
  local label without offset; the repeated hour of a fall-back day with it: :func:`hour_keys`),
  so stores in different time zones are compared on their own local days and hours;
* by **group**: a store, a region (``store.region``) or the chain.

Medians of dwell and queue wait are not additive; the hours carry histograms over fixed bins
(:data:`DWELL_EDGES_S`) and the median is interpolated inside its bin (:func:`hist_median_s`),
within one bin width of the exact median (5 s below 20 s, then about 25-50 %).

Example:
    >>> h = histogram([4_000, 12_000, 65_000])
    >>> sum(h), hist_median_s(h)
    (3, 12.5)
    >>> a = ChainKpis(visitors=10, transactions=3, sales_minor=4500)
    >>> a.add(ChainKpis(visitors=30, transactions=5, sales_minor=5500))
    >>> a.conversion, a.atv_minor
    (0.2, 1250.0)
"""
from __future__ import annotations

import bisect
import datetime as dt
import itertools
import operator
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from storelens.domain.kpis import SalesRatios

#: Lower edges of the dwell / wait histogram bins in seconds; the last bin is open-ended.
DWELL_EDGES_S: tuple[float, ...] = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1200,
                                    1800, 2700, 3600, 5400, 7200, 10800)
N_BINS = len(DWELL_EDGES_S)


def histogram(values_ms: Iterable[float]) -> list[int]:
    """Counts of ``values_ms`` (milliseconds) per bin of :data:`DWELL_EDGES_S` (negatives in the first)."""
    out = [0] * N_BINS
    for v in values_ms:
        out[max(0, bisect.bisect_right(DWELL_EDGES_S, v / 1000.0) - 1)] += 1
    return out


def hist_add(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Bin-wise sum (a missing or short histogram counts as zeros).

    >>> hist_add([1, 2], [0, 1, 5])
    [1, 3, 5]
    """
    if len(a) == len(b):
        return list(map(operator.add, a, b))
    return [x + y for x, y in itertools.zip_longest(a, b, fillvalue=0)]


def hist_median_s(hist: Sequence[int]) -> float | None:
    """The median in seconds, linear inside its bin (the open last bin gives its lower edge); ``None`` if empty.

    >>> hist_median_s([0, 2]), hist_median_s([1, 1]), hist_median_s([])
    (7.5, 5.0, None)
    """
    n = sum(hist)
    if n == 0:
        return None
    half, seen = n / 2.0, 0
    for i, c in enumerate(hist):
        if c and seen + c >= half:
            lo = DWELL_EDGES_S[i]
            if i + 1 >= N_BINS:
                return float(lo)
            hi = DWELL_EDGES_S[i + 1]
            return float(lo + (hi - lo) * (half - seen) / c)
        seen += c
    return float(DWELL_EDGES_S[-1])  # pragma: no cover (sum(hist) > 0 returns above)


@dataclass
class ChainKpis(SalesRatios):
    """Additive KPIs of any set of store-hours, and the ratios derived from them."""

    visitors: int = 0
    staff_in: int = 0
    #: ``None`` when no store of the set counts buying units.
    buying_units: int | None = None
    transactions: int = 0
    sales_minor: int = 0
    abandonments: int = 0
    hours: float = 0.0
    dwell_hist: list[int] = field(default_factory=list)
    queue_wait_hist: list[int] = field(default_factory=list)
    stores: set[str] = field(default_factory=set)
    #: Transactions of the store-hours that count buying units (default: all of them when ``buying_units``
    #: is set, else none): the numerator of :attr:`conversion_per_buying_unit`.
    transactions_with_units: int | None = None
    #: Visitors of the stores that recognise staff (default: all of them when ``staff_in`` > 0, else none):
    #: the numerator of :attr:`shopper_to_staff_ratio`.
    visitors_with_staff_cue: int | None = None
    #: Transactions and sales of the store-hours whose visitors are in the set (default: all of them): the
    #: numerators of :attr:`conversion` and :attr:`sales_per_visitor_minor`. A store's sales in another
    #: currency than its hour's (:attr:`HourRow.sales_only`) add to ``transactions`` and ``sales_minor`` only.
    transactions_with_visitors: int | None = None
    sales_with_visitors_minor: int | None = None
    #: Stores with visitors in the set (or in the whole request the set is part of: :func:`with_visitors`); a
    #: store's transactions and sales while it has none there (store -> (transactions, sales_minor)) stay out
    #: of the numerators above until its visitors come (a store with sales but no counting camera would make
    #: conversion go over 100 %).
    stores_with_visitors: set[str] = field(default_factory=set)
    held: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.visitors:
            self.stores_with_visitors |= self.stores
        elif (len(self.stores) == 1 and self.transactions_with_visitors is None
              and (self.transactions or self.sales_minor)):  # one store's hours without visitors
            self.held = {next(iter(self.stores)): (self.transactions, self.sales_minor)}
            self.transactions_with_visitors = self.sales_with_visitors_minor = 0
        if self.transactions_with_units is None:
            self.transactions_with_units = self.transactions if self.buying_units is not None else 0
        if self.visitors_with_staff_cue is None:
            self.visitors_with_staff_cue = self.visitors if self.staff_in else 0
        if self.transactions_with_visitors is None:
            self.transactions_with_visitors = self.transactions
        if self.sales_with_visitors_minor is None:
            self.sales_with_visitors_minor = self.sales_minor

    @property
    def conversion(self) -> float | None:
        """Transactions per visitor, of the store-hours whose visitors are counted (not the sales-only rows)."""
        return (self.transactions_with_visitors or 0) / self.visitors if self.visitors else None

    @property
    def sales_per_visitor_minor(self) -> float | None:
        return (self.sales_with_visitors_minor or 0) / self.visitors if self.visitors else None

    @property
    def conversion_per_buying_unit(self) -> float | None:
        """Transactions per buying unit, of the stores that count buying units only (a store without
        ``groups.enabled`` adds neither its transactions nor units)."""
        return (self.transactions_with_units or 0) / self.buying_units if self.buying_units else None

    @property
    def shopper_to_staff_ratio(self) -> float | None:
        """Visitors per staff member in, of the stores that recognise staff only (a store without a staff
        cue adds neither its visitors nor staff)."""
        return (self.visitors_with_staff_cue or 0) / self.staff_in if self.staff_in else None

    @property
    def dwell_visits(self) -> int:
        return sum(self.dwell_hist)

    @property
    def queue_served(self) -> int:
        return sum(self.queue_wait_hist)

    @property
    def median_dwell_s(self) -> float | None:
        return hist_median_s(self.dwell_hist)

    @property
    def queue_wait_median_s(self) -> float | None:
        return hist_median_s(self.queue_wait_hist)

    def add(self, o: "ChainKpis") -> None:
        self.visitors += o.visitors
        self.staff_in += o.staff_in
        if o.buying_units is not None:
            self.buying_units = (self.buying_units or 0) + o.buying_units
        self.transactions += o.transactions
        self.sales_minor += o.sales_minor
        self.abandonments += o.abandonments
        self.hours += o.hours
        self.dwell_hist = hist_add(self.dwell_hist, o.dwell_hist)
        self.queue_wait_hist = hist_add(self.queue_wait_hist, o.queue_wait_hist)
        self.stores |= o.stores
        self.transactions_with_units = (self.transactions_with_units or 0) + (o.transactions_with_units or 0)
        self.visitors_with_staff_cue = (self.visitors_with_staff_cue or 0) + (o.visitors_with_staff_cue or 0)
        self.transactions_with_visitors = (self.transactions_with_visitors or 0) + (o.transactions_with_visitors or 0)
        self.sales_with_visitors_minor = (self.sales_with_visitors_minor or 0) + (o.sales_with_visitors_minor or 0)
        self.stores_with_visitors |= o.stores_with_visitors
        if self.held or o.held:
            held = dict(self.held)
            for sid, (n, sales) in o.held.items():
                n0, s0 = held.get(sid, (0, 0))
                held[sid] = (n0 + n, s0 + sales)
            for sid in [sid for sid in held if sid in self.stores_with_visitors]:  # its visitors came: count them
                n, sales = held.pop(sid)
                self.transactions_with_visitors += n
                self.sales_with_visitors_minor += sales
            self.held = held


@dataclass(frozen=True)
class HourRow:
    """Stored store-hours added up: one hour, or one store's business day (``label``: its first hour's).

    ``sales_only``: a store's sales in a currency other than its hour's, selected without the hour they
    belong to (no visitors, no open hours): their ``kpis`` hold transactions and sales only, count no store
    and add to no ratio over visitors (:func:`sales_only`), and :func:`roll_up` makes no group of them."""

    store_id: str
    region: str
    start_ms: int
    day: str
    label: str
    kpis: ChainKpis
    end_ms: int = 0
    sales_only: bool = False


def sales_only(transactions: int, sales_minor: int) -> ChainKpis:
    """The KPIs of a sales-only row: its transactions and sales, no store, none in a ratio over visitors,
    buying units or staff (only :attr:`ChainKpis.atv_minor` and the totals take them).

    >>> k = ChainKpis(visitors=100, transactions=10, sales_minor=9000, stores={"b"})
    >>> k.add(sales_only(5, 4000))
    >>> (len(k.stores), k.transactions, k.conversion, k.sales_per_visitor_minor, round(k.atv_minor))
    (1, 15, 0.1, 90.0, 867)
    """
    return ChainKpis(transactions=transactions, sales_minor=sales_minor, transactions_with_units=0,
                     visitors_with_staff_cue=0, transactions_with_visitors=0, sales_with_visitors_minor=0)


@dataclass(frozen=True)
class CurrencySales:
    """A currency's sales in stored store-hours: ``stores`` that sold in it (as their hour's currency or another)."""

    transactions: int
    sales_minor: int
    stores: int


@dataclass(frozen=True)
class ChainStore:
    """A store of the roll-up as its newest hour described it (record of the ``chain_stores`` table)."""

    store_id: str
    store_name: str
    region: str
    timezone: str
    currency: str
    updated_ms: int
    last_hour_ms: int


def period_key(period: str, day: str, label: str) -> str:
    """The bucket of an hour: its business day, the Monday of that day's ISO week, or its local hour.

    >>> period_key("day", "2026-03-29", "2026-03-29T10:00+02:00")
    '2026-03-29'
    >>> period_key("week", "2026-03-29", "2026-03-29T10:00+02:00")
    '2026-03-23'
    >>> period_key("hour", "2026-03-29", "2026-03-29T10:00+02:00")
    '2026-03-29T10:00'
    """
    if period == "day":
        return day
    if period == "week":
        d = dt.date.fromisoformat(day)
        return (d - dt.timedelta(days=d.weekday())).isoformat()
    if period == "hour":
        return label[:16]
    raise ValueError(f"unknown period {period!r}")


def group_key(group_by: str, row: HourRow) -> str:
    """``store``: the store id; ``region``: its region (``""`` when none); ``chain``: ``"chain"``."""
    if group_by == "store":
        return row.store_id
    if group_by == "region":
        return row.region
    if group_by == "chain":
        return "chain"
    raise ValueError(f"unknown grouping {group_by!r}")


def hour_keys(rows: Sequence[HourRow]) -> list[str]:
    """The ``hour`` bucket of each row: its local clock hour (:func:`period_key`), so stores in different time
    zones meet on their own clocks; the second of a store's repeated hour (the clocks go back) keeps its UTC
    offset, so the day shows both hours instead of one double hour.

    >>> r = lambda start, label: HourRow("a", "", start, "2026-10-25", label, ChainKpis())
    >>> hour_keys([r(0, "2026-10-25T02:00+02:00"), r(3_600_000, "2026-10-25T02:00+01:00"),
    ...            r(7_200_000, "2026-10-25T03:00+01:00")])
    ['2026-10-25T02:00', '2026-10-25T02:00+01:00', '2026-10-25T03:00']
    """
    first: dict[tuple[str, str], int] = {}
    for row in rows:
        k = (row.store_id, period_key("hour", row.day, row.label))
        first[k] = min(first.get(k, row.start_ms), row.start_ms)
    out = []
    for row in rows:
        local = period_key("hour", row.day, row.label)
        out.append(local if first[(row.store_id, local)] == row.start_ms else row.label)
    return out


def with_visitors(rows: Iterable[HourRow]) -> frozenset[str]:
    """The stores that count visitors in ``rows`` (a request's): a visitor in any of their rows. Decided over
    the whole request, not per bucket, so a counting store's quiet hour (door closed, sales paid) counts its
    sales in its bucket's conversion as the total does: the buckets add up to the total.

    >>> r = lambda s, v: HourRow(s, "", 0, "2026-01-05", "2026-01-05T10:00+00:00", ChainKpis(visitors=v, stores={s}))
    >>> sorted(with_visitors([r("a", 0), r("a", 3), r("b", 0)]))
    ['a']
    """
    return frozenset(r.store_id for r in rows if r.kpis.visitors and not r.sales_only)


def aggregate(counting: Iterable[str] = ()) -> ChainKpis:
    """An empty sum whose stores of ``counting`` (:func:`with_visitors` of the request) count their sales in
    conversion and sales per visitor in each part of the sum, also without visitors there.

    >>> quiet = ChainKpis(visitors=0, transactions=30, stores={"a"})   # a's door closed, 30 paid
    >>> per_bucket, request = ChainKpis(), aggregate({"a"})
    >>> per_bucket.add(quiet); request.add(quiet)
    >>> per_bucket.transactions_with_visitors, request.transactions_with_visitors
    (0, 30)
    """
    return ChainKpis(stores_with_visitors=set(counting))


def roll_up(rows: Iterable[HourRow], period: str, group_by: str, counting: Iterable[str] | None = None
            ) -> dict[str, tuple[dict[str, ChainKpis], ChainKpis]]:
    """Group -> (period key -> KPIs, the group's total), every key sorted (``hour``: :func:`hour_keys`).
    A sales-only row adds to the group of its store, region or chain when other rows make that group, else
    to none (the caller adds the rows themselves up for the whole selection). ``counting``: the stores that
    count visitors over the request (default :func:`with_visitors` of ``rows``): their sales count in the
    conversion of every bucket, so the buckets add up to the total.

    Example:
        >>> r = lambda s, reg, day, v: HourRow(s, reg, 0, day, day + "T10:00+01:00", ChainKpis(visitors=v, stores={s}))
        >>> out = roll_up([r("a", "north", "2026-01-05", 3), r("b", "north", "2026-01-05", 4),
        ...                r("c", "south", "2026-01-06", 5)], "day", "region")
        >>> {g: ({k: v.visitors for k, v in per.items()}, tot.visitors, sorted(tot.stores))
        ...  for g, (per, tot) in out.items()}
        {'north': ({'2026-01-05': 7}, 7, ['a', 'b']), 'south': ({'2026-01-06': 5}, 5, ['c'])}
    """
    items = list(rows)
    counting = with_visitors(items) if counting is None else frozenset(counting)
    keys = hour_keys(items) if period == "hour" else [period_key(period, r.day, r.label) for r in items]
    out: dict[str, tuple[dict[str, ChainKpis], ChainKpis]] = {}
    # sales-only rows (HourRow.sales_only) last: they add to a group of the other rows, never make one
    for row, key in sorted(zip(items, keys), key=lambda rk: rk[0].sales_only):
        g = group_key(group_by, row)
        if row.sales_only and g not in out:
            continue
        per, total = out.setdefault(g, ({}, aggregate(counting)))
        per.setdefault(key, aggregate(counting)).add(row.kpis)
        total.add(row.kpis)
    return {g: (dict(sorted(per.items())), tot) for g, (per, tot) in sorted(out.items())}


def index(value: float | None, reference: float | None) -> float | None:
    """``value`` relative to ``reference`` (1.0 = equal); ``None`` when either is unknown or the reference is 0.

    >>> index(0.3, 0.25), index(None, 0.2), index(0.3, 0)
    (1.2, None, None)
    """
    if value is None or not reference:
        return None
    return value / reference
