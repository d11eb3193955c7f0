"""The daily occupancy reset, third pass: a calendar without a closing, the tick's 0 rows, an offline entrance camera.

1. ``occupancy_reset: closing`` over a calendar with no open day (``opening_hours: {}``, a store not opened yet)
   has no closing: it resets at each local midnight (as without opening hours) instead of never, and whatever the
   calendar there is a reset at most 8 days back, so a camera's first frame (a new store, the first run after a
   long break) runs from a reset and the next one is never skipped.
2. A camera without a frame since a reset gets its 0 row (and the store's ``@store`` row) from the stage's tick,
   in the history's ``occupancy`` table, Redis and the ``occupancy`` topic: the stored rows say what
   ``/v1/occupancy`` shows. Embedded (the runner's tick) and distributed (the analytics service's tick, real Kafka).
3. An entrance camera that never sends a frame does not hold the ``@store`` row back: the row is written from the
   cameras that report (the offline one counts 0), the number ``/v1/occupancy`` shows is the alert's.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from storelens.api import create_app
from storelens.api.routes.live import counts_snapshot
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.calendar import StoreCalendar
from storelens.domain.counting import STORE_OCCUPANCY_ID, Occupancy, OccupancyReset
from storelens.runtime.bus import InProcessBus
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.sinks import HistorySink, LiveSink
from storelens.runtime.transports import InProcessTransport
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage.live import RedisLiveState
from test_alerts import IN, OUT, tframe, two_cameras, walk
from test_live import REDIS_URL
from test_occupancy_reset import ms
from test_store_occupancy import live  # noqa: F401 (the module's fixture: no live state, or Redis)

DAY_MS = 86_400_000

# -- 1. a calendar without a closing ----------------------------------------------------------------------------

NO_OPEN_DAY = {}  # opening_hours: {} (or every day null): never open
CALENDARS = [
    NO_OPEN_DAY,
    None,  # no opening hours: open all day, closing at local midnight
    {6: (22 * 60, 60)},  # Sundays only, 22:00-01:00 (Monday)
    {d: (0, 24 * 60) for d in range(7)},  # 24/7 written as 00:00-24:00 each day
]


def test_no_open_day_resets_at_local_midnight() -> None:
    reset = OccupancyReset(StoreCalendar("Europe/Berlin", NO_OPEN_DAY), "closing")
    assert reset.last_reset_ms(ms("2026-05-05T12:00:00+02:00")) == ms("2026-05-05T00:00:00+02:00")
    assert reset.last_reset_ms(ms("2026-03-29T12:00:00+02:00")) == ms("2026-03-29T00:00:00+01:00")  # DST day
    # a new store: its first camera frame Monday evening, the next Tuesday morning: restarted, not skipped
    occ = Occupancy()
    assert not occ.follow(reset, ms("2026-05-04T21:00:00+02:00"))
    occ.apply("in")
    assert occ.follow(reset, ms("2026-05-05T08:00:00+02:00")) and occ.value == 0


@pytest.mark.parametrize("hours", CALENDARS)
def test_a_reset_is_always_found_and_the_first_one_is_never_skipped(hours) -> None:
    """Every 3 hours over 5 weeks, asked of a fresh rule each time (as the first frame after a long break asks):
    the latest reset is at most 8 days back; a camera whose first frame is at any of those times restarts at its
    first frame after the next reset."""
    reset = OccupancyReset(StoreCalendar("Europe/Berlin", hours), "closing")
    t0 = ms("2026-05-01T00:00:00+02:00")
    for k in range(0, 35 * 8):
        t = t0 + k * 3 * 3_600_000
        last = OccupancyReset(StoreCalendar("Europe/Berlin", hours), "closing").last_reset_ms(t)
        assert last is not None and t - 8 * DAY_MS <= last <= t, (hours, t)
        assert reset.last_reset_ms(t) == last  # the cached window answers the same
        occ = Occupancy()
        occ.follow(reset, t)
        occ.apply("in")
        nxt = OccupancyReset(StoreCalendar("Europe/Berlin", hours), "closing").last_reset_ms(t + 8 * DAY_MS)
        assert nxt > last and occ.follow(reset, t + 8 * DAY_MS) and occ.value == 0


def test_the_stage_of_a_store_not_opened_yet() -> None:
    """``closing`` with every day closed: yesterday's people are not in today's number."""
    raw = two_cameras([], ["c/door"])
    raw["store"].update(timezone="Europe/Berlin", occupancy_reset="closing",
                        opening_hours={d: None for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")})
    stage = AnalyticsStage(parse_config(raw))
    for tf in walk("c", 1, IN, 0, ms("2026-05-04T18:00:00+02:00")):  # a fitter comes in, never seen leaving
        stage.handle(topics.TRACKS, tf)
    assert stage.store_totals() == (1, 1, 0)
    stage.handle(topics.TRACKS, tframe("c", 4, ms("2026-05-05T07:00:00+02:00")))
    assert stage.store_totals() == (0, 0, 0) and stage.occupancy["c"].value == 0


# -- 2. the tick writes the 0 rows ------------------------------------------------------------------------------

# Monday evening (Berlin, the default reset 04:00): c's door: 1 and 3 in, 1 out (c: 1 inside); d's door: 2 in.
MON = "2026-05-04"
EVENING = sorted(walk("c", 1, IN, 0, ms(f"{MON}T20:00:00+02:00")) + walk("d", 2, IN, 0, ms(f"{MON}T20:00:00.050+02:00"))
                 + walk("c", 3, IN, 4, ms(f"{MON}T20:00:02+02:00")) + walk("c", 1, OUT, 8, ms(f"{MON}T20:00:04+02:00")),
                 key=lambda f: f.ts_ms)
RESET = ms("2026-05-05T04:00:00+02:00")




def _runner(cfg, st, live, bus):  # noqa: F811
    stage = AnalyticsStage(cfg)
    sinks = [HistorySink(st)] + ([LiveSink(live)] if live is not None else [])
    return stage, Runner(RunnerCore(stage, sinks), InProcessTransport(bus, list(stage.inputs), outputs=stage.outputs))


def _feed(runner, bus, frames) -> None:
    for tf in frames:
        bus.publish(topics.TRACKS, topics.camera_key(tf.camera_id), m.encode(tf))
        assert runner.handle(runner.transport.poll(1.0))


def _row(store, cam: str):
    r = store.occupancy(cam)
    return None if r is None else (r.ts_ms, r.occupancy, r.total_in, r.total_out)


def _shown(app) -> tuple[int, dict]:
    api = signed_in_client(app, role="viewer").get("/v1/occupancy").json()
    return api["occupancy"], {c["camera_id"]: (c["ts_ms"], c["occupancy"], c["total_in"], c["total_out"])
                              for c in api["cameras"]}


def _site(live_sources: bool, reset: str | None = None, tz: str = "Europe/Berlin") -> dict:
    raw = two_cameras([], ["c/door", "d/door"], source_d="rtsp://cam/d" if live_sources else "d.mp4")
    if live_sources:
        raw["cameras"][0]["source"] = "rtsp://cam/c"
    raw["store"]["timezone"] = tz
    if reset is not None:
        raw["store"]["occupancy_reset"] = reset
    return raw


def test_the_tick_writes_the_0_rows_of_live_cameras(tmp_path, live) -> None:  # noqa: F811
    """Live cameras, no frame overnight: the tick after 04:00 (wall clock) writes 0 for c, d and the store."""
    cfg = parse_config(_site(live_sources=True))
    bus = InProcessBus()
    published = bus.subscribe(topics.OCCUPANCY)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage, runner = _runner(cfg, st, live, bus)
        _feed(runner, bus, EVENING)
        evening = {cam: _row(st, cam) for cam in ("c", "d", STORE_OCCUPANCY_ID)}
        assert {cam: r[1:] for cam, r in evening.items()} == {"c": (1, 2, 1), "d": (1, 1, 0),
                                                              STORE_OCCUPANCY_ID: (2, 3, 1)}
        while published.poll(0) is not None:
            pass
        assert runner.tick(RESET - 1000)  # before the reset: nothing
        assert {cam: _row(st, cam) for cam in evening} == evening
        assert runner.tick(RESET + 500)
        zero = {cam: (RESET, 0, 0, 0) for cam in evening}
        assert {cam: _row(st, cam) for cam in evening} == zero
        if live is not None:
            assert {cam: live.occupancy(cam) for cam in evening} == {
                cam: m.OccupancyUpdate(camera_id=cam, ts_ms=RESET) for cam in evening}
        sent = [m.decode(m.OccupancyUpdate, x.value) for x in iter(lambda: published.poll(0), None)]
        assert {(u.camera_id, u.ts_ms, u.occupancy, u.total_in) for u in sent} == {
            (cam, RESET, 0, 0) for cam in evening}
        assert not stage.tick(RESET + 1500).records  # once per reset
        # the morning: c's first frame restarts it (0 at its time), then 4 comes in
        morning = ms("2026-05-05T08:00:00+02:00")
        _feed(runner, bus, [tframe("c", 12, morning)] + walk("c", 4, IN, 13, morning + 1000))
        assert _row(st, "c")[1:] == (1, 1, 0) and _row(st, STORE_OCCUPANCY_ID)[1:] == (1, 1, 0)
        assert _row(st, "d") == (RESET, 0, 0, 0)
        assert not stage.tick(morning + 10_000).records


def test_the_tick_writes_0_for_a_file_camera_behind_the_store_clock(tmp_path) -> None:
    """Files: "now" is the store clock (the newest camera time, as the API's). c's frame passes the reset, d has
    none since: the tick writes d's 0 row, which the API already showed; the stored rows then agree with it."""
    cfg = parse_config(_site(live_sources=False))
    bus = InProcessBus()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage, runner = _runner(cfg, st, None, bus)
        _feed(runner, bus, EVENING)
        assert runner.tick(int(time.time() * 1000))
        assert _row(st, "d")[1:] == (1, 1, 0)  # no frame has passed the reset: the store clock is Monday's
        morning = ms("2026-05-05T08:00:00+02:00")
        _feed(runner, bus, [tframe("c", 12, morning)])
        assert _row(st, "d")[1:] == (1, 1, 0)  # the frame restarts c only
        assert runner.tick(int(time.time() * 1000))
        assert _row(st, "d") == (RESET, 0, 0, 0)
        assert _row(st, "c") == (morning, 0, 0, 0) and _row(st, STORE_OCCUPANCY_ID) == (morning, 0, 0, 0)
        store, cams = _shown(create_app(cfg, st))
        assert store == 0 and cams == {"c": _row(st, "c"), "d": _row(st, "d")}


def test_the_api_and_the_stored_rows_agree_at_the_wall_clock(tmp_path, live) -> None:  # noqa: F811
    """Live cameras at the real wall clock: the reset was an hour ago, the frames three hours ago. After the tick
    the stored rows are what /v1/occupancy and /v1/live show."""
    now = int(time.time() * 1000)
    at = dt.datetime.fromtimestamp(now / 1000 - 3600, dt.timezone.utc).strftime("%H:%M")
    cfg = parse_config(_site(live_sources=True, reset=at, tz="UTC"))
    reset = OccupancyReset(StoreCalendar("UTC"), cfg.store.occupancy_reset_at()).last_reset_ms(now)
    t0 = reset - 2 * 3_600_000
    frames = sorted(walk("c", 1, IN, 0, t0) + walk("d", 2, IN, 0, t0 + 50), key=lambda f: f.ts_ms)
    bus = InProcessBus()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage, runner = _runner(cfg, st, live, bus)
        _feed(runner, bus, frames)
        assert _row(st, STORE_OCCUPANCY_ID)[1:] == (2, 2, 0)
        app = create_app(cfg, st, live)
        assert _shown(app)[0] == 0  # the API already says 0 ...
        assert runner.tick(now)
        store, cams = _shown(app)  # ... and the rows now do
        assert store == 0 and cams == {"c": (reset, 0, 0, 0), "d": (reset, 0, 0, 0)}
        assert {cam: _row(st, cam) for cam in ("c", "d", STORE_OCCUPANCY_ID)} == {
            cam: (reset, 0, 0, 0) for cam in ("c", "d", STORE_OCCUPANCY_ID)}
        if live is not None:
            assert live.occupancy(STORE_OCCUPANCY_ID).ts_ms == reset and live.occupancy("c").occupancy == 0
        assert counts_snapshot(app.state.context)["store"] == {"occupancy": 0, "in": 0, "out": 0}


def test_the_tick_of_the_kafka_analytics_service(tmp_path) -> None:
    """The analytics service (faust app, real broker and Redis): its tick writes the 0 rows to PostgreSQL's
    stand-in (SQLite here), Redis and the ``occupancy`` topic, for a camera it handled (c) and for one whose state
    only the table holds (d: down since before this process started)."""
    import asyncio

    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.kafka import read_to_end
    from storelens.runtime.service import ServiceRuntime
    from test_alerts import kafka_site

    cfg = kafka_site(_site(live_sources=True), "t-reset3")
    # d's state as the table holds it: 2 came in Monday evening (a stage of another process)
    before = AnalyticsStage(cfg)
    for tf in walk("d", 2, IN, 0, ms(f"{MON}T20:00:00+02:00")):
        before.handle(topics.TRACKS, tf)
    live = RedisLiveState(REDIS_URL, prefix=f"storelens-test:{uuid.uuid4().hex[:16]}")  # noqa: F811
    loop = asyncio.new_event_loop()
    try:
        with SqlStorage(str(tmp_path / "h.db")) as st:
            app = AnalyticsApp(cfg, st, live, ServiceRuntime("analytics", port=0), loop=loop)
            try:
                app._tables_ready = True  # no worker here: the table is "recovered"
                app.table.data[topics.camera_key("d")] = before.camera_state("d")  # as the changelog recovery
                for tf in walk("c", 1, IN, 0, ms(f"{MON}T20:00:01+02:00")):
                    st.write_records(app.stage.handle(topics.TRACKS, tf).records)
                st.write_records([m.OccupancyUpdate(camera_id="d", ts_ms=ms(f"{MON}T20:00:02+02:00"), occupancy=1,
                                                    total_in=1)])  # d's row of Monday
                loop.run_until_complete(app.tick_at(RESET - 1000))
                assert _row(st, "c")[1:] == (1, 1, 0) and _row(st, "d")[1:] == (1, 1, 0)
                loop.run_until_complete(app.tick_at(RESET + 1000))
                loop.run_until_complete(app.app.producer.flush())
                rows = {cam: _row(st, cam) for cam in ("c", "d", STORE_OCCUPANCY_ID)}
                assert rows == {cam: (RESET, 0, 0, 0) for cam in rows}
                assert {cam: live.occupancy(cam).ts_ms for cam in rows} == {cam: RESET for cam in rows}
                sent = [m.decode(m.OccupancyUpdate, v) for _, v, _ in read_to_end(
                    cfg.kafka, app.topic_names[topics.OCCUPANCY], 0, "check", 30)]
                assert sorted((u.camera_id, u.ts_ms, u.occupancy) for u in sent) == sorted(
                    (cam, RESET, 0) for cam in rows)
            finally:
                loop.run_until_complete(app.app.producer.stop())
                app.close()
    finally:
        loop.close()
        live.clear()
        live.close()


# -- 3. an entrance camera that never sends a frame -------------------------------------------------------------

def test_an_offline_entrance_camera_does_not_hold_the_store_row_back(tmp_path, live) -> None:  # noqa: F811
    """Entrance lines c/door and e/door; e is offline all day; d's line is a department's. The @store row is c's
    door (e counts 0): the API shows it, not the sum of the cameras' (c + d)."""
    raw = two_cameras([{"kind": "store_occupancy", "id": "full", "max": 5, "cooldown_s": 0}], ["c/door", "e/door"])
    raw["cameras"].append({"id": "e", "source": "e.mp4", "lines": raw["cameras"][0]["lines"]})
    cfg = parse_config(raw)
    frames = sorted(walk("c", 1, IN, 0, 1000) + walk("d", 2, IN, 0, 1050) + walk("c", 3, IN, 4, 2600)
                    + walk("d", 4, IN, 4, 2650) + walk("c", 1, OUT, 8, 4200), key=lambda f: f.ts_ms)
    bus = InProcessBus()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage, runner = _runner(cfg, st, live, bus)
        app = create_app(cfg, st, live)
        for tf in frames:
            _feed(runner, bus, [tf])
            assert _shown(app)[0] == stage.store_occupancy()  # after every frame: the alert's number
        assert stage.store_totals() == (1, 2, 1)
        assert _row(st, STORE_OCCUPANCY_ID)[1:] == (1, 2, 1)
        if live is not None:
            assert live.occupancy(STORE_OCCUPANCY_ID).occupancy == 1
        assert counts_snapshot(app.state.context)["store"] == {"occupancy": 1, "in": 2, "out": 1}
