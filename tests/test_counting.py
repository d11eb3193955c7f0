"""LineCounter rules (see the module docstring of storelens.domain.counting), occupancy, windows, doctests.

Every failure mode is one row of a table: a list of frames (timestamp and
``{track_id: anchor}``) fed to a fresh :class:`LineCounter`, and the crossings
expected, in order, as ``(line_id, track_id, direction)``.

Geometry reminder: for the default door line A=(0,300) -> B=(640,300) the
right-hand (``in``) side is *below* the line (y grows downwards). Default
counting config: hysteresis 6 px, re-acquire radius 60 px, window 2000 ms.
"""
from __future__ import annotations

import doctest
import importlib
from dataclasses import dataclass, field

import numpy as np
import pytest

from storelens.contract import messages as m
from storelens.config import CountingConfig, LineConfig
from storelens.domain.counting import (
    CrossingEvent,
    LineCounter,
    Occupancy,
    crossing_event_id,
    occupancy_from_events,
    window_start_ms,
)

Point = tuple[float, float]
Frame = tuple[int, dict[int, Point]]  # (ts_ms, {track_id: anchor})

DT = 40  # 25 fps

DOOR = LineConfig(id="door", a=(0, 300), b=(640, 300))
DOOR_REVERSED = LineConfig(id="door", a=(640, 300), b=(0, 300))
DIAGONAL = LineConfig(id="diag", a=(0, 0), b=(400, 400))  # in side: below-left (y > x)
VERTICAL = LineConfig(id="vert", a=(300, 0), b=(300, 480))  # A->B points down: in side is x < 300
SHORT = LineConfig(id="short", a=(200, 300), b=(300, 300))  # 100 px door in a wider scene
TINY = LineConfig(id="tiny", a=(300, 300), b=(340, 300))


def frames(*tracks_per_frame: dict[int, Point], t0: int = 0, dt: int = DT) -> list[Frame]:
    """Frames at a steady rate; ``{}`` is a frame in which no track is visible."""
    return [(t0 + i * dt, dict(t)) for i, t in enumerate(tracks_per_frame)]


def walk(tid: int, *pts: Point | float, x: float = 320, t0: int = 0, dt: int = DT) -> list[Frame]:
    """One track through ``pts`` (a bare number is a y at column ``x``)."""
    return frames(*({tid: (x, p) if isinstance(p, (int, float)) else p} for p in pts), t0=t0, dt=dt)


def gap(n: int, t0: int, dt: int = DT) -> list[Frame]:
    """``n`` frames with nobody visible, starting at ``t0``."""
    return [(t0 + i * dt, {}) for i in range(n)]


@dataclass(frozen=True)
class Case:
    id: str
    frames: list[Frame]
    expected: list[tuple[str, int, str]]
    lines: tuple[LineConfig, ...] = (DOOR,)
    counting: dict = field(default_factory=dict)


def run(lines, frames_, counting=None, camera_id="cam"):
    lc = LineCounter(camera_id, list(lines), CountingConfig(**(counting or {})))
    events: list[CrossingEvent] = []
    for seq, (ts, tracks) in enumerate(frames_):
        events += lc.update(seq=seq, ts_ms=ts, track_ids=list(tracks), anchors=list(tracks.values()))
    return lc, events


def summary(events):
    return [(e.line_id, e.track_id, e.direction) for e in events]


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

DIRECTION = [
    Case("down_crossing_is_in", walk(1, 250, 280, 320, 350), [("door", 1, "in")]),
    Case("up_crossing_is_out", walk(1, 350, 320, 280, 250), [("door", 1, "out")]),
    Case("reversed_line_down_is_out", walk(1, 250, 280, 320, 350), [("door", 1, "out")],
         lines=(DOOR_REVERSED,)),
    Case("reversed_line_up_is_in", walk(1, 350, 320, 280, 250), [("door", 1, "in")],
         lines=(DOOR_REVERSED,)),
    Case("diagonal_line_to_lower_left_is_in", walk(1, (300, 100), (240, 160), (160, 240), (100, 300)),
         [("diag", 1, "in")], lines=(DIAGONAL,)),
    Case("diagonal_line_to_upper_right_is_out", walk(1, (100, 300), (160, 240), (240, 160), (300, 100)),
         [("diag", 1, "out")], lines=(DIAGONAL,)),
    Case("vertical_line_right_to_left_is_in", walk(1, (400, 240), (330, 240), (270, 240), (200, 240)),
         [("vert", 1, "in")], lines=(VERTICAL,)),
    Case("vertical_line_left_to_right_is_out", walk(1, (200, 240), (270, 240), (330, 240), (400, 240)),
         [("vert", 1, "out")], lines=(VERTICAL,)),
    Case("walking_along_the_line_side_counts_nothing", walk(1, (10, 250), (200, 250), (400, 250), (630, 250)),
         []),
]

