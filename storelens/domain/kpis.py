"""Store KPIs per calendar bucket: visitors, transactions, conversion, basket, dwell, queues.

Pure: the caller reads the events (entrance ``in`` crossings, sales, zone exits) and this
module puts them in the buckets of a :class:`~storelens.domain.calendar.StoreCalendar`
(events outside every bucket, i.e. outside opening hours, count nowhere) and computes:

* ``visitors``: entrance ``in`` crossings (staff are not excluded yet);
* ``transactions``, ``sales_minor``: the sales in the bucket's currency (minor units);
* ``conversion`` = transactions / visitors (``None`` without visitors);
* ``atv_minor`` (average transaction value) = sales / transactions (``None`` without sales);
* ``sales_per_visitor_minor`` = sales / visitors;
* ``median_dwell_s``: median dwell of the visits ended in the bucket in ``area`` zones;
* ``queue_wait_median_s``: median time in a ``queue`` zone of those who left through its
  service edge (served), ``queue_served`` how many; ``abandonments``: queue visits that
  ended any other way than served or lost.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from storelens.domain.calendar import Bucket, BucketIndex

#: Zone kinds whose visits give the store dwell.
DWELL_ZONE_KINDS = ("area",)


class SalesRatios:
    """The ratios of ``visitors``, ``transactions`` and ``sales_minor`` (a store's bucket, a chain's group)."""

    visitors: int
    transactions: int
    sales_minor: int

    @property
    def conversion(self) -> float | None:
        return self.transactions / self.visitors if self.visitors else None

    @property
    def atv_minor(self) -> float | None:
        return self.sales_minor / self.transactions if self.transactions else None

    @property
    def sales_per_visitor_minor(self) -> float | None:
        return self.sales_minor / self.visitors if self.visitors else None


@dataclass
class KpiBucket(SalesRatios):
    visitors: int = 0
    transactions: int = 0
    sales_minor: int = 0
    dwell_ms: list[int] = field(default_factory=list)
    queue_waits_ms: list[int] = field(default_factory=list)
    abandonments: int = 0

    @property
    def median_dwell_s(self) -> float | None:
        return statistics.median(self.dwell_ms) / 1000 if self.dwell_ms else None

    @property
    def queue_wait_median_s(self) -> float | None:
        return statistics.median(self.queue_waits_ms) / 1000 if self.queue_waits_ms else None

    @property
    def queue_served(self) -> int:
        return len(self.queue_waits_ms)

    def add(self, other: "KpiBucket") -> None:
        self.visitors += other.visitors
        self.transactions += other.transactions
        self.sales_minor += other.sales_minor
        self.dwell_ms += other.dwell_ms
        self.queue_waits_ms += other.queue_waits_ms
        self.abandonments += other.abandonments


def compute(buckets: Sequence[Bucket], visitor_ts: Iterable[int], sales: Iterable[tuple[int, int]],
            exits: Iterable[tuple[int, str, int | None, str | None]]) -> tuple[list[KpiBucket], KpiBucket]:
    """Per bucket and in total: ``visitor_ts`` (times of entrance ``in`` crossings), ``sales``
    ``(ts_ms, amount_minor)`` of one currency, ``exits`` ``(ts_ms, zone_kind, dwell_ms, how)``."""
    index = BucketIndex(buckets)
    out = [KpiBucket() for _ in buckets]
    for ts in visitor_ts:
        i = index.find(ts)
        if i is not None:
            out[i].visitors += 1
    for ts, amount in sales:
        i = index.find(ts)
        if i is not None:
            out[i].transactions += 1
            out[i].sales_minor += amount
    for ts, kind, dwell, how in exits:
        i = index.find(ts)
        if i is None:
            continue
        if kind in DWELL_ZONE_KINDS and dwell is not None:
            out[i].dwell_ms.append(dwell)
        elif kind == "queue":
            if how == "service_edge" and dwell is not None:
                out[i].queue_waits_ms.append(dwell)
            elif how not in ("service_edge", "lost"):
                out[i].abandonments += 1
    total = KpiBucket()
    for b in out:
        total.add(b)
    return out, total
