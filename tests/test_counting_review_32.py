"""Line counting review 32: the tracker's re-find window and a dead zone in box heights.

* A person hidden at the door and re-found by the tracker under the *same* id keeps their side of the line for
  the tracker's own re-find window (``counting.refind_window_ms``, following ``tracker.track_buffer`` /
  ``tracker.fps``), so the crossing counts. Before, the side was dropped after ``reacquire_window_ms`` (2 s) and
  a 2.1 s or 2.4 s hiding counted nothing. Handing a lost track to a *new* id keeps the 2 s window.
* The dead zone around a line is ``hysteresis_px`` or ``counting.hysteresis_heights`` of the box height, the
  larger: someone standing on the line of a 1080p camera (a 400 px box whose feet wobble +-8 px) counted
  dozens of ins and outs before. A track's first side still needs only ``hysteresis_px``.

Everything runs through the real analytics stage built from a parsed site file.
"""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from storelens.config import CountingConfig, LineConfig, parse_config
from storelens.config.site import site_document
from storelens.contract import messages as m
from storelens.domain.counting import LineCounter
from storelens.stages.analytics import AnalyticsStage

T0 = 1_767_225_600_000
DOOR = {"id": "door", "a": [0, 300], "b": [640, 300]}  # walking down the image is "in"


def site(lines: list[dict], **sections) -> dict:
    return {"store": {"id": "s"}, "faces": {"enabled": False},
            "cameras": [{"id": "c", "source": "x.mp4", "lines": lines}], **sections}


def person(tid: int, foot: tuple[float, float], height: float) -> m.Track:
    x, y = foot
    return m.Track(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=x - height / 4, y1=y - height, x2=x + height / 4, y2=y))


def directions(cfg, frames: list[tuple[int, list[m.Track]]], size: tuple[int, int] = (640, 480)) -> list[str]:
    """The crossings' directions the analytics stage derives from ``(ts offset ms, tracks)`` frames."""
    stage, out = AnalyticsStage(cfg), []
    for seq, (dt_ms, tracks) in enumerate(frames):
        tf = m.TrackedFrame(camera_id="c", seq=seq, ts_ms=T0 + dt_ms, width=size[0], height=size[1], tracks=tracks)
        out += [e.direction for e in stage.process(tf).crossings]
    return out


def hidden_at_the_door(hidden_ms: int, step_ms: int, new_id: int | None = None) -> list[tuple[int, list[m.Track]]]:
    """Id 7 (a 180 px box) walks down to just before the door line (y 300), is hidden ``hidden_ms`` (empty
    frames every ``step_ms``) and is seen again 40 px further on, beyond the line, under id 7 (or ``new_id``)."""
    frames, t = [], 0
    for y in (200, 220, 240, 260, 280, 290):
        frames.append((t, [person(7, (320, y), 180)]))
        t += step_ms
    last = t - step_ms
    frames += [(u, []) for u in range(last + step_ms, last + hidden_ms, step_ms)]
    back = new_id if new_id is not None else 7
    for i, y in enumerate((330, 350, 370)):
        frames.append((last + hidden_ms + i * step_ms, [person(back, (320, y), 180)]))
    return frames


# -- 1: a same-id return within the tracker's re-find window -------------------------------------------------

@pytest.mark.parametrize("sections, hidden_ms, step_ms, expected", [
    ({}, 1900, 40, ["in"]),
    ({}, 2100, 40, ["in"]),  # before: [] (the side was dropped after 2 s)
    ({}, 2400, 40, ["in"]),  # the default tracker's window (track_buffer 60 at 25 fps): before, []
    ({"tracker": {"track_buffer": 60, "fps": 5}}, 11_000, 200, ["in"]),  # a 12 s window: before, []
    ({}, 3000, 40, []),  # past the tracker's window (it would give a new id): the side is forgotten
    ({"counting": {"refind_window_ms": 2000}}, 2100, 40, []),  # a value set in the file wins
], ids=["1.9s", "2.1s", "2.4s", "11s-at-a-12s-window", "3s-past-the-window", "set-2s"])
def test_a_person_refound_under_the_same_id_keeps_the_crossing(sections, hidden_ms, step_ms, expected):
    cfg = parse_config(site([DOOR], **sections))
    assert directions(cfg, hidden_at_the_door(hidden_ms, step_ms)) == expected


@pytest.mark.parametrize("hidden_ms, expected", [
    (1500, ["in"]),  # an id switch within reacquire_window_ms: the new id continues the lost track
    (2100, []),  # later, a new id never takes a lost track's side, even within the tracker's window
])
def test_a_new_id_takes_a_lost_track_only_within_reacquire_window_ms(hidden_ms, expected):
    cfg = parse_config(site([DOOR], tracker={"track_buffer": 60, "fps": 5}))  # a 12 s re-find window
    assert cfg.counting.refind_window_ms == 12_000 and cfg.counting.reacquire_window_ms == 2000
    assert directions(cfg, hidden_at_the_door(hidden_ms, 200, new_id=8)) == expected


