"""Zone and queue numbers (review findings H6).

1. A person walking past the till (a pass-through of a queue zone that crosses its service edge) is a visit
   but never a served one: it does not add to ``served``, the KPIs' queue waits or the predicted wait.
2. ``/v1/zones/stats`` keeps the dwell of a bucket whose zone events are purged (retention, erasure): the
   stored bucket's median and p90 (exact for one stored bucket; weighted by the visits that ended in each,
   and flagged ``dwell_source: buckets``, when several merge).
3. ``/v1/queues`` (and the ``queue_wait`` alert) divide the served by the time the stream showed of the
   window, not the whole window: 60 s after a start or a stall, 4 served and 3 queueing predict ~45 s,
   not 3 * 300 / 4 = 225 s.

Real components: :class:`~storelens.domain.zones.ZoneTracker`, the analytics stage
(:func:`storelens.stages.analytics.derive`), the SQLite (and for 3 PostgreSQL) history and the API app;
synthetic track boxes.
"""
from __future__ import annotations

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import ZoneConfig, ZonesConfig, parse_config
from storelens.contract import messages as m
from storelens.domain.zones import QueueStats, ZoneBuckets, ZoneTracker
from storelens.stages.analytics import derive
from storelens.storage import SqlStorage

DT = 200  # 5 fps
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]  # the service edge [1, 2] is its right side, x = 100
IN_Q, SERVED = 50, 150  # x of the feet (y 50): in the queue, past the till


def site(rules: list[dict] | None = None) -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "c.mp4", "zones": [
        {"id": "q", "kind": "queue", "polygon": SQUARE, "service_edge": [1, 2]}]}],
        "alerts": {"rules": rules or []}}


def frame(seq: int, ts_ms: int, tracks: dict[int, float]) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts_ms, width=640, height=480,
                          tracks=[m.Track(track_id=t, bbox_xyxy=m.BoxXYXY(x1=x - 10, y1=20, x2=x + 10, y2=50))
                                  for t, x in tracks.items()])


# -- 1. pass-through ---------------------------------------------------------------------------------------


def test_walking_past_the_till_is_a_visit_but_not_served() -> None:
    till = ZoneConfig(id="q", kind="queue", polygon=SQUARE, service_edge=(1, 2))
    zt = ZoneTracker("c", [till], ZonesConfig(enter_after_ms=1000))
    buckets = ZoneBuckets(60, max_hold_ms=zt.max_lost_ms)
    events = []
    # seen at (-20, 50), (-10, 50), then at (130, 50) 400 ms later: the path crosses the zone and x = 100
    for seq, (ts, x) in enumerate([(100, -20), (200, -10), (600, 130), (800, 140), (2000, 150)]):
        ev = zt.update(seq, ts, [7], [(x, 50)])
        buckets.add(ts, zt.inside(), ev)
        events += ev
    assert [(e.kind, e.ts_ms, e.dwell_ms, e.how) for e in events] == [
        ("enter", 229, None, None), ("exit", 514, 285, "other")]  # the visit counts; it was not served
    [s] = buckets.stats()
    assert (s.visits, s.exits, s.served, s.abandoned) == (1, 1, 0, 1)
    assert QueueStats.compute(events, "q", 2000, 300_000, 1).served == 0


def test_a_real_queue_visit_through_the_service_edge_is_still_served() -> None:
    cfg = parse_config(site())
    path = [(-20, 0)] + [(IN_Q, t) for t in range(DT, 3000, DT)] + [(SERVED, t) for t in range(3000, 5000, DT)]
    records = derive(cfg, [frame(i, t, {7: x}) for i, (x, t) in enumerate(path)])
    exits = [(r.how, r.dwell_ms) for r in records if isinstance(r, m.ZoneEvent) and r.kind == m.ZONE_EVENT_EXIT]
    assert exits == [("service_edge", 3000 - DT)]


def test_a_pass_through_in_the_analytics_stage_is_abandoned_not_served() -> None:
    cfg = parse_config(site())
    # 2.5 fps: one frame left of the queue, the next right of the till (crossing it between two frames)
    frames = [frame(0, 0, {7: -30}), frame(1, 400, {7: 130}), *[frame(i, i * 400, {7: 140}) for i in range(2, 8)]]
    records = derive(cfg, frames + [m.TrackedFrame(camera_id="c", seq=8, ts_ms=2800, end_of_stream=True)])
    exits = [r.how for r in records if isinstance(r, m.ZoneEvent) and r.kind == m.ZONE_EVENT_EXIT]
    stats = [r for r in records if isinstance(r, m.ZoneStats)]
    assert exits == ["other"]
    assert (sum(s.served for s in stats), sum(s.abandoned for s in stats), sum(s.visits for s in stats)) == (0, 1, 1)


# -- 2. dwell of purged buckets ----------------------------------------------------------------------------


def stats_row(start_ms: int, visits_ended: int, median_s: float, p90_s: float) -> m.ZoneStats:
    return m.ZoneStats(camera_id="c", zone_id="q", bucket_start_ms=start_ms, bucket_end_ms=start_ms + 60_000,
                       visits=visits_ended, unique_people=visits_ended, mean_occupancy=1.0, max_occupancy=2,
                       dwell_median_s=median_s, dwell_p90_s=p90_s, visits_ended=visits_ended, stoppers=0,
                       served=visits_ended, abandoned=0, lost=0, covered_ms=60_000)


