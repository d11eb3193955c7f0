"""Follow-ups of a review of the analytics batch (each test fails on the code before):

1. a file camera's alert left firing by an embedded run whose rule changed but kept its id (another threshold,
   another hold, another file, a live camera now a file) is taken over by the next run and resolved when the
   re-read says so (it stayed firing for ever, the changed rule firing a second alert of the incident); the same
   file read again with the same rule still gives it once, under the same id;
2. a camera a site version removed while the analytics service's tables were not ready (start-up recovery,
   rebalance) has its open alerts resolved once the tables are (its entry was dropped first, the alerts left
   firing); a camera the version resolved whose partition was not assigned when its state was saved has its entry
   dropped (it stayed, and a restart resolved its alerts a second time);
3. an ended stream's kept last zone bucket is not continued by a next stream that goes back in time (a file
   re-pointed to another with the same start time): its row was both files' mixed;
4. (docs only: README and ZoneBuckets.end say an embedded restart's row replaces the ended run's);
5. the ``camera_down`` alert of a camera closed from its saved state (removed while the service was down) is
   resolved with its other alerts, not at the next frame of another camera (and not a second time when another
   camera's state with the same store-wide snapshot is loaded).
"""
from __future__ import annotations

import json
import time

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.zones import ZoneBuckets, ZoneEvent
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import alerts as aq
from test_alert_webhooks import Server
from test_alerts import IN, kafka_site, tframe, two_cameras, walk

T0 = 1_767_225_600_000
CROWD = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0}
D_CROWD = {"kind": "camera_occupancy", "id": "dcrowd", "camera": "d", "max": 0}


def _version(cameras: list[dict], rules: list[dict], n: int) -> m.SiteUpdate:
    return m.SiteUpdate(version=n, ts_ms=T0, actor="test", store_id="shop", cameras_json=json.dumps(cameras),
                        alert_rules_json=json.dumps(rules))


def _frames(people: list[bool], seq0: int = 0, ts0: int = 1000) -> list[m.TrackedFrame]:
    """Frames of camera c every 100 ms, someone in view or not."""
    return [tframe("c", seq0 + i, ts0 + i * 100, [(1, 320, 300)] if p else []) for i, p in enumerate(people)]


def _run(st: SqlStorage, stage: AnalyticsStage, frames: list[m.TrackedFrame], stop: bool = True) -> list[m.Alert]:
    """One embedded run of ``frames`` (its start takes over what the history has open), written to ``st``; ``stop``:
    it ends by the embedded stop (end_streams), else by each file's end-of-stream marker (at its last frame)."""
    out = stage.adopt_alerts(st.firing_alerts(), 99_000)
    for tf in frames:
        out += stage.handle(topics.TRACKS, tf).records
    if stop:
        out += stage.end_streams().records
    else:
        for cam in sorted({f.camera_id for f in frames}):
            last = max((f for f in frames if f.camera_id == cam), key=lambda f: f.seq)
            end = m.TrackedFrame(camera_id=cam, seq=last.seq + 1, ts_ms=last.ts_ms, end_of_stream=True)
            out += stage.handle(topics.TRACKS, end).records
    st.write_records(out)
    return [r for r in out if isinstance(r, m.Alert)]


def _rows(st: SqlStorage) -> list[tuple[str, str]]:
    rows, _ = aq.list_alerts(st, limit=100)
    return sorted((r["alert_id"], r["state"]) for r in rows)


# -- 1. a file camera's alert whose rule changed but kept its id ------------------------------------------------------

