"""What the analytics stage has open is never lost: at a stop of the embedded pipeline, at a site edit of a
camera's stream, and when one frame closes heatmap minutes of two hours.

1. An embedded run stopped mid-stream from another thread (as a live camera's run is stopped by Ctrl-C or
   SIGTERM): every zone visit has its exit, the minute of the last frame is in the heatmap and in its hour's
   row, the people still in view have their journeys (``AnalyticsStage.end_streams``).
2. A site edit of a live camera's stream settings (``jpeg_quality``) while someone waits in a queue: detect-track
   keeps its tracker, so the person's visit and journey go on through the edit: one enter, one exit when they
   leave, one journey from their first frame; the hour's heatmap row keeps the minutes before the edit.
3. A stream that stalls across an hour's end: the closed hour's row is the sum of its minute rows.

Every record goes through the real history store (SQLite), whose upserts decide what is kept.
"""
from __future__ import annotations

import json
import pathlib
import threading

import numpy as np
import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage.heatmaps import sum_cells, unpack_cells
from test_zones_e2e import stored  # sorted rows of a query on the SQLite history

HOUR_MS, MINUTE_MS = 3_600_000, 60_000
EECP = "EnterExitCrossingPaths1front"
VIDEO = asset("video", "caviar", EECP, f"{EECP}.mp4")  # 384x288, 15.3 s, people in view from the first second
T10 = 1_767_261_600_000  # 2026-01-01 10:00 UTC


def heatmap_hours(db: pathlib.Path) -> list[tuple[int, list, list]]:
    """Per stored hour row: (hour start, its cells, the cells of its minute rows summed)."""
    rows = stored(db, "SELECT span_ms, window_start_ms, cells FROM heatmap_windows WHERE camera_id = 'cam'")
    out = []
    for span, start, cells in rows:
        if span != HOUR_MS:
            continue
        minutes = [unpack_cells(c) for s, st, c in rows if s == MINUTE_MS and start <= st < start + HOUR_MS]
        out.append((start, sum_cells(unpack_cells(cells)), sum_cells(np.vstack(minutes))))
    return out


def visits(db: pathlib.Path) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """(zone, track) -> its enter and exit events, in time order."""
    out: dict = {}
    for ts, zone, track, kind in stored(db, "SELECT ts_ms, zone_id, track_id, kind FROM zone_events "
                                            "WHERE kind != 'loiter'"):
        out.setdefault((zone, track), []).append((kind, ts))
    return out


# -- 1. a stop mid-stream ------------------------------------------------------------------------------------


