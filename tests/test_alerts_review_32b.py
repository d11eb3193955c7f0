"""Three findings of a review of the alerts (each test fails on the code before):

1. the Kafka analytics service keeps a store-wide alert fired by its one-second timer across a restart: frames stop,
   the tick fires ``camera_down`` for every camera, the service restarts (a rolling update) and the frames come back
   less than ``after_s`` later. The tick's alerts were in memory only (the cameras' saved states did not hold them):
   the first camera back never got its ``resolved`` (its row ``firing`` for good), the others fired a second time
   under the same id. Now the store-level alert state is saved after a tick that changed it (a table entry of its
   own, ``_store/<store id>``);
2. two ``store_occupancy`` incidents at the same store clock (``cooldown_s: 0``, one camera's frames lagging
   another's: the clock does not move) get two ids (they shared ``{rule}:{store}:{clock}``: the history kept one row,
   the receivers dropped the second firing as a duplicate); the ids stay those of a replay or a restart;
3. a ``staff_only`` rule does not count the tracks the uniform cue marks as staff (``exclude_staff``, default on):
   a uniformed staff member in the stock room fires no alert; anybody else does.

Real components: the service's :class:`AnalyticsApp` on the stack's Kafka with a SQLite history (1, driven as in
``tests/test_analytics_site_followups_9.py``), the analytics stage (2, 3) with its zone analyzer (3).
"""
from __future__ import annotations

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.stages.analytics import derive
from storelens.storage import SqlStorage
from storelens.storage import alerts as aq
from test_alerts import IN, OUT, kafka_site, tframe, two_cameras, walk

T0 = 1_767_225_600_000


# -- 1. a tick-fired camera_down across a restart of the analytics service -------------------------------------------

def _live_site() -> dict:
    """Two live cameras, each with a camera_down rule (after 5 s)."""
    return {"store": {"id": "shop"},
            "cameras": [{"id": "a", "source": "rtsp://cam-a.local/s"}, {"id": "b", "source": "rtsp://cam-b.local/s"}],
            "alerts": {"rules": [{"kind": "camera_down", "id": "a-down", "camera": "a", "after_s": 5},
                                 {"kind": "camera_down", "id": "b-down", "camera": "b", "after_s": 5}]}}


@pytest.fixture
def live_site():
    from test_runtime_readiness import _delete_topics

    cfg = kafka_site(_live_site(), "t-rev32b")
    try:
        yield cfg
    finally:
        _delete_topics(cfg.kafka)


@pytest.mark.parametrize("tick_before_frames", [False, True], ids=["frame-first", "tick-first"])
def test_a_tick_fired_camera_down_survives_a_restart_of_the_analytics_service(live_site, tmp_path,
                                                                               tick_before_frames) -> None:
    from test_analytics_site_followups_9 import Service, _alerts_sent, _recovered

    cfg = live_site
    first = Service(cfg, tmp_path)
    try:
        for i in range(10):  # both cameras send frames, then nothing (ingest / detect-track down)
            first.frame(tframe("a", i, T0 + i * 200))
            first.frame(tframe("b", i, T0 + i * 200 + 50))
        wall = T0 + 2000
        first.loop.run_until_complete(first.app.tick_at(wall))  # frames since the last tick: the anchor
        first.loop.run_until_complete(first.app.tick_at(wall + 6000))  # 6 s of wall time without frames
        fired = {a.rule_id: a for _, a in _alerts_sent(first)}
        assert {k: (a.state, a.alert_id) for k, a in fired.items()} == {
            "a-down": ("firing", "a-down:a:9"), "b-down": ("firing", "b-down:b:9")}
    finally:
        first.close()  # a rolling update: the service stops

    again = Service(cfg, tmp_path)  # the same history; the table recovered from the changelog
    try:
        again.app.table.data.update(_recovered(again))
        if tick_before_frames:
            again.loop.run_until_complete(again.app.tick_at(wall + 6500))
        clock = fired["a-down"].ts_ms
        # the frames come back less than after_s after the restart: a first, then b
        again.frame(tframe("a", 10, clock + 1000))
        again.frame(tframe("b", 10, clock + 1100))
        sent = [(a.alert_id, a.state) for _, a in _alerts_sent(again)]
        # one firing and one resolved per outage (before: a never resolved; b fired again, then resolved)
        assert sent == [("a-down:a:9", "firing"), ("b-down:b:9", "firing"),
                        ("a-down:a:9", "resolved"), ("b-down:b:9", "resolved")]
        assert {r["alert_id"]: r["state"] for r in aq.list_alerts(again.storage)[0]} == {
            "a-down:a:9": "resolved", "b-down:b:9": "resolved"}
        assert aq.count_alerts(again.storage, "firing") == 0
    finally:
        again.close()



