"""Fixes of a review of the occupancy (each test fails on the code before):

1. a store with several doors and no ``store.entrance_lines``: people who come in by one door and leave by another
   were left inside the store's number (each camera's occupancy clamped at 0 on its own, the store's the sum), so it
   grew all day; every line is now an entrance, clamped once for the store (the ``@store`` row, ``/v1/occupancy``,
   ``/v1/live`` and the ``store_occupancy`` alert);
2. a restart of the embedded pipeline mid-day set each live camera's occupancy, ins and outs (and the store's)
   back to 0: it now goes on from the day's rows in the history (not yesterday's, not a file's, which is re-read);
3. a counting line lying entirely outside its camera's frame was accepted and silently never counted: the
   analytics stage warns once per camera and frame size and counts ``storelens_errors_total{reason=
   "line_outside_frame"}``; ``PUT`` of such a line is a 422 naming the field once a reference frame is stored.

Real stages, runner, SQLite history and API app; frames are real ``TrackedFrame`` messages.
"""
from __future__ import annotations

import logging
import re
import time

import pytest
from prometheus_client import CollectorRegistry

from storelens.api import create_app
from storelens.api.routes.live import counts_snapshot
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.runtime.bus import InProcessBus
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.service import ServiceMetrics
from storelens.runtime.sinks import HistorySink
from storelens.runtime.transports import InProcessTransport
from storelens.stages.analytics import AnalyticsStage, occupancy_reset
from storelens.storage import SqlStorage
from test_alerts import IN, OUT, tframe, walk

DOOR = {"id": "door", "a": [0, 300], "b": [640, 300]}  # moving down the image = in
RULE = {"kind": "store_occupancy", "id": "full", "max": 3, "cooldown_s": 0}


def site(sources=("a.mp4", "b.mp4"), entrance=None, rules=()) -> dict:
    store = {"id": "shop"} | ({"entrance_lines": entrance} if entrance is not None else {})
    return {"store": store, "cameras": [{"id": cam, "source": src, "lines": [DOOR]}
                                        for cam, src in zip("ab", sources)], "alerts": {"rules": list(rules)}}


def people(moves: list[tuple[str, int, list[int]]], seq0: int, ts0: int) -> list[m.TrackedFrame]:
    """Each ``(camera, track, ys)`` walks after the one before (2 s apart), seqs per camera from ``seq0``."""
    frames, seqs = [], {}
    for i, (cam, track, ys) in enumerate(moves):
        seq = seqs.get(cam, seq0)
        frames += walk(cam, track, ys, seq, ts0 + i * 2000)
        seqs[cam] = seq + len(ys)
    return frames


def run(stage: AnalyticsStage, st: SqlStorage, frames: list[m.TrackedFrame]) -> list:
    """``frames`` through the real runner and history sink; the alerts made."""
    bus = InProcessBus()
    runner = Runner(RunnerCore(stage, [HistorySink(st)]), InProcessTransport(bus, list(stage.inputs),
                                                                              outputs=stage.outputs))
    alerts = bus.subscribe(topics.ALERTS)
    for tf in frames:
        bus.publish(topics.TRACKS, topics.camera_key(tf.camera_id), m.encode(tf))
        assert runner.handle(runner.transport.poll(1.0))
    return [m.decode(m.Alert, x.value) for x in iter(lambda: alerts.poll(0), None)]


def row(st: SqlStorage, cam: str) -> tuple[int, int, int] | None:
    r = st.occupancy(cam)
    return None if r is None else (r.occupancy, r.total_in, r.total_out)


# -- 1. several doors without store.entrance_lines -------------------------------------------------------------------

