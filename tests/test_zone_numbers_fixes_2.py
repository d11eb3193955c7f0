"""Zone, queue and bucket numbers (review findings H14 on the batch).

1. ``/v1/queues`` with a window longer than an hour takes the covered time of the whole stored buckets in it
   from ``zone_stats`` (their ``covered_ms``) and reads the frames only at the window's edges: the same covered
   time as from every frame, on a stream with a stall, for a bounded number of frame rows read.
2. ``/v1/zones/stats``: a merged bucket whose stored buckets have lost part of their exits (``zone_events``
   retention cutting a day or a week) is not ``dwell_source: events`` (exact) but ``buckets``: the exits still
   stored with the medians of the buckets that lost theirs; a stored bucket without a p90 is left out of the
   p90 (it was weighed in as 0).
3. Whole weeks under the ``aligned_to: epoch`` fallback (India's +05:30 over stored hours) run Monday to
   Sunday (from Monday 00:00 UTC), not Thursday to Wednesday.

Real components: the analytics stage (:func:`storelens.stages.analytics.derive`), the SQLite (1: and
PostgreSQL) history and the API app; synthetic track boxes and stored rows.
"""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.zones import StreamCoverage
from storelens.stages.analytics import derive
from storelens.storage import SqlStorage
from storelens.storage import zones as zq
from storelens.storage.schema import frames as frames_table

MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
SITE = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "c.mp4", "zones": [
    {"id": "q", "kind": "queue", "polygon": SQUARE, "service_edge": [1, 2]},
    {"id": "a", "kind": "area", "polygon": [[200, 0], [300, 0], [300, 100], [200, 100]]}]}],
    "privacy": {"k_min": 1}}


def frame(seq: int, ts_ms: int, tracks: dict[int, float]) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts_ms, width=640, height=480,
                          tracks=[m.Track(track_id=t, bbox_xyxy=m.BoxXYXY(x1=x - 10, y1=20, x2=x + 10, y2=50))
                                  for t, x in tracks.items()])


# -- 1. the covered time of a long queue window ------------------------------------------------------------


DT = 500  # 2 fps