JITTER = [
    Case("standing_on_line_jitter_inside_band",
         walk(1, *[300 + (-5 if i % 2 else 5) for i in range(30)]), []),
    Case("approach_jitter_inside_band_then_leave_back",
         walk(1, 250, 280, 296, 304, 297, 305, 295, 303, 280, 250), []),
    Case("approach_jitter_inside_band_then_walk_through",
         walk(1, 250, 280, 296, 304, 297, 305, 295, 303, 320, 350), [("door", 1, "in")]),
    Case("oscillation_beyond_band_alternates_in_out",
         walk(1, 290, 310, 290, 310, 290, 310),
         [("door", 1, "in"), ("door", 1, "out"), ("door", 1, "in"), ("door", 1, "out"), ("door", 1, "in")]),
    Case("oscillation_exactly_at_band_edge_counts",  # |d| == hysteresis reaches the side
         walk(1, 294, 306, 294),
         [("door", 1, "in"), ("door", 1, "out")]),
    Case("zero_hysteresis_counts_tiny_oscillation",
         walk(1, 299, 301, 299), [("door", 1, "in"), ("door", 1, "out")], counting={"hysteresis_px": 0}),
    Case("zero_hysteresis_point_on_line_is_no_side",
         walk(1, 290, 300, 290, 300, 290), [], counting={"hysteresis_px": 0}),
    Case("large_hysteresis_ignores_moderate_sway",
         walk(1, 250, 285, 315, 285, 315, 285, 250), [], counting={"hysteresis_px": 20}),
]

U_TURN = [
    Case("approach_touch_line_turn_back", walk(1, 250, 280, 300, 280, 250), []),
    Case("step_just_past_line_inside_band_turn_back", walk(1, 250, 280, 303, 280, 250), []),
    Case("u_turn_from_inside", walk(1, 350, 320, 297, 320, 350), []),
    Case("cross_fully_and_come_back", walk(1, 250, 320, 350, 320, 250),
         [("door", 1, "in"), ("door", 1, "out")]),
    Case("u_turn_inside_band_then_later_real_crossing", walk(1, 250, 303, 280, 250, 320, 350),
         [("door", 1, "in")]),
]

SKIP = [
    Case("fast_jump_over_line_in_one_frame", walk(1, 100, 500), [("door", 1, "in")]),
    Case("fast_jump_over_tiny_segment", walk(1, (320, 100), (320, 500)), [("tiny", 1, "in")], lines=(TINY,)),
    Case("fast_diagonal_jump_through_tiny_segment", walk(1, (200, 200), (440, 400)), [("tiny", 1, "in")],
         lines=(TINY,)),
    Case("around_the_end_of_short_segment", walk(1, (250, 250), (330, 270), (350, 300), (330, 330), (250, 350)),
         [], lines=(SHORT,)),
    Case("jump_past_the_end_in_one_frame", walk(1, (250, 250), (400, 350)), [], lines=(SHORT,)),
    Case("beside_the_segment_straight_down", walk(1, (150, 250), (150, 300), (150, 350)), [], lines=(SHORT,)),
    Case("around_the_end_then_back_through_segment_counts_out",
         walk(1, (250, 250), (330, 270), (350, 300), (330, 330), (250, 350), (250, 250)),
         [("short", 1, "out")], lines=(SHORT,)),
    Case("through_segment_into_band_then_leave_beyond_the_end_counts",
         # the path went through A-B (into the band), so leaving the band past the end still counts
         walk(1, (250, 290), (250, 304), (350, 305), (350, 330)), [("short", 1, "in")], lines=(SHORT,)),
    Case("through_segment_endpoint_counts", walk(1, (300, 250), (300, 350)), [("short", 1, "in")],
         lines=(SHORT,)),
]

