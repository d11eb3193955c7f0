"""Review of zones, queues and heatmaps (34): each fix with a test that fails on the code before it.

1. The camera heatmap (``/v1/cameras/{id}/heatmap``) of a camera with a floor homography read every track point of
   the range for its ``walking`` statistics (up to 500,000 points, seconds per request), which the dashboard's
   overlay does not show. ``walking=false`` answers the grid alone (``walking: null``); without it the answer is
   as documented. The dashboard asks with ``walking=false``.
2. A camera heatmap over a long history answered 500 on SQLite: the minute rows between the hours read from hour
   rows were one UNION ALL part per run of hours without an hour row (a night without people), and SQLite allows
   500 terms in a compound SELECT: "All data" of a store with nightly gaps failed after about 500 days.
3. A camera's ``floor.points`` that determine no homography (three of four on one line, a point given twice) were
   accepted (site file, ``PUT /v1/site/cameras/{id}``), then every heatmap JSON of the camera and the store plan
   heatmap answered 500. The site refuses them, naming the field.
4. A file camera re-pointed to another file of the same start time, the analytics restarted (or its analyzers
   rebuilt from their state by a site version) between the first file's end and the second one's frames: the
   second file's first zone bucket went on from the first file's (its row counted both files' visits and people),
   as the stage kept the ended stream's last bucket but not when that stream ended. Now it starts afresh, as
   without the restart.
5. A zone that lies entirely outside its camera's frame (drawn on another camera's picture or at another
   resolution) was taken silently: nobody was ever in it, its figures all zeros. As for lines, the analytics stage
   warns once per camera and frame size and counts it (``storelens_errors_total{reason="zone_outside_frame"}``),
   and ``PUT /v1/site/cameras/{id}/zones/{zone_id}`` of such a zone is a 422 naming ``zone.polygon`` once a
   reference frame is stored.
"""
from __future__ import annotations

import json
import logging
import re

import pytest
from prometheus_client import CollectorRegistry

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError
from storelens.runtime.bus import InProcessBus
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.service import ServiceMetrics
from storelens.runtime.transports import InProcessTransport
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
T_OLD = 1_704_067_200_000  # 2024-01-01T00:00:00Z: 600 days of it are over
HOUR, DAY = 3_600_000, 86_400_000
#: 100 px = 1 m
SQUARE = [[[100, 100], [0.0, 0.0]], [[300, 100], [2.0, 0.0]], [[300, 300], [2.0, 2.0]], [[100, 300], [0.0, 2.0]]]


def _site(**camera) -> dict:
    return {"store": {"id": "s"}, "privacy": {"k_min": 1},
            "cameras": [{"id": "cam", "source": "/tmp/x.mp4", **camera}]}


def _heat(start_ms: int, span_ms: int, ms: int) -> m.HeatmapWindow:
    return m.HeatmapWindow(camera_id="cam", window_start_ms=start_ms, window_end_ms=start_ms + span_ms, cell_px=16,
                           width=640, height=480, cells=[m.HeatmapCell(gx=2, gy=3, occupancy_ms=ms, dwell_ms=0)])


# -- 1. walking=false: the grid alone --------------------------------------------------------------------------

@pytest.mark.parametrize("params, walked", [({}, True), ({"walking": "true"}, True), ({"walking": "false"}, False)])
def test_heatmap_walking_is_computed_only_when_asked(history_store, params, walked) -> None:
    # one person walks 2 m in 4 s (10 fps) across the floor square; a minute of heatmap
    box = [m.BoxXYXY(x1=80 + 5 * i, y1=100, x2=120 + 5 * i, y2=200) for i in range(41)]
    history_store.write_batch(tracked_frames=[
        m.TrackedFrame(camera_id="cam", seq=i, ts_ms=T0 + 100 * i, tracks=[m.Track(track_id=1, bbox_xyxy=b)])
        for i, b in enumerate(box)])
    history_store.write_records([_heat(T0, 60_000, 4_000)])
    app = create_app(parse_config(_site(floor={"points": SQUARE})), history_store)
    with signed_in_client(app, role="viewer") as client:
        r = client.get("/v1/cameras/cam/heatmap", params={"start_ms": T0, "end_ms": T0 + 60_000, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["gx"], c["gy"], c["occupancy_ms"]) for c in body["cells"]] == [(2, 3, 4_000)]
    if walked:
        w = body["walking"]
        assert (w["tracks"], w["distance_m"], w["duration_s"], w["truncated"]) == (1, 2.0, 4.0, False)
    else:  # before: walked anyway (the parameter was ignored)
        assert body["walking"] is None