def stream_with_stall(end_of_stream: bool) -> list[m.TrackedFrame]:
    """2.5 hours at 2 fps from T0 with a stall from 80:10.5 to 100:30.25 (mid-bucket at both ends); someone
    queueing now and then."""
    times = [*range(0, 80 * MIN + 10_501, DT), *range(100 * MIN + 30_250, 150 * MIN + 20_000, DT)]
    out = [frame(i, T0 + t, {1 + t // (10 * MIN): 50} if t % (10 * MIN) < 3 * MIN else {})
           for i, t in enumerate(times)]
    if end_of_stream:
        out.append(m.TrackedFrame(camera_id="c", seq=len(out), ts_ms=out[-1].ts_ms, end_of_stream=True))
    return out


@pytest.mark.parametrize("end_of_stream", [False, True], ids=["live", "closed"])
def test_a_long_queue_window_covers_whole_buckets_from_the_stored_buckets(history_store, monkeypatch,
                                                                        end_of_stream: bool) -> None:
    cfg = parse_config(SITE)
    frames = stream_with_stall(end_of_stream)
    history_store.write_records(frames + derive(cfg, frames))
    now = frames[-1].ts_ms
    gap = StreamCoverage.for_zones(cfg.cameras[0].zones, cfg.zones).max_gap_ms
    truth = StreamCoverage(gap)
    for f in frames:
        truth.add(f.ts_ms)

    reads: list[tuple[int, int]] = []
    real = zq.frame_runs

    def counted(storage, camera_id, start_ms, end_ms, max_gap_ms):  # the real read, its range noted
        reads.append((start_ms, end_ms))
        return real(storage, camera_id, start_ms, end_ms, max_gap_ms)

    monkeypatch.setattr(zq, "frame_runs", counted)
    client = signed_in_client(create_app(cfg, history_store))
    f = frames_table.c
    for window_s in (7200, 9000):  # from 30:20 (mid-bucket, frames) and from before the first frame
        reads.clear()
        [q] = client.get("/v1/queues", params={"window_s": window_s}).json()["queues"]
        assert q["at_ms"] == now
        expected = truth.covered_ms(now, window_s * 1000)
        assert expected < window_s * 1000 - 20 * MIN  # the stall is not covered
        assert q["covered_s"] == pytest.approx(expected / 1000, abs=1e-3)  # the frames' own answer
        rows_read = sum(history_store._rows(sa.select(sa.func.count()).where(
            f.camera_id == "c", f.ts_ms >= a, f.ts_ms < b))[0][0] for a, b in reads)
        # the window's first minute and the buckets not closed yet (at most a minute and the close grace),
        # each with a hold of frames before it: not the window's 14,000-18,000 frames
        assert rows_read <= 2 * (MIN + 10_000 + gap) // DT, (reads, rows_read)
    # a window of an hour or less still reads its frames (exact, a bounded cost)
    [q] = client.get("/v1/queues", params={"window_s": 3600}).json()["queues"]
    assert q["covered_s"] == pytest.approx(truth.covered_ms(now, 3_600_000) / 1000, abs=1e-3)


# -- 2. dwell of a merged bucket that lost part of its exits ----------------------------------------------


def stats_row(start_ms: int, ended: int, median_s: float | None, p90_s: float | None) -> m.ZoneStats:
    row = m.ZoneStats(camera_id="c", zone_id="q", bucket_start_ms=start_ms, bucket_end_ms=start_ms + MIN,
                      visits=ended, unique_people=ended, mean_occupancy=1.0, max_occupancy=2, visits_ended=ended,
                      stoppers=0, served=ended, abandoned=0, lost=0, covered_ms=MIN)
    if median_s is not None:
        row.dwell_median_s = median_s
    if p90_s is not None:
        row.dwell_p90_s = p90_s
    return row


def exit_event(ts_ms: int, dwell_s: float) -> m.ZoneEvent:
    return m.ZoneEvent(event_id=f"x{ts_ms}", camera_id="c", zone_id="q", zone_kind="queue", track_id=ts_ms % 10_000,
                       kind=m.ZONE_EVENT_EXIT, ts_ms=ts_ms, seq=ts_ms // 100, dwell_ms=int(dwell_s * 1000),
                       how="service_edge")


def test_merged_dwell_is_exact_only_when_every_stored_bucket_has_its_exits(tmp_path) -> None:
    cfg = parse_config(SITE)
    h = 3_600_000
    rows = [
        # hour 0: minute 0 keeps its 3 exits (10, 20, 30 s); minute 1's 7 exits are purged
        stats_row(T0, 3, 20.0, 28.0), stats_row(T0 + MIN, 7, 50.0, 80.0),
        # hour 1: both purged, the second stored without a p90
        stats_row(T0 + h, 7, 50.0, 80.0), stats_row(T0 + h + MIN, 2, 5.0, None),
        # hour 2: every exit stored, one more after the last stored bucket (not closed yet)
        stats_row(T0 + 2 * h, 2, 15.0, 19.0),
    ]
    events = [exit_event(T0 + 1000 * k, k) for k in (10, 20, 30)]
    events += [exit_event(T0 + 2 * h + 1000 * k, k) for k in (10, 20)] + [exit_event(T0 + 2 * h + 5 * MIN, 40)]
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(rows + events)
        got = {(b["start_ms"] - T0) // h: b for b in signed_in_client(create_app(cfg, storage)).get(
            "/v1/zones/stats", params={"camera_id": "c", "start_ms": T0, "zone_id": "q",
                                       "bucket_s": 3600}).json()["buckets"]}
    zero, one, two = got[0], got[1], got[2]
    # not the 3 exits alone (n 3, median 20 s, "events"): those, and the purged minute's stored median
    assert zero["dwell_source"] == "buckets" and zero["dwell_s"]["n"] == 10
    assert zero["dwell_s"]["median"] == pytest.approx((20 * 3 + 50 * 7) / 10)
    assert zero["dwell_s"]["p90"] == pytest.approx((28 * 3 + 80 * 7) / 10)  # numpy's p90 of 10, 20, 30 s: 28
    assert zero["dwell_s"]["mean"] is None and zero["dwell_s"]["total"] is None
    # a bucket without a p90 is not a p90 of 0 s
    assert one["dwell_source"] == "buckets" and one["dwell_s"]["n"] == 9
    assert one["dwell_s"]["median"] == pytest.approx((50 * 7 + 5 * 2) / 9)
    assert one["dwell_s"]["p90"] == pytest.approx(80.0)
    # every exit still stored: exact, with the one after the last stored bucket
    assert two["dwell_source"] == "events" and two["dwell_s"]["n"] == 3
    assert two["dwell_s"]["median"] == 20.0 and two["dwell_s"]["total"] == 70.0


# -- 3. weeks under the epoch fallback --------------------------------------------------------------------


def test_weeks_aligned_on_the_epoch_run_monday_to_sunday(tmp_path) -> None:
    cfg = parse_config({**SITE, "store": {"id": "s", "timezone": "Asia/Kolkata"}, "zones": {"bucket_s": 3600}})
    monday = int(dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc).timestamp() * 1000)
    h = 3_600_000

    def hour(start_ms: int, visits: int) -> m.ZoneStats:
        return m.ZoneStats(camera_id="c", zone_id="q", bucket_start_ms=start_ms, bucket_end_ms=start_ms + h,
                           visits=visits, unique_people=visits, mean_occupancy=0.0, max_occupancy=1,
                           visits_ended=0, stoppers=0, served=0, abandoned=0, lost=0, covered_ms=h)

    with SqlStorage(str(tmp_path / "h.db")) as storage:
        # Sunday 23:00 UTC, Monday 00:00 UTC, Wednesday noon UTC, Thursday 00:00 UTC
        storage.write_records([hour(monday - h, 1), hour(monday, 2), hour(monday + 60 * h, 4),
                               hour(monday + 72 * h, 8)])
        out = signed_in_client(create_app(cfg, storage)).get("/v1/zones/stats", params={
            "camera_id": "c", "start_ms": monday - 7 * 24 * h, "end_ms": monday + 14 * 24 * h,
            "bucket_s": 604_800}).json()
    assert out["aligned_to"] == "epoch"  # local midnights (+05:30) would cut the stored hours
    weeks = [(b["start_ms"], b["end_ms"], b["visits"]) for b in out["buckets"]]
    assert weeks == [(monday - 7 * 24 * h, monday, 1), (monday, monday + 7 * 24 * h, 2 + 4 + 8)]