_T1 = walk(1, 250, 280, 292)  # track 1 approaches the door from above and is last seen at t=80, y=292
_LAST = _T1[-1][0]

LOST = [
    Case("same_id_gap_then_other_side_counts_once",
         _T1 + gap(5, _LAST + DT) + walk(1, 330, 350, 380, t0=_LAST + 6 * DT), [("door", 1, "in")]),
    Case("id_switch_in_next_frame_counts_once",
         _T1 + walk(2, 312, 330, 360, t0=_LAST + DT), [("door", 2, "in")]),
    Case("id_switch_after_gap_counts_once",
         _T1 + gap(3, _LAST + DT) + walk(2, 312, 330, t0=_LAST + 4 * DT), [("door", 2, "in")]),
    Case("id_switch_at_exact_window_edge_inherits",
         _T1 + walk(2, 312, 330, t0=_LAST + 2000), [("door", 2, "in")]),
    Case("id_switch_picks_nearest_new_track_not_first_listed",
         # track 2 is another person 51 px away, listed first; track 3 is where track 1 went
         _T1 + frames({2: (370, 280), 3: (322, 312)}, {2: (380, 270), 3: (324, 340)}, t0=_LAST + DT),
         [("door", 3, "in")]),
    Case("id_switch_after_counted_crossing_does_not_count_again",
         walk(1, 250, 320, 340) + walk(2, 350, 380, t0=3 * DT), [("door", 1, "in")]),
    Case("id_switch_at_door_then_back_out_counts_out",
         _T1 + walk(2, 312, 340, 312, 280, t0=_LAST + DT), [("door", 2, "in"), ("door", 2, "out")]),
    Case("new_id_far_away_does_not_inherit",
         _T1 + walk(2, (520, 330), (520, 360), t0=_LAST + DT), []),
    Case("new_id_after_window_does_not_inherit",
         _T1 + walk(2, 312, 330, t0=_LAST + 2001), []),
    Case("new_id_after_window_with_frames_between_does_not_inherit",
         _T1 + gap(60, _LAST + DT) + walk(2, 312, 330, t0=_LAST + 61 * DT), []),
    Case("same_id_after_window_no_phantom_count",
         _T1 + gap(60, _LAST + DT) + walk(1, 312, 340, 380, t0=_LAST + 61 * DT), []),
    Case("same_id_after_window_back_on_old_side_no_phantom",
         walk(1, 250, 320, 340) + gap(60, 3 * DT) + walk(1, 250, 200, t0=63 * DT), [("door", 1, "in")]),
    Case("chained_id_switches_count_once",
         # 1 -> 2 (crossing the door) -> 3: one crossing, credited to the id that completed it
         _T1 + walk(2, 312, t0=_LAST + DT) + frames({3: (320, 330)}, {3: (320, 360)}, t0=_LAST + 2 * DT),
         [("door", 2, "in")]),
]

START_IN_BAND = [
    Case("starts_inside_band_leaves_down", walk(1, 300, 303, 310, 330), []),
    Case("starts_inside_band_leaves_up", walk(1, 300, 297, 280), []),
    Case("starts_beyond_line_inside_band_leaves_down", walk(1, 304, 320), []),
    Case("starts_inside_band_leaves_down_then_crosses_up", walk(1, 300, 320, 340, 280),
         [("door", 1, "out")]),
]

MULTI = [
    Case("two_tracks_opposite_directions_same_frame",
         frames({1: (100, 250), 2: (500, 350)}, {1: (100, 350), 2: (500, 250)}),
         [("door", 1, "in"), ("door", 2, "out")]),
    Case("one_track_crosses_two_lines_in_one_step",
         walk(1, (400, 250), (200, 350)),
         [("door", 1, "in"), ("vert", 1, "in")], lines=(DOOR, VERTICAL)),
    Case("tracks_on_different_lines",
         frames({1: (100, 250), 2: (400, 100)}, {1: (100, 350), 2: (200, 100)}),
         [("door", 1, "in"), ("vert", 2, "in")], lines=(DOOR, VERTICAL)),
]

ALL_CASES = DIRECTION + JITTER + U_TURN + SKIP + LOST + START_IN_BAND + MULTI


