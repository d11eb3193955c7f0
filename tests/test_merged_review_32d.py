"""Fixes of a read-only review of the merged embedded resume of the day's counts (each test fails on the code before):

1. ``store.occupancy_reset: null`` (never): the embedded start took every stored crossing (back to the retention's
   start) into the lines' counts, while each camera's ins and outs came from its row (counted since the start of the
   process that wrote it): the store's ins and outs (sums of the lines') jumped to months of history and no longer
   matched the cameras'. Nothing is taken then (the counts start at 0, as before the resume), and it is logged;
2. the resume covered the counters, not the count windows: the first crossing after a restart mid-window wrote the
   window's row (an upsert) with the post-restart crossings only, and the ones before vanished from
   ``count_windows``. The windows still open (the current one, the one before) now go on from their stored rows.

Real stages, runner, SQLite history; frames are real ``TrackedFrame`` messages.
"""
from __future__ import annotations

import logging
import time

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import window_start_ms
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from test_alerts import IN, OUT, walk
from test_occupancy_review_32 import people, run, site

LIVE = ("rtsp://cam/a", "rtsp://cam/b")
DAY_MS = 86_400_000


# -- 1. store.occupancy_reset null: the counts are not taken from every stored crossing ------------------------------

def test_a_reset_never_takes_no_counts_from_months_of_crossings(tmp_path, caplog) -> None:
    doc = site(LIVE)
    doc["store"]["occupancy_reset"] = None
    cfg = parse_config(doc)
    now = int(time.time() * 1000)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        # last month: 5 came in by a, 2 left by b (a process long gone)
        run(AnalyticsStage(cfg), st, people([("a", t, IN) for t in range(1, 6)] + [("b", 9, OUT), ("b", 8, OUT)],
                                            0, now - 30 * DAY_MS))
        # today: the process before this one counted 3 in by a since it started (its rows)
        st.write_occupancy(m.OccupancyUpdate(camera_id="a", ts_ms=now - 60_000, occupancy=3, total_in=3,
                                             total_out=0))
        st.write_occupancy(m.OccupancyUpdate(camera_id="b", ts_ms=now - 60_000, occupancy=0, total_in=0,
                                             total_out=0))
        pipe = EmbeddedPipeline(cfg, storage=st)
        with caplog.at_level(logging.INFO, logger="storelens.runtime.embedded"):
            pipe._resume_counts()
        stage = pipe.analytics
        cams_in = sum(o.total_in for o in stage.occupancy.values())
        cams_out = sum(o.total_out for o in stage.occupancy.values())
        totals = stage.store_totals(now)
        # the store's ins and outs are the cameras' (was 5 in and 2 out of last month, the cameras 3 and 0)
        assert (totals.total_in, totals.total_out) == (cams_in, cams_out) == (0, 0)
        assert all(c == {"in": 0, "out": 0} for c in stage.line_counts("a").values())
        assert not pipe.result.errors
        assert any("occupancy_reset is null" in r.getMessage() for r in caplog.records)
        # the stage's own guard: nothing taken with a reset that never comes
        row = m.OccupancyUpdate(camera_id="a", ts_ms=now - 60_000, occupancy=3, total_in=3, total_out=0)
        assert AnalyticsStage(cfg).resume_counts({"a": row}, {"a": {"door": {"in": 5, "out": 0}}}, now) == []


# -- 2. the count windows still open go on from their stored rows ----------------------------------------------------

WIN_S = 3600


@pytest.mark.parametrize("sources, offset_ms, expected_in", [
    (LIVE, 1000, 6),  # the current window: 5 before the restart + 1 (was 1)
    (LIVE, -WIN_S * 1000 + 1000, 6),  # the one before, still open for late crossings: 5 + 1 (was 1)
    (("a.mp4", "b.mp4"), 1000, 1),  # a file is read again from its start: its windows are re-derived, not added to
], ids=["current", "previous", "file"])
def test_an_embedded_restart_mid_window_keeps_the_windows_counts(history_store, sources, offset_ms,
                                                                  expected_in) -> None:
    """SQLite and PostgreSQL (``history_store``): the stored windows are read through ``count_window_rows``."""
    doc = site(sources)
    doc["counting"] = {"window_s": WIN_S}
    cfg = parse_config(doc)
    now = int(time.time() * 1000)
    w = window_start_ms(now, WIN_S) + (0 if offset_ms > 0 else -WIN_S * 1000)
    st = history_store
    # what the process before wrote: 5 in and 2 out through a's door in window w
    st.write_count_window(m.CountWindow(camera_id="a", line_id="door", window_start_ms=w,
                                        window_end_ms=w + WIN_S * 1000, count_in=5, count_out=2))
    pipe = EmbeddedPipeline(cfg, storage=st)
    pipe._resume_counts()
    ts0 = window_start_ms(now, WIN_S) + offset_ms
    run(pipe.analytics, st, walk("a", 1, IN, 0, ts0))
    got = [(x.window_start_ms, x.count_in, x.count_out) for x in st.count_window_rows("a", w - WIN_S * 1000)]
    assert got == [(w, expected_in, 2 if expected_in == 6 else 0)]
    assert not pipe.result.errors


def test_closed_windows_and_other_lengths_are_not_taken() -> None:
    """Only the windows still open at the start, of the window length in force, of a live camera without frames."""
    doc = site(LIVE)
    doc["counting"] = {"window_s": WIN_S}
    cfg = parse_config(doc)
    now = int(time.time() * 1000)
    cur = window_start_ms(now, WIN_S)

    def win(cam: str, start: int, length_s: int = WIN_S) -> m.CountWindow:
        return m.CountWindow(camera_id=cam, line_id="door", window_start_ms=start,
                             window_end_ms=start + length_s * 1000, count_in=5, count_out=0)

    stage = AnalyticsStage(cfg)
    rows = [win("a", cur), win("a", cur - WIN_S * 1000), win("a", cur - 2 * WIN_S * 1000),  # taken, taken, closed
            win("b", cur, 60),  # another window length (counting.window_s changed)
            win("gone", cur)]  # not a camera of the site
    assert stage.resume_windows(rows, now) == 2
    assert sorted(stage._windows) == [("a", "door", cur - WIN_S * 1000), ("a", "door", cur)]