@pytest.mark.parametrize("live, second_rule, second_people, stop", [
    (False, {**CROWD, "max": 3}, [True] * 5, True),  # nobody over 3: resolved at the re-read's first frame
    (False, {**CROWD, "hold_s": 0.15}, [True] * 5 + [False] * 5, True),  # the changed hold fired crowd:c:2 too
    (False, CROWD, [False] * 5, True),  # another file (nobody in view)
    (True, CROWD, [True] * 3, False),  # a live camera's (fired at seq 500) now a file of 3 frames: resolved at its end
], ids=["threshold", "hold", "another-file", "live-then-file"])
def test_a_file_cameras_alert_of_a_changed_rule_is_taken_over(tmp_path, live, second_rule, second_people,
                                                              stop) -> None:
    """Run 1 leaves c's crowd alert firing (the embedded stop); run 2 reads c again under a rule of the same id
    with another threshold or hold, or another file: its alert is taken over, resolved under its id once the
    re-read says so, and no second alert of the incident fires. Before, it was left firing for ever."""
    with SqlStorage(str(tmp_path / "h.db")) as st:
        raw = two_cameras([CROWD])
        if live:
            raw["cameras"][0]["source"] = "rtsp://cam/c"
        first = _frames([True] * 5, seq0=500 if live else 0, ts0=T0 if live else 1000)
        _run(st, AnalyticsStage(parse_config(raw)), first)
        fired = first[0].seq
        assert _rows(st) == [(f"crowd:c:{fired}", "firing")]

        sent = _run(st, AnalyticsStage(parse_config(two_cameras([second_rule]))), _frames(second_people), stop)
        assert _rows(st) == [(f"crowd:c:{fired}", "resolved")]  # one alert of the incident, resolved
        assert [(a.alert_id, a.state) for a in sent] == [(f"crowd:c:{fired}", "resolved")]
        assert not st.firing_alerts()


def test_a_file_alert_taken_over_from_a_live_camera_stays_open_at_an_embedded_stop(tmp_path) -> None:
    """The re-read stopped (end_streams) before it could measure the alert again: left open for the next run,
    not resolved (only the file's real end says the alert is not in it)."""
    with SqlStorage(str(tmp_path / "h.db")) as st:
        raw = two_cameras([CROWD])
        raw["cameras"][0]["source"] = "rtsp://cam/c"
        _run(st, AnalyticsStage(parse_config(raw)), _frames([True] * 5, seq0=500, ts0=T0))
        assert _run(st, AnalyticsStage(parse_config(two_cameras([CROWD]))), _frames([True] * 3)) == []
        assert _rows(st) == [("crowd:c:500", "firing")]


def test_the_same_file_read_again_with_the_same_rule_gives_each_alert_once(tmp_path) -> None:
    """c's file: crowd fires at seq 3 and resolves, fires again at seq 8 and is open at the stop. The next run
    reads the same file under the same rule: the alert taken over (crowd:c:8) is not resolved on the frames before
    the one that fired it (then fired again under the same id: the history would keep it resolved), and the one
    of seq 3 (already resolved) is not sent again."""
    people = [False] * 3 + [True] * 3 + [False] * 2 + [True] * 3
    with SqlStorage(str(tmp_path / "h.db")) as st:
        cfg = parse_config(two_cameras([{**CROWD, "cooldown_s": 0}]))
        first = _run(st, AnalyticsStage(cfg), _frames(people))
        assert [(a.alert_id, a.state) for a in first] == [("crowd:c:3", "firing"), ("crowd:c:3", "resolved"),
                                                          ("crowd:c:8", "firing")]
        # the same file again, stopped where the first run stopped: crowd:c:8 stays the open one, nothing is sent
        assert _run(st, AnalyticsStage(cfg), _frames(people)) == []
        assert _rows(st) == [("crowd:c:3", "resolved"), ("crowd:c:8", "firing")]
        # read on: nobody in view any more, crowd:c:8 resolves under its id
        again = _run(st, AnalyticsStage(cfg), _frames(people + [False]))
        assert [(a.alert_id, a.state) for a in again] == [("crowd:c:8", "resolved")]
        assert _rows(st) == [("crowd:c:3", "resolved"), ("crowd:c:8", "resolved")]


# -- 2. a camera removed while the analytics service's tables were not ready ------------------------------------------

def _service(tmp_path, name: str, webhook: str):
    raw = two_cameras([D_CROWD])
    raw["alerts"]["webhooks"] = [{"url": webhook, "backoff_s": 0.05}]
    return kafka_site(raw, name)


def _fire_d(s) -> str:
    for tf in sorted(walk("c", 1, IN, 0, T0) + walk("d", 2, IN, 0, T0 + 50), key=lambda f: f.ts_ms):
        s.frame(tf)
    return "dcrowd:d:0"