def test_case_ids_are_unique():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_line_counter(case: Case):
    lc, events = run(case.lines, case.frames, case.counting)
    assert summary(events) == case.expected
    # counts() always agrees with the events returned
    for line in case.lines:
        for d in ("in", "out"):
            assert lc.counts()[line.id][d] == sum(1 for e in events if e.line_id == line.id and e.direction == d)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_never_the_same_direction_twice_in_a_row_per_track(case: Case):
    _, events = run(case.lines, case.frames, case.counting)
    last: dict[tuple[str, int], str] = {}
    for e in events:
        assert last.get((e.line_id, e.track_id)) != e.direction, summary(events)
        last[(e.line_id, e.track_id)] = e.direction


@pytest.mark.parametrize("mover, still_at_ms, expected", [
    (9, 3000, []),  # the standee, stationary while the passer-by walked: there all along, no count
    (9, 0, [("door", 9, "out")]),  # seen as stationary more than reacquire_window_ms before: new again
    (10, 3000, [("door", 10, "out")]),  # an id never seen: an id switch of the passer-by, who walks back up
])
def test_an_id_seen_as_stationary_takes_no_lost_state(mover, still_at_ms, expected):
    """CAVIAR's door on an AVX-512 machine: a passer-by crosses and vanishes 51 px from a standee that
    then starts to move. Only a new id takes the lost state (counted again up the door otherwise)."""
    lc = LineCounter("cam", [DOOR], CountingConfig())
    events = lc.update(0, 0, [], [], still_ids=[9] if still_at_ms == 0 else [])
    for i, y in enumerate([250, 280, 310, 340]):
        t = 3000 + i * DT
        events += lc.update(i + 1, t, [1], [(320, y)], still_ids=[9] if still_at_ms == 3000 else [])
    assert summary(events) == [("door", 1, "in")]
    resumed = LineCounter("cam", [DOOR], CountingConfig())
    resumed.load_state(lc.state())  # the memory of stationary ids is part of the state
    assert summary(resumed.update(5, t + DT, [mover], [(330, 290)])) == expected


# ---------------------------------------------------------------------------------------------
# With box heights (as the analytics stage gives them): steps that are not walking, radius in heights
# ---------------------------------------------------------------------------------------------

Sized = dict[int, tuple[float, float, float]]  # track id -> (x, y, box height)


def run_sized(frames_: list[tuple[int, Sized]], counting=None, still: dict[int, list[int]] | None = None):
    """Like :func:`run`, with each track's box height; ``still``: frame index -> stationary ids that frame."""
    lc = LineCounter("cam", [DOOR], CountingConfig(**(counting or {})))
    events: list[CrossingEvent] = []
    for seq, (ts, tracks) in enumerate(frames_):
        events += lc.update(seq, ts, list(tracks), [(x, y) for x, y, _ in tracks.values()],
                            still_ids=(still or {}).get(seq, []), heights=[h for _, _, h in tracks.values()])
    return lc, events


def sized_walk(tid: int, *steps: tuple[float, float], x: float = 320, dt: int = DT, t0: int = 0):
    """One track through ``(y, box height)`` steps at column ``x``."""
    return [(t0 + i * dt, {tid: (x, y, h)}) for i, (y, h) in enumerate(steps)]