# -- 2. a long history with gaps: not one compound SELECT ----------------------------------------------------

def test_heatmap_over_a_long_history_with_nightly_gaps(history_store) -> None:
    # 600 days, people in the noon hour's first minute only: 600 hour rows and 600 runs of hours without one
    days = 600
    history_store.write_records([w for d in range(days) for w in (_heat(T_OLD + d * DAY + 12 * HOUR, 60_000, 1_000),
                                                                  _heat(T_OLD + d * DAY + 12 * HOUR, HOUR, 1_000))])
    app = create_app(parse_config(_site()), history_store)
    with signed_in_client(app, role="viewer", raise_server_exceptions=False) as client:
        whole = client.get("/v1/cameras/cam/heatmap")  # all the data, as the dashboard opens it
        # a range starting and ending inside hours: minute rows at both edges, hour rows between
        part = client.get("/v1/cameras/cam/heatmap", params={
            "start_ms": T_OLD + 12 * HOUR + 30_000, "end_ms": T_OLD + 599 * DAY + 12 * HOUR + 30_000})
    # before: 500 on SQLite (sqlite3.OperationalError: too many terms in compound SELECT)
    assert whole.status_code == 200, whole.text
    assert (whole.json()["minutes"], whole.json()["total_ms"]) == (days, days * 1_000)
    assert part.status_code == 200, part.text
    # the first day's minute starts before the range; the last day's in it
    assert (part.json()["minutes"], part.json()["total_ms"]) == (days - 1, (days - 1) * 1_000)


# -- 3. floor points that determine no homography are refused ------------------------------------------------

LINE = [[[0, 0], [0.0, 0.0]], [[100, 0], [1.0, 0.0]], [[200, 0], [2.0, 0.0]], [[300, 0], [3.0, 0.0]]]
TWICE = [[[0, 0], [0.0, 0.0]], [[200, 0], [1.0, 1.0]], [[200, 200], [1.0, 1.0]], [[100, 100], [0.0, 1.0]]]


@pytest.mark.parametrize("points, ok", [(SQUARE, True), (LINE, False), (TWICE, False)])
def test_floor_points_that_determine_no_homography_are_refused(tmp_path, points, ok) -> None:
    if not ok:  # before: accepted, then the camera's heatmap answered 500 (ValueError: degenerate floor points)
        with pytest.raises(ConfigError, match="floor: points: they determine no homography"):
            parse_config(_site(floor={"points": points}))
    storage = SqlStorage(str(tmp_path / "f.db"))
    try:
        app = create_app(parse_config(_site()), storage)
        with signed_in_client(app, role="admin", raise_server_exceptions=False) as client:
            put = client.put("/v1/site/cameras/cam", json={"id": "cam", "source": "/tmp/x.mp4",
                                                           "floor": {"points": points}})
            heat = client.get("/v1/cameras/cam/heatmap")
    finally:
        storage.close()
    assert put.status_code == (200 if ok else 422), put.text
    if not ok:
        assert "points" in put.text and "homography" in put.text
    assert heat.status_code == 200, heat.text


# -- 4. a re-pointed file after a restart starts its first zone bucket afresh --------------------------------

def _visit(seq0: int, ts0: int, track_id: int, n: int, inside: range) -> list[m.TrackedFrame]:
    """``n`` frames 100 ms apart; the person inside the zone (box bottom at y 50) in the frames of ``inside``."""
    return [m.TrackedFrame(camera_id="cam", seq=seq0 + i, ts_ms=ts0 + 100 * i, width=640, height=480, tracks=[
        m.Track(track_id=track_id, bbox_xyxy=m.BoxXYXY(x1=40, y1=10, x2=60, y2=50 if i in inside else 150))])
        for i in range(n)]


