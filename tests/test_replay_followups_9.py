"""Follow-ups (issue 9) of the replay's end at the newest frame it read and of erasure, against real storage (SQLite,
and PostgreSQL of the test stack) and the real ``replay`` (the analytics stage's rules over stored frames):

1. a replay while the pipeline writes leaves alone what is still open at the newest frame it read: rows dated
   before that frame that a live pipeline writes only once a later frame closes them (a zone exit dated up to the
   zones' inertia back, the zone bucket holding it, a buying unit closed ``groups.window_ms`` later, the heatmap
   hour row of the last minute, the count window a later crossing adds to) are neither deleted nor overwritten;
   what is closed is re-derived as before, and a file camera's replay that read the end of the stream replaces
   its whole range;
2. a replay after an erasure keeps the past counts: the erased track's crossings stay (anonymous counts), with
   their count windows and buying units, while the rest of the range is re-derived; a replay stopped by the
   erased oldest points does not say they were purged by retention only.
"""
from __future__ import annotations

import sqlalchemy as sa

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage.groups import group_totals
from storelens.storage.privacy import erase_customer
from storelens.storage.replay import replay
from storelens.storage.schema import count_windows, crossings, group_crossings, heatmap_windows, zone_events, zone_stats
from test_replay_cli_review_9 import T0, site_doc, walk

MINUTE, HOUR = 60_000, 3_600_000
SECOND = T0 + 10 * MINUTE  # the second walk: 10 minutes after the first, the same hour
NEWEST = SECOND + 19 * 200  # its last frame: the newest stored


def config(groups_window_ms: int = 2_000):
    return parse_config(site_doc() | {"groups": {"window_ms": groups_window_ms}})


def two_walks(storage) -> None:
    """Track 1 at T0, track 2 ten minutes later; no end of stream (a live camera)."""
    walk(storage, 2, SECOND, walk(storage, 1, T0, 0))


def table(storage, t: sa.Table) -> list[tuple]:
    return sorted(tuple(r) for r in storage._rows(sa.select(t)))


def crossing_ts(storage, track_id: int) -> int:
    c = crossings.c
    return int(storage._rows(sa.select(c.ts_ms).where(c.track_id == track_id))[0][0])


def live_rows(storage) -> list:
    """What a live pipeline writes once frames after :data:`NEWEST` close it, all dated before NEWEST (and a
    crossing after it, with its count window)."""
    c2 = crossing_ts(storage, 2)
    cells = [m.HeatmapCell(gx=1, gy=1, occupancy_ms=777, dwell_ms=0)]
    cell_px = config().heatmap.cell_px  # the replay's rows' (part of the key)
    return [
        m.ZoneEvent(event_id="live-exit", camera_id="c", zone_id="z", zone_kind="generic", track_id=2,
                    kind=m.ZONE_EVENT_KINDS["exit"], ts_ms=NEWEST - 200, seq=39, dwell_ms=3_600),
        m.ZoneStats(camera_id="c", zone_id="z", bucket_start_ms=SECOND, bucket_end_ms=SECOND + MINUTE, visits=7,
                    unique_people=7),
        m.GroupCrossing(event_id="live-unit", camera_id="c", line_id="l", direction=m.DIRECTION_IN, ts_ms=c2,
                        seq=30, last_ts_ms=c2, track_ids=[2]),
        m.HeatmapWindow(camera_id="c", window_start_ms=SECOND, window_end_ms=SECOND + MINUTE, cell_px=cell_px,
                        width=200, height=200, cells=cells),
        m.HeatmapWindow(camera_id="c", window_start_ms=T0, window_end_ms=T0 + HOUR, cell_px=cell_px, width=200,
                        height=200, cells=cells),
        CrossingEvent("live-3", "c", "l", 3, "in", NEWEST + 5_000, 60),
        m.CountWindow(camera_id="c", line_id="l", window_start_ms=SECOND, window_end_ms=SECOND + MINUTE, count_in=2,
                      count_out=0),
    ]


def live_state(storage) -> dict[str, list]:
    """The rows :func:`live_rows` wrote (or changed), as stored."""
    z, s, g, h, w = zone_events.c, zone_stats.c, group_crossings.c, heatmap_windows.c, count_windows.c
    return {
        "zone exit": storage._rows(sa.select(z.event_id, z.ts_ms).where(z.event_id == "live-exit")),
        "zone bucket": storage._rows(sa.select(s.bucket_start_ms, s.visits).where(s.bucket_start_ms == SECOND)),
        "buying unit": storage._rows(sa.select(g.event_id).where(g.ts_ms >= SECOND)),
        "heatmap": sorted(storage._rows(sa.select(h.window_start_ms, h.span_ms, h.occupancy_ms).where(
            h.window_start_ms.in_([T0, SECOND])))),
        "count window": storage._rows(sa.select(w.window_start_ms, w.count_in).where(w.window_start_ms == SECOND)),
        "crossings": sorted(storage._rows(sa.select(crossings.c.event_id))),
    }


# 1 ---------------------------------------------------------------------------------------------------------------

