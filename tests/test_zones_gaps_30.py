"""Zones, queues and the store's occupancy: three known gaps, checked with real components.

1. ``/v1/queues`` of a live camera whose newest frame is old: "now" is that frame, so its queue length (and the
   wait predicted from it) was shown as today's. A live camera's frame older than 60 s at the wall clock makes
   the queue ``stale`` (length and predicted wait null) with its ``age_s``; a recorded file answers as it did.
2. ``covered_s`` of a window the history holds no frame of, nor any after it (its writer behind the asked
   ``at_ms``, the camera down): it was the whole window (the rule of frames purged or never stored), a window
   presented as covered while nothing of it is written. Now it is what the stored frames show of it (0 here);
   frames after the window (purged before it) or none at all keep the whole window.
3. Not a gap: a frame in flight across the daily reset (processed after a frame past the reset, or after the
   reset tick) counts in the period of its own ``ts_ms``; every order of the same frames and ticks stores the same
   rows and ``/v1/occupancy`` shows the same numbers.

Real components: the analytics stage (:func:`storelens.stages.analytics.derive`, :class:`AnalyticsStage`), the
SQLite history and the API app.
"""
from __future__ import annotations

import itertools
import time

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.stages.analytics import AnalyticsStage, derive
from storelens.storage import SqlStorage
from test_alerts import IN, tframe, walk
from test_occupancy_reset import ms
from test_occupancy_reset_3 import _site
from test_zone_stalls import IN_Q, SERVED, SITE, frame

DT = 200  # 5 fps
MIN = 60_000
HOUR = 60 * MIN


def queue_frames(t0: int, minutes: int) -> list[m.TrackedFrame]:
    """``minutes`` at 5 fps from ``t0``: person k (1..minutes-1) waits in minute k-1 and is served 2 s before its
    end; person 99 stands in the queue from the last minute's start to the last frame (the length then: 1)."""
    out = []
    for i, t in enumerate(range(0, minutes * MIN, DT)):
        tracks = {}
        k = t // MIN
        if k < minutes - 1:
            tracks[k + 1] = IN_Q if t < (k + 1) * MIN - 2000 else SERVED
        else:
            tracks[99] = IN_Q
        out.append(frame(i, t0 + t, tracks))
    return out


def site(source: str) -> dict:
    return {**SITE, "cameras": [{**SITE["cameras"][0], "source": source}]}


# -- 1. a live camera's old frame is not the queue now -------------------------------------------------------------

@pytest.mark.parametrize("source, age_ms, stale", [
    ("rtsp://cam/c", 2 * HOUR, True),  # down for two hours: not "1 in the queue now"
    ("rtsp://cam/c", 5_000, False),  # a few seconds behind: live
    ("c.mp4", 2 * HOUR, False),  # a recorded file answers as it did
])
def test_a_stale_live_camera_has_no_queue_length_now(tmp_path, source: str, age_ms: int, stale: bool) -> None:
    cfg = parse_config(site(source))
    last = int(time.time() * 1000) - age_ms
    frames = queue_frames(last - (5 * MIN - DT), 5)
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(frames + derive(cfg, frames))
        client = signed_in_client(create_app(cfg, storage))
        [q] = client.get("/v1/queues").json()["queues"]
        assert q["at_ms"] == last and q["stale"] is stale and q["served"] == 4
        if stale:
            assert q["length"] is None and q["predicted_wait_s"] is None
            assert q["age_s"] == pytest.approx(age_ms / 1000, abs=30)
        else:
            assert q["length"] == 1 and q["predicted_wait_s"] is not None
        if source.startswith("rtsp"):
            assert q["age_s"] == pytest.approx(age_ms / 1000, abs=30)
        else:
            assert q["age_s"] is None
        # a time asked for is that time's: never stale
        [q] = client.get("/v1/queues", params={"at_ms": last}).json()["queues"]
        assert (q["stale"], q["length"], q["age_s"]) == (False, 1, None)


# -- 2. covered_s is the time the history holds ----------------------------------------------------------------------

