"""Heatmap review fixes: slowly sampled cameras count in full; a state saved under another cell size.

* A frame counts for the time to the next one, capped at ``max_gap_ms`` -- or twice the camera's
  frame interval (``1000 / target_fps``) when longer: a person standing 60 s before a 0.5 fps camera
  is 60 000 ms, as before a 5 fps one (the floor plan adds cameras of different rates up).
* ``heatmap.cell_px`` changed across a restart: the saved minutes and hour in progress (cells of the
  old grid) are dropped with a warning, not mixed into the new grid's rows; a state saved before
  ``cell_px`` was recorded loads as of the current size.
"""
from __future__ import annotations

import json
import logging
import pathlib

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import heatmaps as hm

T0 = 1_767_225_600_000  # a minute and hour boundary
BOX = (100.0, 50.0, 140.0, 150.0)  # anchor (120, 150): cell (7, 9) at 16 px, (3, 4) at 32 px


def site(cameras: list[dict], cell_px: int = 16):
    return parse_config({"store": {"id": "s"}, "cameras": cameras, "heatmap": {"cell_px": cell_px}})


def frame(cam: str, seq: int, t: int) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id=cam, seq=seq, ts_ms=t, width=640, height=480, tracks=[
        m.Track(track_id=7, bbox_xyxy=m.BoxXYXY(x1=BOX[0], y1=BOX[1], x2=BOX[2], y2=BOX[3]))])


def eos(cam: str, t: int) -> m.TrackedFrame:
    return m.TrackedFrame(camera_id=cam, seq=10**6, ts_ms=t, end_of_stream=True)


def windows(records) -> list[m.HeatmapWindow]:
    return [r for r in records if isinstance(r, m.HeatmapWindow)]


def feed(stage: AnalyticsStage, cam: str, times: list[int], first_seq: int = 0) -> list[m.HeatmapWindow]:
    return [w for i, t in enumerate(times, first_seq)
            for w in windows(stage.handle("tracks", frame(cam, i, t)).records)]


def minute_total(ws: list[m.HeatmapWindow]) -> int:
    return sum(c.occupancy_ms for w in ws if w.window_end_ms - w.window_start_ms == 60_000 for c in w.cells)


# -- 1. slowly sampled cameras -------------------------------------------------------------


def test_a_half_fps_camera_counts_a_minute_of_standing_in_full() -> None:
    config = site([{"id": "slow", "source": "/tmp/a.mp4", "target_fps": 0.5},
                   {"id": "fast", "source": "/tmp/b.mp4", "target_fps": 5}])
    stage = AnalyticsStage(config)
    got = {}
    for cam, step in (("slow", 2_000), ("fast", 200)):
        ws = feed(stage, cam, list(range(T0, T0 + 60_000, step)))
        ws += windows(stage.handle("tracks", eos(cam, T0 + 60_000)).records)
        got[cam] = minute_total(ws)
    # before the fix the slow camera's frames were cut to max_gap_ms (1 000 ms): 30 000 ms
    assert got == {"slow": 60_000, "fast": 60_000}


def test_a_gap_of_a_slow_camera_is_still_no_presence() -> None:
    # 0.5 fps: a frame counts for up to 4 000 ms (twice its interval); a 20 s stall is not 20 s of presence
    stage = AnalyticsStage(site([{"id": "slow", "source": "/tmp/a.mp4", "target_fps": 0.5}]))
    ws = feed(stage, "slow", [T0, T0 + 2_000, T0 + 22_000])
    ws += windows(stage.handle("tracks", eos("slow", T0 + 24_000)).records)
    assert minute_total(ws) == 2_000 + 4_000 + 4_000  # the last frame: the interval before it, capped
    # every frame of the source (no target_fps): max_gap_ms alone, as before
    stage = AnalyticsStage(site([{"id": "all", "source": "/tmp/a.mp4"}]))
    ws = feed(stage, "all", [T0, T0 + 2_000, T0 + 4_000])
    ws += windows(stage.handle("tracks", eos("all", T0 + 6_000)).records)
    assert minute_total(ws) == 3 * 1_000


# -- 2. a state saved under another cell size -----------------------------------------------------


def run_with_restart(cell_before: int, cell_after: int, tmp_path: pathlib.Path, drop_cell_px: bool = False):
    """Frames every 500 ms for 2 minutes, a restart at 45 s (state through JSON, as the changelog keeps it)."""
    cams = [{"id": "cam-1", "source": "/tmp/x.mp4"}]
    times = list(range(T0, T0 + 120_000, 500))
    half = times.index(T0 + 45_000)
    a = AnalyticsStage(site(cams, cell_before))
    before = feed(a, "cam-1", times[:half])
    state = json.loads(json.dumps(a.camera_state("cam-1")))
    if drop_cell_px:  # as saved by the code before cell_px was recorded
        assert state["analyzers"]["heatmap"].pop("cell_px", cell_before) == cell_before
    b = AnalyticsStage(site(cams, cell_after))
    b.load_camera_state("cam-1", state)
    after = feed(b, "cam-1", times[half:], half)
    after += windows(b.handle("tracks", eos("cam-1", times[-1] + 500)).records)
    store = SqlStorage(str(tmp_path / "h.db"))
    store.write_records(before + after)
    return before, after, store


def test_a_changed_cell_size_drops_the_old_grids_minutes_and_hour(tmp_path: pathlib.Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="storelens.stages.heatmap"):
        before, after, store = run_with_restart(16, 32, tmp_path)
    assert before == []  # nothing closed before the restart at 45 s
    assert {w.cell_px for w in after} == {32}
    # every window after the restart is of the new grid only: the old (7, 9) cells are not carried over
    assert {(c.gx, c.gy) for w in after for c in w.cells} == {(3, 4)}
    assert any("cell_px 16, now 32" in r.getMessage() for r in caplog.records)
    by_span = {(w.window_start_ms, w.window_end_ms): sum(c.occupancy_ms for c in w.cells) for w in after}
    assert by_span[(T0, T0 + 60_000)] == 15_000  # 45 s .. 60 s: the new grid's part of the first minute
    assert by_span[(T0 + 60_000, T0 + 120_000)] == 60_000
    assert by_span[(T0, T0 + 3_600_000)] == 75_000  # the hour row is the sum of the new grid's minutes
    got = hm.heatmap(store, "cam-1", T0, T0 + 3_600_000, cell_px=32)
    assert got is not None and got.cells == [(3, 4, 75_000, got.cells[0][3])]
    store.close()


def test_a_state_without_cell_px_loads_as_of_the_current_size(tmp_path: pathlib.Path) -> None:
    before, after, store = run_with_restart(16, 16, tmp_path, drop_cell_px=True)
    by_span = {(w.window_start_ms, w.window_end_ms): sum(c.occupancy_ms for c in w.cells) for w in after}
    # the minute and hour in progress go on: nothing is lost across the upgrade
    assert by_span[(T0, T0 + 60_000)] == 60_000
    assert by_span[(T0, T0 + 3_600_000)] == 120_000
    assert {(c.gx, c.gy) for w in after for c in w.cells} == {(7, 9)}
    store.close()