@pytest.mark.parametrize("entrance, store", [
    (None, (0, 5, 5)),  # every line is an entrance: in by a, out by b: nobody inside (was 5, and growing)
    (["a/door", "b/door"], (0, 5, 5)),  # the same, listed
    (["a/door"], (5, 5, 0)),  # b is a department's line: its shoppers are inside the store
])
def test_people_leaving_by_another_door_are_not_left_inside(tmp_path, entrance, store) -> None:
    cfg = parse_config(site(entrance=entrance, rules=[RULE]))
    frames = people([("a", t, IN) for t in range(1, 6)] + [("b", t, OUT) for t in range(11, 16)], 0, 1000)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage = AnalyticsStage(cfg)
        alerts = run(stage, st, frames)
        assert (row(st, "a"), row(st, "b")) == ((5, 5, 0), (0, 0, 5))  # per camera: as before
        assert row(st, STORE_OCCUPANCY_ID) == store
        assert stage.store_occupancy() == store[0]
        client = signed_in_client(create_app(cfg, st), role="viewer")
        assert client.get("/v1/occupancy").json()["occupancy"] == store[0]
        snap = counts_snapshot(client.app.state.context)
        assert snap["store"] == {"occupancy": store[0], "in": store[1], "out": store[2]}
        # the alert (max 3) fired at the 4th in; resolved once the store is empty again (a stays at 5)
        assert [a.state for a in alerts] == (["firing", "resolved"] if store[0] == 0 else ["firing"])


# -- 2. a restart of the embedded pipeline mid-day -------------------------------------------------------------------

def _day(cfg, when: str) -> int:
    """A time of today after the latest reset ("today"), or an hour before it ("yesterday")."""
    last = occupancy_reset(cfg).last_reset_ms(int(time.time() * 1000))
    return last + 1000 if when == "today" else last - 3_600_000


@pytest.mark.parametrize("sources, when, a_after, store_after", [
    # live cameras, today's rows: the counts go on (a: 3 in + 1; the store's 1 out at 0 stays absorbed)
    (("rtsp://cam/a", "rtsp://cam/b"), "today", (4, 4, 0), (3, 4, 2)),
    # yesterday's rows: the new day starts at 0
    (("rtsp://cam/a", "rtsp://cam/b"), "yesterday", (1, 1, 0), (1, 1, 0)),
], ids=["today", "yesterday"])
def test_an_embedded_restart_goes_on_from_the_days_counts(tmp_path, sources, when, a_after, store_after) -> None:
    cfg = parse_config(site(sources))
    t0 = _day(cfg, when)
    # run 1: staff leave by b while nobody is in (absorbed), then 3 come in by a, one of them leaves by b
    before = people([("b", 9, OUT), ("a", 1, IN), ("a", 2, IN), ("a", 3, IN), ("b", 1, OUT)], 100, t0)
    # run 2 (the restart): one more comes in by a; ingest and detect-track start the camera's frames afresh
    after = people([("a", 4, IN)], 0, max(_day(cfg, "today"), max(f.ts_ms for f in before) + 5000))
    with SqlStorage(str(tmp_path / "h.db")) as st:
        first = EmbeddedPipeline(cfg, storage=st)
        first._resume_counts()
        run(first.analytics, st, before)
        assert (row(st, "a"), row(st, "b"), row(st, STORE_OCCUPANCY_ID)) == ((3, 3, 0), (0, 0, 2), (2, 3, 2))

        second = EmbeddedPipeline(cfg, storage=st)
        second._resume_counts()
        run(second.analytics, st, after)
        assert row(st, "a") == a_after and row(st, STORE_OCCUPANCY_ID) == store_after
        assert second.analytics.store_occupancy() == store_after[0]
        assert second.analytics.line_counts("a")["door"] == {"in": a_after[1], "out": a_after[2]}
        assert not second.result.errors
        client = signed_in_client(create_app(cfg, st), role="viewer")
        assert client.get("/v1/occupancy").json()["occupancy"] == store_after[0]


def test_a_file_is_read_again_not_added_again(tmp_path) -> None:
    """Files: the restart reads each from its start (the same frames): its counts are re-derived, not taken."""
    cfg = parse_config(site())
    frames = people([("a", 1, IN), ("a", 2, IN), ("b", 1, OUT)], 0, 1000)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        for _ in range(2):
            pipe = EmbeddedPipeline(cfg, storage=st)
            pipe._resume_counts()
            run(pipe.analytics, st, frames)
            assert (row(st, "a"), row(st, STORE_OCCUPANCY_ID)) == ((2, 2, 0), (1, 2, 1))