SIZED = [
    # a person of 100 px walking 10 px (0.1 heights) a frame at 25 fps: counts, as without heights
    Case("sized_walk_counts", sized_walk(1, (270, 100), (280, 100), (290, 100), (300, 100), (310, 100),
                                         (320, 100)), [("door", 1, "in")]),
    # the box snaps from the person (100 px) to a mannequin behind the line (40 px): the anchor "crosses", but
    # a box that changed to another object's is no step, and the side restarts where the box now is
    Case("box_snapping_to_another_object_never_counts",
         sized_walk(1, (270, 100), (280, 100), (290, 100), (330, 40), (331, 40), (330, 40)), []),
    # the box grows over two objects (the mannequin's head to a passer-by's feet): 45 -> 97 px
    Case("box_growing_over_two_objects_never_counts",
         sized_walk(1, (290, 45), (290, 45), (330, 97), (331, 97)), []),
    # back to the person after the snap: the side restarted below, so walking on counts nothing twice
    Case("after_a_snap_the_side_restarts_where_the_box_is",
         sized_walk(1, (270, 100), (290, 100), (330, 40), (320, 100), (330, 100), (340, 100)), []),
    # the same height but 0.8 heights in one 25 fps frame (20 heights a second): no one walks so
    Case("a_jump_too_far_for_the_time_never_counts",
         sized_walk(1, (260, 100), (270, 100), (280, 100), (360, 100), (370, 100)), []),
    # ... while at 5 fps 0.5 heights a frame (2.5 heights a second) is within 0.2 + 2.0 * 0.2 = 0.6
    Case("a_long_step_at_5_fps_counts",
         sized_walk(1, (240, 100), (270, 100), (290, 100), (340, 100), (380, 100), dt=200), [("door", 1, "in")]),
    # sizes within the ratio (100 -> 160 px, a person nearing the camera) count
    Case("a_box_growing_within_the_ratio_counts",
         sized_walk(1, (280, 100), (290, 120), (300, 140), (310, 160)), [("door", 1, "in")]),
    # lost at 290 and, 160 ms later, a new id 10 px (0.25 heights of 40 px) further on: re-acquired, one crossing
    Case("reacquire_radius_is_in_box_heights_small_person_near",
         sized_walk(1, (270, 40), (280, 40), (290, 40)) + sized_walk(2, (300, 40), (310, 40), t0=6 * DT),
         [("door", 2, "in")]),
    # ... 20 px (0.5 heights) further on: another person, who starts on the line (nothing); the step itself
    # would be a walk (0.2 + 2.0 * 0.16 = 0.52 heights), so only the radius tells them apart
    Case("reacquire_radius_is_in_box_heights_small_person_far",
         sized_walk(1, (270, 40), (280, 40), (290, 40)) + sized_walk(2, (310, 40), (320, 40), t0=6 * DT), []),
    # for a 200 px person the same 20 px (0.1 heights) is near: re-acquired
    Case("reacquire_radius_is_in_box_heights_large_person",
         sized_walk(1, (250, 200), (270, 200), (290, 200)) + sized_walk(2, (310, 200), (320, 200), t0=3 * DT),
         [("door", 2, "in")]),
    # an id switch in the very next 25 fps frame, 0.3 heights on: within the radius (0.35) though beyond one
    # frame's walk (0.2 + 2.0 * 0.04 = 0.28); the re-acquisition decides, the crossing counts once
    Case("reacquired_in_the_next_frame_counts_beyond_one_frames_walk",
         sized_walk(1, (270, 100), (280, 100), (290, 100)) + sized_walk(2, (320, 100), (330, 100), t0=3 * DT),
         [("door", 2, "in")]),
    # CAVIAR's door, re-encoded: a mannequin's box (top edge at 240) grows at its bottom edge over a person standing
    # in front, 50 -> 78 px (within the ratio) 0.32 s later: the anchor moves 28 px (within the reach), but the box
    # itself did not move (its top stayed), so nothing walked
    Case("a_box_growing_at_its_bottom_edge_never_counts",
         sized_walk(1, (290, 50), (290, 50)) + sized_walk(1, (318, 78), (320, 80), t0=9 * DT), []),
    # the same 28 px with the top edge 18 px along (a person nearing the camera, 50 -> 60 px, 0.32 s later): counts
    Case("a_box_moving_and_growing_counts",
         sized_walk(1, (290, 50), (290, 50)) + sized_walk(1, (318, 60), (320, 60), t0=9 * DT), [("door", 1, "in")]),
    # legs hidden behind a counter: the bottom edge rises 20 px, the top stays; no "out"
    Case("a_box_shrinking_at_its_bottom_edge_never_counts",
         sized_walk(1, (310, 80), (310, 80)) + sized_walk(1, (290, 60), (289, 60), t0=6 * DT), []),
    # off: the grown box counts (the rule is what stops it)
    Case("a_box_growing_at_its_bottom_edge_counts_with_the_rule_off",
         sized_walk(1, (290, 50), (290, 50)) + sized_walk(1, (318, 78), (320, 80), t0=9 * DT), [("door", 1, "in")],
         counting={"min_box_move_share": 0}),
    # within max_step_heights (0.2) the edges' moves are jitter: a 100 px person's 15 px step with a fixed top counts
    Case("short_steps_are_not_judged_by_their_edges",
         sized_walk(1, (290, 100), (294, 100), (309, 115), (312, 115)), [("door", 1, "in")]),
    # a new id 22 px (0.28 heights, within the radius) below where an 80 px person was lost, on a 102 px box whose
    # top edge is where the lost box's was (grown at its bottom edge): not the person walking on, so no crossing
    Case("reacquire_takes_no_box_grown_at_its_bottom_edge",
         sized_walk(1, (270, 80), (280, 80), (290, 80)) + sized_walk(2, (312, 102), (314, 102), t0=3 * DT), []),
    # two new ids where the person vanished: the nearer is a 40 px box (another object), the state goes to the
    # person-sized one
    Case("reacquire_takes_a_box_of_about_the_same_height",
         sized_walk(1, (270, 100), (280, 100), (290, 100))
         + [(3 * DT, {2: (320, 295, 40), 3: (320, 318, 100)}), (4 * DT, {2: (320, 295, 40), 3: (320, 328, 100)})],
         [("door", 3, "in")]),
]


