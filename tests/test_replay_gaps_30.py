"""Two gaps of ``storelens replay`` (issue 9 follow-ups), against real storage (SQLite, and PostgreSQL of the test
stack) and the real ``replay`` (the analytics stage's rules over stored frames):

1. a live camera that stopped without an end of stream (process killed, camera down) and sent no frame for longer
   than a later frame could still continue what was open at its last one: a replay closes its open visits, zone
   bucket, buying unit, track and heatmap hour at that frame, as the pipeline's own stop (an end-of-stream frame
   there) closes them; a camera that may still be running (its last frame recent) or a file camera (its frame
   times are not the wall clock) keeps them open, left to the pipeline as before;
2. PostgreSQL: a live write of the newest count window committed between the replay's count of the window and its
   write is not overwritten (the window is counted again once the replay's row holds it).
"""
from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa
import yaml

import storelens.storage.replay as replay_mod
from storelens.cli import main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqlStorage
from storelens.storage.replay import replay, stopped_after_ms
from storelens.storage.schema import (count_windows, group_crossings, heatmap_windows, track_summaries, zone_events,
                                      zone_stats)
from test_replay_cli_review_9 import T0, site_doc, walk
from test_replay_followups_9 import NEWEST, SECOND, two_walks

MINUTE = 60_000
DERIVED = (zone_events, zone_stats, group_crossings, track_summaries, heatmap_windows, count_windows)


def camera_config(source: str):
    doc = site_doc()
    doc["cameras"][0]["source"] = source
    return parse_config(doc | {"groups": {"window_ms": 5_000}})


def derived(storage) -> dict[str, list[tuple]]:
    return {t.name: sorted(tuple(r) for r in storage._rows(sa.select(t))) for t in DERIVED}


# 1 ---------------------------------------------------------------------------------------------------------------

LAST = T0 + 19 * 200  # the walk's last frame: the camera's newest


@pytest.mark.parametrize("source, now_after_last_ms, closed", [
    ("rtsp://cam/1", 2 * 3_600_000, True),  # a live camera silent for two hours: stopped
    ("rtsp://cam/1", 3_000, False),  # silent for 3 s: its pipeline may still be running (a hidden track goes on)
    ("x.mp4", 2 * 3_600_000, False),  # a file: its frame times say nothing of whether its run goes on
], ids=["live-camera-stopped", "live-camera-recent", "file-camera"])
def test_a_replay_closes_the_open_rows_of_a_stopped_live_camera_at_its_last_frame(
        history_store, source, now_after_last_ms, closed) -> None:
    cfg = camera_config(source)
    walk(history_store, 1, T0, 0)  # one person walks through the line inside the zone: in view at the last frame
    assert stopped_after_ms(cfg, cfg.cameras[0]) < 2 * 3_600_000

    [res] = replay(cfg, history_store, now_ms=LAST + now_after_last_ms)

    rows = derived(history_store)
    exits = [r for r in rows["zone_events"] if r[5] == "exit"]
    assert res.frames == 20  # the stored frames (not the end the replay closed them with)
    if not closed:  # open at the newest frame: neither written nor deleted, left to the pipeline
        assert exits == [] and rows["zone_stats"] == [] and rows["group_crossings"] == []
        assert rows["track_summaries"] == [] and res.stopped_at_ms is None
        return
    # what the pipeline's own stop writes: an end-of-stream frame at the last frame (EmbeddedPipeline's end_streams)
    assert [(r[4], r[6], r[8], r[9]) for r in exits] == [(1, LAST, 3_800, "lost")]
    assert rows["zone_stats"] and rows["group_crossings"] and rows["track_summaries"]
    assert res.stopped_at_ms == LAST
    history_store.write_batch(tracked_frames=[m.TrackedFrame(camera_id="c", seq=20, ts_ms=LAST, width=200,
                                                             height=200, end_of_stream=True)])
    [ended] = replay(cfg, history_store, now_ms=LAST + now_after_last_ms)
    assert ended.stopped_at_ms is None  # the stream's own end: nothing to take as stopped
    assert derived(history_store) == rows


