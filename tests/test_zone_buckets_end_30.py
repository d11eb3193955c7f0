"""A camera's next stream after its end-of-stream marker, and live numbers of a stale camera (each test fails on the
code before):

1. The zone buckets held the ended stream's last occupancy past its end: the next stream's first frame in a later
   bucket (a file re-pointed to a later one) made the bucket of the old stream's last time again, and its row
   (no visit, 2.4 s covered) replaced the real one. A next stream's frames in the old stream's last bucket started
   it afresh: its row replaced the old one, the old stream's part of the bucket lost. Now nothing holds on past the
   end, and a next stream's frame in that bucket continues it (:meth:`ZoneBuckets.end`).
2. A site version that removes a rule resolved its open alert at the highest time the camera reached, not at its
   last frame (a file re-pointed to an earlier one).
3. ``/v1/zones`` of a live camera down for two hours showed its last frame's people inside as "now"; the rule of
   ``/v1/queues`` now applies: ``stale``, ``occupancy`` null and ``age_s``.

Real components: the analytics stage (:class:`AnalyticsStage`, state through JSON as the analytics service's table),
the SQLite history (records written through the storage) and the API app.
"""
from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.stages.analytics import AnalyticsStage, derive
from storelens.storage import SqlStorage
from storelens.storage.schema import alerts, zone_stats
from test_dashboard_browser import browser, open_view, serve_site, settle, shot, sign_in  # noqa: F401 (fixture)
from test_marker_last_frame_30 import BOX, OLD_FIRST, OLD_LAST, T0, frame, restarted, run, site
from test_zones_gaps_30 import HOUR, MIN, DT, queue_frames
from test_zones_gaps_30 import site as queue_site


def person(seq: int, ts_ms: int, track_id: int) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts_ms, width=640, height=480,
                          tracks=[m.Track(track_id=track_id, bbox_xyxy=BOX)])


def end(seq: int, ts_ms: int) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts_ms, end_of_stream=True)


def stats_rows(st: SqlStorage) -> list[tuple]:
    return [tuple(r) for r in st._rows(sa.select(
        zone_stats.c.bucket_start_ms, zone_stats.c.visits, zone_stats.c.visits_ended, zone_stats.c.unique_people,
        zone_stats.c.covered_ms).order_by(zone_stats.c.bucket_start_ms))]


# -- 1. the next stream after an end-of-stream marker ------------------------------------------------------------------

OLD_ROW = (T0, 1, 1, 1, 19_500)  # the old stream's last bucket: person 1 from OLD_FIRST to OLD_LAST, every 0.5 s


def later_bucket() -> list[m.TrackedFrame]:
    """A frame 70 s after the end (nobody in view), in the next bucket, then its stream's end."""
    return [frame(41, OLD_LAST + 70_000, False), end(42, OLD_LAST + 70_000)]


def same_bucket(until: int) -> list[m.TrackedFrame]:
    """Person 2 in the zone from 2.5 s after the end (the same bucket) to ``until``, then the stream's end."""
    ts = range(OLD_LAST + 2_500, until + 1, 500)
    return [person(41 + i, t, 2) for i, t in enumerate(ts)] + [end(41 + len(ts), until)]


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "restarted-after-the-marker"])
@pytest.mark.parametrize("new_frames, expected", [
    # the later bucket's own row (covered 0: one frame); the old stream's row kept (was (T0, 0, 0, 0, 2_400))
    pytest.param(later_bucket, [OLD_ROW, (T0 + 60_000, 0, 0, 0, 0)], id="next-frame-in-a-later-bucket"),
    # both streams in the bucket: 2 visits, 2 people, 19.5 s + 3 s covered (was person 2's alone, with 2.4 s of the
    # old stream's 0 held past its end)
    pytest.param(lambda: same_bucket(OLD_LAST + 5_500), [(T0, 2, 2, 2, 22_500)], id="same-bucket-ended-there"),
    # the bucket closed by the frames moving past it (not by an end): 52 s to 60 s of person 2 added; its exit is
    # in the next bucket, at the end (last seen 75 s: 15 s of the next bucket covered)
    pytest.param(lambda: same_bucket(T0 + 75_000), [(T0, 2, 1, 2, 19_500 + 8_000), (T0 + 60_000, 0, 1, 1, 15_000)],
                 id="same-bucket-closed-by-time"),
])
def test_the_next_stream_keeps_the_ended_streams_last_bucket(tmp_path, restart: bool, new_frames, expected) -> None:
    cfg = site("c.mp4", OLD_FIRST)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage = AnalyticsStage(cfg)
        run(stage, st, [frame(i, OLD_FIRST + i * 500, True) for i in range(40)] + [end(40, OLD_LAST)])
        assert stats_rows(st) == [OLD_ROW]
        if restart:  # the analytics service restarted between the marker and the next stream (its table's state)
            stage = restarted(stage, cfg)
        run(stage, st, new_frames())
        assert stats_rows(st) == expected


