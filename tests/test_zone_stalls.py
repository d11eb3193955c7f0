"""Zone answers when the picture stands still: a queue gone quiet, a stalled stream.

* ``/v1/queues`` without live state (the embedded mode): "now" is the camera's newest stored frame,
  not the newest ``zone_occupancy`` row (written only when the occupancy changes): three people served
  in minutes 0-3 and an empty queue until minute 30 are not "3 served in the last 5 minutes".
* Zone buckets: a frame's occupancy holds until the next frame, at most the camera's longest
  ``lost_after_ms``; the rest of a stall is not covered time (no mean, no max, no bucket).

Real components: the analytics stage (:func:`storelens.stages.analytics.derive`), the SQLite history
and the API app; the frames are synthetic track boxes at 5 fps.
"""
from __future__ import annotations

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.zones import ZoneBuckets, ZoneEvent
from storelens.stages.analytics import derive
from storelens.storage import SqlStorage

DT = 200  # 5 fps
MIN = 60_000
# The queue: x, y in 0..100; leaving through the right side (x = 100, the service edge) is being served.
SITE = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "c.mp4", "zones": [
    {"id": "q", "kind": "queue", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]], "service_edge": [1, 2]}]}],
    "privacy": {"k_min": 1}}  # the exact waits of a few people (k-anonymity: tests/test_api_security_fixes_2.py)
IN_Q, SERVED = 50, 150  # x of the feet (y 50)


def box(x: float) -> m.BoxXYXY:
    return m.BoxXYXY(x1=x - 10, y1=20, x2=x + 10, y2=50)  # feet at (x, 50)


def frame(seq: int, ts_ms: int, tracks: dict[int, float]) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts_ms, width=640, height=480,
                          tracks=[m.Track(track_id=t, bbox_xyxy=box(x)) for t, x in tracks.items()])


def served_early_then_quiet() -> list[m.TrackedFrame]:
    """30 minutes at 5 fps: person k (1..3) waits in minute k-1 and leaves through the service edge 2 s
    before its end (served, a wait of 58 s); then nobody until the last frame at 29:59.8."""
    out = []
    for i, t in enumerate(range(0, 30 * MIN, DT)):
        tracks = {}
        for k in range(3):
            if k * MIN <= t < (k + 1) * MIN - 2000:
                tracks[k + 1] = IN_Q
            elif (k + 1) * MIN - 2000 <= t < (k + 1) * MIN:
                tracks[k + 1] = SERVED
        out.append(frame(i, t, tracks))
    return out


@pytest.mark.parametrize("frames_stored, at_ms", [
    # the newest frame is "now": the three served are 27 minutes ago, outside the 5-minute window
    (True, 30 * MIN - DT),
    # no stored frames (rows written without them): the newest occupancy row, as before
    (False, 3 * MIN - 1000),  # the queue emptied at 2:58, confirmed exit_after_ms (1 s) later
])
def test_queues_now_is_the_newest_frame_not_the_last_occupancy_change(tmp_path, frames_stored: bool,
                                                                      at_ms: int) -> None:
    cfg = parse_config(SITE)
    frames = served_early_then_quiet()
    records = derive(cfg, frames)
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records((frames if frames_stored else []) + records)
        client = signed_in_client(create_app(cfg, storage))
        [q] = client.get("/v1/queues").json()["queues"]
        assert q["at_ms"] == at_ms and q["length"] == 0
        if frames_stored:
            assert (q["served"], q["wait_s"]["n"], q["predicted_wait_s"]) == (0, 0, None)
            [z] = client.get("/v1/zones").json()["zones"]
            assert (z["occupancy"], z["ts_ms"]) == (0, at_ms)  # the same "now" as the live state's last seen
        # the served are all there, in the window that ends at 3:00
        [q3] = client.get("/v1/queues", params={"at_ms": 3 * MIN}).json()["queues"]
        assert (q3["served"], q3["wait_s"]["median"]) == (3, 58.0)


def stall(back: dict[int, float]) -> list[m.TrackedFrame]:
    """People 1 and 2 in the queue from 0 to 10 s, no frame until 10:00, then ``back`` for 10 s, then
    the end of the stream."""
    before = [(t, {1: IN_Q, 2: IN_Q}) for t in range(0, 10_001, DT)]
    after = [(t, back) for t in range(10 * MIN, 10 * MIN + 10_001, DT)]
    out = [frame(i, t, tracks) for i, (t, tracks) in enumerate(before + after)]
    return out + [m.TrackedFrame(camera_id="c", seq=len(out), ts_ms=out[-1].ts_ms, end_of_stream=True)]