@pytest.mark.parametrize("restarted", [False, True])
def test_a_repointed_file_after_a_restart_starts_its_first_zone_bucket_afresh(restarted) -> None:
    raw = {"store": {"id": "s"}, "zones": {"bucket_s": 900}, "heatmap": {"enabled": False},
           "cameras": [{"id": "cam", "source": "/tmp/a.mp4",
                        "zones": [{"id": "z", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}]}]}
    stage = AnalyticsStage(parse_config(raw))
    # file A: person 1 in the zone for 10 s from 105 s on, then the end of the stream
    for tf in _visit(0, T0 + 100_000, 1, 200, range(50, 150)):
        stage.handle(topics.TRACKS, tf)
    stage.handle(topics.TRACKS, m.TrackedFrame(camera_id="cam", seq=200, ts_ms=T0 + 119_900, end_of_stream=True))
    if restarted:  # the analytics service's saved camera state, loaded by a new process
        saved = json.loads(json.dumps(stage.camera_state("cam")))
        stage = AnalyticsStage(parse_config(raw))
        stage.load_camera_state("cam", saved)
    # file B, of the same start time: person 2 in the zone for 5 s from 2 s on
    out = []
    for tf in _visit(300, T0, 2, 100, range(20, 70)) + [
            m.TrackedFrame(camera_id="cam", seq=400, ts_ms=T0 + 9_900, end_of_stream=True)]:
        out += stage.handle(topics.TRACKS, tf).records
    rows = [(r.bucket_start_ms - T0, r.visits, r.unique_people, r.visits_ended) for r in out
            if isinstance(r, m.ZoneStats)]
    assert rows == [(0, 1, 1, 1)]  # B's visit alone (before, restarted: (0, 2, 2, 2), A's visit too)


# -- 5. a zone entirely outside the frame ----------------------------------------------------------------------

ZONE_OUTSIDE_FRAME = "zone_outside_frame"  # storelens_errors_total reason (documented)
FAR = {"id": "far", "polygon": [[700, 100], [900, 100], [900, 300], [700, 300]]}  # right of a 640 px wide frame
TILL = {"id": "till", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}


def test_a_zone_outside_the_frame_is_warned_of_and_counted(caplog) -> None:
    raw = {**_site(zones=[TILL, FAR]), "heatmap": {"enabled": False}}
    stage = AnalyticsStage(parse_config(raw))
    registry = CollectorRegistry()
    core = RunnerCore(stage, metrics=ServiceMetrics(registry))
    bus = InProcessBus()
    runner = Runner(core, InProcessTransport(bus, list(stage.inputs), outputs=stage.outputs))
    sizes = [(640, 480), (640, 480), (1280, 720), (320, 240), (640, 480)]  # the zone is inside at 1280x720
    with caplog.at_level(logging.WARNING, logger="storelens.stages.analytics"):
        for seq, (w, h) in enumerate(sizes):
            tf = m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=T0 + 100 * seq, width=w, height=h)
            bus.publish(topics.TRACKS, topics.camera_key("cam"), m.encode(tf))
            assert runner.handle(runner.transport.poll(1.0))
    warned = [re.search(r"camera (\w+): zone '(\w+)'.* its (\d+x\d+) frame", r.getMessage()).groups()
              for r in caplog.records if "outside" in r.getMessage()]
    # before: no warning, no count. Once per frame size (not again at the second 640x480 frame); never the till
    assert warned == [("cam", "far", "640x480"), ("cam", "far", "320x240"), ("cam", "far", "640x480")]
    assert core.errors == {ZONE_OUTSIDE_FRAME: 3}
    assert registry.get_sample_value("storelens_errors_total", {"reason": ZONE_OUTSIDE_FRAME}) == 3


@pytest.mark.parametrize("polygon, status", [
    (FAR["polygon"], 422),
    ([[600, 100], [900, 100], [900, 300]], 200),  # partly inside (a zone may reach past the frame's edge)
    ([[-10, -10], [2000, -10], [2000, 2000], [-10, 2000]], 200),  # around the whole frame
])
def test_put_of_a_zone_outside_the_reference_frame_is_a_422(tmp_path, polygon, status) -> None:
    with SqlStorage(str(tmp_path / "h.db")) as st:
        client = signed_in_client(create_app(parse_config(_site(zones=[TILL])), st))
        zone = {"id": "far", "polygon": polygon}
        # no reference frame stored yet: the frame size is not known, the zone is taken
        assert client.put("/v1/site/cameras/cam/zones/far", json=zone).status_code == 200
        st.write_records([m.CameraSnapshot(camera_id="cam", ts_ms=T0, seq=0, width=640, height=480, blurred=1,
                                           jpeg=b"\xff\xd8")])
        r = client.put("/v1/site/cameras/cam/zones/far2", json={**zone, "id": "far2"})
        assert r.status_code == status, r.text  # before: 200 for every one
        if status == 422:
            assert r.json()["detail"].startswith("zone.polygon: zone 'far2' lies entirely outside camera 'cam'")
            assert "640x480" in r.json()["detail"]
        assert [z["id"] for z in client.get("/v1/site").json()["cameras"][0]["zones"]] == (
            ["till", "far"] + (["far2"] if status == 200 else []))
