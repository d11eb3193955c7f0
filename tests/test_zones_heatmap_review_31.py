"""Follow-ups of a read-only review of zones, queues and heatmaps (r6), each failing on the code before:

1. a heatmap's hour row is the sum of its stored minute rows (after an embedded restart, a re-pointed file);
2. a person standing at a zone's corner makes no pass-through visits (real CAVIAR tracks), a fast walker still does;
3. a change of a camera's frame size does not mix two grids in one heatmap;
4. a zone bucket's mean occupancy runs from the first inside to the first outside time, like the dwell;
5. ``/v1/queues?at_ms=`` counts the visits open at ``at_ms`` (no never-closed entry of an ended stream).
"""
from __future__ import annotations

import collections
import logging
import pathlib

import numpy as np
import pytest
import sqlalchemy as sa

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import ZoneConfig, ZonesConfig, parse_config
from storelens.contract import messages as m
from storelens.domain.zones import ZoneBuckets, ZoneTracker
from storelens.stages.analyzers import FrameView
from storelens.stages.heatmap import HeatmapAnalyzer
from storelens.storage import SqlStorage
from storelens.storage import heatmaps as hm
from storelens.storage import zones as zq
from storelens.storage.heatmaps import unpack_cells
from storelens.storage.schema import heatmap_windows

CAVIAR = pathlib.Path(__file__).resolve().parent.parent / "assets"
H = 3_600_000 * 480_000  # an epoch-aligned hour
MIN = 60_000


def caviar_gt(clip: str) -> dict[int, list[tuple[int, list[float]]]]:
    import os

    root = pathlib.Path(os.environ.get("STORELENS_ASSETS", "/work/shared/assets")) / "video" / "caviar"
    path = root / clip / "gt" / "gt.txt"
    if not path.exists():
        pytest.skip(f"CAVIAR ground truth not found: {path}")
    return mot(path.read_text())


def mot(text: str) -> dict[int, list[tuple[int, list[float]]]]:
    frames: dict[int, list[tuple[int, list[float]]]] = collections.defaultdict(list)
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f, i, x, y, w, h = (float(v) for v in line.split(",")[:6])
        frames[int(f)].append((int(i), [x, y, x + w, y + h]))
    return frames


# -- 1. the hour row is the sum of its stored minute rows ---------------------------------------------------------


def heatmap_run(store, analyzer: HeatmapAnalyzer | None, t0: int, t1: int, x: float = 100) -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
    a = analyzer or HeatmapAnalyzer(cfg, cfg.cameras[0])
    box = np.array([[x, 100, x + 20, 200]], float)
    recs: list = []
    for ts in range(t0, t1, 1000):
        recs += a.update(FrameView("c", ts // 1000, ts, 640, 480, [1], box, [], crossings=[], prior=[], detected=1,
                                   image_digest=b""))
    recs += a.end(0, t1, [])
    store.write_records(recs)


def restarted(store) -> None:  # run 1 10:00-10:30 stopped, run 2 10:35-11:00 (a new analyzer: no hour sum)
    heatmap_run(store, None, H, H + 30 * MIN)
    heatmap_run(store, None, H + 35 * MIN, H + 60 * MIN)


def repointed(store) -> None:  # the camera's file replaced by another one of the same start time
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
    a = HeatmapAnalyzer(cfg, cfg.cameras[0])
    heatmap_run(store, a, H, H + 30 * MIN, x=100)
    heatmap_run(store, a, H, H + 30 * MIN, x=300)


@pytest.mark.parametrize("scenario, person_minutes", [(restarted, 55), (repointed, 30)])
def test_the_hour_row_is_the_sum_of_its_stored_minutes(history_store, scenario, person_minutes) -> None:
    scenario(history_store)
    whole = hm.heatmap(history_store, "c", H, H + 3_600_000)  # read from the hour row
    minutes = hm.heatmap(history_store, "c", H, H + 3_600_000 - 1)  # read from the minute rows
    assert minutes.total_ms() == person_minutes * MIN
    assert (whole.cells, whole.minutes) == (minutes.cells, minutes.minutes)
    h = heatmap_windows.c
    rows = history_store._rows(sa.select(h.span_ms, h.cells, h.occupancy_ms, h.n_cells).where(h.camera_id == "c"))
    hour = [r for r in rows if r[0] == 3_600_000]
    assert len(hour) == 1 and hour[0][2] == person_minutes * MIN and hour[0][3] == len(whole.cells)
    assert sum(int(unpack_cells(r[1])[:, 2].sum()) for r in rows if r[0] == MIN) == hour[0][2]


