"""Fixes of the last review of this stop's own diff (each fails on the code before):

* the store's occupancy row (``@store``) counts an entrance camera by the state the stage holds: the analytics
  service loads every entrance camera's persisted state before a frame (``AnalyticsApp._sync_entrance_cameras``);
  a camera without state counts 0 and no longer holds the row back (tests/test_occupancy_reset_3.py);
* a publish that fails (the broker did not take an output in time) marks the runner failed, so no snapshot of a
  frame only half published is written (the restart would skip that frame as already seen);
* two long frame intervals in a row are a new rate whatever their length (25 -> 2 fps is learnt at once again),
  while one long interval under a second (frames in bursts) is not a break.
"""
from __future__ import annotations

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.domain.framerate import FrameRate
from storelens.runtime.bus import InProcessBus
from storelens.runtime.kafka import UndeliveredError
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.transports import InProcessTransport
from storelens.stages.analytics import AnalyticsStage
from test_alerts import IN, two_cameras, walk


def _store_rows(outs) -> list[m.OccupancyUpdate]:
    return [r for r in outs.records if isinstance(r, m.OccupancyUpdate) and r.camera_id == STORE_OCCUPANCY_ID]


def test_the_store_row_counts_the_entrance_cameras_whose_state_is_here() -> None:
    stage = AnalyticsStage(parse_config(two_cameras([], ["c/door", "d/door"])))
    # d has no state (never sent a frame): it counts 0 and does not hold the row back
    rows = [r for tf in walk("c", 1, IN, 0, 1000) for r in _store_rows(stage.handle(topics.TRACKS, tf))]
    assert stage.counters["c"].counts()["door"]["in"] == 1 and [(r.occupancy, r.total_in) for r in rows] == [(1, 1)]
    stage.load_camera_state("d", {**stage.camera_state("d"), "last_seq": 9, "occupancy": [5, 5, 0],
                                  "counter": {"counts": {"door": {"in": 3, "out": 0}}}})  # d's persisted state
    rows = [r for tf in walk("c", 2, IN, 4, 3000) for r in _store_rows(stage.handle(topics.TRACKS, tf))]
    assert [(r.occupancy, r.total_in) for r in rows] == [(5, 5)]  # c's door 2 + d's 3


class _BrokerAway(InProcessTransport):
    """The in-process transport, whose broker does not take the stage's outputs (as KafkaBus.publish raises
    after its bound)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.acked = []

    def publish(self, topic, key, value, headers=()):
        if topic == topics.OCCUPANCY:
            raise UndeliveredError("occupancy: not delivered within 240 s")
        return super().publish(topic, key, value, headers)

    def ack(self, msg) -> None:
        self.acked.append(msg.offset)


def test_a_failed_publish_marks_the_runner_failed_and_acknowledges_nothing() -> None:
    stage = AnalyticsStage(parse_config(two_cameras([])))
    bus = InProcessBus()
    transport = _BrokerAway(bus, list(stage.inputs), outputs=stage.outputs)
    runner = Runner(RunnerCore(stage, []), transport)
    frames = walk("c", 1, IN, 0, 1000)
    for tf in frames:
        bus.publish(topics.TRACKS, topics.camera_key(tf.camera_id), m.encode(tf))
    with pytest.raises(UndeliveredError):
        for _ in frames:  # the crossing frame publishes an occupancy update
            runner.handle(runner.transport.poll(1.0))
    assert isinstance(runner.failure, UndeliveredError)  # snapshot hooks see it: no snapshot of this state
    assert len(transport.acked) < len(frames)  # the frame not all published is not acknowledged


def _steady(fps: float, n: int, start: int = 0) -> list[int]:
    return [start + round(k * 1000 / fps) for k in range(n)]


@pytest.mark.parametrize("stamps, told_last", [
    # 25 fps, then 2 fps (500 ms < 1 s): the second long interval is the new rate, learnt from it
    (_steady(25, 20) + _steady(2, 3, 760 + 500), 2.0),
    # bursts of two (3 ms then 77 ms) stay 25 fps
    ([k // 2 * 80 + k % 2 * 3 for k in range(40)], 25.0),
    # a 30 s reconnect gap is no rate
    (_steady(5, 20) + _steady(5, 3, 3800 + 30_000), 5.0),
])
def test_frame_rate_learns_a_new_rate_at_once(stamps, told_last) -> None:
    r = FrameRate()
    for t in stamps:
        r.update(t)
    assert r.reported == pytest.approx(told_last, rel=0.1)


@pytest.mark.parametrize("timezone, stored_s, aligned_to", [
    ("Europe/Berlin", 7200, "epoch"),  # +01:00 in winter is no multiple of 2 h: whatever the range holds
    ("Europe/Berlin", 3600, "store_local_day"),
    ("Asia/Kolkata", 3600, "epoch"),
    ("Asia/Kolkata", 60, "store_local_day"),
])
def test_zone_stats_alignment_does_not_depend_on_the_range(timezone, stored_s, aligned_to) -> None:
    """Zone statistics stored in buckets of ``stored_s``: local days only where every UTC offset of the zone
    is a multiple of them, decided by the zone, not by which days hold data (July only gave local days in
    Berlin with 2 h buckets, July and November the epoch's)."""
    from storelens.api.routes.counts import bucket_grid

    cfg = parse_config({"store": {"id": "s", "timezone": timezone}, "cameras": [{"id": "c", "source": "x.mp4"}]})
    july, november = (1_783_987_200_000, 1_784_073_600_000), (1_794_528_000_000, 1_794_614_400_000)
    start, end = 1_780_000_000_000, 1_800_000_000_000
    got = {bucket_grid(cfg, start, end, 86_400, data=d, stored_s=stored_s).aligned_to
           for d in (july, (july[0], november[1]), november)}
    assert got == {aligned_to}
