"""Zone rules (see the module docstring of storelens.domain.zones), zone config, queues, buckets, real data.

Every rule is one row of a table: frames (timestamp and ``{track_id: anchor}``)
fed to a fresh :class:`ZoneTracker`, and the events expected, in order, as
``(zone_id, track_id, kind, ts_ms, dwell_ms, how)``.

Geometry: ``box`` is the square x, y in 100..300 (tracks walk along y=200, so
a bare number in :func:`walk` is the x of the anchor). Frames are 100 ms
apart. Default rules in these tests: entry after 200 ms inside, exit after
400 ms outside (or unseen when last seen outside), lost after ``lost_after_ms``
unseen inside (2.4 s; 400 ms in the two cases of lost tracks), loitering off.
"""
from __future__ import annotations

import copy
import json
import pathlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import yaml

from storelens.config import ZoneConfig, ZonesConfig, load_config
from storelens.domain.geometry import points_in_polygon
from storelens.domain.mot import read_mot
from storelens.domain.zones import QueueStats, ZoneBuckets, ZoneEvent, ZoneTracker
from storelens.errors import ConfigError
from storelens.paths import asset

Frame = tuple[int, dict]  # (ts_ms, {track_id: anchor (x, y) or box (x1, y1, x2, y2)})

DT = 100
RULES = {"enter_after_ms": 200, "exit_after_ms": 400, "loiter_after_s": 0}

SQUARE = [(100, 100), (300, 100), (300, 300), (100, 300)]
BOX = ZoneConfig(id="box", polygon=SQUARE)
RIGHT = ZoneConfig(id="right", polygon=[(200, 100), (400, 100), (400, 300), (200, 300)])  # overlaps box
THIN = ZoneConfig(id="thin", polygon=[(200, 0), (210, 0), (210, 400), (200, 400)])  # 10 px wide
HIDE = ZoneConfig(id="hide", kind="exclude", polygon=[(100, 100), (160, 100), (160, 300), (100, 300)])
QUEUE = ZoneConfig(id="q", kind="queue", polygon=SQUARE, service_edge=(1, 2))  # served = leaving right (x > 300)
HEAD = ZoneConfig(id="head", polygon=SQUARE, anchor="center")


def walk(tid: int, *pts, t0: int = 0, dt: int = DT, y: float = 200) -> list[Frame]:
    """One track through ``pts`` (a bare number is an x on row ``y``; ``None`` = not seen)."""
    out = []
    for i, p in enumerate(pts):
        tracks = {} if p is None else {tid: (p, y) if isinstance(p, (int, float)) else p}
        out.append((t0 + i * dt, tracks))
    return out


def merge(*walks: list[Frame]) -> list[Frame]:
    """Frames of several tracks at the same timestamps."""
    by_ts: dict[int, dict] = {}
    for w in walks:
        for ts, tracks in w:
            by_ts.setdefault(ts, {}).update(tracks)
    return sorted(by_ts.items())


@dataclass(frozen=True)
class Case:
    id: str
    frames: list[Frame]
    expected: list[tuple]
    zones: tuple[ZoneConfig, ...] = (BOX,)
    rules: dict = field(default_factory=dict)
    close: bool = False  # end of the stream: close() the open visits


def make(case: Case, camera_id: str = "cam") -> ZoneTracker:
    return ZoneTracker(camera_id, list(case.zones), ZonesConfig(**{**RULES, **case.rules}))


def feed(zt: ZoneTracker, frames: list[Frame], seq0: int = 0) -> list[ZoneEvent]:
    events: list[ZoneEvent] = []
    for seq, (ts, tracks) in enumerate(frames, seq0):
        events += zt.update(seq=seq, ts_ms=ts, track_ids=list(tracks), anchors=list(tracks.values()))
    return events


def run(case: Case) -> list[ZoneEvent]:
    zt = make(case)
    return feed(zt, case.frames) + (zt.close() if case.close else [])


def summary(events):
    return [(e.zone_id, e.track_id, e.kind, e.ts_ms, e.dwell_ms, e.how) for e in events]


def enter(zone, tid, ts):
    return (zone, tid, "enter", ts, None, None)


def exit_(zone, tid, ts, dwell, how="other"):
    return (zone, tid, "exit", ts, dwell, how)