# -- 2. no pass-through visits of a person standing at a corner -----------------------------------------------------


def zone_visits(frames: dict[int, list[tuple[int, list[float]]]], poly, tid: int, scale: float = 1.0) -> list[int]:
    """Dwells of ``tid``'s visits of a ``shelf`` zone ``poly`` over the frames (25 fps), every coordinate scaled."""
    zt = ZoneTracker("cam", [ZoneConfig(id="z", kind="shelf", polygon=[(x * scale, y * scale) for x, y in poly])],
                     ZonesConfig())
    ev = []
    for f in range(min(frames), max(frames) + 1):
        ids = [i for i, _ in frames.get(f, [])]
        boxes = np.array([b for _, b in frames.get(f, [])], float).reshape(-1, 4) * scale
        ev += zt.update(f, f * 40, ids, boxes)
    ev += zt.close()
    return [e.dwell_ms for e in ev if e.kind == "exit" and e.track_id == tid]


def corner(cx: float, cy: float, which: str) -> list[tuple[float, float]]:
    """An 80 x 60 zone whose bottom-right (``br``) or bottom-left (``bl``) corner is at ``(cx, cy)``."""
    if which == "br":
        return [(cx - 80, cy - 60), (cx, cy - 60), (cx, cy), (cx - 80, cy)]
    return [(cx, cy - 60), (cx + 80, cy - 60), (cx + 80, cy), (cx, cy)]


def standing_track() -> dict[int, list[tuple[int, list[float]]]]:
    return mot((pathlib.Path(__file__).parent / "data" / "caviar_ols1front_standing_track.txt").read_text())


def anchors_median(frames, tid: int, f0: int = 0, f1: int = 10**9) -> tuple[float, float]:
    a = np.array([[(b[0] + b[2]) / 2, b[3]] for f, row in frames.items() if f0 <= f < f1 for i, b in row if i == tid])
    return float(np.median(a[:, 0])), float(np.median(a[:, 1]))


TID = 1767225600000002


@pytest.mark.parametrize("which", ["br", "bl"])
@pytest.mark.parametrize("scale", [1.0, 5.0])  # the same video at 384x288 and 1920x1440: the bound is in box heights
def test_a_tracked_person_standing_at_a_corner_makes_no_visits(which, scale) -> None:
    # CAVIAR OneLeaveShop1front, the tracker's track of the person standing for 11 s (anchor sd ~0.5 px): the
    # zone's corner exactly at their median anchor (before: 13 and 7 visits of 5-135 ms)
    frames = standing_track()
    cx, cy = anchors_median(frames, TID)
    assert zone_visits(frames, corner(cx, cy, which), TID, scale) == []


def test_a_ground_truth_person_standing_at_a_corner_makes_no_short_visit() -> None:
    # CAVIAR ground truth, person 3 standing (frames 200-295): a corner just off their median anchor
    frames = caviar_gt("OneLeaveShop1front")
    mx, my = anchors_median(frames, 3, 200, 296)
    assert zone_visits(frames, corner(mx + 0.25, my + 1.0, "bl"), 3) == [1080]  # before: [1080, 50]


