"""Erasure and replay of the history store, as a user of the files and of the KPIs sees them (real SQLite files).

* an erased customer's id and appearance vector are gone from the database file *and* its write-ahead log;
* erasing a customer keeps the staff recognition of their tracks: past days' visitors stay as they were;
* ``storelens replay`` never deletes what it cannot re-derive: crossings older than the oldest stored
  frame (frames are purged after days, crossings kept) survive a replay whose range starts before them,
  while a recording that simply began mid-hour is still replayed from its first frame;
* a replay of part of an hour leaves that hour's heatmap row equal to the sum of its minute rows.
"""
from __future__ import annotations

import pathlib

import numpy as np
import sqlalchemy as sa

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain import staff as ST
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqlStorage
from storelens.storage import groups as gq
from storelens.storage.replay import replay
from storelens.storage.schema import heatmap_windows, staff_tracks

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def site(**extra) -> object:
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "clip.mp4", "lines": [
        {"id": "door", "a": [320, 0], "b": [320, 480]}]}], **extra})


def walk(seq0: int, ts0: int, n: int = 20, step_ms: int = 200, track_id: int = 1) -> list[m.TrackedFrame]:
    """One person walking left to right across the frame (over the ``door`` line at x=320)."""
    return [m.TrackedFrame(camera_id="cam", seq=seq0 + i, ts_ms=ts0 + i * step_ms, width=640, height=480, tracks=[
        m.Track(track_id=track_id, confidence=0.9, bbox_xyxy=m.BoxXYXY(x1=40 + 25 * i, y1=100, x2=100 + 25 * i,
                                                                          y2=400))]) for i in range(n)]


# -- erasure ---------------------------------------------------------------------------------


def test_erased_customer_is_gone_from_the_database_file_and_its_wal(tmp_path: pathlib.Path) -> None:
    """After the erasure neither the customer id nor the appearance vector of their track can be read
    from the files (the write-ahead log held the inserted pages until it was checkpointed)."""
    db = tmp_path / "h.db"
    vector = np.array([0.1234567, -0.7654321, 0.4242424, 0.3141592, -0.2718281, 0.5772156], np.float32)
    summary = m.TrackSummary(camera_id="cam", track_id=7, first_ts_ms=T0, last_ts_ms=T0 + 5000, n_frames=10)
    summary.appearance.extend(vector.tolist())
    with SqlStorage(str(db)) as store:
        store.write_records([
            m.CustomerMatch(event_id="match-1", camera_id="cam", track_id=7, seq=3, ts_ms=T0 + 1000,
                            customer_id="cu-SECRET-1", similarity=0.9),
            summary,
            m.TrackSummary(camera_id="cam", track_id=8, first_ts_ms=T0, last_ts_ms=T0 + 5000, n_frames=10)])
        secret_vector = np.asarray(summary.appearance, "<f4").tobytes()
        files = [p for p in (db, tmp_path / "h.db-wal") if p.exists()]
        assert any(b"cu-SECRET-1" in p.read_bytes() for p in files)  # the check can see it: written
        assert any(secret_vector in p.read_bytes() for p in files)
        assert store.erase_customer("cu-SECRET-1") == 2
        for p in (db, tmp_path / "h.db-wal"):
            if p.exists():
                raw = p.read_bytes()
                assert b"cu-SECRET-1" not in raw, p.name
                assert secret_vector not in raw, p.name
        assert store._rows(sa.text("SELECT track_id FROM track_summaries")) == [(8,)]  # nobody else's rows


def test_erasure_keeps_staff_tracks_and_past_days_visitors(tmp_path: pathlib.Path) -> None:
    """A staff member also enrolled as a customer is erased: their tracks' staff recognition stays, so their
    entries of past days still count as ``staff_in``, not as visitors."""
    ts = T0 + 10 * HOUR
    with SqlStorage(str(tmp_path / "h.db")) as store:
        store.write_records([
            CrossingEvent("cam:door:7", "cam", "door", 7, "in", ts, 7),
            CrossingEvent("cam:door:9", "cam", "door", 9, "in", ts + 60_000, 9),  # a shopper
            m.StaffTrack(camera_id="cam", track_id=7, ts_ms=ts + 5000, seq=8, cue="zone", detail="back"),
            m.CustomerMatch(event_id="match-7", camera_id="cam", track_id=7, seq=8, ts_ms=ts + 5000,
                            customer_id="cu-staff", similarity=0.9),
            m.TrackAttributes(camera_id="cam", track_id=7, last_ts_ms=ts + 5000, n_faces=3)])

        def day_entries() -> tuple[list[int], list[int]]:  # what the KPIs of the day split (storage/kpis.py)
            staff = gq.staff_track_ids(store, T0 - ST.STAFF_DAY_MS, T0 + DAY + ST.STAFF_DAY_MS)
            return ST.split_entries(gq.in_crossings_by_track(store, None, T0, T0 + DAY), staff)

        before = day_entries()
        assert before == ([ts + 60_000], [ts])
        assert store.erase_customer("cu-staff") == 2  # the match and the face attributes
        assert store._rows(sa.select(staff_tracks.c.camera_id, staff_tracks.c.track_id)) == [("cam", 7)]
        assert day_entries() == before