def test_a_version_after_a_tick_fired_alert_is_not_undone_by_a_restart(live_site, tmp_path) -> None:
    """The tick fires both camera_down alerts (saved); a site version removes both rules (the alerts resolved, rule
    removed) and the service stops before its next tick; after the restart (the version in force from the start)
    nothing is resolved a second time: the entry the tick saved is saved again with the version (the cameras' states
    hold no store-level state without store-wide rules: nothing there said the tick's entry was older)."""
    import json

    from storelens.runtime.kafka import KafkaBus
    from test_analytics_site_followups_9 import Service, _alerts_sent, _recovered

    cfg = live_site
    update = m.SiteUpdate(version=1, ts_ms=T0, actor="test", store_id="shop",
                          cameras_json=json.dumps([c.model_dump(mode="json") for c in cfg.cameras]),
                          alert_rules_json="[]")
    site_topic = topics.topic_name(topics.SITE_CONFIG, cfg.kafka.topic_prefix)
    first = Service(cfg, tmp_path)
    try:
        for i in range(10):
            first.frame(tframe("a", i, T0 + i * 200))
            first.frame(tframe("b", i, T0 + i * 200 + 50))
        first.loop.run_until_complete(first.app.tick_at(T0 + 2000))
        first.loop.run_until_complete(first.app.tick_at(T0 + 8000))  # both fire
        bus = KafkaBus(cfg.kafka, "t-rev32b-site")
        try:
            bus.publish_wait(site_topic, b"shop", m.encode(update), None, timeout_s=30)
        finally:
            bus.close()
        first.loop.run_until_complete(first.app.handle(b"shop", m.encode(update), site_topic,
                                                       m.type_headers(update), source=None))
    finally:
        first.close()  # before the next tick
    again = Service(cfg, tmp_path)
    try:
        again.app.follow_site()  # as build_app: the version in force before the first frame
        again.app.table.data.update(_recovered(again))
        again.loop.run_until_complete(again.app.tick_at(T0 + 9000))
        again.frame(tframe("a", 10, T0 + 9000))
        again.frame(tframe("b", 10, T0 + 9100))
        sent = [(a.alert_id, a.state, a.message.endswith("(rule removed)")) for _, a in _alerts_sent(again)]
        assert sent == [("a-down:a:9", "firing", False), ("b-down:b:9", "firing", False),
                        ("a-down:a:9", "resolved", True), ("b-down:b:9", "resolved", True)]
        assert aq.count_alerts(again.storage, "firing") == 0
    finally:
        again.close()

# -- 2. two store_occupancy incidents at the same store clock ---------------------------------------------------------