@pytest.mark.parametrize("scale", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("xs", [(150, 260, 300), (180, 205, 230), (195, 203, 208, 215)])
def test_a_fast_walker_across_a_thin_zone_is_one_visit(scale, xs) -> None:
    # a 10 px wide zone (at scale 1) and a person 100 px tall: jumped over, seen inside once, or crossing at 25 fps
    thin = [(200, 0), (210, 0), (210, 400), (200, 400)]
    frames = {i + 1: [(1, [x - 10, 150, x + 10, 250])] for i, x in enumerate(xs)}
    assert len(zone_visits(frames, thin, 1, scale)) == 1


@pytest.mark.parametrize("centre, sd", [((101, 101), 3), ((102, 102), 4), ((103, 103), 4)])
def test_anchor_jitter_outside_a_corner_is_no_visit(centre, sd) -> None:
    # anchors only (no box): the bound is the zone's area / perimeter (25 px for this 100 px square)
    zt = ZoneTracker("cam", [ZoneConfig(id="z", kind="shelf", polygon=[(0, 0), (100, 0), (100, 100), (0, 100)])],
                     ZonesConfig())
    rng = np.random.default_rng(0)
    ev = []
    for f in range(250):
        ev += zt.update(f, f * 40, [1], [np.array(centre) + rng.normal(0, sd, 2)])
    assert [e for e in ev + zt.close() if e.kind == "enter"] == []


# -- 3. a frame size change does not mix two grids --------------------------------------------------------------------


def test_a_frame_size_change_keeps_one_grid_per_heatmap(tmp_path: pathlib.Path, caplog) -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://x/stream", "zones": [
        {"id": "z", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}]}]})
    a = HeatmapAnalyzer(cfg, cfg.cameras[0])
    recs: list = []
    with caplog.at_level(logging.WARNING, logger="storelens.stages.heatmap"):
        # one person standing at the centre of the view; the stream switches 1920x1080 -> 960x540 at 10:30
        for ts in range(H, H + 3_600_000, 1000):
            big = ts < H + 1_800_000
            w, h, s = (1920, 1080, 1.0) if big else (960, 540, 0.5)
            box = np.array([[940 * s, 400 * s, 980 * s, 560 * s]], float)
            recs += a.update(FrameView("c", ts // 1000, ts, w, h, [1], box, [], crossings=[], prior=[], detected=1,
                                       image_digest=b""))
        recs += a.end(0, H + 3_600_000, [])
    assert sum("frame size changed from 1920x1080 to 960x540" in r.getMessage() for r in caplog.records) == 1
    for w in recs:  # every window's cells are of its own grid
        assert all(c.gx * 16 < w.width and c.gy * 16 < w.height for c in w.cells)
    with SqlStorage(f"sqlite:///{tmp_path / 'h.db'}") as store:
        store.write_records(recs)
        for end in (H + 3_600_000, H + 3_600_000 - 1):  # from the hour row, from the minute rows
            c = hm.heatmap(store, "c", H, end)
            assert (c.width, c.height, c.minutes) == (960, 540, 30)
            # before: a second cell (60, 35) of the big grid (dropped from the PNG, outside the 960x540 grid)
            assert [cell[:3] for cell in c.cells] == [(30, 17, 30 * MIN)]


# -- 4. a bucket's mean occupancy over the visit's dwell -------------------------------------------------------------


