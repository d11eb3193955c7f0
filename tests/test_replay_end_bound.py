"""``storelens replay`` with an end bound (``--to``) leaves no hole at the end of the range (real video, real SQLite).

A real embedded run (detector, tracker, analytics) over the Mall clip (400 s, a crowd) stamped so that it
crosses an hour's end 150 s in. A replay that ends at that hour edge (or at a ``--to`` inside the stored frames,
widened to it) with the same config re-derives, from the same frames, exactly what the run derived:

* every zone entry in the range has its exit, also those whose exit is dated just before the end and confirmed
  after it (and the buying units closed after it);
* the zone statistics of the range's last minute exist and equal the run's;
* each hour's heatmap row is the sum of its minute rows and equals the run's (the last minute closes after the end);
* nothing dated at or after the end changed.
"""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest

from storelens.config import parse_config
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.storage import SqlStorage
from storelens.storage.replay import replay
from test_analytics_close import heatmap_hours, visits  # hour rows with their minutes summed; zone visits
from test_zones_e2e import stored  # sorted rows of a query on the SQLite history

pytestmark = pytest.mark.slow  # the real detector and tracker over a clip

HOUR_MS, MINUTE_MS = 3_600_000, 60_000
END = 1_767_229_200_000  # 2026-01-01 01:00 UTC: the hour edge the replays end at
VIDEO = asset("video", "mall", "mall_0001-0800.mp4")  # 640x480, 2 fps, 400 s of a busy mall floor

#: Derived table -> (its rows, the column a replay dates them by).
TABLES = {
    "zone_events": ("SELECT event_id, zone_id, kind, track_id, ts_ms, seq, dwell_ms, how FROM zone_events", "ts_ms"),
    "zone_stats": ("SELECT * FROM zone_stats", "bucket_start_ms"),
    "crossings": ("SELECT event_id, line_id, track_id, direction, ts_ms, seq FROM crossings", "ts_ms"),
    "count_windows": ("SELECT line_id, window_start_ms, count_in, count_out FROM count_windows", "window_start_ms"),
    "group_crossings": ("SELECT * FROM group_crossings", "ts_ms"),
    "heatmap_windows": ("SELECT * FROM heatmap_windows", "window_start_ms"),
}


def rows(db: pathlib.Path, table: str, after: bool | None = None) -> list[tuple]:
    """The rows of a derived table: all, or those dated at or after :data:`END` (``after``) or before it."""
    sql, ts = TABLES[table]
    if after is not None:
        sql += f" WHERE {ts} {'>=' if after else '<'} {END}"
    return stored(db, sql)


def unpaired(db: pathlib.Path) -> dict:
    """(zone, track) -> its events, for the tracks whose entries into the zone are not as many as their exits."""
    return {key: evs for key, evs in visits(db).items()
            if sum(k == "enter" for k, _ in evs) != sum(k == "exit" for k, _ in evs)}


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> tuple[dict, pathlib.Path]:
    """The clip once through the embedded pipeline: (site config, history database)."""
    if not VIDEO.is_file():
        pytest.fail(f"missing test video {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    db = tmp_path_factory.mktemp("live") / "live.db"
    raw = {"store": {"id": "mall"}, "faces": {"enabled": False}, "storage": {"path": str(db)},
           "cameras": [{"id": "cam", "source": str(VIDEO), "start_ts_ms": END - 150_000,
                        "lines": [{"id": "mid", "a": [0, 300], "b": [640, 300]}],
                        "zones": [{"id": "left", "polygon": [[0, 0], [320, 0], [320, 480], [0, 480]]},
                                  {"id": "right", "kind": "queue", "service_edge": [0, 1],
                                   "polygon": [[320, 0], [640, 0], [640, 480], [320, 480]]}]}]}
    with SqlStorage(str(db)) as storage:
        EmbeddedPipeline(parse_config(raw), storage=storage).run()
    return raw, db


@pytest.mark.parametrize("to_ms", [END, END - 100_000], ids=["to-the-hour-edge", "to-inside-the-frames"])
def test_replay_with_an_end_bound_re_derives_the_end_of_the_range_whole(live, tmp_path, to_ms) -> None:
    raw, live_db = live
    config = parse_config(raw)
    before = {t: rows(live_db, t) for t in TABLES}
    # exits dated so shortly before the end that they were confirmed after it (a lost track's, up to lost_ms)
    late = [evs for evs in visits(live_db).values() for k, ts in evs
            if k == "exit" and END - config.zones.lost_ms <= ts < END]
    assert late, "the clip has no exit dated just before the hour edge: nothing to check"
    assert unpaired(live_db) == {}  # the run's end of the file closed every visit
    assert rows(live_db, "zone_stats", after=False) and rows(live_db, "zone_stats", after=True)

    db = tmp_path / "replay.db"
    shutil.copy(live_db, db)
    with SqlStorage(str(db)) as storage:
        [res] = replay(config, storage, end_ms=to_ms)
    assert (res.start_ms, res.end_ms) == (END - HOUR_MS, END)  # from the first frame's hour to the hour edge
    assert res.frames == 300 and res.counts.get("ZoneStats")

    # every zone entry has its exit (entries and exits dated just before the end, confirmed after it, too)
    assert unpaired(db) == {}
    assert rows(db, "zone_events") == before["zone_events"]
    # the last minute's zone statistics are there, as the run made them
    last = [r for r in rows(db, "zone_stats") if r[2] == END - MINUTE_MS]
    assert last and last == [r for r in before["zone_stats"] if r[2] == END - MINUTE_MS]
    # each hour's heatmap row is the sum of its minutes, as the run's
    hours = heatmap_hours(db)
    assert [h[0] for h in hours] == [END - HOUR_MS, END]
    for start, hour, minutes in hours:
        assert np.array_equal(hour, minutes), start
    assert rows(db, "heatmap_windows") == before["heatmap_windows"]
    # nothing dated at or after the end changed; before it, the same frames gave the same rows
    for t in TABLES:
        assert rows(db, t, after=True) == rows(live_db, t, after=True), t
        assert rows(db, t, after=False) == rows(live_db, t, after=False), t