@pytest.mark.parametrize("case", SIZED, ids=lambda c: c.id)
def test_line_counter_with_box_heights(case: Case):
    lc, events = run_sized(case.frames, case.counting)
    assert summary(events) == case.expected
    assert lc.counts()["door"] == {d: sum(1 for e in events if e.direction == d) for d in ("in", "out")}


def test_without_heights_every_step_is_a_step_and_the_radius_is_in_pixels():
    """Callers that give no box sizes keep the rules as they were (the snap above counts)."""
    plain = [(ts, {t: (x, y) for t, (x, y, _) in tr.items()}) for ts, tr in SIZED[1].frames]
    assert summary(run((DOOR,), plain)[1]) == [("door", 1, "in")]


@pytest.mark.parametrize("still, expected", [
    ({3: [1], 4: [1], 5: [1]}, []),  # stationary from the frame it left the people: a mannequin
    ({}, [("door", 2, "in")]),  # never stationary: an id switch
    ({0: [1]}, [("door", 2, "in")]),  # stationary once, then walked (frames 1-2) and was lost walking
])
def test_a_track_lost_while_stationary_hands_its_state_to_nobody(still, expected):
    """CAVIAR's shop door: a mannequin's track (40 px, above the line) becomes stationary, so it leaves the
    frame's people; a passer-by's new track starts 5 px from it and walks down. It is not the mannequin. A track
    seen stationary only before its last move (someone who stood, then walked) still hands its state on."""
    frames_ = sized_walk(1, (290, 40), (290, 40), (290, 40)) + [(3 * DT, {})] + sized_walk(
        2, (295, 40), (305, 40), (315, 40), t0=4 * DT)
    _, events = run_sized(frames_, still=still)
    assert summary(events) == expected


def test_heights_are_part_of_the_state_and_old_states_load():
    lc, _ = run_sized(sized_walk(1, (270, 100), (290, 100)))
    state = lc.state()
    assert state["tracks"]["1"][4] == 100
    resumed = LineCounter("cam", [DOOR], CountingConfig())
    resumed.load_state(state)
    # the snap is still seen after a restart: the height came with the state
    assert resumed.update(2, 2 * DT, [1], [(320, 330)], heights=[40]) == []
    old = {k: ({t: v[:4] for t, v in d.items()} if k in ("tracks", "lost") else d) for k, d in state.items()}
    before = LineCounter("cam", [DOOR], CountingConfig())
    before.load_state(old)  # a state saved before heights: the size is unknown, the step counts as before
    assert summary(before.update(2, 2 * DT, [1], [(320, 330)], heights=[40])) == [("door", 1, "in")]


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), float("inf")])
def test_heights_that_are_no_size_count_as_unknown(bad):
    """Zero, negative, NaN or infinite heights are "size unknown": the step counts as without heights."""
    lc = LineCounter("cam", [DOOR], CountingConfig())
    lc.update(0, 0, [1], [(320, 270)], heights=[100])
    assert summary(lc.update(1, DT, [1], [(320, 330)], heights=[bad])) == [("door", 1, "in")]
    assert lc.state()["tracks"]["1"][4] == 0.0  # stored as unknown (the state stays plain JSON)


def test_mismatched_heights_raise():
    with pytest.raises(ValueError, match="heights"):
        LineCounter("cam", [DOOR], CountingConfig()).update(0, 0, [1, 2], [(0, 0), (1, 1)], heights=[10])