# -- replay ----------------------------------------------------------------------------------


def test_replay_keeps_crossings_older_than_the_stored_frames(tmp_path: pathlib.Path) -> None:
    """Frames are purged after days, crossings kept: a replay from before the oldest frame re-derives only
    from the first whole hour of stored frames on and says so; older crossings and totals stay. A recording
    that simply began mid-hour is replayed from its first frame."""
    config = site()
    old = T0 - 31 * DAY  # its frames purged long ago
    oldest_frame = T0 + 40 * 60_000  # 00:40: the first 40 minutes of the hour were purged...
    with SqlStorage(str(tmp_path / "h.db")) as store:
        store.write_crossings([CrossingEvent("cam:door:1:old", "cam", "door", 1, "in", old, 1),
                               CrossingEvent("cam:door:2:00h10", "cam", "door", 2, "in", T0 + 10 * 60_000, 2)])
        for tf in walk(100, oldest_frame, track_id=3) + walk(200, T0 + HOUR + 60_000, track_id=4):
            store.write_tracked_frame(tf)
        totals = store.line_totals("cam")["door"]
        assert totals["in"] + totals["out"] == 2

        [res] = replay(config, store, start_ms=old - 1000)
        kept = [c.event_id for c in store.crossings("cam", 0, T0 + HOUR)]
        assert kept == ["cam:door:1:old", "cam:door:2:00h10"]
        totals = store.line_totals("cam")["door"]
        assert totals["in"] + totals["out"] == 3  # and track 4's, re-derived
        assert (res.start_ms, res.end_ms) == (T0 + HOUR, T0 + 2 * HOUR)  # ... so that hour is not replayed
        assert res.requested_start_ms == old - 1000 and res.note and str(oldest_frame) in res.note
        assert res.frames == 20 and res.counts.get("CrossingEvent") == 1

        # a range that ends before the oldest frame replays (and deletes) nothing
        [res] = replay(config, store, start_ms=old - 1000, end_ms=T0 + HOUR)
        assert (res.frames, res.deleted, res.written) == (0, 0, 0) and res.start_ms == res.end_ms
        assert res.note and res.note.startswith("nothing re-derived")
        assert len(store.crossings("cam", 0, T0 + 2 * HOUR)) == 3

    # nothing derived before the oldest frame (the recording began then, nothing was purged): the replay
    # re-derives from the start of its hour, the first frames included
    with SqlStorage(str(tmp_path / "fresh.db")) as store:
        for tf in walk(100, T0 + 40 * 60_000):
            store.write_tracked_frame(tf)
        [res] = replay(site(), store, start_ms=T0 - DAY)
        assert (res.start_ms, res.end_ms, res.frames, res.note) == (T0, T0 + HOUR, 20, None)
        assert res.counts.get("CrossingEvent") == 1 and len(store.crossings("cam", 0, T0 + HOUR)) == 1


def test_replaying_part_of_an_hour_keeps_the_hour_heatmap_whole(tmp_path: pathlib.Path) -> None:
    """The hour row of a heatmap is the sum of its minutes, also after re-deriving only the hour's second half."""
    config = site()
    h = heatmap_windows.c
    with SqlStorage(str(tmp_path / "h.db")) as store:
        frames = [m.TrackedFrame(camera_id="cam", seq=i, ts_ms=T0 + i * 10_000, width=640, height=480, tracks=[
            m.Track(track_id=1, confidence=0.9, bbox_xyxy=m.BoxXYXY(x1=100 + i, y1=100, x2=160 + i, y2=400))])
            for i in range(361)]  # every 10 s over the hour 00:00-01:00, and one frame at 01:00 closing it
        for tf in frames:
            store.write_tracked_frame(tf)

        def hour_and_minutes() -> tuple[int, int, int]:
            hour = store._rows(sa.select(h.occupancy_ms).where(h.span_ms == HOUR, h.window_start_ms == T0))
            minutes = store._rows(sa.select(sa.func.sum(h.occupancy_ms), sa.func.count()).where(
                h.span_ms == 60_000, h.window_start_ms >= T0, h.window_start_ms < T0 + HOUR))
            return hour[0][0], minutes[0][0], minutes[0][1]

        replay(config, store)
        full = hour_and_minutes()
        assert full[0] == full[1] > 0 and full[2] == 60
        [res] = replay(config, store, start_ms=T0 + 30 * 60_000)
        assert hour_and_minutes() == full
        assert res.start_ms == T0  # widened to the whole hour
