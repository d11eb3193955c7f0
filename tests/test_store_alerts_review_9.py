"""Store-wide alerts (``store_occupancy``, ``camera_down``), fixes of a review (each test fails on the code before):

1. a ``camera_down`` of a camera with no frame seen has an id of its own per outage (``start-{clock's first value}``,
   not ``start``): a restart of the embedded mode (no state kept) no longer fires the id of an earlier outage, whose
   stored row is ``resolved`` and kept by the upsert (the alert never showed; the webhook key repeated);
2. ``storelens replay`` (and the API's ``rederive=true``, the same function) writes no store-wide alert: a replay of
   one camera made the others look silent (a ``camera_down`` that never resolves);
3. the Kafka analytics service loads every camera state its table holds before a frame: after a restart the first
   frame of one camera no longer evaluates the store's occupancy from that camera alone (a false ``resolved``);
4. at an embedded stop a live camera's ``camera_down`` is not resolved (its stream did not end; a file's did).
"""
from __future__ import annotations

import asyncio

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.bus import BusMessage
from storelens.runtime.runner import RunnerCore
from storelens.runtime.sinks import HistorySink
from storelens.stages.analytics import AnalyticsStage, derive
from storelens.storage import alerts as aq
from storelens.storage.replay import replay
from test_alerts import IN, OUT, restarted, tframe, two_cameras, walk

T0 = 1_767_225_600_000
LIVE = "rtsp://cam-d.local/stream"


def _alerts(records) -> list[m.Alert]:
    return [r for r in records if isinstance(r, m.Alert)]


# -- 1. camera_down of a camera never seen: an id per outage ----------------------------------------------------

def _process(cfg, t0: int, d_back: bool) -> list[m.Alert]:
    """One run of the embedded mode (a fresh stage: no state kept): c's frames, d silent (maybe back at the end)."""
    stage, out = AnalyticsStage(cfg), []
    for i in range(10):
        out += stage.handle(topics.TRACKS, tframe("c", i, t0 + i * 500)).records
    if d_back:
        out += stage.handle(topics.TRACKS, tframe("d", 0, t0 + 6000)).records
    return _alerts(out)


def test_a_camera_down_after_a_restart_is_a_new_alert(history_store) -> None:
    cfg = parse_config(two_cameras([{"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2,
                                     "cooldown_s": 0}], source_d=LIVE))
    day1 = _process(cfg, T0, d_back=True)
    history_store.write_records(day1)
    day2 = _process(cfg, T0 + 86_400_000, d_back=False)  # the next day, after a restart: d down again
    history_store.write_records(day2)
    assert [a.state for a in day1] == ["firing", "resolved"] and [a.state for a in day2] == ["firing"]
    # the new outage is shown as firing (its own row, and its own webhook delivery key, alert_id:state)
    assert aq.count_alerts(history_store, "firing") == 1
    assert [a["alert_id"] for a in aq.list_alerts(history_store, "firing")[0]] == [day2[0].alert_id]
    assert aq.get_alert(history_store, day1[0].alert_id)["state"] == "resolved"
    assert day1[0].alert_id != day2[0].alert_id
    assert (day1[0].alert_id, day2[0].alert_id) == (f"down:d:start-{T0}", f"down:d:start-{T0 + 86_400_000}")


def test_the_id_of_a_never_seen_camera_is_stable_over_a_replay_and_a_restart_with_state() -> None:
    cfg = parse_config(two_cameras([{"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2,
                                     "cooldown_s": 0}]))
    frames = [tframe("c", i, T0 + i * 500) for i in range(10)] + [tframe("d", 0, T0 + 6000)]
    got = _alerts(derive(cfg, frames))
    assert [(a.alert_id, a.state) for a in got] == [(f"down:d:start-{T0}", "firing"),
                                                    (f"down:d:start-{T0}", "resolved")]
    assert _alerts(derive(cfg, frames)) == got  # the same data: the same ids
    assert restarted(cfg, frames) == got  # the analytics service's restart (state from its table): the same ids


# -- 2. a replay writes no store-wide alert ---------------------------------------------------------------------

