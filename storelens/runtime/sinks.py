"""Sinks of the runner: where a stage's ``Outputs.records`` are persisted, by record type.

* :class:`HistorySink` -- the history store (SQLite embedded, PostgreSQL distributed):
  every record of a batch (tracked frames, crossings, occupancy, count windows, face
  history, zone events and statistics, ...) in one transaction; every write is an
  upsert, so replays are harmless.
* :class:`LiveSink` -- live state in Redis (occupancy, last frame per camera); with a circuit breaker
  (:class:`~storelens.runtime.policy.Breaker`) its writes are skipped and counted while Redis is down, so the
  history, the outputs and the alerts go on; the newest skipped occupancy and zone occupancy of each camera are kept
  and written first once Redis answers again.

The stores are passed in (duck-typed: :class:`storelens.storage.Storage`,
:class:`storelens.storage.live.RedisLiveState`); this module imports none of them.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from storelens.contract import messages as m

log = logging.getLogger(__name__)

#: Cameras whose newest skipped live updates :class:`LiveSink` keeps while Redis is down (more: counted, dropped).
PENDING_MAX = 10_000


def _split(records: Sequence[Any]) -> dict[type, list[Any]]:
    out: dict[type, list[Any]] = {}
    for r in records:
        out.setdefault(type(r), []).append(r)
    return out


class HistorySink:
    """Every record of a handled batch in one transaction of the history store (``write_records``)."""

    name = "storage"

    def __init__(self, storage) -> None:
        self.storage = storage

    def write(self, records: Sequence[Any]) -> None:
        if records:
            self.storage.write_records(records)


class LiveSink:
    """The live state (duck-typed :class:`~storelens.storage.live.RedisLiveState`).

    Without ``breaker`` a write that fails raises (the runner retries it: the message waits). With one (a
    :class:`~storelens.runtime.policy.Breaker`, e.g. probing ``live.ping``), a failed write is logged once per
    outage and skipped, and while the breaker holds Redis down every write is skipped at once, without asking
    it; each skipped batch is counted with ``count_error("live_skipped")`` (``storelens_errors_total``), a failed
    write with ``count_error("live")``. The newest skipped :class:`~storelens.contract.messages.OccupancyUpdate` and
    :class:`~storelens.contract.messages.ZoneOccupancy` of each camera (at most :data:`PENDING_MAX` cameras) are kept
    and written first by the next write once Redis answers (the live state is compare-and-set by timestamp: an older
    one never overwrites a newer): they come only on a change, so the next update might be hours away.
    """

    name = "live"

    def __init__(self, live, breaker: Any = None, count_error: Callable[[str], object] | None = None) -> None:
        self.live = live
        self.breaker = breaker
        self.count_error = count_error or (lambda reason: None)
        #: The newest skipped occupancy / zone occupancy per camera, written first once Redis is back.
        self._pending: dict[tuple[type, str], Any] = {}

    @property
    def pending(self) -> bool:
        """Whether skipped updates wait to be written (:meth:`write` with no records writes them)."""
        return bool(self._pending)

    def poke(self) -> None:
        """While Redis is held down, ask the breaker (with a probe, as the analytics service makes it) whether to
        try it: its probe starts when due, so an idle site (no live write) sees Redis back too."""
        if self.down:
            self.breaker.allow()

    def _keep(self, records: Sequence[Any]) -> None:
        for r in records:
            if isinstance(r, (m.OccupancyUpdate, m.ZoneOccupancy)):
                key = (type(r), r.camera_id)
                old = self._pending.get(key)
                if old is None and len(self._pending) >= PENDING_MAX:
                    self.count_error("live_pending_dropped")
                    continue
                if old is None or r.ts_ms >= old.ts_ms:
                    self._pending[key] = r

    @property
    def down(self) -> bool:
        """Whether writes are being skipped (the breaker holds Redis down)."""
        return self.breaker is not None and self.breaker.down

    def write(self, records: Sequence[Any]) -> None:
        if self.breaker is None:
            self._write(records)
            return
        if not self.breaker.allow():
            if records:
                self.count_error("live_skipped")
            self._keep(records)
            return
        pending, self._pending = list(self._pending.values()), {}
        try:
            self._write([*pending, *records])
        except Exception as exc:  # noqa: BLE001 (Redis down or failing: skipped, never holding the input back)
            self.count_error("live")
            self.count_error("live_skipped")
            self._keep(pending)
            self._keep(records)
            if self.breaker.failed():
                log.warning("live state (Redis) unreachable: its writes are skipped until it answers a ping "
                            "(history, outputs and alerts go on)", extra={"error": repr(exc)})
            return
        if self.breaker.succeeded():
            log.warning("live state (Redis) written again")

    def _write(self, records: Sequence[Any]) -> None:
        by = _split(records)
        for u in by.get(m.OccupancyUpdate, []):
            self.live.set_occupancy(u)
        for tf in by.get(m.TrackedFrame, []):
            if tf.end_of_stream:
                continue
            self.live.touch_camera(tf.camera_id, tf.ts_ms)
        for z in by.get(m.ZoneOccupancy, []):
            self.live.set_zone_occupancy(z)