@pytest.mark.slow  # the real detector and tracker over a clip
def test_a_stop_mid_stream_ends_what_analytics_has_open(tmp_path: pathlib.Path) -> None:
    if not VIDEO.is_file():
        pytest.fail(f"missing test video {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    db = tmp_path / "h.db"
    whole = [[0, 0], [384, 0], [384, 288], [0, 288]]
    config = parse_config({
        "store": {"id": "s"}, "faces": {"enabled": False}, "heatmap": {"cell_px": 16},
        "zones": {"enter_after_ms": 200, "exit_after_ms": 400},
        # the first minute ends 4 s into the clip; the stop comes in the second one
        "cameras": [{"id": "cam", "source": str(VIDEO), "target_fps": 5, "start_ts_ms": T10 + 56_000,
                     "zones": [{"id": "shop", "polygon": whole},
                               {"id": "till", "kind": "queue", "polygon": whole, "service_edge": [0, 1]}]}]})
    storage = SqlStorage(str(db))
    seen: list[m.TrackedFrame] = []
    stop_now = threading.Event()

    def on_tracked(tf: m.TrackedFrame) -> None:  # on the analytics thread
        seen.append(tf)
        if len(seen) >= 45 and sum(not t.stationary for t in tf.tracks) >= 2:  # 9 s in, two people in the shop
            stop_now.set()

    pipe = EmbeddedPipeline(config, storage=storage, on_tracked=on_tracked)

    def stopper() -> None:  # another thread, as a signal handler or the demo's server would
        if stop_now.wait(300):
            pipe.stop()

    threading.Thread(target=stopper, daemon=True).start()
    result = pipe.run()
    storage.close()
    last = seen[-1]
    assert stop_now.is_set() and result.frames == len(seen) < 70, (result.frames, len(seen))  # stopped mid-stream

    # every visit of both zones has its exit, the last ones at the last frame
    v = visits(db)
    assert v and {z for z, _ in v} == {"shop", "till"}
    for (zone, track), events in v.items():
        kinds = [k for k, _ in events]
        assert kinds == ["enter", "exit"] * (len(kinds) // 2) and kinds, (zone, track, events)
    at_stop = [key for key, events in v.items() if events[-1] == ("exit", last.ts_ms)]
    assert at_stop, f"no visit ended at the stop's last frame: {v}"
    # so the queue is empty after the stop (/v1/queues?at_ms= counts enters minus exits)
    assert sum(1 if k == "enter" else -1 for events in v.values() for k, _ in events) == 0
    # the heatmap has the minute of the stop, and each hour row is the sum of its minute rows
    minutes = [st for span, st in stored(db, "SELECT span_ms, window_start_ms FROM heatmap_windows")
               if span == MINUTE_MS]
    assert minutes == [T10, T10 + MINUTE_MS], minutes
    hours = heatmap_hours(db)
    assert [h for h, _, _ in hours] == [T10] and hours[0][1] == hours[0][2]
    # the people in view at the stop have their journeys (the ones seen long enough to make one)
    n_frames = dict(stored(db, "SELECT track_id, COUNT(*) FROM track_points GROUP BY track_id"))
    in_view = {t.track_id for t in last.tracks
               if not t.stationary and n_frames.get(t.track_id, 0) >= config.journeys.min_track_frames}
    summaries = {t: ts for t, ts in stored(db, "SELECT track_id, last_ts_ms FROM track_summaries")}
    assert in_view and all(summaries.get(t) == last.ts_ms for t in in_view), (in_view, summaries)
    # the stored frames end with the end-of-stream marker (a replay of them ends the visits there too)
    assert stored(db, "SELECT seq, ts_ms FROM frames WHERE end_of_stream = 1") == [(last.seq + 1, last.ts_ms)]


# -- 2. a site edit of the stream ----------------------------------------------------------------------------

QUEUE = [[0, 0], [200, 0], [200, 200], [0, 200]]
IN_QUEUE = m.BoxXYXY(x1=40, y1=20, x2=60, y2=80)
AWAY = m.BoxXYXY(x1=400, y1=300, x2=420, y2=360)


def test_a_stream_edit_keeps_the_open_visit_journey_and_hour(tmp_path: pathlib.Path) -> None:
    """Someone waits in the queue from 10:00; at 10:05:30.2 an admin changes the live camera's ``jpeg_quality``
    (ingest restarts its stream; detect-track keeps the tracker, so the person keeps track id 1); they leave the
    queue at 10:07 and the camera goes on until 10:09."""
    config = parse_config({"store": {"id": "s"}, "cameras": [
        {"id": "cam", "source": "rtsp://cam/stream", "zones": [{"id": "q", "kind": "queue", "polygon": QUEUE,
                                                                "service_edge": [1, 2]}]}]})
    stage = AnalyticsStage(config)
    storage = SqlStorage(str(tmp_path / "h.db"))

    def frame(seq: int, ts: int) -> None:
        box = IN_QUEUE if ts < T10 + 7 * MINUTE_MS else AWAY
        out = stage.handle(topics.TRACKS, m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=ts, width=640, height=480,
                                                         tracks=[m.Track(track_id=1, bbox_xyxy=box)]))
        storage.write_records(out.records)

    edit_at = T10 + 5 * MINUTE_MS + 30_200  # mid-minute
    times = list(range(T10, T10 + 9 * MINUTE_MS, 200))  # 5 fps
    for seq, ts in enumerate(times):
        if ts == edit_at:
            cam = json.loads(config.cameras[0].model_dump_json())
            cam["jpeg_quality"] = 70
            out = stage.handle(topics.SITE_CONFIG, m.SiteUpdate(version=1, store_id="s",
                                                                cameras_json=json.dumps([cam])))
            assert out.info["applied"]
            storage.write_records(out.records)
        frame(seq, ts)
    storage.write_records(stage.handle(topics.TRACKS, m.TrackedFrame(  # the stream ends at 10:09
        camera_id="cam", seq=len(times), ts_ms=times[-1], end_of_stream=True)).records)
    storage.close()
    db = tmp_path / "h.db"

    # one visit from 10:00 that ends when the person leaves (no second enter at the edit, no exit missing)
    assert visits(db) == {("q", 1): [("enter", T10), ("exit", T10 + 7 * MINUTE_MS)]}
    # one journey from the first frame (not a second one from the edit, written over the first)
    assert stored(db, "SELECT track_id, first_ts_ms, n_frames FROM track_summaries") == [(1, T10, len(times))]
    # the 10:00 hour's row is the sum of its nine minute rows, 9 minutes of one person
    [(hour, cells, from_minutes)] = heatmap_hours(db)
    assert hour == T10 and cells == from_minutes
    assert sum(c[2] for c in cells) == 9 * MINUTE_MS  # the last frame counts for the interval before it


# -- 3. a stall across an hour's end ---------------------------------------------------------------------------


def test_minutes_of_two_hours_closed_at_once_leave_each_hour_row_whole(tmp_path: pathlib.Path) -> None:
    """One person from 10:58 to 10:59:59.8; the stream stalls and resumes at 11:01:30: that frame closes the
    minutes 10:59 (an hour's last) and 11:00 at once."""
    stage = AnalyticsStage(parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "x.mp4"}]}))
    storage = SqlStorage(str(tmp_path / "h.db"))
    h11 = T10 + HOUR_MS
    times = [*range(h11 - 2 * MINUTE_MS, h11, 200), *range(h11 + 90_000, h11 + 120_000, 200)]
    for seq, ts in enumerate(times):
        out = stage.handle(topics.TRACKS, m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=ts, width=640, height=480,
                                                         tracks=[m.Track(track_id=1, bbox_xyxy=IN_QUEUE)]))
        storage.write_records(out.records)
    storage.write_records(stage.handle(topics.TRACKS, m.TrackedFrame(
        camera_id="cam", seq=len(times), ts_ms=times[-1], end_of_stream=True)).records)
    storage.close()
    hours = heatmap_hours(tmp_path / "h.db")
    assert [h for h, _, _ in hours] == [T10, h11]
    for hour, cells, from_minutes in hours:
        assert cells == from_minutes, hour
    assert sum(c[2] for c in hours[0][1]) == 2 * MINUTE_MS  # 10:58 and 10:59 whole