def test_a_replay_of_one_camera_writes_no_store_wide_alert(history_store) -> None:
    rules = [{"kind": "camera_down", "id": "d-down", "camera": "d", "after_s": 30},
             {"kind": "camera_down", "id": "c-down", "camera": "c", "after_s": 30},
             {"kind": "store_occupancy", "id": "full", "max": 1, "cooldown_s": 0}]
    cfg = parse_config(two_cameras(rules))
    # live: both cameras walk someone in (store 2 > 1: fires), d then goes quiet for a minute, c walks out
    c = walk("c", 1, IN, 0, T0) + [tframe("c", 4 + i, T0 + 2000 + i * 1000) for i in range(60)]
    c += walk("c", 1, OUT, 64, T0 + 62_500)
    d = walk("d", 2, IN, 0, T0 + 50) + [tframe("d", 4, T0 + 64_000)]
    frames = sorted(c + d, key=lambda f: (f.ts_ms, f.camera_id))
    stage = AnalyticsStage(cfg)
    for tf in frames:
        history_store.write_records(stage.handle(topics.TRACKS, tf).records)
    live = sorted((a["alert_id"], a["state"]) for a in aq.list_alerts(history_store, "all")[0])
    assert [s for _, s in live] == ["resolved"] * len(live) and {i.split(":")[0] for i, _ in live} == {"full", "d-down"}
    for cams in (["c"], ["d"], None):  # storelens replay --camera c / d, and every camera (one by one)
        results = replay(cfg, history_store, camera_ids=cams)
        assert sum(r.frames for r in results) > 0
        assert sorted((a["alert_id"], a["state"]) for a in aq.list_alerts(history_store, "all")[0]) == live
        assert not any(r.counts.get("Alert") for r in results)


# -- 3. the Kafka analytics service: every camera's state before a frame ----------------------------------------

def _table_after(cfg, frames) -> tuple[dict, list[m.Alert]]:
    """The analytics service's table (camera -> saved state) after ``frames``, and the alerts they gave."""
    stage, table, alerts = AnalyticsStage(cfg), {}, []
    for tf in frames:
        alerts += _alerts(stage.handle(topics.TRACKS, tf).records)
        table[tf.camera_id] = stage.camera_state(tf.camera_id)
    return table, alerts


def test_after_a_restart_the_first_frame_sees_every_camera(tmp_path) -> None:
    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.service import ServiceRuntime
    from storelens.storage import SqlStorage

    cfg = parse_config(two_cameras([{"kind": "store_occupancy", "id": "full", "max": 1}]))
    table, before = _table_after(cfg, sorted(walk("c", 1, IN, 0, 1000) + walk("d", 2, IN, 0, 1050),
                                             key=lambda f: f.ts_ms))
    assert [(a.alert_id, a.state, a.value) for a in before] == [("full:shop:1850", "firing", 2.0)]
    loop = asyncio.new_event_loop()
    st = SqlStorage(str(tmp_path / "h.db"))
    app = AnalyticsApp(cfg, st, None, ServiceRuntime("analytics", port=0), loop=loop)  # a restarted service
    try:
        for cam, state in table.items():  # the table as the changelog recovery left it
            app.table.data[topics.camera_key(cam)] = state
        # d's next frame, as AnalyticsApp.handle runs it: the runner core with the app's before-frame hook
        tf = tframe("d", 4, 2700, [(2, 320, 350)])
        msg = BusMessage(topics.TRACKS, topics.camera_key("d"), m.encode(tf), 0, 0, m.type_headers(tf))
        h = app.core.process(msg, topics.TRACKS, app._before_frame)
        assert h.dead_letter is None and h.stop is None
        assert _alerts(h.outputs.records) == []  # still 2 in the store: no false resolve
        assert app.stage.store_occupancy() == 2 and app.stage.last_seq == {"c": 3, "d": 4}
        # c's person walks out: now it resolves, the alert fired before the restart
        for tf in walk("c", 1, OUT, 4, 3000):
            msg = BusMessage(topics.TRACKS, topics.camera_key("c"), m.encode(tf), 0, 0, m.type_headers(tf))
            h = app.core.process(msg, topics.TRACKS, app._before_frame)
            assert h.dead_letter is None
            got = _alerts(h.outputs.records)
            assert all((a.alert_id, a.state) == ("full:shop:1850", "resolved") for a in got)
    finally:
        app.close()
        loop.close()
        st.close()


# -- 4. the embedded stop ends the streams: a live camera is still down ------------------------------------------

@pytest.mark.parametrize("source_d, after_stop", [
    (LIVE, "firing"),  # a live camera's stream does not end at the stop: still down, not resolved
    ("d.mp4", "resolved"),  # a file's stream ended (its end marker stored): a file that ended is not down
])
def test_the_embedded_stop_does_not_resolve_a_live_camera_down(history_store, source_d, after_stop) -> None:
    cfg = parse_config(two_cameras([{"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2}],
                                   source_d=source_d))
    stage = AnalyticsStage(cfg)
    core = RunnerCore(stage, [HistorySink(history_store)])
    out = stage.handle(topics.TRACKS, tframe("d", 0, T0)).records
    for i in range(1, 20):
        out += stage.handle(topics.TRACKS, tframe("c", i, T0 + i * 500)).records
    history_store.write_records(out)
    [fired] = _alerts(out)
    assert (fired.alert_id, fired.state) == ("down:d:0", "firing")
    h = core.end_streams()  # the embedded run stops (SIGTERM): every open stream ended
    assert h is not None and h.stop is None
    ended = _alerts(h.outputs.records)
    assert [(a.alert_id, a.state) for a in ended] == ([] if after_stop == "firing" else [("down:d:0", "resolved")])
    assert aq.get_alert(history_store, "down:d:0")["state"] == after_stop