# -- 2. a site version resolves an alert at the camera's last frame ----------------------------------------------------

STAFF = {"kind": "staff_only", "id": "staff", "camera": "c", "zone": "z"}
EARLIER = T0 - 100_000  # the file the camera is re-pointed to starts here


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "restarted-before-the-version"])
def test_a_version_resolves_an_alert_at_the_last_frame_not_the_highest(tmp_path, restart: bool) -> None:
    """The camera's first file ends at T0+49.5 s, nobody in the staff-only zone; re-pointed to an earlier file,
    someone enters the zone (the alert fires at its first frame); a version removes the rule 4.5 s later: the alert
    resolves at the earlier file's last frame (it was the first file's, 49.5 s after the firing; or, restarted
    without store-level rules, the version's own time)."""
    raw = {**site("old.mp4", OLD_FIRST).model_dump(mode="json"), "alerts": {"rules": [STAFF]}}
    cfg = parse_config(raw)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage = AnalyticsStage(cfg)
        run(stage, st, [frame(i, OLD_FIRST + i * 500, False) for i in range(40)] + [end(40, OLD_LAST)])
        run(stage, st, [person(100 + i, EARLIER + i * 500, 3) for i in range(10)])
        if restart:
            stage = restarted(stage, cfg)
        cams = [c.model_dump(mode="json") for c in cfg.cameras]
        update = m.SiteUpdate(version=1, ts_ms=T0 + 500_000, actor="test", store_id=cfg.store.id,
                              cameras_json=json.dumps(cams), alert_rules_json="[]")
        st.write_records(stage.handle(topics.SITE_CONFIG, m.decode(m.SiteUpdate, m.encode(update))).records)
        rows = st._rows(sa.select(alerts.c.rule_id, alerts.c.state, alerts.c.fired_ts_ms, alerts.c.ts_ms))
        assert [tuple(r) for r in rows] == [("staff", "resolved", EARLIER, EARLIER + 4_500)]


# -- 3. /v1/zones of a stale live camera -------------------------------------------------------------------------------

@pytest.mark.parametrize("source, age_ms, stale", [
    ("rtsp://cam/c", 2 * HOUR, True),  # down for two hours: not "1 inside now"
    ("rtsp://cam/c", 5_000, False),  # a few seconds behind: live
    ("c.mp4", 2 * HOUR, False),  # a recorded file answers as it did
])
def test_a_stale_live_camera_has_no_people_inside_now(tmp_path, source: str, age_ms: int, stale: bool) -> None:
    cfg = parse_config(queue_site(source))
    last = int(time.time() * 1000) - age_ms
    frames = queue_frames(last - (5 * MIN - DT), 5)  # person 99 in the queue zone at the last frame
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(frames + derive(cfg, frames))
        client = signed_in_client(create_app(cfg, storage))
        [z] = client.get("/v1/zones").json()["zones"]
        assert (z["ts_ms"], z["stale"], z["occupancy"]) == (last, stale, None if stale else 1)
        if source.startswith("rtsp"):
            assert z["age_s"] == pytest.approx(age_ms / 1000, abs=30)
        else:
            assert z["age_s"] is None
        [q] = client.get("/v1/queues").json()["queues"]  # the same rule, the same answer
        assert (q["stale"], q["age_s"] is None) == (z["stale"], z["age_s"] is None)



@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_zones_view_shows_a_stale_count_as_stale(tmp_path, browser) -> None:  # noqa: F811 (the fixture)
    """The dashboard's Zones view (built, in a real browser): the live camera down for two hours shows its zone's
    people inside (and its queue's length) as stale, not its last frame's 1."""
    from playwright.sync_api import expect

    raw = {**queue_site("rtsp://cam/c"), "storage": {"path": str(tmp_path / "h.db")}}
    cfg = parse_config(raw)
    frames = queue_frames(int(time.time() * 1000) - 2 * HOUR - (5 * MIN - DT), 5)
    storage = SqlStorage(str(tmp_path / "h.db"))
    storage.write_records(frames + derive(cfg, frames))
    [zone] = cfg.cameras[0].zones
    with serve_site(raw, storage) as served:
        page = sign_in(browser, served, "viewer")
        open_view(page, "zones")
        settle(page)
        occupancy = page.get_by_test_id(f"zone-row-{zone.id}").get_by_test_id("occupancy")
        expect(occupancy).to_contain_text("stale (no frame for 72")  # 7200 s and the few the test took
        expect(page.get_by_test_id(f"queue-{zone.id}").get_by_test_id("length")).to_contain_text("stale")
        shot(page, "zones-stale-live-camera-desktop")
