"""The store's side of the chain roll-up: its KPI hours published to ``store-kpis``, when they change.

:class:`KpiPublisher` is a chore of the runner core (like the retention purge,
:mod:`storelens.runtime.retention`): every ``rollup.every_s`` seconds it computes the hours of
the last ``rollup.lookback_h`` hours of the store's calendar from its history and publishes
those that differ from what it published before (a late sale, a track recognised as staff
later, a replay: the hour is published again and replaces the older one, the topic being
compacted by ``<store_id>/<start_ms>``). Every hour sent names the computed window and the starts
of every hour the store has in it (``window_*`` fields of ``StoreKpiHour``): the chain deletes the
store's hours of the window that are not listed (a calendar change, a replay). When an hour sent
before is no longer computed, the window's hours are sent again even if none changed. A window that
holds no hour at all (the store closed all of it under a new calendar) is announced by a message
without an hour (``start_ms``/``end_ms`` 0, key ``<store_id>/window``,
:func:`~storelens.contract.messages.window_only`): on the first run and when the window empties,
then not again while it stays empty. The analytics service runs it (``rollup.enabled``); an embedded
store runs the same computation with ``storelens kpis publish``.

The computation and the publication are passed in (the history store is a layer above):

Example:
    >>> from storelens.config import parse_config
    >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
    ...                     "rollup": {"enabled": True}})
    >>> hour = m.StoreKpiHour(store_id="s", start_ms=0, end_ms=3_600_000, visitors=3)
    >>> sent = []
    >>> pub = KpiPublisher(cfg, compute=lambda lo, hi, now: [hour], publish=sent.extend, now_ms=lambda: 3_600_000)
    >>> pub.run(), pub.run(), len(sent)   # the second run finds nothing new
    (1, 0, 1)
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from storelens.config import SiteConfig
from storelens.contract import messages as m

log = logging.getLogger(__name__)

Compute = Callable[[int, int, int], Sequence[m.StoreKpiHour]]


def hour_key(h: m.StoreKpiHour) -> bytes:
    """The ``store-kpis`` message key: ``<store_id>/<start_ms>`` (compaction keeps an hour's newest);
    ``<store_id>/window`` for a message without an hour (:func:`~storelens.contract.messages.window_only`)."""
    return f"{h.store_id}/{'window' if m.window_only(h) else h.start_ms}".encode()


def empty_window(config: SiteConfig, start_ms: int, end_ms: int, now_ms: int) -> m.StoreKpiHour:
    """The message announcing that the store has no hour in ``[start_ms, end_ms)`` as of ``now_ms``."""
    s = config.store
    return m.StoreKpiHour(store_id=s.id, store_name=s.name or s.id, region=s.region or "", timezone=s.timezone,
                          computed_ms=now_ms, window_start_ms=start_ms, window_end_ms=end_ms)


#: The history the KPI hours are computed from, by retention kind (``privacy.retention.days``); a staff track
#: makes the crossings of the day after its recognition staff, so its hours need it a day longer.
KPI_RETENTION = {"crossings": 0.0, "group_crossings": 0.0, "zone_events": 0.0, "staff_tracks": 24.0}


def retained_lookback_h(config: SiteConfig, lookback_h: float | None = None) -> tuple[float, str | None]:
    """The hours back the KPI hours can be computed from a history the purge keeps whole: ``rollup.lookback_h``
    (or ``lookback_h``), clipped to the shortest retention of :data:`KPI_RETENTION` (the field that clips it, else
    ``None``). Hours beyond it would be sent with their purged figures at 0 (staff counted as visitors, no dwell)
    and replace the chain's figures of them."""
    hours, field = float(config.rollup.lookback_h if lookback_h is None else lookback_h), None
    retention = config.privacy.retention
    if not retention.enabled:
        return hours, None
    for kind, margin_h in KPI_RETENTION.items():
        days = getattr(retention.days, kind)
        if days is not None and days * 24.0 - margin_h < hours:
            hours, field = max(0.0, days * 24.0 - margin_h), f"privacy.retention.days.{kind}"
    return hours, field


#: ``rollup.lookback_h``'s ceiling (31 days), also of ``storelens kpis publish --lookback-h``.
MAX_LOOKBACK_H = 24 * 31
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Republish:
    """Replaced (or moved) sales dated before the store's effective look-back: the publisher recomputes the last
    ``lookback_h`` hours only, so the chain gets their hours again from ``storelens kpis publish --lookback-h N``
    alone (:func:`republish_advice`)."""

    #: The replaced transactions whose old or new hour begins before the look-back.
    ids: tuple[str, ...]
    #: The effective look-back (``rollup.lookback_h``, clipped to the retention: :func:`retained_lookback_h`).
    lookback_h: float
    #: ``N`` of ``storelens kpis publish --lookback-h N`` that sends their hours again (an hour's margin for the
    #: time until it runs); ``None`` when none of them can be sent again.
    republish_lookback_h: float | None
    #: Those of ``ids`` with an hour older than ``limit_h``: their hours cannot be sent again.
    unsendable: tuple[str, ...] = ()
    #: The most hours back that can be sent again, and what limits it (a retention field, or
    #: ``rollup.lookback_h``'s maximum).
    limit_h: float = float(MAX_LOOKBACK_H)
    limited_by: str = f"rollup.lookback_h is at most {MAX_LOOKBACK_H} h"

    @property
    def message(self) -> str:
        def listed(ids: tuple[str, ...]) -> str:
            return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

        out = (f"{len(self.ids)} replaced sale(s) ({listed(self.ids)}) dated before the store's KPI look-back of "
               f"{self.lookback_h:g} h: the chain roll-up (HQ) does not get their hours again by itself")
        if self.republish_lookback_h is not None:
            out += f"; send them with `storelens kpis publish --lookback-h {self.republish_lookback_h:g}`"
        if self.unsendable:
            out += (f"; the hours of {listed(self.unsendable)}, older than {self.limit_h:g} h, cannot be sent again "
                    f"({self.limited_by}): the chain keeps its figures of them")
        return out


def republish_advice(config: SiteConfig, replaced_ts_ms: dict[str, tuple[int, ...]], now_ms: int
                     ) -> Republish | None:
    """What a replace of stored sales (transaction id -> its old and new time) means for the chain roll-up:
    ``None`` when every hour they touch begins within the effective look-back before ``now_ms`` (the store's
    "now", :func:`storelens.storage.rollup.kpi_now_ms`), else :class:`Republish`.

    Example:
        >>> from storelens.config import parse_config
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://cam/1"}]})
        >>> now = 1767261600000 + 100 * HOUR_MS
        >>> republish_advice(cfg, {"t1": (now - 3 * HOUR_MS, now - 2 * HOUR_MS)}, now) is None
        True
        >>> a = republish_advice(cfg, {"t1": (now - 72 * HOUR_MS, now - 72 * HOUR_MS)}, now)
        >>> a.ids, a.lookback_h, a.republish_lookback_h
        (('t1',), 48.0, 73.0)
    """
    from storelens.domain.calendar import StoreCalendar

    lookback_h, _ = retained_lookback_h(config)
    limit_h, clipped_by = retained_lookback_h(config, MAX_LOOKBACK_H)
    cal = StoreCalendar(config.store.timezone, config.store.opening_minutes())

    def hour_start(ts_ms: int) -> int:
        return min([ts_ms, *(b.start_ms for b in cal.buckets("hour", ts_ms, ts_ms + 1))])

    oldest = {i: min(hour_start(ts) for ts in times) for i, times in replaced_ts_ms.items() if times}
    late = sorted(i for i, start in oldest.items() if start < now_ms - lookback_h * HOUR_MS)
    if not late:
        return None
    needed = {i: math.ceil((now_ms - oldest[i]) / HOUR_MS) + 1 for i in late}
    unsendable = tuple(i for i in late if now_ms - oldest[i] > limit_h * HOUR_MS)
    sendable = [needed[i] for i in late if i not in unsendable]
    n = float(min(max(sendable), limit_h)) if sendable else None
    why = (f"{clipped_by}: their data are purged" if clipped_by else f"rollup.lookback_h is at most {MAX_LOOKBACK_H} h")
    return Republish(tuple(late), lookback_h, n, unsendable, limit_h, why)


def retained_data_h(config: SiteConfig) -> float:
    """The hours back every history of :data:`KPI_RETENTION` is kept (its shortest retention, without margin)."""
    retention = config.privacy.retention
    days = [getattr(retention.days, k) for k in KPI_RETENTION] if retention.enabled else []
    return min([d * 24.0 for d in days if d is not None], default=float("inf"))


def _content(h: m.StoreKpiHour) -> bytes:
    c = m.StoreKpiHour()
    c.CopyFrom(h)
    c.computed_ms = 0
    c.ClearField("window_start_ms")  # the window slides every run: not a change of the hour
    c.ClearField("window_end_ms")
    c.ClearField("window_hour_starts_ms")
    return c.SerializeToString(deterministic=True)


class KpiPublisher:
    """Publishes the store's changed KPI hours every ``rollup.every_s`` seconds (the first run right away).

    Args:
        compute: ``(start_ms, end_ms, now_ms) -> hours`` of the store's calendar (the history layer's
            :func:`storelens.storage.rollup.kpi_hours`).
        publish: ``[(key, StoreKpiHour), ...]`` to the ``store-kpis`` topic (blocking until delivered).
        now_ms: the store's "now" (the wall clock, or the newest stored frame for recorded video;
            ``None``: nothing stored yet).
    """

    name = "kpi_rollup"

    def __init__(self, config: SiteConfig, compute: Compute, publish: Callable[[list[tuple[bytes, Any]]], None],
                 now_ms: Callable[[], int | None] = lambda: int(time.time() * 1000),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.cfg = config.rollup
        self.compute = compute
        self.publish = publish
        self.now_ms = now_ms
        self.monotonic = monotonic
        self._next_s: float | None = None
        #: key -> (start_ms, content of the last published version) of each hour
        self._sent: dict[bytes, tuple[int, bytes]] = {}
        #: the last publication announced an empty window (and nothing was published since)
        self._told_empty = False
        self.published = 0
        #: rollup.lookback_h, clipped to the history the retention keeps (retained_lookback_h)
        self.lookback_h, clipped_by = retained_lookback_h(config)
        #: hours back the KPI history is kept whole (the shortest retention of KPI_RETENTION, no margin)
        self.retained_data_h = retained_data_h(config)
        if clipped_by is not None:
            log.warning("rollup.lookback_h clipped by the retention: older hours are not sent again (their data "
                        "are purged) and the chain keeps what it has of them; the current hour, the hour just "
                        "ended and today's hours (when the business day began within the retention) are always sent",
                        extra={"lookback_h": self.cfg.lookback_h, "clipped_h": self.lookback_h, "field": clipped_by})

    def _clipped(self, lo: int, hi: int, now: int) -> list[m.StoreKpiHour]:
        """The hours to send under a look-back clipped by the retention (``lo``): those begun since ``lo``, and
        always the hour containing ``now``, the hour that ended within the last ``every_s`` (its final figures)
        and the hours of today's business day when it began within the retention (its data are all kept)."""
        every_ms = int(self.cfg.every_s * 1000)
        span_ms = max(now - lo, 26 * 3_600_000, every_ms + 2 * 3_600_000)  # today's business day and the last hour
        compute_lo = min(lo, now - min(span_ms, int(self.cfg.lookback_h * 3_600_000)))
        hours = self.compute(compute_lo, hi, now)
        current = [h for h in hours if h.start_ms <= now < h.end_ms]
        today = current[0].day if current else None
        day_start = min((h.start_ms for h in hours if today is not None and h.day == today), default=now)
        kept_since = now - self.retained_data_h * 3_600_000
        whole_day = today is not None and compute_lo <= kept_since <= day_start  # the day's start seen and kept
        return [h for h in hours if h.start_ms >= lo or h.start_ms <= now < h.end_ms
                or now - every_ms <= h.end_ms <= now or (whole_day and h.day == today)]

    def due(self) -> bool:
        return self.cfg.enabled and (self._next_s is None or self.monotonic() >= self._next_s)

    def run(self, metrics: Any = None) -> int:
        """Compute and publish the changed hours now (and schedule the next run); how many were published."""
        self._next_s = self.monotonic() + self.cfg.every_s
        now = self.now_ms()
        if now is None:
            return 0
        lo, hi = now - int(self.lookback_h * 3_600_000), now + 1
        if self.lookback_h < self.cfg.lookback_h:  # clipped by the retention: an hour begun before lo is partly purged
            hours = self._clipped(lo, hi, now)
            lo = min([lo, *(h.start_ms for h in hours)])  # the window: every hour sent, and all of lo..hi
        else:
            hours = self.compute(lo, hi, now)
        starts = sorted({h.start_ms for h in hours if lo <= h.start_ms < hi})
        for h in hours:  # the window this computation covers, and every hour the store has in it
            h.window_start_ms, h.window_end_ms = lo, hi
            h.window_hour_starts_ms[:] = starts
        keys = {hour_key(h) for h in hours}
        gone = [k for k, (start, _) in self._sent.items() if lo <= start < hi and k not in keys]
        changed = [(hour_key(h), h) for h in hours if self._sent.get(hour_key(h), (0, None))[1] != _content(h)]
        if gone and not changed:  # an hour disappeared: the window's hours tell the chain which
            changed = [(hour_key(h), h) for h in hours]
        if not hours and not self._told_empty:  # no hour to carry the window: the window alone says it is empty
            w = empty_window(self.config, lo, hi, now)
            changed = [(hour_key(w), w)]
        if not changed:
            return 0
        self.publish(changed)  # raises when the broker does not take them: nothing is marked sent
        for key, h in changed:
            if not m.window_only(h):
                self._sent[key] = (h.start_ms, _content(h))
        self._told_empty = not hours
        for key in gone:
            del self._sent[key]
        self.published += len(changed)
        log.info("KPI hours published", extra={"hours": len(changed), "gone": len(gone), "now_ms": now})
        return len(changed)
