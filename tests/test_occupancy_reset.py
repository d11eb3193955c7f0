"""The daily occupancy reset (``store.occupancy_reset``): occupancy, ins and outs restart from 0 at a local time.

A people counter misses an exit now and then; without a reset ins minus outs drifts up day after day (by evening
the store shows 40 people inside while it is empty). The rule (:class:`storelens.domain.counting.OccupancyReset`)
is a table here: times around midnight, both clock changes, ``closing`` over opening hours past midnight and closed
days. The analytics stage applies it at each camera's frame time, so a frame gap over the reset (no frames
overnight) starts the morning from 0; ``/v1/occupancy``, ``/v1/live`` and the ``store_occupancy`` alert show the
same numbers; the crossings (history) stay.
"""
from __future__ import annotations

import datetime as dt

import pytest

from storelens.api import create_app
from storelens.api.routes.live import counts_snapshot
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.calendar import StoreCalendar, to_ms
from storelens.domain.counting import STORE_OCCUPANCY_ID, CrossingEvent, Occupancy, OccupancyReset
from storelens.errors import ConfigError
from storelens.runtime.sinks import HistorySink
from storelens.stages.analytics import AnalyticsStage, derive
from test_alerts import IN, OUT, restarted_records, tframe, two_cameras, walk
from test_store_occupancy import handled  # each frame through the runner (in-process bus) and its sinks


def ms(iso: str) -> int:
    return to_ms(dt.datetime.fromisoformat(iso))


BAR = {0: (9 * 60, 20 * 60), 5: (18 * 60, 3 * 60)}  # Mon 09:00-20:00, Sat 18:00-03:00 (Sunday), else closed