def steady() -> list[m.TrackedFrame]:
    """The same two people, seen every frame until 10:10 (no stall)."""
    out = [frame(i, t, {1: IN_Q, 2: IN_Q}) for i, t in enumerate(range(0, 10 * MIN + 10_001, DT))]
    return out + [m.TrackedFrame(camera_id="c", seq=len(out), ts_ms=out[-1].ts_ms, end_of_stream=True)]


HOLD = 2400  # the default lost_after_ms: the longest a frame's occupancy holds
ENTERED = 0  # entries confirmed at 0.6 s (enter_after_ms 500 at 5 fps), dated 0 and counted from then (like the dwell)


@pytest.mark.parametrize("frames, minutes", [
    # both gone when the stream comes back (lost at their last seen time, 10 s): in minute 0, two people
    # from 0 to 10 s of the 12.4 s covered (10 s of frames + one hold of 2.4 s, then taken back: lost);
    # minutes 1-9 were not seen at all: no bucket; minute 10: nobody
    (stall({}), {0: (2 * (10_000 - ENTERED) / (10_000 + HOLD), 2, 0, 2), 10: (0.0, 0, 0, 0)}),
    # both still there when it comes back: one visit each, held 2.4 s after 10 s, then the minute-10 frames
    (stall({1: IN_Q, 2: IN_Q}),
     {0: (2 * (10_000 + HOLD - ENTERED) / (10_000 + HOLD), 2, 0, 0), 10: (2.0, 2, 0, 2)}),
    # no stall: every minute covered, two people all along (the end of the stream loses them at 10:10)
    (steady(), {0: (2 * (MIN - ENTERED) / MIN, 2, 0, 0), **{k: (2.0, 2, 0, 0) for k in range(1, 10)},
                10: (2.0, 2, 0, 2)}),
])
def test_a_stalled_stream_is_not_occupancy(frames: list[m.TrackedFrame],
                                           minutes: dict[int, tuple[float, int, int, int]]) -> None:
    """Per minute: (mean occupancy, max occupancy, served, lost) of the stage's ZoneStats."""
    stats = [r for r in derive(parse_config(SITE), frames) if isinstance(r, m.ZoneStats)]
    got = {s.bucket_start_ms // MIN: (s.mean_occupancy, s.max_occupancy, s.served, s.lost) for s in stats}
    assert sorted(got) == sorted(minutes)
    for k, (mean, peak, served, lost) in minutes.items():
        assert got[k] == (pytest.approx(mean, abs=1e-6), peak, served, lost), k


def _exit(ts_ms: int, how: str) -> ZoneEvent:
    return ZoneEvent(f"x{ts_ms}", "c", "z", 1, "exit", ts_ms, 0, ts_ms, how)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_hold_ms, feed, buckets", [
    # no limit (the default): the last frame holds until the next one, the whole stall
    (None, [(0, [1, 2], []), (10 * MIN, [], [])], {**{k: (2.0, 2) for k in range(10)}, 10: (0.0, 0)}),
    # limited: 2.4 s held, minutes 1-9 not covered: no bucket
    (HOLD, [(0, [1, 2], []), (10 * MIN, [], [])], {0: (2.0, 2), 10: (0.0, 0)}),
    # a track found lost after the stall is taken out only of what was held (from 3 s to 3 s + 2.4 s)
    (HOLD, [(0, [1], []), (1000, [1], []), (3000, [1], []), (10 * MIN, [], [_exit(3000, "lost")])],
     {0: (3000 / (3000 + HOLD), 1), 10: (0.0, 0)}),
    # a bucket with only an event dated in a stall: no covered time, mean and max 0
    (HOLD, [(0, [1], []), (10 * MIN, [], [_exit(5 * MIN, "other")])], {0: (1.0, 1), 5: (0.0, 0), 10: (0.0, 0)}),
])
def test_zone_buckets_hold_a_frame_at_most_max_hold_ms(max_hold_ms: int | None, feed: list,
                                                       buckets: dict[int, tuple[float, int]]) -> None:
    b = ZoneBuckets(60, max_hold_ms=max_hold_ms)
    for ts_ms, inside, events in feed:
        b.add(ts_ms, {"z": inside}, events)
    got = {s.start_ms // MIN: (s.mean_occupancy, s.max_occupancy) for s in b.stats()}
    assert got == {k: (pytest.approx(mean), peak) for k, (mean, peak) in buckets.items()}