@pytest.mark.parametrize("inside_ms, dt", [(3000, 100), (3000, 40), (12_000, 200)])
def test_a_buckets_mean_occupancy_is_the_dwell_over_the_bucket(inside_ms, dt) -> None:
    zt = ZoneTracker("cam", [ZoneConfig(id="z", polygon=[(0, 0), (100, 0), (100, 100), (0, 100)])], ZonesConfig())
    buckets = ZoneBuckets(60, zt.stopper_after_ms(), max_hold_ms=zt.max_lost_ms)
    ev = []
    for t in range(0, 60_000, dt):  # one person inside exactly [0, inside_ms), then outside: frames all minute
        e = zt.update(t // dt, t, [1], [(50, 50) if t < inside_ms else (150, 50)])
        ev += e
        buckets.add(t, zt.inside(), e)
    e = zt.close()
    buckets.add(60_000, zt.inside(), e)
    [exit_] = [x for x in ev + e if x.kind == "exit"]
    assert exit_.dwell_ms == inside_ms
    [s] = [b for b in buckets.end() if b.start_ms == 0]
    assert s.mean_occupancy == pytest.approx(inside_ms / 60_000)


# -- 5. /v1/queues?at_ms= counts the visits open at at_ms ----------------------------------------------------------


T0 = 1_767_225_600_000


def zone_event(kind: str, track: int, ts: int, dwell: int | None = None) -> m.ZoneEvent:
    e = m.ZoneEvent(event_id=f"c:q:{track}:{kind}:{ts}", camera_id="c", zone_id="q", zone_kind="queue",
                    track_id=track, kind=m.ZONE_EVENT_ENTER if kind == "enter" else m.ZONE_EVENT_EXIT,
                    ts_ms=T0 + ts, seq=ts // 1000)
    if dwell is not None:
        e.dwell_ms, e.how = dwell, "other"
    return e


def frames(a_s: int, b_s: int, eos: bool = False) -> list[m.TrackedFrame]:
    out = [m.TrackedFrame(camera_id="c", seq=t, ts_ms=T0 + t * 1000, width=640, height=480) for t in range(a_s, b_s)]
    if eos:
        out[-1].end_of_stream = True
    return out


# (name, events, frames (seconds), at (seconds), length); the queue's entries and exits, the camera's stream
QUEUE_CASES = [
    ("open_visit", [zone_event("enter", 1, 100_000)], frames(0, 300), 200, 1),
    ("closed_visit", [zone_event("enter", 1, 100_000), zone_event("exit", 1, 150_000, 50_000)], frames(0, 300), 200,
     0),
    ("re_entered", [zone_event("enter", 1, 10_000), zone_event("exit", 1, 20_000, 10_000),
                    zone_event("enter", 1, 100_000)], frames(0, 300), 200, 1),
    # a run SIGKILLed at 60 s (its entry never closed), a new run from 120 s
    ("killed_run", [zone_event("enter", 1, 10_000)], frames(0, 60) + frames(120, 300), 200, 0),
    ("killed_run_then_new_visit", [zone_event("enter", 1, 10_000), zone_event("enter", 2, 150_000)],
     frames(0, 60) + frames(120, 300), 200, 1),
    # the file ended (end of stream), the next one started right after it
    ("ended_stream", [zone_event("enter", 1, 10_000)], frames(0, 60, eos=True) + frames(61, 300), 200, 0),
    # the camera stopped (removed from the site, down): nothing open after its last frame
    ("camera_stopped", [zone_event("enter", 1, 10_000)], frames(0, 60), 200, 0),
    # no frames stored: the look-back bound alone (2 h)
    ("no_frames_old_entry", [zone_event("enter", 1, 10_000)], [], 10_000 + 3 * 3600, 0),
    ("no_frames_recent_entry", [zone_event("enter", 1, 10_000)], [], 200, 1),
]


@pytest.mark.parametrize("name, evs, frs, at_s, length", QUEUE_CASES, ids=[c[0] for c in QUEUE_CASES])
def test_queue_length_at_counts_the_visits_open_then(history_store, name, evs, frs, at_s, length) -> None:
    history_store.write_batch(tracked_frames=frs, records=evs)
    assert zq.length_at(history_store, "c", "q", T0 + at_s * 1000, stream_gap_ms=2400) == length


def test_queues_at_ms_of_the_api_ignores_an_entry_of_a_killed_run(tmp_path: pathlib.Path) -> None:
    cfg = parse_config({"store": {"id": "s"}, "privacy": {"k_min": 1}, "cameras": [{"id": "c", "source": "x.mp4",
                        "zones": [{"id": "q", "kind": "queue", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]],
                                  "service_edge": [1, 2]}]}]})
    with SqlStorage(str(tmp_path / "h.db")) as store:
        store.write_batch(tracked_frames=frames(0, 60) + frames(120, 300), records=[zone_event("enter", 1, 10_000)])
        client = signed_in_client(create_app(cfg, store))
        [q] = client.get("/v1/queues", params={"camera_id": "c", "at_ms": T0 + 200_000}).json()["queues"]
        assert q["length"] == 0  # before: 1, for every later at_ms
