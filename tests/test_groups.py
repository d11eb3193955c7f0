"""Buying units (issue 11 item 4): the group rule as a table, the analyzer in the analytics stage, storage.

Every clause of the rule in :mod:`storelens.domain.groups` is a row: frames of people
(``{track_id: (anchor_x, anchor_y, box_height)}``) with the crossings counted in each frame,
fed to a fresh :class:`GroupCounter`; expected, the groups in the order they close, as
``(line_id, direction, track_ids)``. Rule parameters of the table: window 1000 ms, together
in >= 3 of the last 10 frames, gap <= 1 mean box height, heights within 1.4x; 40 ms a frame.
"""
from __future__ import annotations

import doctest
import importlib
import json
from dataclasses import dataclass, field

import pytest

from storelens.config import parse_config
from storelens.config.groups import GroupsConfig
from storelens.contract import messages as m
from storelens.domain.groups import Crossing, Group, GroupCounter, compare_groups, together
from storelens.stages.analytics import derive
from storelens.stages.groups import groups_from_records

DT = 40
CFG = GroupsConfig(window_ms=1000, together_frames=3, history_frames=10)

Person = tuple[float, float, float]


@dataclass(frozen=True)
class Frame:
    people: dict[int, Person]
    #: (track_id, line_id, direction) counted in this frame.
    crossings: tuple[tuple[int, str, str], ...] = ()


def walking(n: int, people: dict[int, Person], step: tuple[float, float] = (0, 5)) -> list[Frame]:
    """``n`` frames of ``people`` moving together by ``step`` a frame."""
    return [Frame({t: (x + i * step[0], y + i * step[1], h) for t, (x, y, h) in people.items()}) for i in range(n)]


def cross(frame: Frame, *crossings: tuple[int, str, str]) -> Frame:
    return Frame(frame.people, tuple(crossings))


def idle(n: int) -> list[Frame]:
    return [Frame({}) for _ in range(n)]


PAIR = {1: (100, 200, 100), 2: (170, 200, 100)}  # side by side, 70 px apart, same height


@dataclass(frozen=True)
class Case:
    id: str
    frames: list[Frame]
    expected: list[tuple[str, str, tuple[int, ...]]]
    cfg: GroupsConfig = CFG
    #: Expected only after the source ended (``end()``); ``expected`` is what closed before.
    at_end: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)


def _pair_walk(n_before: int, gap_frames: int = 0, people: dict[int, Person] = PAIR,
               dirs: tuple[str, str] = ("in", "in"), lines: tuple[str, str] = ("door", "door")) -> list[Frame]:
    fs = walking(n_before + gap_frames + 1, people)
    a, b = sorted(people)
    fs[n_before] = cross(fs[n_before], (a, lines[0], dirs[0]))
    last = n_before + gap_frames
    fs[last] = cross(fs[last], *(fs[last].crossings + ((b, lines[1], dirs[1]),)))
    return fs + idle(30)