CASES = [
    Case("one_visit", walk(1, 50, *[150] * 6, *[50] * 5), [enter("box", 1, 100), exit_("box", 1, 700, 600)]),
    Case("shorter_than_entry_inertia", walk(1, 50, 150, 150, 50, 50, 50, 50, 50), []),
    Case("border_jitter_outside", walk(1, *[99, 101] * 6), []),
    Case("border_jitter_inside_one_visit", walk(1, 150, 150, 150, 150, *[99, 101] * 3, 150, 150, *[50] * 5),
         [enter("box", 1, 0), exit_("box", 1, 1200, 1200)]),
    Case("occlusion_inside_shorter_than_exit_inertia", walk(1, *[150] * 5, None, None, None, 150, 150, 150, *[50] * 5),
         [enter("box", 1, 0), exit_("box", 1, 1100, 1100)]),
    Case("lost_then_back_after_long_absence_two_visits", walk(1, *[150] * 5, *[None] * 6, *[150] * 5),
         [enter("box", 1, 0), exit_("box", 1, 400, 400, "lost"), enter("box", 1, 1100), exit_("box", 1, 1500, 400, "lost")],
         rules={"lost_after_ms": 400}, close=True),  # longer hidden spells: tests/test_queue_occlusion.py
    Case("re_entry_after_leaving_two_visits", walk(1, *[150] * 4, *[50] * 6, *[150] * 4, *[50] * 5),
         [enter("box", 1, 0), exit_("box", 1, 400, 400), enter("box", 1, 1000), exit_("box", 1, 1400, 400)]),
    Case("overlapping_zones_independent", walk(1, 50, *[150] * 3, *[250] * 3, *[350] * 3, *[450] * 5),
         [enter("box", 1, 100), enter("right", 1, 400), exit_("box", 1, 700, 600), exit_("right", 1, 1000, 600)],
         zones=(BOX, RIGHT)),
    # the anchor jumps over the 10 px zone between two frames: interpolated along the segment 150 -> 260
    Case("jumped_over_between_frames", walk(1, 150, 260, 300),
         [enter("thin", 1, 45), exit_("thin", 1, 55, 10)], zones=(THIN,)),
    Case("seen_inside_once_while_crossing", walk(1, 180, 205, 230),
         [enter("thin", 1, 80), exit_("thin", 1, 120, 40)], zones=(THIN,)),
    Case("passing_beyond_the_end_of_the_zone", walk(1, 150, 260, 300, y=450), [], zones=(THIN,)),
    Case("touch_and_turn_back", walk(1, 190, 205, 190, 190), [], zones=(THIN,)),
    Case("exclude_zone_hides_anchors",
         merge(walk(1, 50, 130, 130, 130, 130, 200, 200, 200, *[50] * 5), walk(2, *[(130, 150)] * 13)),
         [enter("box", 1, 500), exit_("box", 1, 800, 300)], zones=(BOX, HIDE)),
    Case("loiter_once_per_visit", walk(1, *[150] * 15, *[50] * 5),
         [enter("box", 1, 0), ("box", 1, "loiter", 500, 500, None), exit_("box", 1, 1500, 1500)],
         rules={"loiter_after_s": 0.5}),
    Case("queue_served_through_service_edge", walk(1, 50, *[150] * 5, 250, 250, *[350] * 5),
         [enter("q", 1, 100), exit_("q", 1, 800, 700, "service_edge")], zones=(QUEUE,)),
    Case("queue_abandoned_back_out", walk(1, 50, *[150] * 5, *[50] * 5),
         [enter("q", 1, 100), exit_("q", 1, 600, 500, "other")], zones=(QUEUE,)),
    Case("queue_abandoned_through_another_edge", walk(1, *[(290, 200)] * 5, *[(290, 350)] * 5),
         [enter("q", 1, 0), exit_("q", 1, 500, 500, "other")], zones=(QUEUE,)),
    Case("queue_lost_inside", walk(1, *[150] * 5, *[None] * 6),
         [enter("q", 1, 0), exit_("q", 1, 400, 400, "lost")], zones=(QUEUE,), rules={"lost_after_ms": 400}),
    Case("queue_jitter_across_service_edge_not_served", walk(1, *[290, 290, 290, 305] * 3, *[150] * 2, *[50] * 5),
         [enter("q", 1, 0), exit_("q", 1, 1400, 1400, "other")], zones=(QUEUE,)),
    # box x1,y1,x2,y2 = 140,220,160,320: feet (150, 320) outside the square, centre (150, 270) inside
    Case("anchor_choice_per_zone", walk(1, *[(140, 220, 160, 320)] * 4, *[(140, 400, 160, 450)] * 5),
         [enter("head", 1, 0), exit_("head", 1, 400, 400)], zones=(BOX, HEAD)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_zone_rules(case):
    assert summary(run(case)) == case.expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_round_trip_gives_identical_later_events(case):
    """Stop after every frame, restore from JSON into a fresh tracker: the rest is the same."""
    whole = run(case)
    for cut in range(1, len(case.frames)):
        first = make(case)
        before = feed(first, case.frames[:cut])
        second = make(case)
        second.load_state(json.loads(json.dumps(first.state())))
        after = feed(second, case.frames[cut:], seq0=cut) + (second.close() if case.close else [])
        assert before + after == whole, f"cut at frame {cut}"


def test_event_ids_are_deterministic_and_unique():
    events = run(CASES[6]) + run(CASES[0])  # two visits of one track; the same visit once more
    assert events[0].event_id == "cam:box:1:enter:0"
    assert len({e.event_id for e in run(CASES[6])}) == 4
    assert [e.event_id for e in run(CASES[0])] == [e.event_id for e in events[4:]]


def test_occupancy_open_visits_and_raw():
    zt = ZoneTracker("cam", [BOX, RIGHT, HIDE], ZonesConfig(**RULES))
    frames = merge(walk(1, 250, 250, 250, None), walk(2, 180, 180, 180, 180), walk(3, 130, 130, 130, 130, y=150))
    feed(zt, frames)
    # track 1 is unseen in the last frame but still inside both zones; track 3 stands in the exclude zone
    assert zt.occupancy() == {"box": 2, "right": 1}
    assert zt.occupancy(raw=True) == {"box": 1, "right": 0}
    assert zt.inside() == {"box": [1, 2], "right": [1]}


def test_bad_anchor_shape():
    zt = ZoneTracker("cam", [BOX])
    with pytest.raises(ValueError, match="anchors"):
        zt.update(0, 0, [1], [(1, 2, 3)])
    with pytest.raises(ValueError, match="2 track ids but 1"):
        zt.update(0, 0, [1, 2], [(1, 2)])
    assert zt.update(0, 0, [], []) == []


# ---------------------------------------------------------------------------------------------
# Queues: Little's law
# ---------------------------------------------------------------------------------------------


def test_queue_stats_littles_law_by_hand():
    """Five people leave a queue over 60 s, four through the service edge; two are still queueing."""
    zt = ZoneTracker("cam", [QUEUE], ZonesConfig(**RULES))
    # (track, first inside ts, ts of the first anchor beyond the service edge, or -ts for leaving left)
    people = [(1, 0, 8000), (2, 2000, 15000), (3, 4000, -20000), (4, 10000, 30000), (5, 20000, 50000)]
    walks = []
    for tid, t_in, t_out in people:
        pts = [None] * (t_in // 1000) + [150] * ((abs(t_out) - t_in) // 1000) + [350 if t_out > 0 else 50] * 2
        walks.append(walk(tid, *pts, dt=1000))
    walks += [walk(6, *[None] * 40, *[150] * 21, dt=1000), walk(7, *[None] * 55, *[250] * 6, dt=1000)]
    frames = merge(*walks)
    events = feed(zt, frames)
    assert frames[-1][0] == 60000
    assert zt.occupancy() == {"q": 2}
    stats = QueueStats.compute(events, "q", now_ms=60000, window_ms=60000, length=zt.occupancy()["q"])
    # waits = exit - entry: 8, 13, 20, 30 s (served); person 3 abandoned at 20 s
    assert stats.waits_ms == (8000, 13000, 20000, 30000)
    assert (stats.served, stats.abandoned, stats.lost, stats.length) == (4, 1, 0, 2)
    # throughput 4 served / 60 s; W = L / throughput = 2 / (4 / 60 s) = 30 s
    assert stats.predicted_wait_ms == 30000
    # a window that holds only the last serving (50 s): 1 / 20 s -> 2 * 20 s = 40 s
    assert QueueStats.compute(events, "q", 60000, 20000, 2).predicted_wait_ms == 40000
    # nobody served in the last 5 s: no prediction
    late = QueueStats.compute(events, "q", 60000, 5000, 2)
    assert late.served == 0 and late.predicted_wait_ms is None


# ---------------------------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------------------------


def _ev(kind, tid, ts, dwell=None):
    return ZoneEvent(f"{kind}{tid}{ts}", "cam", "z", tid, kind, ts, 0, dwell, "other" if kind == "exit" else None)


def test_bucket_statistics_by_hand():
    b = ZoneBuckets(bucket_s=60)
    dwells = [1000, 2000, 3000, 4000, 10000]
    b.add(0, {"z": [1, 2]}, [_ev("enter", 1, 0), _ev("enter", 2, 0)])
    b.add(10_000, {"z": [2]}, [_ev("exit", 1, 10_000, d) for d in dwells])
    b.add(40_000, {"z": []}, [_ev("enter", 3, 41_000), _ev("exit", 3, 42_000, 1000)])
    b.add(50_000, {"z": [4, 5, 6]}, [])
    b.add(70_000, {"z": [4]}, [_ev("enter", 7, 59_000)])  # entry confirmed late: counted in its own bucket
    b.add(120_000, {"z": []}, [])
    first, second, third = b.stats()
    assert (first.start_ms, second.start_ms, third.start_ms) == (0, 60_000, 120_000)
    # occupancy held until the next frame: 2 for 10 s, 1 for 30 s, 0 for 10 s, 3 for 10 s (to the bucket end),
    # and track 7 from its entry time (59 s; confirmed at 70 s), like its dwell
    assert first.mean_occupancy == pytest.approx((2 * 10 + 1 * 30 + 0 * 10 + 3 * 10 + 1) / 60)
    assert first.max_occupancy == 4  # 4, 5, 6 held and track 7 from 59 s, as in the mean
    assert (first.visits, first.unique_people, first.exits) == (4, 7, 6)
    # dwells 1, 1, 2, 3, 4, 10 s: median (2 + 3) / 2; p90 at position 0.9 * 5 = 4.5 -> 4 + 0.5 * (10 - 4)
    assert first.dwell_median_ms == 2500.0 and first.dwell_p90_ms == 7000.0
    # 3 from 60 to 70 s (held over the bucket end), then 1 for 50 s; track 7 from 60 to 70 s (entry confirmed then)
    assert second.mean_occupancy == pytest.approx((3 * 10 + 1 * 50 + 10) / 60)
    assert (second.max_occupancy, second.visits, second.unique_people, second.exits) == (4, 0, 1, 0)
    assert second.dwell_median_ms is None and second.dwell_p90_ms is None
    assert third.mean_occupancy == 0 and third.max_occupancy == 0


def test_buckets_from_a_tracker():
    zt, b = ZoneTracker("cam", [BOX], ZonesConfig(**RULES)), ZoneBuckets(bucket_s=1)
    for seq, (ts, tracks) in enumerate(merge(walk(1, 50, *[150] * 6, *[50] * 5), walk(2, *[150] * 3, *[50] * 9))):
        events = zt.update(seq, ts, list(tracks), list(tracks.values()))
        b.add(ts, zt.inside(), events)
    s0, s1 = b.stats()
    # dwells 300 ms (track 2) and 600 ms (track 1)
    assert (s0.visits, s0.unique_people, s0.exits, s0.dwell_median_ms) == (2, 2, 2, 450.0)
    # each visit from its entry to its exit time, like its dwell: track 2 0-300 ms, track 1 100-700 ms
    assert s0.max_occupancy == 2 and s0.mean_occupancy == pytest.approx((300 + 600) / 1000)
    # track 1 left at 700 ms; its exit is confirmed 400 ms later, so its visit is open at 1000 ms
    assert (s1.max_occupancy, s1.unique_people, s1.visits, s1.exits) == (1, 1, 0, 0)


# ---------------------------------------------------------------------------------------------
# Config: kinds, service edge, labels, overrides, errors naming the field
# ---------------------------------------------------------------------------------------------

SITE: dict = {
    "store": {"id": "s1"},
    "cameras": [{"id": "cam-1", "source": "0",
                 "zones": [{"id": "till", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}]}],
}


def _site(tmp_path: pathlib.Path, zone_update: dict | None = None, **top) -> pathlib.Path:
    doc = copy.deepcopy(SITE)
    doc["cameras"][0]["zones"][0].update(zone_update or {})
    doc.update(top)
    p = tmp_path / "site.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_existing_zone_config_parses_with_defaults(tmp_path):
    cfg = load_config(_site(tmp_path))
    z = cfg.cameras[0].zones[0]
    assert z.kind == "area" and z.service_edge is None and z.product is None
    assert cfg.zones == ZonesConfig(lost_after_ms=2400)  # unset: the tracker's re-find window
    assert z.rules(cfg.zones).anchor == "bottom_center"


def test_zone_overrides_and_labels(tmp_path):
    cfg = load_config(_site(tmp_path, {"kind": "shelf", "product": "espresso", "category": "coffee",
                                       "stopper_after_s": 5, "anchor": "center"},
                            zones={"enter_after_ms": 300, "loiter_after_s": 120}))
    rules = cfg.cameras[0].zones[0].rules(cfg.zones)
    assert (rules.enter_after_ms, rules.exit_after_ms, rules.loiter_after_s) == (300, 1000, 120)
    assert (rules.stopper_after_s, rules.anchor) == (5, "center")
    assert cfg.cameras[0].zones[0].product == "espresso"


@pytest.mark.parametrize("edge, segment", [
    ([3, 0], ((0.0, 100.0), (0.0, 0.0))),
    ([[100, 20], [100, 80]], ((100.0, 20.0), (100.0, 80.0))),
])
def test_service_edge_forms(tmp_path, edge, segment):
    cfg = load_config(_site(tmp_path, {"kind": "queue", "service_edge": edge}))
    assert cfg.cameras[0].zones[0].service_segment == segment


Z = "cameras.0.zones.0"
ERROR_CASES = [
    pytest.param({"polygon": [[0, 0], [1, 1]]}, f"{Z}.polygon", "at least 3", id="two_points"),
    pytest.param({"polygon": [[0, 0], [100, 100], [100, 0], [0, 100]]}, f"{Z}.polygon", "self-intersecting",
                 id="bow_tie"),
    pytest.param({"polygon": [[0, 0], [100, 0], [100, 100], [50, 0]]}, f"{Z}.polygon", "self-intersecting",
                 id="folds_back_on_an_edge"),
    pytest.param({"polygon": [[0, 0], [100, 0], [100, 100], [0, 0]]}, f"{Z}.polygon", "repeated vertex",
                 id="repeated_vertex"),
    pytest.param({"polygon": [[0, 0], [100, 0, 1], [100, 100]]}, f"{Z}.polygon", "points [x, y]", id="bad_point"),
    pytest.param({"kind": "room"}, f"{Z}.kind", "'area'", id="unknown_kind"),
    pytest.param({"kind": "queue"}, f"{Z}.service_edge", "required for a queue zone", id="queue_without_edge"),
    pytest.param({"service_edge": [0, 1]}, f"{Z}.service_edge", "only queue zones", id="edge_on_area"),
    pytest.param({"kind": "queue", "service_edge": [0, 2]}, f"{Z}.service_edge", "not the ends of one polygon edge",
                 id="edge_not_adjacent"),
    pytest.param({"kind": "queue", "service_edge": [0, 4]}, f"{Z}.service_edge", "0..3", id="edge_index_range"),
    pytest.param({"kind": "queue", "service_edge": [1.5, 2]}, f"{Z}.service_edge", "two vertex indices [i, j] or two points",
                 id="edge_bad_shape"),
    pytest.param({"kind": "queue", "service_edge": [[50, 50], [100, 80]]}, f"{Z}.service_edge", "boundary",
                 id="edge_points_off_the_polygon"),
    pytest.param({"product": "milk"}, f"{Z}.product", "only shelf zones", id="product_on_area"),
    pytest.param({"kind": "queue", "service_edge": [0, 1], "category": "x"}, f"{Z}.category", "only shelf zones",
                 id="category_on_queue"),
    pytest.param({"stopper_after_s": 2}, f"{Z}.stopper_after_s", "only shelf zones", id="stopper_on_area"),
    pytest.param({"kind": "exclude", "enter_after_ms": 2}, f"{Z}.enter_after_ms", "exclude zones",
                 id="rules_on_exclude"),
    pytest.param({"exit_after_ms": -1}, f"{Z}.exit_after_ms", "greater than or equal to 0", id="negative_exit"),
    pytest.param({"anchor": "top"}, f"{Z}.anchor", "bottom_center", id="bad_anchor"),
]


@pytest.mark.parametrize("zone_update, path, reason", ERROR_CASES)
def test_zone_config_errors_name_the_field(tmp_path, zone_update, path, reason):
    p = _site(tmp_path, zone_update)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert f": {path}: " in msg and "\n" not in msg, msg
    assert reason in msg, msg


@pytest.mark.parametrize("section, path", [
    ({"enter_after_ms": -5}, "zones.enter_after_ms"),
    ({"anchor": "feet"}, "zones.anchor"),
    ({"queue_window_s": 0}, "zones.queue_window_s"),
    ({"inertia": 3}, "zones.inertia"),
])
def test_site_zones_section_errors(tmp_path, section, path):
    with pytest.raises(ConfigError, match=f": {path}: "):
        load_config(_site(tmp_path, zones=section))


# ---------------------------------------------------------------------------------------------
# Real data: TUD-Stadtmitte ground truth (MOTChallenge, 640x480, 25 fps, 179 frames)
# ---------------------------------------------------------------------------------------------

STADTMITTE_ZONES = [
    # a quadrilateral in the middle of the pedestrian area that most people walk through
    ZoneConfig(id="centre", polygon=[(260, 200), (460, 210), (470, 360), (250, 350)]),
    # where one person stands for the whole clip and two others walk past
    ZoneConfig(id="standing", polygon=[(150, 230), (330, 230), (330, 300), (150, 300)]),
]
FRAME_MS = 40


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive frame numbers as (first, last)."""
    runs: list[tuple[int, int]] = []
    for f in frames:
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


@pytest.mark.parametrize("zone", STADTMITTE_ZONES, ids=lambda z: z.id)
def test_stadtmitte_ground_truth_visits_and_dwell(zone):
    gt_path = asset("mot", "TUD-Stadtmitte", "gt", "gt.txt")
    if not gt_path.is_file():
        pytest.skip(f"shared assets missing: {gt_path}")
    gt = read_mot(gt_path, evaluated_only=True)
    poly = np.asarray(zone.polygon)
    rules = ZonesConfig(enter_after_ms=200, exit_after_ms=400, loiter_after_s=0)  # 5 and 10 frames
    zt = ZoneTracker("tud", [zone], rules)
    events: list[ZoneEvent] = []
    inside_frames: dict[int, list[int]] = {}  # direct: frames whose bottom-centre is inside, per track
    direct_occ, rule_occ, raw_occ = [], [], []
    for f in range(1, max(gt) + 1):
        boxes = gt.get(f, [])
        xyxy = np.array([b.xyxy for b in boxes]).reshape(-1, 4)
        events += zt.update(seq=f - 1, ts_ms=(f - 1) * FRAME_MS, track_ids=[b.track_id for b in boxes], anchors=xyxy)
        inside = points_in_polygon(np.array([b.anchor for b in boxes]).reshape(-1, 2), poly)
        for b, is_in in zip(boxes, inside):
            if is_in:
                inside_frames.setdefault(b.track_id, []).append(f)
        direct_occ.append(int(inside.sum()))
        rule_occ.append(zt.occupancy()[zone.id])
        raw_occ.append(zt.occupancy(raw=True)[zone.id])
    events += zt.close()

    # the anchors are the same points, so the raw occupancy is the direct count exactly
    assert raw_occ == direct_occ
    # visits: one per run of inside frames, after the inertia (runs shorter than 5 frames do not count,
    # gaps shorter than 10 frames do not split); dwell = frames inside * 40 ms
    direct_visits = {t: _runs(fs) for t, fs in inside_frames.items()}
    direct_dwell = {t: len(fs) * FRAME_MS for t, fs in inside_frames.items()}
    rule_dwell: dict[int, int] = {}
    for e in events:
        if e.kind == "exit":
            rule_dwell[e.track_id] = rule_dwell.get(e.track_id, 0) + e.dwell_ms
    enters = [e for e in events if e.kind == "enter"]
    assert sorted(e.track_id for e in enters) == sorted(t for t, runs in direct_visits.items() for _ in runs)
    assert set(rule_dwell) == set(direct_dwell)
    # per track: within one frame (a visit open at the end is closed at its last frame, 40 ms short)
    for t in direct_dwell:
        assert abs(rule_dwell[t] - direct_dwell[t]) <= FRAME_MS, (t, rule_dwell[t], direct_dwell[t])
    total_rule, total_direct = sum(rule_dwell.values()), sum(direct_dwell.values())
    assert abs(total_rule - total_direct) <= 0.02 * total_direct
    # occupancy of open visits lags each entry by up to 5 frames (confirmation) and each exit by up to 10:
    # at most 15 frames of error per visit
    mae = float(np.mean(np.abs(np.array(rule_occ) - np.array(direct_occ))))
    assert mae <= len(enters) * 15 / len(direct_occ), mae
    print(f"TUD-Stadtmitte zone {zone.id!r}: {len(enters)} visits ({len(direct_dwell)} people), "
          f"dwell {total_rule / 1000:.2f} s by the rules vs {total_direct / 1000:.2f} s direct, "
          f"occupancy MAE {mae:.3f} per frame, max {max(rule_occ)} vs {max(direct_occ)}")


def _zone_run(gt: dict, zone: ZoneConfig, step: int) -> tuple[list[ZoneEvent], dict[int, list[float]]]:
    """Every ``step``-th ground-truth frame through a tracker (entry 200 ms, exit 400 ms); also the anchors' x."""
    zt = ZoneTracker("tud", [zone], ZonesConfig(enter_after_ms=200, exit_after_ms=400, loiter_after_s=0))
    events: list[ZoneEvent] = []
    xs: dict[int, list[float]] = {}
    for f in range(1, max(gt) + 1, step):
        boxes = gt.get(f, [])
        events += zt.update(f - 1, (f - 1) * FRAME_MS, [b.track_id for b in boxes],
                            np.array([b.xyxy for b in boxes]).reshape(-1, 4))
        for b in boxes:
            xs.setdefault(b.track_id, []).append(b.anchor[0])
    return events + zt.close(), xs


@pytest.mark.parametrize("step", [5, 10])
def test_stadtmitte_thin_zone_at_low_frame_rates(step):
    """A 6 px wide strip sampled at 5 and 2.5 fps: anchors almost never land in it, visits are still found.

    Reference: the same rules at the full 25 fps, where every crossing has inside frames. Expected at the
    low rate: every person whose sampled anchors are on both sides of the strip, with the dwell
    interpolated along the path within one full-rate frame of the 25 fps dwell.
    """
    gt_path = asset("mot", "TUD-Stadtmitte", "gt", "gt.txt")
    if not gt_path.is_file():
        pytest.skip(f"shared assets missing: {gt_path}")
    gt = read_mot(gt_path, evaluated_only=True)
    strip = ZoneConfig(id="strip", polygon=[(400, 0), (406, 0), (406, 480), (400, 480)])
    full, _ = _zone_run(gt, strip, 1)
    low, xs = _zone_run(gt, strip, step)
    full_dwell = {e.track_id: e.dwell_ms for e in full if e.kind == "exit"}
    low_dwell = {e.track_id: e.dwell_ms for e in low if e.kind == "exit"}
    crossers = {t for t, x in xs.items() if min(x) < 400 and max(x) > 406}
    assert len(full_dwell) == 5 and set(low_dwell) == crossers and crossers <= set(full_dwell)
    assert len(crossers) >= 4
    for t in crossers:
        assert abs(low_dwell[t] - full_dwell[t]) <= FRAME_MS, (t, low_dwell[t], full_dwell[t])
    # a frame-by-frame inside test at the low rate sees at most 2 of them
    poly = np.asarray(strip.polygon)
    seen = {b.track_id for f in range(1, max(gt) + 1, step) for b in gt.get(f, [])
            if points_in_polygon(np.array([b.anchor]), poly)[0]}
    assert len(seen) <= 2


def test_shelf_stoppers_per_bucket():
    shelf = ZoneConfig(id="shelf", kind="shelf", polygon=SQUARE, product="espresso", stopper_after_s=0.5)
    zt = ZoneTracker("cam", [shelf, RIGHT], ZonesConfig(**RULES))
    b = ZoneBuckets(bucket_s=10, stopper_after_ms=zt.stopper_after_ms())
    assert zt.stopper_after_ms() == {"shelf": 500}
    # track 1 stays 300 ms (a passer-by), track 2 800 ms (a stopper), track 3 exactly 500 ms (a stopper)
    frames = merge(walk(1, *[150] * 3, *[50] * 5), walk(2, *[150] * 8, *[50] * 5), walk(3, *[150] * 5, *[50] * 5))
    for seq, (ts, tracks) in enumerate(frames):
        events = zt.update(seq, ts, list(tracks), list(tracks.values()))
        b.add(ts, zt.inside(), events)
    by_zone = {s.zone_id: s for s in b.stats()}
    assert (by_zone["shelf"].exits, by_zone["shelf"].stoppers) == (3, 2)
    assert by_zone["right"].stoppers is None