@pytest.mark.parametrize("sections, window_ms, in_document", [
    ({}, 2400, False),
    ({"tracker": {"track_buffer": 60, "fps": 5}}, 12_000, False),
    ({"tracker": {"track_buffer": 30}}, 1200, False),  # shorter than reacquire_window_ms: 2 s are kept anyway
    ({"tracker": {"backend": "deepsort"}}, 2400, False),
    ({"tracker": {"track_buffer": 60, "fps": 5}, "counting": {"refind_window_ms": 5000}}, 5000, True),
], ids=["default", "5fps", "short-buffer", "deepsort", "set"])
def test_refind_window_follows_the_tracker_unless_set(sections, window_ms, in_document):
    cfg = parse_config(site([], **sections))
    assert cfg.counting.refind_window_ms == window_ms
    # derived, not written: a document of the site validated again (another tracker) derives it again
    assert ("refind_window_ms" in site_document(cfg).get("counting", {})) is in_document


# -- 2: the dead zone around a line grows with the box ----------------------------------------------------

HD_LINE = {"id": "door", "a": [0, 600], "b": [1920, 600]}


def standing_on_the_line(height: float, wobble_px: float, seconds: int = 20, fps: int = 10):
    """A person standing on the line of a 1080p camera, the foot point wobbling +-``wobble_px``."""
    return [(i * 1000 // fps, [person(1, (900 + (i % 3), 600 + (wobble_px if i % 2 else -wobble_px)), height)])
            for i in range(seconds * fps)]


@pytest.mark.parametrize("counting, height, wobble_px, expected", [
    ({}, 400, 8, (0, 0)),  # before: 100 ins and 99 outs in 20 s
    ({}, 400, 15, (0, 0)),
    ({"hysteresis_heights": 0}, 400, 8, (100, 99)),  # 0: the fixed hysteresis_px only (the old rule)
    ({}, 100, 4, (0, 0)),  # a small box: hysteresis_px (6) holds
])
def test_someone_standing_on_the_line_never_counts(counting, height, wobble_px, expected):
    cfg = parse_config(site([HD_LINE], counting=counting))
    got = directions(cfg, standing_on_the_line(height, wobble_px), size=(1920, 1080))
    assert (got.count("in"), got.count("out")) == expected


@pytest.mark.parametrize("height, last_y, expected", [
    (400, 640, ["in"]),  # 40 px beyond the line, 0.1 box heights: a crossing
    (400, 615, []),  # 15 px beyond: within 0.05 x 400 = 20 px, not yet
    (100, 607, ["in"]),  # a small box: hysteresis_px (6) is the dead zone
])
def test_walking_through_counts_once_past_the_dead_zone(height, last_y, expected):
    cfg = parse_config(site([HD_LINE]))
    ys = [520, 545, 570, 595, last_y] if height == 400 else [580, 590, 600, last_y]
    frames = [(i * 100, [person(1, (900, y), height)]) for i, y in enumerate(ys)]
    assert directions(cfg, frames, size=(1920, 1080)) == expected


@pytest.mark.parametrize("first_dy, expected", [
    (-7, ["in"]),  # first seen 7 px before the line (under 0.05 box heights): its side is known, it crosses
    (-3, []),  # first seen within hysteresis_px: no side yet, so walking on is no crossing (as before)
])
def test_the_first_side_is_taken_past_hysteresis_px(first_dy, expected):
    """As on TUD's first frames: a person first seen just off the line (a 246 px box 6.5 px before it), who then
    walks across it, still counts; only a change of side needs the box-height dead zone."""
    cfg = parse_config(site([HD_LINE]))
    frames = [(i * 100, [person(1, (900, 600 + first_dy + 15 * i), 400)]) for i in range(5)]
    assert directions(cfg, frames, size=(1920, 1080)) == expected


def test_without_box_heights_the_dead_zone_is_hysteresis_px():
    lc = LineCounter("c", [LineConfig(id="door", a=(0, 300), b=(640, 300))], CountingConfig())
    assert lc.update(0, 0, [1], [(320, 280)]) == []
    assert [e.direction for e in lc.update(1, 100, [1], [(320, 307)])] == ["in"]


def test_a_negative_hysteresis_heights_is_refused_by_name():
    with pytest.raises(ValidationError, match="hysteresis_heights"):
        CountingConfig(hysteresis_heights=-0.1)