CASES = [
    Case("pair_crossing_together_is_one_unit", _pair_walk(5), [("door", "in", (1, 2))]),
    Case("pair_crossing_half_a_second_apart_is_one_unit", _pair_walk(5, gap_frames=12), [("door", "in", (1, 2))]),
    Case("second_crossing_after_the_window_is_another_unit", _pair_walk(5, gap_frames=30),
         [("door", "in", (1,)), ("door", "in", (2,))]),
    Case("opposite_directions_never_group", _pair_walk(5, dirs=("in", "out")),
         [("door", "in", (1,)), ("door", "out", (2,))]),
    Case("different_lines_never_group", _pair_walk(5, lines=("door", "side")),
         [("door", "in", (1,)), ("side", "in", (2,))]),
    Case("together_too_briefly_before_is_two_units", _pair_walk(1),  # 2 frames together < 3
         [("door", "in", (1,)), ("door", "in", (2,))]),
    Case("exactly_n_frames_together_is_enough", _pair_walk(2), [("door", "in", (1, 2))]),
    Case("far_apart_is_two_units", _pair_walk(5, people={1: (100, 200, 100), 2: (260, 200, 100)}),
         [("door", "in", (1,)), ("door", "in", (2,))]),
    Case("gap_at_the_limit_is_together", _pair_walk(5, people={1: (100, 200, 100), 2: (200, 200, 100)}),
         [("door", "in", (1, 2))]),
    Case("overlapping_in_the_picture_but_at_another_depth_is_two_units",
         _pair_walk(5, people={1: (100, 200, 160), 2: (120, 190, 100)}),
         [("door", "in", (1,)), ("door", "in", (2,))]),
    Case("history_only_counts_the_last_frames",  # together long ago, apart for the last 10 frames
         [Frame({1: (100, 200, 100), 2: (150, 200, 100)})] * 5 + [Frame({1: (100, 200, 100), 2: (400, 200, 100)})] * 9
         + [Frame({1: (100, 200, 100), 2: (400, 200, 100)}, ((1, "door", "in"), (2, "door", "in")))] + idle(30),
         [("door", "in", (1,)), ("door", "in", (2,))]),
    Case("transitive_chain_is_one_unit",  # 1-2 and 2-3 together, 1-3 never (180 px apart)
         walking(4, {1: (100, 200, 100), 2: (190, 200, 100), 3: (280, 200, 100)})
         + [Frame({1: (100, 220, 100), 2: (190, 220, 100), 3: (280, 220, 100)},
                  ((1, "door", "in"), (3, "door", "in")))]
         + [Frame({2: (190, 225, 100)}, ((2, "door", "in"),))] + idle(30),
         [("door", "in", (1, 3, 2))]),  # members in crossing order
    Case("lone_person_is_a_unit_of_one", [cross(f, (1, "door", "in")) if i == 3 else f
                                          for i, f in enumerate(walking(4, {1: (100, 200, 100)}))] + idle(30),
         [("door", "in", (1,))]),
    Case("unit_stays_open_until_the_window_passed",  # 25 frames = 1000 ms after the crossing: not yet closed
         _pair_walk(5)[:6 + 25], [], at_end=[("door", "in", (1, 2))]),
    Case("zero_window_only_links_crossings_of_one_frame", _pair_walk(5, gap_frames=1),
         [("door", "in", (1,)), ("door", "in", (2,))], cfg=GroupsConfig(window_ms=0, together_frames=3,
                                                                        history_frames=10)),
]


def run(frames: list[Frame], cfg: GroupsConfig, split_at: int | None = None) -> tuple[list[Group], list[Group]]:
    gc = GroupCounter("cam", cfg)
    closed: list[Group] = []
    for seq, f in enumerate(frames):
        if split_at is not None and seq == split_at:  # snapshot and restore mid-way
            state = json.loads(json.dumps(gc.state()))
            gc = GroupCounter("cam", cfg)
            gc.load_state(state)
        ids = list(f.people)
        crossings = [Crossing(f"cam:{ln}:{t}:{seq}", ln, t, d, seq * DT, seq) for t, ln, d in f.crossings]
        closed += gc.update(seq, seq * DT, ids, [f.people[t][:2] for t in ids], [f.people[t][2] for t in ids],
                            crossings)
    return closed, gc.end()


def summary(groups: list[Group]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(g.line_id, g.direction, g.track_ids) for g in groups]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_group_rule(case: Case) -> None:
    closed, at_end = run(case.frames, case.cfg)
    assert summary(closed) == case.expected
    assert summary(at_end) == case.at_end


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_round_trip_mid_sequence_changes_nothing(case: Case) -> None:
    assert run(case.frames, case.cfg, split_at=len(case.frames) // 2) == run(case.frames, case.cfg)


def test_group_ids_and_times_are_the_first_members() -> None:
    closed, _ = run(_pair_walk(5, gap_frames=12), CFG)
    (g,) = closed
    assert (g.event_id, g.ts_ms, g.seq, g.last_ts_ms, g.size) == ("cam:door:group:1:5", 5 * DT, 5, 17 * DT, 2)


@pytest.mark.parametrize("bad,msg", [
    ({"history_frames": 5, "together_frames": 8}, "history_frames"),
    ({"window_ms": -1}, "window_ms"),
    ({"max_gap_heights": 0}, "max_gap_heights"),
    ({"max_height_ratio": 0.5}, "max_height_ratio"),
    ({"window": 1000}, "window"),
])
def test_bad_config_is_a_clear_error(bad: dict, msg: str) -> None:
    from storelens.errors import ConfigError

    with pytest.raises(ConfigError, match=msg):
        parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}], "groups": bad})


def test_mismatched_inputs_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="must match"):
        GroupCounter("cam", CFG).update(0, 0, [1, 2], [(0, 0)], [100, 100], [])


def test_together_is_symmetric() -> None:
    a, b = (100, 300, 100), (170, 320, 120)
    assert together(a, b, CFG) == together(b, a, CFG) is True


# -- the analyzer in the analytics stage ---------------------------------------------------------