def test_the_analytics_service_state_is_not_seeded_again() -> None:
    """The analytics service restores its state from its table; the history's rows are for the embedded start
    only: a stage with frames of a camera takes nothing for it."""
    cfg = parse_config(site(("rtsp://cam/a", "rtsp://cam/b")))
    stage = AnalyticsStage(cfg)
    t0 = _day(cfg, "today")
    for tf in people([("a", 1, IN)], 0, t0):
        stage.handle(topics.TRACKS, tf)
    stored = m.OccupancyUpdate(camera_id="a", ts_ms=t0, occupancy=7, total_in=7, total_out=0)
    assert stage.resume_counts({"a": stored}, {"a": {"door": {"in": 7, "out": 0}}}, int(time.time() * 1000)) == []
    assert stage.occupancy["a"].value == 1


# -- 3. a line entirely outside the frame ----------------------------------------------------------------------------

LINE_OUTSIDE_FRAME = "line_outside_frame"  # storelens_errors_total reason (documented)
OUTSIDE = {"id": "far", "a": [700, 100], "b": [900, 100]}  # right of a 640 px wide frame


def test_a_line_outside_the_frame_is_warned_of_and_counted(caplog) -> None:
    raw = site()
    raw["cameras"][0]["lines"] = [DOOR, OUTSIDE]
    stage = AnalyticsStage(parse_config(raw))
    registry = CollectorRegistry()
    core = RunnerCore(stage, metrics=ServiceMetrics(registry))
    bus = InProcessBus()
    runner = Runner(core, InProcessTransport(bus, list(stage.inputs), outputs=stage.outputs))
    frames = [*walk("a", 1, IN, 0, 1000), *walk("b", 2, IN, 0, 1100)]
    big = tframe("a", 10, 9000)
    big.width, big.height = 1280, 720  # a frame size in which the line is inside
    small = tframe("a", 11, 9400)
    small.width, small.height = 320, 240
    with caplog.at_level(logging.WARNING, logger="storelens.stages.analytics"):
        for tf in [*frames, big, small, tframe("a", 12, 9800)]:
            bus.publish(topics.TRACKS, topics.camera_key(tf.camera_id), m.encode(tf))
            assert runner.handle(runner.transport.poll(1.0))
    warned = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    # once at 640x480, not at 1280x720, once at 320x240, once more back at 640x480; never for b or the door
    warned = [re.search(r"camera (\w+): line '(\w+)'.* its (\d+x\d+) frame", r.getMessage()).groups()
              for r in caplog.records if "outside" in r.getMessage()]
    # once at 640x480, not at 1280x720, at 320x240 for both lines (the door at y 300 too), at 640x480 again
    assert warned == [("a", "far", "640x480"), ("a", "door", "320x240"), ("a", "far", "320x240"),
                      ("a", "far", "640x480")]
    assert core.errors == {LINE_OUTSIDE_FRAME: 4}
    assert registry.get_sample_value("storelens_errors_total", {"reason": LINE_OUTSIDE_FRAME}) == 4
    assert stage.line_counts("a")["door"] == {"in": 1, "out": 0}  # the other line counts as ever


def test_put_of_a_line_outside_the_reference_frame_is_a_422(tmp_path) -> None:
    cfg = parse_config(site())
    with SqlStorage(str(tmp_path / "h.db")) as st:
        client = signed_in_client(create_app(cfg, st))
        # no reference frame stored yet: the frame size is not known, the line is taken
        assert client.put("/v1/site/cameras/a/lines/far", json=OUTSIDE).status_code == 200
        st.write_records([m.CameraSnapshot(camera_id="a", ts_ms=1000, seq=0, width=640, height=480, blurred=1,
                                           jpeg=b"\xff\xd8")])
        r = client.put("/v1/site/cameras/a/lines/far2", json={**OUTSIDE, "id": "far2"})
        assert r.status_code == 422 and "line.a, line.b" in r.json()["detail"], r.text
        assert "outside camera 'a'" in r.json()["detail"] and "640x480" in r.json()["detail"]
        # partly inside (a line may reach past the frame's edge), or on the other camera (no reference frame)
        assert client.put("/v1/site/cameras/a/lines/far2",
                          json={**OUTSIDE, "id": "far2", "a": [500, 100]}).status_code == 200
        assert client.put("/v1/site/cameras/b/lines/far", json=OUTSIDE).status_code == 200
        assert [ln["id"] for ln in client.get("/v1/site").json()["cameras"][0]["lines"]] == ["door", "far", "far2"]