def _removed_resolutions(s, alert_id: str) -> tuple[list[str], list[str]]:
    from test_analytics_site_followups_9 import _alerts_sent

    sent = [a for _, a in _alerts_sent(s) if a.alert_id == alert_id]
    return [a.state for a in sent], [a.message for a in sent if a.state == "resolved"]


def test_a_camera_removed_while_the_tables_recover_has_its_alerts_resolved_once(tmp_path) -> None:
    """d's crowd alert fires; the service restarts; while its table recovers (not ready) a version removes d (the
    stage holds nothing of it: nothing resolved); once the tables are ready the heartbeat saves the cameras'
    states, then the tick closes d from its entry: one ``resolved (camera removed)`` in the history, on ``alerts``
    and to the webhook, the entry dropped. Before, the heartbeat's save dropped d's entry first: the alert stayed
    firing."""
    from test_analytics_site_followups_9 import Service, _recovered

    server = Server([])
    cfg = _service(tmp_path, "t-fu30a", server.url)
    first = Service(cfg, tmp_path)
    try:
        alert_id = _fire_d(first)
    finally:
        first.close()
    again = Service(cfg, tmp_path)
    try:
        again.app._tables_ready = False  # the recovery runs: the changelog read back into the table
        again.app.table.data.update(_recovered(again))
        again.site_version([], ["c"])  # d and its rule removed
        assert again.app._site_pending == {"d"}
        again.app._compute_tables_ready = lambda: True  # the recovery is done (no worker here)
        again.loop.run_until_complete(again.app._heartbeat())
        assert again.app._tables_ready
        for i in range(2):
            again.loop.run_until_complete(again.app.tick_at(int(time.time() * 1000) + i * 1000))
        states, messages = _removed_resolutions(again, alert_id)
        assert states == ["firing", "resolved"] and messages[0].endswith("(camera removed)")
        assert aq.get_alert(again.storage, alert_id)["state"] == "resolved"
        assert topics.camera_key("d") not in again.app.table.data
    finally:
        again.close()
        server.close()
    posted = [h["X-StoreLens-Delivery"] for h, _ in server.requests]
    assert posted == [f"{alert_id}:firing", f"{alert_id}:resolved"]


def test_a_removed_cameras_entry_not_dropped_at_the_save_is_dropped_by_the_tick(tmp_path) -> None:
    """A version removes d while the stage holds it (resolved then), but d's partition is not assigned here when
    the states are saved: its entry stays; the next tick (the partition assigned again) drops it without a second
    resolution, so a restart does not resolve it again. Before, the tick skipped it for ever and each restart
    resolved its alert again (a second webhook)."""
    from test_analytics_site_followups_9 import Service, _recovered

    server = Server([])
    cfg = _service(tmp_path, "t-fu30b", server.url)
    s = Service(cfg, tmp_path)
    try:
        alert_id = _fire_d(s)
        s.app._assigned = lambda: set()  # a rebalance took the partition meanwhile
        s.site_version([], ["c"])
        assert topics.camera_key("d") in s.app.table.data  # not this worker's to write then
        s.app._assigned = lambda: {0}
        s.loop.run_until_complete(s.app.tick_at(int(time.time() * 1000)))
        assert topics.camera_key("d") not in s.app.table.data
        assert _removed_resolutions(s, alert_id)[0] == ["firing", "resolved"]
    finally:
        s.close()
    again = Service(cfg, tmp_path)
    try:
        again.app.table.data.update(_recovered(again))
        assert topics.camera_key("d") not in again.app.table.data
        again.loop.run_until_complete(again.app.tick_at(int(time.time() * 1000)))
        assert _removed_resolutions(again, alert_id)[0] == ["firing", "resolved"]  # not resolved again
    finally:
        again.close()
        server.close()
    posted = [h["X-StoreLens-Delivery"] for h, _ in server.requests]
    assert posted == [f"{alert_id}:firing", f"{alert_id}:resolved"]


# -- 3. an ended stream's last bucket and a next stream going back in time --------------------------------------------

