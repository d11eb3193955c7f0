"""Sinks of the runner: where a stage's ``Outputs.records`` are persisted, by record type.

* :class:`HistorySink` -- the history store (SQLite embedded, PostgreSQL distributed):
  every record of a batch (tracked frames, crossings, occupancy, count windows, face
  history, zone events and statistics, ...) in one transaction; every write is an
  upsert, so replays are harmless.
* :class:`LiveSink` -- live state in Redis (occupancy, last frame per camera).

The stores are passed in (duck-typed: :class:`storelens.storage.Storage`,
:class:`storelens.storage.live.RedisLiveState`); this module imports none of them.
"""
from __future__ import annotations

from typing import Any, Sequence

from storelens.contract import messages as m


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
    name = "live"

    def __init__(self, live) -> None:
        self.live = live

    def write(self, records: Sequence[Any]) -> None:
        by = _split(records)
        for u in by.get(m.OccupancyUpdate, []):
            self.live.set_occupancy(u)
        for tf in by.get(m.TrackedFrame, []):
            if tf.end_of_stream:
                continue
            # no frames_seen: seq is no count of frames (a live camera's starts at its first frame's wall-clock ms)
            self.live.touch_camera(tf.camera_id, tf.ts_ms)
        for z in by.get(m.ZoneOccupancy, []):
            self.live.set_zone_occupancy(z)
