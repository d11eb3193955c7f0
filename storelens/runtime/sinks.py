"""Sinks of the runner: where a stage's ``Outputs.records`` are persisted, by record type.

* :class:`HistorySink` -- the history store (SQLite embedded, PostgreSQL distributed):
  tracked frames, crossings, occupancy, count windows in one batch (one transaction),
  track attributes and customer matches; every write is an upsert, so replays are harmless.
* :class:`LiveSink` -- live state in Redis (occupancy, last frame per camera).

The stores are passed in (duck-typed: :class:`storelens.storage.Storage`,
:class:`storelens.storage.live.RedisLiveState`); this module imports none of them.
"""
from __future__ import annotations

from typing import Any, Sequence

from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent


def _split(records: Sequence[Any]) -> dict[type, list[Any]]:
    out: dict[type, list[Any]] = {}
    for r in records:
        out.setdefault(type(r), []).append(r)
    return out


class HistorySink:
    name = "storage"

    def __init__(self, storage) -> None:
        self.storage = storage

    def write(self, records: Sequence[Any]) -> None:
        by = _split(records)
        frames, crossings = by.get(m.TrackedFrame, []), by.get(CrossingEvent, [])
        occupancy, windows = by.get(m.OccupancyUpdate, []), by.get(m.CountWindow, [])
        if frames or crossings or occupancy or windows:
            self.storage.write_batch(tracked_frames=frames, crossings=crossings, occupancy_updates=occupancy,
                                     count_windows=windows)
        if by.get(m.TrackAttributes):
            self.storage.write_track_attributes(by[m.TrackAttributes])
        if by.get(m.CustomerMatch):
            self.storage.write_customer_matches(by[m.CustomerMatch])


class LiveSink:
    name = "live"

    def __init__(self, live) -> None:
        self.live = live

    def write(self, records: Sequence[Any]) -> None:
        by = _split(records)
        for u in by.get(m.OccupancyUpdate, []):
            self.live.set_occupancy(u)
        for tf in by.get(m.TrackedFrame, []):
            self.live.touch_camera(tf.camera_id, tf.ts_ms, frames_seen=tf.seq + 1)