@pytest.mark.parametrize("amplitude", [12, 20, 60])
def test_large_oscillation_alternates_for_long_runs(amplitude):
    ys = [300 + (amplitude if i % 2 else -amplitude) for i in range(51)]
    _, events = run((DOOR,), walk(1, *ys))
    dirs = [e.direction for e in events]
    assert len(dirs) == 50
    assert dirs == ["in", "out"] * 25


@pytest.mark.parametrize("amplitude", [0, 1, 3, 5.9])
def test_jitter_inside_band_never_counts(amplitude):
    rng = np.random.default_rng(7)
    ys = 300 + rng.uniform(-amplitude, amplitude, size=200)
    xs = 320 + rng.uniform(-15, 15, size=200)
    _, events = run((DOOR,), walk(1, *zip(xs, ys)))
    assert events == []


# ---------------------------------------------------------------------------------------------
# Events: ids, ordering, proto round trip, inputs
# ---------------------------------------------------------------------------------------------


def test_event_ids_deterministic_unique_and_well_formed():
    fr = frames(
        {1: (100, 250), 2: (500, 350), 3: (250, 100)},
        {1: (100, 350), 2: (500, 250), 3: (350, 100)},
        {1: (100, 250), 2: (500, 350), 3: (250, 100)},
    )
    _, ev1 = run((DOOR, VERTICAL), fr, camera_id="cam-7")
    _, ev2 = run((DOOR, VERTICAL), fr, camera_id="cam-7")
    assert [e.event_id for e in ev1] == [e.event_id for e in ev2]  # recomputation gives the same ids
    ids = [e.event_id for e in ev1]
    assert len(ids) == len(set(ids)) == 6
    for e in ev1:
        assert e.event_id == f"cam-7:{e.line_id}:{e.track_id}:{e.seq}" == crossing_event_id(
            e.camera_id, e.line_id, e.track_id, e.seq)
        assert e.camera_id == "cam-7"
    assert ids == [
        "cam-7:door:1:1", "cam-7:door:2:1", "cam-7:vert:3:1",
        "cam-7:door:1:2", "cam-7:door:2:2", "cam-7:vert:3:2",
    ]


def test_event_carries_frame_seq_and_ts():
    lc = LineCounter("cam", [DOOR], CountingConfig())
    assert lc.update(seq=41, ts_ms=1_000, track_ids=[5], anchors=[(320, 250)]) == []
    (e,) = lc.update(seq=42, ts_ms=1_040, track_ids=[5], anchors=[(320, 350)])
    assert (e.seq, e.ts_ms, e.track_id, e.direction) == (42, 1_040, 5, "in")


def test_counts_totals_match_events_over_many_tracks():
    rng = np.random.default_rng(0)
    lc = LineCounter("cam", [DOOR, VERTICAL], CountingConfig())
    pos = {tid: np.array([rng.uniform(0, 640), rng.uniform(0, 480)]) for tid in range(12)}
    events = []
    for seq in range(300):
        for tid in pos:
            pos[tid] = np.clip(pos[tid] + rng.normal(0, 15, size=2), 0, [640, 480])
        events += lc.update(seq, seq * DT, list(pos), np.stack(list(pos.values())))
    assert events, "the random walk should cross something"
    for line in ("door", "vert"):
        for d in ("in", "out"):
            assert lc.counts()[line][d] == sum(1 for e in events if e.line_id == line and e.direction == d)
    assert len({e.event_id for e in events}) == len(events)


def test_counts_start_at_zero_and_are_copies():
    lc = LineCounter("cam", [DOOR, VERTICAL], CountingConfig())
    c = lc.counts()
    assert c == {"door": {"in": 0, "out": 0}, "vert": {"in": 0, "out": 0}}
    c["door"]["in"] = 99
    assert lc.counts()["door"]["in"] == 0


def test_numpy_anchors_and_ids_accepted():
    lc = LineCounter("cam", [DOOR], CountingConfig())
    lc.update(0, 0, np.array([3, 4]), np.array([[100.0, 250.0], [200.0, 350.0]]))
    ev = lc.update(1, 40, np.array([3, 4]), np.array([[100.0, 350.0], [200.0, 250.0]]))
    assert summary(ev) == [("door", 3, "in"), ("door", 4, "out")]
    assert all(type(e.track_id) is int for e in ev)


