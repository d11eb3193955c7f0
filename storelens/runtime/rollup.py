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
import time
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

    def due(self) -> bool:
        return self.cfg.enabled and (self._next_s is None or self.monotonic() >= self._next_s)

    def run(self, metrics: Any = None) -> int:
        """Compute and publish the changed hours now (and schedule the next run); how many were published."""
        self._next_s = self.monotonic() + self.cfg.every_s
        now = self.now_ms()
        if now is None:
            return 0
        lo, hi = now - int(self.cfg.lookback_h * 3_600_000), now + 1
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
