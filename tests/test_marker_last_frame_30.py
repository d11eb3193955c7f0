"""The end-of-stream marker of a camera re-pointed while ingest was down is dated at the old stream's last frame.

Ingest, restarted after the camera's ``source`` changed, publishes the old stream's end marker first, dated at the
new stream's time (a file's ``start_ts_ms``), which may be before the old stream's last frame. The analytics stage
(in the analytics service: its state restored from the table after a restart, on a site without store-level alert
rules) ended the camera's zone visits and buckets at that earlier time: an empty ``zone_stats`` row of a bucket
the camera never showed, the ``zone_occupancy`` row of the end left behind the last frame's (the person stayed
"inside"), the marker's ``frames`` row dated before the frames it ends. It now keeps each camera's last frame time
in its saved state (also without store-level rules) and dates the marker at that time (one dated later, a live
camera's at the wall clock, held the last frame's occupancy past it); a re-pointed file's own marker stays at its
own last frame (its frames go back in time: the highest time the camera ever reached is not the end). Real
protobuf messages, real SQLite history.
"""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage.schema import frames, zone_occupancy, zone_stats

T0 = 1_767_225_600_000  # a bucket start (60 s buckets)
OLD_FIRST, OLD_LAST = T0 + 30_000, T0 + 49_500  # the old file's frames, a person in the zone in each
BOX = m.BoxXYXY(x1=40, y1=20, x2=60, y2=80)
SEQ_NEW = 1_767_300_000_000  # ingest numbers a stream started after a re-point from the wall clock's ms


def site(source: str, start_ts_ms: int):
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": source, "start_ts_ms": start_ts_ms,
                                                            "zones": [{"id": "z", "polygon": [[0, 0], [100, 0],
                                                                                              [100, 100], [0, 100]],
                                                                       "enter_after_ms": 0}]}]})


def frame(seq: int, ts_ms: int, person: bool) -> m.TrackedFrame:
    tracks = [m.Track(track_id=1, bbox_xyxy=BOX)] if person else []
    return m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts_ms, width=640, height=480, tracks=tracks)


def run(stage: AnalyticsStage, st: SqlStorage, msgs: list[m.TrackedFrame]) -> None:
    for tf in msgs:  # as the service: decoded from the bytes on the tracks topic, records to the history
        st.write_records(stage.handle(topics.TRACKS, m.decode(m.TrackedFrame, m.encode(tf))).records)


def restarted(stage: AnalyticsStage, config) -> AnalyticsStage:
    """A new analytics process with the camera's state the service's table kept (JSON), the camera re-pointed."""
    fresh = AnalyticsStage(config)
    fresh.load_camera_state("c", json.loads(json.dumps(stage.camera_state("c"))))
    return fresh


@pytest.mark.parametrize("new_start", [
    pytest.param(T0 - 100_000, id="file-starting-in-an-earlier-bucket"),
    pytest.param(T0 + 5_000, id="file-starting-earlier-in-the-same-bucket"),
    pytest.param(T0 + 120_000, id="later-start"),  # a later file, or a live source (the wall clock)
])
def test_old_stream_marker_dated_at_its_last_frame(tmp_path, new_start: int) -> None:
    with SqlStorage(str(tmp_path / "h.db")) as st:
        old = AnalyticsStage(site("old.mp4", OLD_FIRST))
        run(old, st, [frame(i, OLD_FIRST + i * 500, True) for i in range(40)])
        assert old.camera_state("c")["store"] == {}  # no store-level rules: StoreAlerts keeps nothing
        new = restarted(old, site("new.mp4", new_start))
        # ingest's order after the restart: the old stream's marker (dated at the new start), then the new frames
        # (not of a later bucket here: its first frame would hold the ended stream's last occupancy into a new
        # bucket of the old stream's last time, a separate gap)
        news = [frame(SEQ_NEW + 1, new_start, False), frame(SEQ_NEW + 2, new_start + 500, False)]
        run(new, st, [m.TrackedFrame(camera_id="c", seq=SEQ_NEW, ts_ms=new_start, end_of_stream=True),
                      *(news if new_start < OLD_LAST else [])])

        stats = st._rows(sa.select(zone_stats.c.bucket_start_ms, zone_stats.c.visits, zone_stats.c.visits_ended,
                                   zone_stats.c.covered_ms))
        # no empty row of a bucket the camera never showed; the last frame's occupancy not held past it
        assert [tuple(r) for r in stats] == [(T0, 1, 1, 19_500)]
        occ = st._rows(sa.select(zone_occupancy.c.ts_ms, zone_occupancy.c.occupancy))
        assert [tuple(r) for r in occ] == [(OLD_LAST, 0)]  # nobody left inside at the end
        ended = st._rows(sa.select(frames.c.ts_ms).where(frames.c.end_of_stream == sa.true()))
        assert [r[0] for r in ended] == [OLD_LAST]


def test_repointed_files_own_marker_stays_at_its_last_frame(tmp_path) -> None:
    """The new (earlier) file's frames and its own marker: the end is its last frame, not the old stream's."""
    new_start = T0 - 100_000
    with SqlStorage(str(tmp_path / "h.db")) as st:
        old = AnalyticsStage(site("old.mp4", OLD_FIRST))
        run(old, st, [frame(i, OLD_FIRST + i * 500, True) for i in range(40)])
        new = restarted(old, site("new.mp4", new_start))
        run(new, st, [m.TrackedFrame(camera_id="c", seq=SEQ_NEW, ts_ms=new_start, end_of_stream=True)]
            + [frame(SEQ_NEW + 1 + i, new_start + i * 500, True) for i in range(10)])
        new = restarted(new, site("new.mp4", new_start))  # and restarted once more before the file's end
        run(new, st, [m.TrackedFrame(camera_id="c", seq=SEQ_NEW + 11, ts_ms=new_start + 4_500, end_of_stream=True)])

        ended = st._rows(sa.select(frames.c.ts_ms).where(frames.c.end_of_stream == sa.true()).order_by(frames.c.seq))
        assert [r[0] for r in ended] == [OLD_LAST, new_start + 4_500]
        stats = st._rows(sa.select(zone_stats.c.bucket_start_ms, zone_stats.c.visits, zone_stats.c.visits_ended,
                                   zone_stats.c.covered_ms).order_by(zone_stats.c.bucket_start_ms))
        assert [tuple(r) for r in stats] == [(T0 - 120_000, 1, 1, 4_500), (T0, 1, 1, 19_500)]


def test_embedded_stop_ends_a_camera_at_its_last_frame_not_the_highest() -> None:
    """:meth:`AnalyticsStage.end_streams` (the embedded run stopping): a camera re-pointed to an earlier file ends at
    that file's last frame (it used the highest frame time the camera ever reached)."""
    stage = AnalyticsStage(site("old.mp4", OLD_FIRST))
    for tf in [frame(i, OLD_FIRST + i * 500, True) for i in range(40)] + [
            m.TrackedFrame(camera_id="c", seq=40, ts_ms=OLD_LAST, end_of_stream=True)] + [
            frame(41 + i, T0 - 100_000 + i * 500, True) for i in range(10)]:
        stage.handle(topics.TRACKS, tf)
    out = stage.end_streams()
    assert [r.ts_ms for r in out.records if isinstance(r, m.TrackedFrame)] == [T0 - 100_000 + 4_500]
    assert [(r.bucket_start_ms, r.covered_ms) for r in out.records if isinstance(r, m.ZoneStats)] == [
        (T0 - 120_000, 4_500)]