def test_a_replay_leaves_alone_what_a_live_pipeline_closed_after_its_read(history_store) -> None:
    """The live rows are stored before the replay reads (the writer of the analytics' records ahead of the one of
    the frames that closed them): the same store as when they come between its read and its write."""
    cfg = config(groups_window_ms=5_000)  # track 2's unit is still open at NEWEST
    two_walks(history_store)
    replay(cfg, history_store)
    history_store.write_records(live_rows(history_store))
    live = live_state(history_store)
    assert all(live.values()), live

    [res] = replay(cfg, history_store)

    assert live_state(history_store) == live
    assert history_store.line_totals("c") == {"l": {"in": 3, "out": 0}}
    # what is closed is re-derived: both walks' crossings, track 1's visit of the zone, its unit and bucket
    assert res.counts["CrossingEvent"] == 2 and res.counts["ZoneEvent"] == 2, res.counts
    assert res.counts["ZoneStats"] and res.counts["GroupCrossing"] == 1, res.counts
    assert group_totals(history_store, "c", None, None) == {"l": {"in": 2, "out": 0}}


def test_rows_a_live_pipeline_writes_during_the_replay_survive_it(history_store, monkeypatch) -> None:
    """The live rows are written between the replay's read of the frames and its write (a wrapper of the real
    ``derive``, which the replay runs in between)."""
    import storelens.stages.analytics as analytics

    cfg = config(groups_window_ms=5_000)
    two_walks(history_store)
    replay(cfg, history_store)
    derive = analytics.derive

    def derive_while_live_writes(config, frames):
        out = derive(config, frames)
        history_store.write_records(live_rows(history_store))
        return out

    monkeypatch.setattr(analytics, "derive", derive_while_live_writes)
    [res] = replay(cfg, history_store)

    assert res.counts["CrossingEvent"] == 2
    state = live_state(history_store)
    assert state["zone exit"] == [("live-exit", NEWEST - 200)]
    assert state["zone bucket"] == [(SECOND, 7)]
    assert state["buying unit"] == [("live-unit",)]
    # the live minute survives, and the hour row is the sum of its stored minutes (the live one included; the hour
    # row is rebuilt from them: tests/test_zones_heatmap_review_31.py), not the replay's without the last minute
    heat = state["heatmap"]
    assert (SECOND, MINUTE, 777) in heat
    assert [v for t, span, v in heat if span == HOUR] == [sum(v for t, span, v in heat if span == MINUTE)]
    assert state["count window"] == [(SECOND, 2)]
    assert history_store.line_totals("c") == {"l": {"in": 3, "out": 0}}


def test_a_replay_that_read_the_end_of_the_stream_replaces_its_whole_range(history_store) -> None:
    cfg = config()
    two_walks(history_store)
    history_store.write_batch(tracked_frames=[m.TrackedFrame(camera_id="c", seq=40, ts_ms=NEWEST + 200, width=200,
                                                             height=200, end_of_stream=True)])
    replay(cfg, history_store)
    history_store.write_records([r for r in live_rows(history_store) if not isinstance(r, CrossingEvent)])

    [res] = replay(cfg, history_store)

    state = live_state(history_store)
    assert state["zone exit"] == [] and state["buying unit"] != [("live-unit",)]  # replaced by the re-derived
    assert state["zone bucket"] and state["zone bucket"][0][1] == 1
    assert state["count window"] == [(SECOND, 1)]
    assert (T0, HOUR, 777) not in state["heatmap"]
    assert res.counts["ZoneEvent"] == 4 and res.counts["GroupCrossing"] == 2, res.counts


# 2 ---------------------------------------------------------------------------------------------------------------

def closed_walks(storage) -> None:
    """:func:`two_walks`, then an empty frame 20 minutes later (everything of the walks closed, no end of stream)."""
    two_walks(storage)
    storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id="c", seq=40, ts_ms=SECOND + 20 * MINUTE, width=200,
                                                       height=200)])  # an empty frame (write_tracked_frame skips it)


def counts(storage) -> dict[str, list]:
    return {t.name: table(storage, t) for t in (crossings, count_windows, group_crossings)}


def test_a_replay_after_an_erasure_keeps_the_erased_tracks_counts(history_store) -> None:
    cfg = config()
    closed_walks(history_store)
    replay(cfg, history_store)
    before = counts(history_store)
    assert history_store.line_totals("c") == {"l": {"in": 2, "out": 0}}
    assert len(before["count_windows"]) == 2 and len(before["group_crossings"]) == 2

    gone = erase_customer(history_store, "cu-x", tracks=[("c", 2)])
    assert gone["track_points"] == 20 and gone["zone_events"] == 2
    [res] = replay(cfg, history_store)

    assert (res.start_ms, res.note) == (T0, None)  # the whole hour re-derived
    assert res.counts["CrossingEvent"] == 1  # track 1's, re-derived; track 2's kept
    assert history_store.line_totals("c") == {"l": {"in": 2, "out": 0}}
    assert counts(history_store) == before  # crossings, count windows and buying units as they were
    assert group_totals(history_store, "c", None, None) == {"l": {"in": 2, "out": 0}}
    assert not history_store._rows(sa.select(zone_events.c.event_id).where(zone_events.c.track_id == 2))


def test_a_replay_after_the_oldest_track_was_erased_keeps_the_counts_and_names_the_erasure(history_store) -> None:
    cfg = config()
    closed_walks(history_store)
    replay(cfg, history_store)
    before = counts(history_store)

    erase_customer(history_store, "cu-y", tracks=[("c", 1)])
    [res] = replay(cfg, history_store)

    assert counts(history_store) == before
    assert history_store.line_totals("c") == {"l": {"in": 2, "out": 0}}
    assert res.note and "erased" in res.note, res.note  # not "purged (retention)" alone