# (time zone, opening hours, reset, a frame time, the latest reset at or before it)
RESETS = [
    # around midnight: a reset at 04:00 is the previous day's until 04:00 itself
    ("UTC", None, "04:00", "2026-05-05T03:59:59.999+00:00", "2026-05-04T04:00:00+00:00"),
    ("UTC", None, "04:00", "2026-05-05T04:00:00+00:00", "2026-05-05T04:00:00+00:00"),
    ("Europe/Berlin", None, "00:00", "2026-05-04T23:59:59+02:00", "2026-05-04T00:00:00+02:00"),
    ("Europe/Berlin", None, "00:00", "2026-05-05T00:00:00+02:00", "2026-05-05T00:00:00+02:00"),
    ("Europe/Berlin", None, "23:30", "2026-05-05T00:10:00+02:00", "2026-05-04T23:30:00+02:00"),
    # spring forward (Berlin 2026-03-29, 02:00 -> 03:00): 04:00 is 23 h after the day before's; 02:30 does not
    # exist that day: the first instant after the gap
    ("Europe/Berlin", None, "04:00", "2026-03-29T04:00:00+02:00", "2026-03-29T04:00:00+02:00"),
    ("Europe/Berlin", None, "04:00", "2026-03-29T03:59:00+02:00", "2026-03-28T04:00:00+01:00"),
    ("Europe/Berlin", None, "02:30", "2026-03-29T03:00:00+02:00", "2026-03-29T03:00:00+02:00"),
    ("Europe/Berlin", None, "02:30", "2026-03-29T01:59:59+01:00", "2026-03-28T02:30:00+01:00"),
    # fall back (Berlin 2026-10-25, 03:00 -> 02:00): 02:30 comes twice; the first is the reset, the second none
    ("Europe/Berlin", None, "02:30", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+02:00"),
    ("Europe/Berlin", None, "02:30", "2026-10-25T02:45:00+01:00", "2026-10-25T02:30:00+02:00"),
    ("America/New_York", None, "04:00", "2026-11-01T04:00:00-05:00", "2026-11-01T04:00:00-05:00"),
    ("America/New_York", None, "04:00", "2026-11-01T03:59:00-05:00", "2026-10-31T04:00:00-04:00"),
    # closing: Saturday's session ends Sunday 03:00; Sunday is closed; Monday closes at 20:00
    ("Europe/Berlin", BAR, "closing", "2026-05-10T02:59:00+02:00", "2026-05-04T20:00:00+02:00"),
    ("Europe/Berlin", BAR, "closing", "2026-05-10T03:00:00+02:00", "2026-05-10T03:00:00+02:00"),
    ("Europe/Berlin", BAR, "closing", "2026-05-11T19:59:00+02:00", "2026-05-10T03:00:00+02:00"),
    ("Europe/Berlin", BAR, "closing", "2026-05-11T20:00:00+02:00", "2026-05-11T20:00:00+02:00"),
    # closing without opening hours: each local midnight
    ("Europe/Berlin", None, "closing", "2026-03-29T12:00:00+02:00", "2026-03-29T00:00:00+01:00"),
    # never
    ("Europe/Berlin", None, None, "2026-05-05T12:00:00+02:00", None),
    # never open, so never a closing: local midnight, as without opening hours (tests/test_occupancy_reset_3.py)
    ("Europe/Berlin", {}, "closing", "2026-05-05T12:00:00+02:00", "2026-05-05T00:00:00+02:00"),
]


@pytest.mark.parametrize("tz, hours, at, ts, expected", RESETS)
def test_the_latest_reset(tz, hours, at, ts, expected) -> None:
    minutes = None if at is None else at if at == "closing" else int(at[:2]) * 60 + int(at[3:])
    reset = OccupancyReset(StoreCalendar(tz, hours), minutes)
    assert reset.last_reset_ms(ms(ts)) == (None if expected is None else ms(expected))
    # the same answer from a fresh rule and from one that answered other times before (its cached span)
    again = OccupancyReset(StoreCalendar(tz, hours), minutes)
    again.last_reset_ms(ms(ts) - 86_400_000)
    again.last_reset_ms(ms(ts) + 86_400_000)
    assert again.last_reset_ms(ms(ts)) == reset.last_reset_ms(ms(ts))


# (frame times, local Berlin, reset at 04:00: whether each frame restarts the counts)
FOLLOW = [
    # frames all night: the first frame at or after 04:00 restarts, the next ones do not
    (["2026-05-05T03:59:59+02:00", "2026-05-05T04:00:00+02:00", "2026-05-05T04:00:01+02:00"], [False, True, False]),
    # no frames overnight: the first frame of the morning starts from 0
    (["2026-05-04T21:00:00+02:00", "2026-05-05T08:30:00+02:00", "2026-05-05T08:31:00+02:00"], [False, True, False]),
    # a gap over two resets restarts once
    (["2026-05-04T21:00:00+02:00", "2026-05-06T08:30:00+02:00"], [False, True]),
    # the spring-forward night (no 02:00-03:00) and the fall-back night (02:00-03:00 twice): one reset each
    (["2026-03-29T01:59:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"], [False, False, True]),
    (["2026-10-25T02:59:00+02:00", "2026-10-25T02:10:00+01:00", "2026-10-25T04:00:00+01:00"], [False, False, True]),
    # within one day: never
    (["2026-05-05T04:00:00+02:00", "2026-05-05T23:59:59+02:00", "2026-05-06T03:59:59+02:00"], [False, False, False]),
]


@pytest.mark.parametrize("times, restarts", FOLLOW)
def test_occupancy_follows_the_reset(times, restarts) -> None:
    reset = OccupancyReset(StoreCalendar("Europe/Berlin"), 4 * 60)
    occ, got = Occupancy(), []
    for t in times:
        restarted = occ.follow(reset, ms(t))
        got.append(restarted)
        if restarted:
            assert (occ.value, occ.total_in, occ.total_out) == (0, 0, 0)
        for d in ("in", "in", "out"):  # a crossing of each frame: 1 more inside
            occ.apply(d)
    assert got == restarts


def test_the_setting() -> None:
    def store(**kw):
        return parse_config({"store": {"id": "s", **kw}, "cameras": [{"id": "c", "source": "c.mp4"}]}).store

    assert store().occupancy_reset == "04:00" and store().occupancy_reset_at() == 240  # the default
    assert store(occupancy_reset="closing").occupancy_reset_at() == "closing"
    assert store(occupancy_reset=None).occupancy_reset_at() is None
    assert store(occupancy_reset="23:30").occupancy_reset_at() == 23 * 60 + 30
    for bad in ("4:00", "24:00", "noon", "opening"):
        with pytest.raises(ConfigError, match="occupancy_reset"):
            store(occupancy_reset=bad)


# Europe/Berlin, the default reset (04:00). Saturday evening 2026-03-28: 1 and 3 come in through c's door, 1 goes
# out, 3's exit is missed (c: 2 in, 1 out, occupancy 1); 2 comes in through d's (d: occupancy 1). No frames
# overnight (the spring-forward night). Sunday morning: c's first frame (nobody), then d's, then 4 comes in at c.
EVENING = ms("2026-03-28T20:00:00+01:00")
MORNING = ms("2026-03-29T08:00:00+02:00")
FRAMES = sorted(walk("c", 1, IN, 0, EVENING) + walk("d", 2, IN, 0, EVENING + 50) + walk("c", 3, IN, 4, EVENING + 1600)
                + walk("c", 1, OUT, 8, EVENING + 3200), key=lambda f: f.ts_ms) + [
    tframe("c", 12, MORNING), tframe("d", 4, MORNING + 100)] + walk("c", 4, IN, 13, MORNING + 1000)
RULES = [{"kind": "store_occupancy", "id": "full", "max": 0, "hold_s": 0, "cooldown_s": 0}]


def _site(entrance=("c/door", "d/door")) -> dict:
    site = two_cameras(RULES, list(entrance) if entrance else None)
    site["store"]["timezone"] = "Europe/Berlin"
    return site


def _occupancy(records) -> list[tuple]:
    return [(r.camera_id, r.ts_ms >= MORNING, r.occupancy, r.total_in, r.total_out) for r in records
            if isinstance(r, m.OccupancyUpdate)]


def test_the_stage_restarts_at_the_first_frame_after_the_reset() -> None:
    cfg = parse_config(_site())
    stage = AnalyticsStage(cfg)
    records, shown = [], []
    for tf in FRAMES:
        records += stage.handle(topics.TRACKS, tf).records
        shown.append((tf.camera_id, tf.ts_ms >= MORNING, stage.store_totals()))
    store = [u for u in _occupancy(records) if u[0] == STORE_OCCUPANCY_ID]
    assert store == [(STORE_OCCUPANCY_ID, False, 1, 1, 0), (STORE_OCCUPANCY_ID, False, 2, 2, 0),
                     (STORE_OCCUPANCY_ID, False, 3, 3, 0), (STORE_OCCUPANCY_ID, False, 2, 3, 1),
                     # c's first frame of the morning: c restarts, d (no frame yet) is yesterday's: left out
                     (STORE_OCCUPANCY_ID, True, 0, 0, 0),
                     (STORE_OCCUPANCY_ID, True, 0, 0, 0),  # d's first frame
                     (STORE_OCCUPANCY_ID, True, 1, 1, 0)]  # 4 comes in: the new day's 1, not 3
    cams = [u for u in _occupancy(records) if u[0] != STORE_OCCUPANCY_ID and u[1]]
    assert cams == [("c", True, 0, 0, 0), ("d", True, 0, 0, 0), ("c", True, 1, 1, 0)]  # the "today" totals too
    assert shown[-1][2] == (1, 1, 0) and stage.store_occupancy() == 1
    assert stage.line_counts("c") == {"door": {"in": 1, "out": 0}}
    # the crossings (history) are all there, the evening's too
    crossings = [(r.camera_id, r.direction, r.ts_ms >= MORNING) for r in records if isinstance(r, CrossingEvent)]
    assert sorted(crossings) == sorted([("c", "in", False), ("d", "in", False), ("c", "in", False),
                                        ("c", "out", False), ("c", "in", True)])
    # the store_occupancy alert (max 0) reads the same number: it fired in the evening, resolves at the reset,
    # fires again when 4 comes in
    alerts = [(a.state, a.ts_ms >= MORNING, a.value) for a in records if isinstance(a, m.Alert)]
    assert alerts == [("firing", False, 1.0), ("resolved", True, 0.0), ("firing", True, 1.0)]
    # the same through snapshots (the analytics service: each camera's state from its table before each frame)
    assert _occupancy(restarted_records(cfg, FRAMES)) == _occupancy(records)
    assert _occupancy(derive(cfg, FRAMES)) == _occupancy(records)  # replay, embedded: the same rule


def test_never_and_a_state_saved_before_the_setting() -> None:
    site = _site()
    site["store"]["occupancy_reset"] = None
    stage = AnalyticsStage(parse_config(site))
    for tf in FRAMES:
        stage.handle(topics.TRACKS, tf)
    assert stage.store_totals() == (3, 4, 1)  # never reset: yesterday's missed exit still inside
    # a camera state saved before the setting existed (3 numbers): kept, restarted at the next reset only
    stage = AnalyticsStage(parse_config(_site()))
    stage.load_camera_state("c", {**stage.camera_state("c"), "last_seq": 11, "occupancy": [1, 2, 1]})
    first = stage.handle(topics.TRACKS, tframe("c", 12, EVENING + 5000)).records
    assert stage.occupancy["c"].value == 1 and not _occupancy(first)
    stage.handle(topics.TRACKS, tframe("c", 13, MORNING))
    assert (stage.occupancy["c"].value, stage.occupancy["c"].total_in) == (0, 0)


def test_the_api_shows_the_new_day(tmp_path) -> None:
    """Through the runner, its history sink and the real API (embedded mode: the API reads storage)."""
    from storelens.storage import SqlStorage

    cfg = parse_config(_site())
    stage = AnalyticsStage(cfg)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = create_app(cfg, st)
        client = signed_in_client(app, role="viewer")
        shown = []
        for tf in handled(stage, [HistorySink(st)], FRAMES):
            api = client.get("/v1/occupancy").json()
            assert api["occupancy"] == stage.store_occupancy()  # the alert's number, after every frame
            shown.append((tf.ts_ms >= MORNING, api["occupancy"]))
            if tf.camera_id == "d" and tf.ts_ms >= MORNING:  # both cameras' first frame of the morning
                assert {c["camera_id"]: (c["occupancy"], c["total_in"], c["total_out"]) for c in api["cameras"]} \
                    == {"c": (0, 0, 0), "d": (0, 0, 0)}
                assert counts_snapshot(app.state.context)["store"] == {"occupancy": 0, "in": 0, "out": 0}
        assert max(v for morning, v in shown if not morning) == 3 and shown[-1] == (True, 1)
        assert counts_snapshot(app.state.context)["store"] == {"occupancy": 1, "in": 1, "out": 0}
        # the history keeps the evening's crossings
        assert st.line_totals("c") == {"door": {"in": 3, "out": 1}}
        assert st.line_totals("d") == {"door": {"in": 1, "out": 0}}