def test_zone_stats_keep_the_stored_dwell_once_the_events_are_purged(tmp_path) -> None:
    cfg = parse_config({**site(), "privacy": {"k_min": 1}})  # the exact figures of 3 and 7 people (no withholding)
    t0 = 1_767_225_600_000  # an hour start
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records([stats_row(t0, 7, 42.0, 60.0), stats_row(t0 + 60_000, 3, 12.0, 20.0)])
        client = signed_in_client(create_app(cfg, storage))
        one, two = client.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": t0}).json()["buckets"]
        assert one["visits"] == 7
        assert one["dwell_s"] == {"median": 42.0, "p90": 60.0, "mean": None, "total": None, "n": 7,
                                   "suppressed": False}
        assert one["dwell_source"] == "bucket"  # one stored bucket: its exact median and p90
        assert two["dwell_s"]["median"] == 12.0 and two["dwell_source"] == "bucket"
        [hour] = client.get("/v1/zones/stats", params={"camera_id": "c", "start_ms": t0,
                                                       "bucket_s": 3600}).json()["buckets"]
        assert hour["visits"] == 10 and hour["dwell_source"] == "buckets"  # an approximation, flagged
        assert hour["dwell_s"]["n"] == 10
        assert hour["dwell_s"]["median"] == pytest.approx((42 * 7 + 12 * 3) / 10)
        assert hour["dwell_s"]["p90"] == pytest.approx((60 * 7 + 20 * 3) / 10)


def test_zone_stats_dwell_from_the_events_while_they_are_stored(tmp_path) -> None:
    cfg = parse_config({**site(), "privacy": {"k_min": 1}})  # one person's dwell, shown when k_min is 1
    path = [(-20, 0)] + [(IN_Q, t) for t in range(DT, 3000, DT)] + [(SERVED, t) for t in range(3000, 10_000, DT)]
    frames = [frame(i, t, {7: x}) for i, (x, t) in enumerate(path)]
    frames.append(m.TrackedFrame(camera_id="c", seq=len(frames), ts_ms=frames[-1].ts_ms, end_of_stream=True))
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(frames + derive(cfg, frames))
        [b] = signed_in_client(create_app(cfg, storage)).get(
            "/v1/zones/stats", params={"camera_id": "c", "start_ms": 0}).json()["buckets"]
        assert b["dwell_source"] == "events" and b["dwell_s"]["n"] == 1 and b["dwell_s"]["total"] == 2.8


# -- 3. predicted wait after a start or a stall -----------------------------------------------------------


def queue_minute(t0: int, seq0: int) -> list[m.TrackedFrame]:
    """60 s at 5 fps from ``t0``: people 1-4 queue and are served (leave through the till at 10, 20, 30 and
    40 s), people 5-7 queue until the end."""
    out = []
    for i, t in enumerate(range(0, 60_000, DT)):
        tracks = {k: IN_Q for k in (5, 6, 7)}
        for k in (1, 2, 3, 4):
            if t < k * 10_000:
                tracks[k] = IN_Q
            elif t < k * 10_000 + 2000:
                tracks[k] = SERVED
        out.append(frame(seq0 + i, t0 + t, tracks))
    return out


def started() -> list[m.TrackedFrame]:
    return queue_minute(0, 0)


def stalled() -> list[m.TrackedFrame]:
    """20 s of an empty view, no frame for 10 minutes, then the minute of queue (ids 101-107)."""
    before = [frame(i, i * DT, {}) for i in range(100)]
    after = queue_minute(600_000, 100)
    for f in after:
        for tr in f.tracks:
            tr.track_id += 100
    return before + after


@pytest.mark.parametrize("frames_of", [started, stalled])
def test_predicted_wait_is_over_the_time_the_stream_showed(history_store, frames_of) -> None:
    rule = {"kind": "queue_wait", "id": "slow", "camera": "c", "zone": "q", "min_wait_s": 100, "hold_s": 0}
    cfg = parse_config(site([rule]))
    frames = frames_of()
    records = derive(cfg, frames)
    history_store.write_records(frames + records)  # SQLite and PostgreSQL: the runs of frames are found in SQL
    [q] = signed_in_client(create_app(cfg, history_store)).get("/v1/queues").json()["queues"]
    assert (q["at_ms"], q["window_s"], q["length"], q["served"]) == (frames[-1].ts_ms, 300.0, 3, 4)
    assert q["predicted_wait_s"] == pytest.approx(3 * 59.8 / 4, abs=0.01)  # not 3 * 300 / 4 = 225 s
    assert q["covered_s"] == pytest.approx(59.8)  # from the first frame of the minute to the last
    # the alert follows: never >= 100 s (over the whole window, 1 served and 6 queueing at 11 s gave 1800 s)
    assert [r for r in records if isinstance(r, m.Alert)] == []


def test_no_predicted_wait_until_the_stream_showed_30_s(tmp_path) -> None:
    cfg = parse_config(site())
    frames = queue_minute(0, 0)[:100]  # 20 s: person 1 served at 10 s, 6 queueing
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(frames + derive(cfg, frames))
        client = signed_in_client(create_app(cfg, storage))
        [q] = client.get("/v1/queues").json()["queues"]
        assert (q["served"], q["length"], q["predicted_wait_s"]) == (1, 6, None)
        assert q["covered_s"] == 19.8
        # a 10 s window is covered whole: 6 queueing / (1 served per 10 s)
        [q10] = client.get("/v1/queues", params={"window_s": 10, "at_ms": 15_000}).json()["queues"]
        assert (q10["served"], q10["length"], q10["predicted_wait_s"], q10["covered_s"]) == (1, 6, 60.0, 10.0)