SITE = {"store": {"id": "s"}, "cameras": [{"id": "cam", "source": "x.mp4",
                                            "lines": [{"id": "door", "a": [0, 300], "b": [640, 300]}]}],
        "groups": {"together_frames": 3, "history_frames": 10, "window_ms": 1000}}


def tracked(people_per_frame: list[dict[int, tuple[float, float]]], h: float = 100) -> list[m.TrackedFrame]:
    out = [m.TrackedFrame(camera_id="cam", seq=i, ts_ms=i * DT, width=640, height=480, tracks=[
        m.Track(track_id=t, bbox_xyxy=m.BoxXYXY(x1=x - 20, y1=y - h, x2=x + 20, y2=y)) for t, (x, y) in p.items()])
        for i, p in enumerate(people_per_frame)]
    return out + [m.TrackedFrame(camera_id="cam", seq=len(out), ts_ms=len(out) * DT, end_of_stream=True)]


def test_analytics_stage_emits_one_group_per_unit() -> None:
    # a couple walks down through the door line side by side; later someone alone
    couple = [{1: (100, 250 + 10 * i), 2: (170, 250 + 10 * i)} for i in range(12)]
    alone = [{3: (400, 250 + 10 * i)} for i in range(12)]
    records = derive(parse_config(SITE), tracked(couple + [{}] * 40 + alone))
    groups = [r for r in records if isinstance(r, m.GroupCrossing)]
    assert [(g.line_id, m.direction_name(g.direction), list(g.track_ids)) for g in groups] == [
        ("door", "in", [1, 2]), ("door", "in", [3])]
    assert [(g.size, g.track_ids) for g in groups_from_records(records)] == [(2, (1, 2)), (1, (3,))]


def test_disabled_or_lineless_cameras_have_no_group_analyzer() -> None:
    from storelens.stages.analytics import AnalyticsStage

    off = parse_config({**SITE, "groups": {"enabled": False}})
    assert "groups" not in AnalyticsStage(off).analyzers["cam"]
    no_lines = parse_config({**SITE, "cameras": [{"id": "cam", "source": "x.mp4"}]})
    assert "groups" not in AnalyticsStage(no_lines).analyzers["cam"]
    assert "groups" in AnalyticsStage(parse_config(SITE)).analyzers["cam"]


def test_stage_snapshot_mid_group_gives_the_same_groups() -> None:
    from storelens.contract import topics
    from storelens.stages.analytics import AnalyticsStage

    frames = tracked([{1: (100, 250 + 10 * i), 2: (170, 252 + 10 * i)} for i in range(12)] + [{}] * 40)
    cfg = parse_config(SITE)
    whole = [r for r in derive(cfg, frames) if isinstance(r, m.GroupCrossing)]
    a = AnalyticsStage(cfg)
    out = []
    for tf in frames[:7]:
        out += a.handle(topics.TRACKS, tf).records
    b = AnalyticsStage(cfg)
    b.load_camera_state("cam", json.loads(json.dumps(a.camera_state("cam"))))
    for tf in frames[7:]:
        out += b.handle(topics.TRACKS, tf).records
    assert [r for r in out if isinstance(r, m.GroupCrossing)] == whole and len(whole) == 1


def test_compare_groups_scores_pairs_and_whole_groups() -> None:
    c = lambda t, ts: Crossing(f"e{t}", "door", t, "in", ts, ts // DT)  # noqa: E731
    expected = [Group("c", "door", "in", (c(1, 0), c(2, 200))), Group("c", "door", "in", (c(3, 4000), c(4, 4100))),
                Group("c", "door", "in", (c(5, 9000),))]
    predicted = [Group("c", "door", "in", (c(11, 40), c(12, 240))),   # exact
                 Group("c", "door", "in", (c(13, 4000),)), Group("c", "door", "in", (c(14, 4100),)),  # split
                 Group("c", "door", "in", (c(15, 9000), c(16, 9100)))]  # a false pair (16 matches nothing)
    s = compare_groups(expected, predicted)
    assert (s.crossings_matched, s.units_expected, s.units_predicted) == (5, 3, 4)
    assert (s.pairs_expected, s.pairs_predicted, s.pairs_correct) == (2, 2, 1)
    assert (s.groups_expected, s.groups_predicted, s.groups_correct) == (2, 2, 1)
    assert (s.pair_precision, s.pair_recall, s.group_precision, s.group_recall) == (0.5, 0.5, 0.5, 0.5)


@pytest.mark.parametrize("module", ["storelens.domain.groups", "storelens.stages.groups", "storelens.config.groups"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