def test_a_stopped_camera_is_closed_only_after_the_time_a_later_frame_may_go_on_with_its_rows(history_store) -> None:
    cfg = camera_config("rtsp://cam/1")
    walk(history_store, 1, T0, 0)
    wait = stopped_after_ms(cfg, cfg.cameras[0])
    assert wait >= replay_mod.close_delay_ms(cfg, cfg.cameras[0]) and wait >= replay_mod.STOPPED_AFTER_MIN_MS
    [res] = replay(cfg, history_store, now_ms=LAST + wait)
    assert res.stopped_at_ms is None
    [res] = replay(cfg, history_store, now_ms=LAST + wait + 1)
    assert res.stopped_at_ms == LAST


def test_storelens_replay_says_which_camera_it_took_for_stopped(tmp_path, capsys) -> None:
    """The command (wall clock: the walk is in 1970) closes the live camera's visit and says so."""
    doc = site_doc()
    doc["cameras"][0]["source"] = "rtsp://cam/1"
    site, db = tmp_path / "site.yaml", tmp_path / "h.db"
    site.write_text(yaml.safe_dump(doc))
    with SqlStorage(str(db)) as s:
        walk(s, 1, T0, 0)
    assert main(["replay", "--config", str(site), "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cameras"][0]["stopped_at_ms"] == LAST
    assert main(["replay", "--config", str(site), "--db", str(db)]) == 0
    assert f"no frame since {LAST}: camera stopped" in capsys.readouterr().out
    with SqlStorage(str(db)) as s:
        z = zone_events.c
        assert s._rows(sa.select(z.kind, z.ts_ms).order_by(z.ts_ms)) == [("enter", T0), ("exit", LAST)]


# 2 ---------------------------------------------------------------------------------------------------------------

def live_batch(seq: int, n: int) -> list:
    """What the live pipeline writes in one transaction for a frame after the newest the replay read: the frame,
    its crossing (the ``n``-th of the window), the camera's occupancy and its running count of the window."""
    ts = NEWEST + 200 * (seq - 39)
    return [m.TrackedFrame(camera_id="c", seq=seq, ts_ms=ts, width=200, height=200),
            CrossingEvent(f"live-{n}", "c", "l", 10 + n, "in", ts, seq),
            m.OccupancyUpdate(camera_id="c", ts_ms=ts, occupancy=n, total_in=n, total_out=0),
            m.CountWindow(camera_id="c", line_id="l", window_start_ms=SECOND, window_end_ms=SECOND + MINUTE,
                          count_in=n, count_out=0)]


def test_pg_a_live_count_written_during_the_replays_transaction_is_not_overwritten(history_store,
                                                                                    monkeypatch) -> None:
    """The replay re-derives no crossing (its line moved where nobody walks), so it holds no row a live write of
    the camera waits for: one live write commits between its delete and its count of the newest window, the next
    between that count and its write of the window (the replay's count, a real one, wrapped to let them in)."""
    if not history_store.db.postgres:
        pytest.skip("SQLite writes one transaction at a time")
    from storelens.storage import PostgresStorage

    doc = site_doc()
    doc["cameras"][0]["lines"] = [{"id": "l", "a": [0, 190], "b": [200, 190]}]  # below every walk: no crossing
    cfg = parse_config(doc)
    two_walks(history_store)
    live = PostgresStorage(os.environ.get("STORELENS_PG_DSN",
                                          "postgresql://storelens:storelens@127.0.0.1:15432/storelens"),
                           schema=history_store.db.schema)
    count = replay_mod._counted_windows
    calls = []

    def count_while_live_writes(conn, *args):
        calls.append(args)
        if len(calls) == 1:
            live.write_records(live_batch(40, 1))  # after the replay's delete: counted by it
        out = count(conn, *args)
        if len(calls) == 1:
            live.write_records(live_batch(41, 2))  # after its count, before its write of the window
        return out

    monkeypatch.setattr(replay_mod, "_counted_windows", count_while_live_writes)
    try:
        [res] = replay(cfg, history_store, now_ms=NEWEST)
    finally:
        live.close()

    assert "CrossingEvent" not in res.counts
    w = count_windows.c
    assert history_store._rows(sa.select(w.window_start_ms, w.count_in, w.count_out)) == [(SECOND, 2, 0)]
    assert history_store.line_totals("c") == {"l": {"in": 2, "out": 0}}