@pytest.mark.parametrize("stored, at_ms, window_s, covered_s", [
    # frames 0-10 min written, the window 15-20 min: nothing of it written, nor after it
    ("all", 20 * MIN, 300, 0.0),
    # a window over an hour, no stored bucket and no frame in it
    ("all", 3 * HOUR, 7200, 0.0),
    # the window ends 2 min after the last written frame: what is written of it (the frames' own rule, as before)
    ("all", 12 * MIN, 300, 180.0 - 0.2 + 2.4),  # the last frame at 9:59.8 holds 2.4 s
    # the window's frames purged (those after it kept): the whole window, as before
    ("after 8 min", 5 * MIN, 300, 300.0),
    # no frame stored at all (rows written without them): the whole window, as before
    ("none", 20 * MIN, 300, 300.0),
])
def test_covered_s_is_what_the_history_holds(tmp_path, stored: str, at_ms: int, window_s: int,
                                             covered_s: float) -> None:
    cfg = parse_config(SITE)
    frames = queue_frames(0, 10)
    kept = {"all": frames, "none": [], "after 8 min": [f for f in frames if f.ts_ms >= 8 * MIN]}[stored]
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        storage.write_records(kept + derive(cfg, frames))
        client = signed_in_client(create_app(cfg, storage))
        [q] = client.get("/v1/queues", params={"at_ms": at_ms, "window_s": window_s}).json()["queues"]
        assert q["covered_s"] == pytest.approx(covered_s, abs=1e-3)
        if covered_s == 0:
            assert q["served"] == 0 and q["predicted_wait_s"] is None


# -- 3. not a gap: a frame in flight across the reset counts at its own time -------------------------------------------

RESET = ms("2026-05-05T04:00:00+02:00")


def test_a_frame_in_flight_across_the_reset_counts_in_its_own_period(tmp_path) -> None:
    """Live cameras c and d at the entrance: c walks in in the evening; d's walk in ends 0.4 s before the reset
    but reaches the stage only after c's first frame of the new day, or after the reset tick. Every order stores
    the same rows once a later tick ran and the API shows the same: d's in is the old day's (void now)."""
    cfg = parse_config(_site(live_sources=True))
    evening = walk("c", 1, IN, 0, RESET - HOUR)
    steps = {"in flight": walk("d", 2, IN, 0, RESET - 1600), "after": [tframe("c", 10, RESET + 500)],
             "tick": RESET + 300}
    seen = set()
    for i, order in enumerate(itertools.permutations(steps)):
        stage = AnalyticsStage(cfg)
        with SqlStorage(str(tmp_path / f"h{i}.db")) as storage:
            for f in evening:
                storage.write_records(stage.handle(topics.TRACKS, f).records)
            for name in order:
                step = steps[name]
                outs = [stage.tick(step)] if name == "tick" else [stage.handle(topics.TRACKS, f) for f in step]
                for o in outs:
                    storage.write_records(o.records)
            # d's crossing is the old day's: counted there, by its own frame time
            assert (stage.occupancy["d"].total_in, stage.occupancy["d"].since_ms < RESET) == (1, True)
            storage.write_records(stage.tick(RESET + 2000).records)  # the next tick (every second)
            rows = {cam: storage.occupancy(cam) for cam in ("c", "d", STORE_OCCUPANCY_ID)}
            stored = tuple((cam, r.ts_ms, r.occupancy, r.total_in) for cam, r in rows.items())
            api = signed_in_client(create_app(cfg, storage), role="viewer").get("/v1/occupancy").json()
            seen.add((stored, api["occupancy"], tuple((c["camera_id"], c["occupancy"], c["total_in"])
                                                      for c in api["cameras"])))
    [(stored, store_now, cameras)] = seen  # one answer, whatever the order
    assert stored == (("c", RESET + 500, 0, 0), ("d", RESET, 0, 0), (STORE_OCCUPANCY_ID, RESET + 500, 0, 0))
    assert store_now == 0 and cameras == (("c", 0, 0), ("d", 0, 0))