def _stream(b: ZoneBuckets, track: int, end_ms: int = 90_000) -> list:
    """One person in zone z, a frame a second from 0 (the same start time each stream), closed 5 s behind."""
    out = []
    for t in range(0, end_ms, 1000):
        events = [ZoneEvent(f"e{track}", "cam", "z", track, "enter", t, 0)] if t == 0 else []
        b.add(t, {"z": [track]}, events)
        out += b.close(t - 5000)
    return out + b.end()


@pytest.mark.parametrize("second_start_ms, second_end_ms, second_minute", [
    (0, 90_000, (60_000, 0, 1, 29_000)),  # file A re-pointed to file B, same start time: B's minute only
    (89_000, 95_000, (60_000, 1, 2, 34_000)),  # a next stream going on from A's last frame: continues A's minute
], ids=["back-in-time", "forward"])
def test_an_ended_streams_last_bucket_is_continued_only_by_a_stream_going_forward(second_start_ms, second_end_ms,
                                                                                   second_minute) -> None:
    b = ZoneBuckets(60, max_hold_ms=5000)
    first = [(s.start_ms, s.visits, s.unique_people, s.covered_ms) for s in _stream(b, 1)]
    assert first == [(0, 1, 1, 60_000), (60_000, 0, 1, 29_000)]
    out = []
    for t in range(second_start_ms, second_end_ms, 1000):
        events = [ZoneEvent("e2", "cam", "z", 2, "enter", t, 0)] if t == second_start_ms else []
        b.add(t, {"z": [2]}, events)
        out += b.close(t - 5000)
    out += b.end()
    rows = {s.start_ms: (s.start_ms, s.visits, s.unique_people, s.covered_ms) for s in out}
    assert rows[60_000] == second_minute


def test_the_kept_bucket_and_its_end_time_survive_the_state() -> None:
    """The analytics service's table: the end time is saved with the kept buckets."""
    b = ZoneBuckets(60, max_hold_ms=5000)
    _stream(b, 1)
    again = ZoneBuckets(60, max_hold_ms=5000)
    again.load_state(json.loads(json.dumps(b.state())))
    rows = [(s.start_ms, s.unique_people, s.covered_ms) for s in _stream(again, 2)]
    assert rows[-1] == (60_000, 1, 29_000)


# -- 5. the camera_down alert of a camera closed from its saved state -------------------------------------------------

def test_a_removed_cameras_camera_down_is_resolved_when_its_state_is_closed() -> None:
    """d (a live camera) is down (its camera_down fires on c's frames); a version removes d while the service is
    down; the restarted stage closes d from its saved state: its camera_down resolves then, once (loading c's
    state, which carries the same store-wide snapshot, does not resolve it again at c's next frame). Before, it
    waited for another camera's frame."""
    down = {"kind": "camera_down", "id": "ddown", "camera": "d", "after_s": 1}
    raw = two_cameras([down], source_d="rtsp://cam/d")
    cfg = parse_config(raw)
    stage = AnalyticsStage(cfg)
    stage.handle(topics.TRACKS, tframe("d", 0, T0, []))
    fired = [a for i in range(1, 10)
             for a in stage.handle(topics.TRACKS, tframe("c", i, T0 + i * 500, [])).records if isinstance(a, m.Alert)]
    assert [(a.alert_id, a.state) for a in fired] == [("ddown:d:0", "firing")]
    saved_d, saved_c = stage.camera_state("d"), stage.camera_state("c")

    restarted = AnalyticsStage(parse_config(raw))
    cams = [c.model_dump(mode="json") for c in cfg.cameras if c.id == "c"]
    assert restarted.handle(topics.SITE_CONFIG, _version(cams, [], 1)).records == []
    out = restarted.close_removed_camera("d", saved_d)
    assert [(a.alert_id, a.state, a.message.endswith("(rule removed)")) for a in out.records] == [
        ("ddown:d:0", "resolved", True)]
    assert [(p.topic, p.camera_id) for p in out.publish] == [(topics.ALERTS, "d")]
    restarted.load_camera_state("c", saved_c)
    later = restarted.tick(T0 + 60_000).records + restarted.handle(topics.TRACKS, tframe("c", 20, T0 + 70_000)).records
    assert [a for a in later if isinstance(a, m.Alert)] == []