def test_two_store_occupancy_incidents_at_one_store_clock_have_two_ids(tmp_path) -> None:
    """d's frame moves the store clock to 10 s; c's frames lag behind it (the clock does not move): someone walks in
    (fire), out (resolve) and in again (fire): two incidents, two ids, two rows; the same ids from snapshots (the
    analytics service's restart) and the same ones again in a replay."""
    from test_alerts import restarted

    cfg = parse_config(two_cameras([{"kind": "store_occupancy", "id": "full", "max": 0, "cooldown_s": 0}]))
    frames = [tframe("d", 0, 10_000)] + walk("c", 1, IN, 0, 1000) + walk("c", 1, OUT, 4, 2600) + walk(
        "c", 2, IN, 8, 4200)
    got = [a for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    assert [(a.state, a.ts_ms) for a in got] == [("firing", 10_000), ("resolved", 10_000), ("firing", 10_000)]
    assert [a.alert_id for a in got] == ["full:shop:10000", "full:shop:10000", "full:shop:10000-2"]
    assert restarted(cfg, frames) == got  # a restart from the saved state gives the same ids
    assert [a for a in derive(cfg, frames) if isinstance(a, m.Alert)] == got  # and so does a replay
    with SqlStorage(str(tmp_path / "h.db")) as st:
        st.write_records(got)
        rows = {r["alert_id"]: r["state"] for r in aq.list_alerts(st)[0]}
    assert rows == {"full:shop:10000": "resolved", "full:shop:10000-2": "firing"}


# -- 3. staff_only and the uniform cue --------------------------------------------------------------------------------

def _staff_site(rule: dict) -> dict:
    from test_alerts import site

    raw = site([{"kind": "staff_only", "id": "stock", "camera": "c", "zone": "z", "cooldown_s": 0, **rule}])
    raw["staff"] = {"uniform": {"colours": [{"name": "red", "hsv": [0, 200, 200]}]}}  # detect-track marks the tracks
    return raw


def _frames(people: list[list[tuple[int, float, str]]]) -> list[m.TrackedFrame]:
    """Per frame: (track id, x of the box centre, its uniform mark: "" none, else the colour detect-track found)."""
    from test_alerts import box

    return [m.TrackedFrame(camera_id="c", seq=i, ts_ms=1000 + i * 100, width=640, height=480,
                           tracks=[m.Track(track_id=t, bbox_xyxy=box(x), staff_uniform=u) for t, x, u in p])
            for i, p in enumerate(people)]


STAFF, STRANGER, AWAY = (1, 50, "red"), (2, 60, ""), (2, 500, "")  # x 50 and 60 inside the zone z, 500 outside


@pytest.mark.parametrize("rule, people, expected", [
    ({}, [[STAFF]] * 4 + [[]], []),  # a uniformed staff member in the stock room: no alert
    ({}, [[STRANGER]] * 4 + [[]], [("firing", 0, 1.0), ("resolved", 4, 0.0)]),  # anybody else: the alert
    ({"exclude_staff": True}, [[STAFF]] * 2 + [[STAFF, STRANGER]] * 2 + [[STAFF, AWAY]] * 2,
     [("firing", 2, 1.0), ("resolved", 4, 0.0)]),  # the stranger counts, the staff member beside them does not
    ({"exclude_staff": False}, [[STAFF]] * 4 + [[]], [("firing", 0, 1.0), ("resolved", 4, 0.0)]),  # everybody
], ids=["staff", "stranger", "both", "option-off"])
def test_a_staff_only_rule_does_not_count_uniformed_staff(rule, people, expected) -> None:
    from test_alerts import restarted

    cfg = parse_config(_staff_site(rule))
    assert cfg.alerts.rules[0].exclude_staff is rule.get("exclude_staff", True)
    frames = _frames(people)
    got = [a for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    assert [(a.state, a.seq, a.value) for a in got] == expected
    assert all(a.message.startswith("c: 1 people in staff-only zone z") for a in got if a.state == "firing")
    assert restarted(cfg, frames) == got  # the staff marks and who is inside are kept in the camera's state


def test_exclude_staff_takes_true_or_false_only() -> None:
    from storelens.errors import ConfigError

    with pytest.raises(ConfigError, match=r"alerts\.rules\.0\.staff_only\.exclude_staff"):
        parse_config(_staff_site({"exclude_staff": "yes"}))