def test_empty_frame_accepted():
    lc = LineCounter("cam", [DOOR], CountingConfig())
    assert lc.update(0, 0, [], np.empty((0, 2))) == []
    assert lc.update(1, 40, [], []) == []


def test_mismatched_ids_and_anchors_raise():
    lc = LineCounter("cam", [DOOR], CountingConfig())
    with pytest.raises(ValueError, match="2 track ids but 1 anchors"):
        lc.update(0, 0, [1, 2], [(0, 0)])


def test_no_lines_counts_nothing():
    lc = LineCounter("cam", [], CountingConfig())
    assert lc.update(0, 0, [1], [(320, 250)]) == []
    assert lc.update(1, 40, [1], [(320, 350)]) == []
    assert lc.counts() == {}


@pytest.mark.parametrize("direction", ["in", "out"])
def test_crossing_event_proto_round_trip(direction):
    e = CrossingEvent("cam:door:7:12", "cam", "door", 7, direction, 1_767_225_600_480, 12)
    msg = e.to_proto()
    assert msg.direction == (m.DIRECTION_IN if direction == "in" else m.DIRECTION_OUT)
    back = CrossingEvent.from_proto(m.decode(m.LineCrossing, m.encode(msg)))
    assert back == e


# ---------------------------------------------------------------------------------------------
# Occupancy and windows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "directions, value, total_in, total_out",
    [
        pytest.param([], 0, 0, 0, id="empty"),
        pytest.param(["in", "in", "out"], 1, 2, 1, id="ins_minus_outs"),
        pytest.param(["in", "out", "in", "out"], 0, 2, 2, id="balanced"),
        pytest.param(["out"], 0, 0, 1, id="out_first_clamped_at_zero"),
        pytest.param(["out", "out", "in"], 1, 1, 2, id="clamped_then_in"),
        pytest.param(["out", "in", "in"], 2, 2, 1, id="docstring_example"),
        pytest.param(["in"] * 5 + ["out"] * 8 + ["in"], 1, 6, 8, id="drain_below_zero_then_in"),
    ],
)
def test_occupancy(directions, value, total_in, total_out):
    occ = Occupancy()
    seen = [occ.apply(d) for d in directions]
    assert (occ.value, occ.total_in, occ.total_out) == (value, total_in, total_out)
    assert all(v >= 0 for v in seen)
    assert occupancy_from_events(directions) == value


@pytest.mark.parametrize(
    "ts_ms, window_s, start",
    [
        pytest.param(0, 60, 0, id="zero"),
        pytest.param(59_999, 60, 0, id="last_ms_of_first_window"),
        pytest.param(60_000, 60, 60_000, id="window_boundary_belongs_to_next"),
        pytest.param(61_234, 60, 60_000, id="inside_second_window"),
        pytest.param(1_767_225_600_000, 60, 1_767_225_600_000, id="epoch_aligned_minute"),
        pytest.param(1_767_225_659_999, 60, 1_767_225_600_000, id="epoch_end_of_minute"),
        pytest.param(1_767_225_601_500, 1, 1_767_225_601_000, id="one_second_window"),
        pytest.param(1_767_226_499_000, 900, 1_767_225_600_000, id="fifteen_minutes"),
    ],
)
def test_window_start_ms(ts_ms, window_s, start):
    got = window_start_ms(ts_ms, window_s)
    assert got == start
    assert got % (window_s * 1000) == 0
    assert got <= ts_ms < got + window_s * 1000


# ---------------------------------------------------------------------------------------------
# Doctests of the library modules
# ---------------------------------------------------------------------------------------------

DOCTEST_MODULES = [
    "storelens.domain.counting",
    "storelens.domain.geometry",
    "storelens.domain.zones",
    "storelens.runtime.bus",
    "storelens.contract.messages",
    "storelens.config.site",
    "storelens.config.base",
    "storelens.backends.registry",
    "storelens.stages.registry",
    "storelens.runtime.policy",
    "storelens.contract.topics",
    "storelens.domain.framerate",
    "storelens.backends.detectors.openvino_yolo",
    "storelens.backends.openvino_device",
    "storelens.backends.trackers.base",
    "storelens.backends.trackers.bytereid",
    "storelens.backends.appearance.omz_reid_openvino",
    "storelens.config.cameras",
    "storelens.config.redact",
    "storelens.api.security",
]


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0, f"{module} has no doctest examples"
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module} (see captured stdout)"
