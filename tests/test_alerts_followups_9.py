"""Alerts whose rule a site version removes, and alerts an earlier process left open (follow-ups of a review; each
test fails on the code before):

1. an open store-wide alert (``store_occupancy``, ``camera_down``) whose rule a site version removes or changes is
   resolved (it was dropped in silence), also when the snapshot it is in was saved before the version; at the start
   of an embedded run a store-wide alert the previous run left open is taken over when its rule stands (a live
   camera still down: no second alert) or resolved when its rule is gone (it was left ``firing`` for ever);
2. on Kafka, the alerts a site version resolves are published on ``alerts`` too (they reached the sinks only);
3. a resolution of an alert whose camera had no frame in this process is not stamped 1970 (``ts_ms`` 0);
4. on Kafka, the table's camera states are written after a site version (and a removed camera's entry deleted): a
   restart before the camera's next frame no longer resolves the same alert a second time.
"""
from __future__ import annotations

import json
import pathlib
import uuid

import pytest
import yaml

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import alerts as aq
from test_alerts import IN, tframe, two_cameras, walk

T0 = 1_767_225_600_000
LIVE = "rtsp://cam-d.local/stream"


def _alerts(records) -> list[m.Alert]:
    return [r for r in records if isinstance(r, m.Alert)]


def _version(cfg, version: int, rules: list[dict], cameras: list[str] | None = None, ts_ms: int = 0) -> m.SiteUpdate:
    cams = [c.model_dump(mode="json") for c in cfg.cameras if cameras is None or c.id in cameras]
    return m.SiteUpdate(version=version, ts_ms=ts_ms, store_id=cfg.store.id, cameras_json=json.dumps(cams),
                        alert_rules_json=json.dumps(rules))


FULL = {"kind": "store_occupancy", "id": "full", "max": 1}
DOWN = {"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2}


def _full_fired(cfg) -> tuple[AnalyticsStage, m.Alert]:
    """c and d each walk someone in: the store holds 2 > 1, ``full`` fires."""
    stage = AnalyticsStage(cfg)
    out = []
    for tf in sorted(walk("c", 1, IN, 0, T0) + walk("d", 2, IN, 0, T0 + 50), key=lambda f: f.ts_ms):
        out += _alerts(stage.handle(topics.TRACKS, tf).records)
    [fired] = out
    assert (fired.rule_id, fired.state) == ("full", "firing")
    return stage, fired


def _down_fired(cfg) -> tuple[AnalyticsStage, m.Alert]:
    """d sends one frame, then only c: ``down`` fires."""
    stage = AnalyticsStage(cfg)
    out = _alerts(stage.handle(topics.TRACKS, tframe("d", 0, T0)).records)
    for i in range(1, 8):
        out += _alerts(stage.handle(topics.TRACKS, tframe("c", i, T0 + i * 500)).records)
    [fired] = out
    assert (fired.alert_id, fired.state) == ("down:d:0", "firing")
    return stage, fired


# -- 1. a site version resolves the store-wide alerts of the rules it removes or changes ----------------------------

@pytest.mark.parametrize("fire, rules, why", [
    (_full_fired, [], "rule removed"),
    (_full_fired, [{"kind": "camera_occupancy", "id": "full", "camera": "c", "max": 5}], "rule changed"),
    (_full_fired, [{**FULL, "max": 0}], None),  # another threshold: the same rule, the alert stays open
    (_down_fired, [], "rule removed"),
    (_down_fired, [{**DOWN, "camera": "c"}], "rule changed"),
])
@pytest.mark.parametrize("snapshot", [False, True])
def test_a_site_version_resolves_the_store_wide_alerts_of_the_rules_it_removes(fire, rules, why, snapshot) -> None:
    cfg = parse_config(two_cameras([FULL, DOWN], source_d=LIVE))
    stage, fired = fire(cfg)
    update = _version(cfg, 1, rules)
    if not snapshot:  # the running stage takes the version
        closed = _alerts(stage.handle(topics.SITE_CONFIG, update).records)
        closed += _alerts(stage.handle(topics.TRACKS, tframe("c", 50, T0 + 60_000)).records)
    else:  # the analytics service restarts with the version in force and the state saved before it (its table)
        states = {c: stage.camera_state(c) for c in stage.cameras}
        stage = AnalyticsStage(cfg)
        stage.apply_site(update)
        for c, st in states.items():
            stage.load_camera_state(c, st)
        closed = _alerts(stage.handle(topics.TRACKS, tframe("c", 50, T0 + 60_000)).records)
    closed = [a for a in closed if a.alert_id == fired.alert_id]
    if why is None:
        assert closed == [] and fired.rule_id in stage.store_alerts.open
        return
    assert [(a.state, a.message.endswith(f"({why})")) for a in closed] == [("resolved", True)]
    [a] = closed
    assert (a.kind, a.camera_id, a.fired_ts_ms, a.fired_seq) == (fired.kind, fired.camera_id, fired.fired_ts_ms,
                                                                  fired.fired_seq)
    assert a.ts_ms >= fired.ts_ms and a.seq >= fired.fired_seq
    # once: the next frames give no second resolution of it (the rule of that id, if any, starts afresh)
    later = [tframe("c", 60 + i, T0 + 61_000 + i * 400) for i in range(3)]
    assert all(x.alert_id != fired.alert_id for tf in later for x in _alerts(stage.handle(topics.TRACKS, tf).records))
    assert fired.alert_id not in [e[0] for e in stage.store_alerts.open.values()]


# -- 1. the embedded start: store-wide alerts left open are taken over or resolved ----------------------------------

def _stopped_with_d_down(history_store, cfg) -> m.Alert:
    """An embedded run: d's one frame, then c's; ``down`` fires; the stop leaves it open (d is live)."""
    stage, fired = _down_fired(cfg)
    history_store.write_records([fired])
    history_store.write_records(_alerts(stage.end_streams().records))
    assert aq.get_alert(history_store, fired.alert_id)["state"] == "firing"
    return fired


def test_the_next_embedded_run_takes_over_a_live_camera_down(history_store) -> None:
    cfg = parse_config(two_cameras([DOWN], source_d=LIVE))
    fired = _stopped_with_d_down(history_store, cfg)
    t1 = T0 + 3_600_000  # the next run, an hour later: d still down
    stage = AnalyticsStage(cfg)
    assert stage.adopt_alerts(aq.firing_alerts(history_store), t1) == []
    out = []
    for i in range(20):
        out += _alerts(stage.handle(topics.TRACKS, tframe("c", i, t1 + i * 500)).records)
    assert out == []  # still the same outage: no second alert (it fired a new id before)
    out += _alerts(stage.handle(topics.TRACKS, tframe("d", 0, t1 + 10_000)).records)  # d is back
    history_store.write_records(out)
    assert [(a.alert_id, a.state, a.fired_ts_ms) for a in out] == [(fired.alert_id, "resolved", fired.fired_ts_ms)]
    assert aq.count_alerts(history_store, "firing") == 0


@pytest.mark.parametrize("rules, why", [([], "rule removed"), ([{**DOWN, "camera": "c"}], "rule changed")])
def test_the_next_embedded_run_resolves_a_store_wide_alert_whose_rule_went(history_store, rules, why) -> None:
    cfg = parse_config(two_cameras([DOWN], source_d=LIVE))
    fired = _stopped_with_d_down(history_store, cfg)
    t1 = T0 + 3_600_000
    stage = AnalyticsStage(parse_config(two_cameras(rules, source_d=LIVE)))
    closed = stage.adopt_alerts(aq.firing_alerts(history_store), t1)
    history_store.write_records(closed)
    assert [(a.alert_id, a.state, a.ts_ms, a.fired_ts_ms, a.message.endswith(f"({why})")) for a in closed] == [
        (fired.alert_id, "resolved", t1, fired.fired_ts_ms, True)]
    assert aq.count_alerts(history_store, "firing") == 0


# -- 3. a resolution is never stamped before the alert fired -----------------------------------------------------

def test_an_alert_taken_over_and_removed_before_a_frame_is_resolved_at_a_real_time() -> None:
    site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://h/c"}, {"id": "d", "source": "rtsp://h/d"}],
            "alerts": {"rules": [{"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0}, DOWN]}}
    cfg = parse_config(site)
    stage = AnalyticsStage(cfg)
    rows = [{"alert_id": "crowd:c:5", "rule_id": "crowd", "kind": "camera_occupancy", "camera_id": "c",
             "zone_id": None, "fired_seq": 5, "fired_ts_ms": T0, "severity": "warning", "threshold": 0.0},
            {"alert_id": f"down:d:start-{T0}", "rule_id": "down", "kind": "camera_down", "camera_id": "d",
             "zone_id": None, "fired_seq": 0, "fired_ts_ms": T0 + 2000, "severity": "warning", "threshold": 2.0}]
    assert stage.adopt_alerts(rows, T0 + 300_000) == []  # both taken over
    # a version removes c (and its rule) and the camera_down rule before any frame of this process
    out = _alerts(stage.handle(topics.SITE_CONFIG, _version(cfg, 1, [], cameras=["d"])).records)
    assert sorted((a.alert_id, a.state) for a in out) == [("crowd:c:5", "resolved"), (f"down:d:start-{T0}", "resolved")]
    for a in out:
        assert a.ts_ms >= a.fired_ts_ms > 0 and a.seq >= a.fired_seq


# -- 2. and 4. the analytics service on Kafka ----------------------------------------------------------------------

@pytest.fixture
def service_env(tmp_path: pathlib.Path):
    import psycopg

    from test_analytics_app import BOOTSTRAP, PG_DSN, REDIS_URL, Kafka
    from storelens.runtime.analytics_app import app_id

    run = uuid.uuid4().hex[:10]
    cam, cam2, store = f"af-{run}", f"af-{run}-2", f"store-{run}"
    prefix = f"sltest-{run}"
    door = [{"id": "door", "a": [0, 300], "b": [640, 300]}]
    raw = {"store": {"id": store},
           "cameras": [{"id": cam, "source": "/dev/null", "lines": door}, {"id": cam2, "source": "/dev/null"}],
           "alerts": {"rules": [{"kind": "camera_occupancy", "id": "crowd", "camera": cam, "max": 0},
                                {"kind": "camera_occupancy", "id": "crowd2", "camera": cam2, "max": 0},
                                {"kind": "store_occupancy", "id": "full", "max": 0}]},
           "storage": {"backend": "postgres", "dsn": PG_DSN}, "live": {"redis_url": REDIS_URL},
           "kafka": {"bootstrap_servers": BOOTSTRAP, "group_prefix": prefix, "topic_prefix": f"{prefix}.",
                     "partitions": 2}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw)
    kafka = Kafka(config.kafka.topic_prefix)
    yield {"cam": cam, "cam2": cam2, "config": config, "config_path": path, "kafka": kafka, "tmp": tmp_path}
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for table in ("track_points", "crossings", "occupancy", "count_windows"):
            conn.execute(f"DELETE FROM {table} WHERE camera_id = ANY(%s)", ([cam, cam2, "@store"],))  # noqa: S608
        conn.execute("DELETE FROM alerts WHERE camera_id = ANY(%s) OR alert_id LIKE %s",
                     ([cam, cam2], f"full:{store}:%"))
    from storelens.storage.live import RedisLiveState
    live = RedisLiveState(REDIS_URL)
    for c in (cam, cam2):
        live.forget(c)
    live.close()
    try:
        kafka.admin.delete_topics([t for t in kafka.admin.list_topics(timeout=10).topics if t.startswith(prefix)], 30)
    except Exception:  # noqa: BLE001
        pass
    try:
        kafka.admin.delete_groups([app_id(config.kafka)], 30)
    except Exception:  # noqa: BLE001
        pass
    kafka.close()


def test_the_service_publishes_a_site_versions_resolutions_once_over_a_restart(service_env) -> None:
    from test_analytics_app import ServiceProc, box, frame, pg_rows, phase1_frames, phase2_frames, wait_until
    from storelens.runtime.analytics_app import changelog_topic
    from storelens.runtime.kafka import consume_all

    cam, cam2, kafka, config = service_env["cam"], service_env["cam2"], service_env["kafka"], service_env["config"]
    store = config.store.id
    alert_rows = lambda: {r[0]: r[1:] for r in pg_rows(  # noqa: E731
        "SELECT alert_id, state, cleared_ts_ms FROM alerts WHERE camera_id = ANY(%s) OR alert_id LIKE %s",
        ([cam, cam2], f"full:{store}:%"))}

    def saved(camera: str) -> dict:
        log = consume_all(kafka.cfg, changelog_topic(config.kafka), timeout_s=5)
        last = {x.key: x.value for x in sorted(log, key=lambda x: (x.partition, x.offset))}
        return json.loads(last.get(topics.camera_key(camera)) or "{}")

    def published() -> list[m.Alert]:
        msgs = consume_all(kafka.cfg, kafka.name(topics.ALERTS), timeout_s=10)
        return [m.decode(m.Alert, x.value) for x in sorted(msgs, key=lambda x: (x.partition, x.offset))]

    proc = ServiceProc(service_env["config_path"], service_env["tmp"] / "analytics-1.log", _port())
    try:
        proc.wait_ready()
        for tf in phase1_frames(cam) + [frame(cam2, 1, [box(1, 320, 100)])]:
            kafka.send(topics.camera_key(tf.camera_id), m.encode(tf))
        wait_until("three alerts firing", lambda: len(alert_rows()) == 3, proc=proc)
        # a version removes every rule and the second camera
        cams = [c.model_dump(mode="json") for c in config.cameras if c.id == cam]
        update = m.SiteUpdate(version=1, ts_ms=T0, actor="test", store_id=store, cameras_json=json.dumps(cams),
                              alert_rules_json="[]")
        kafka.producer.publish_wait(kafka.name(topics.SITE_CONFIG), store.encode(), m.encode(update), None,
                                    timeout_s=30)
        wait_until("the three alerts resolved", lambda: [s for s, _ in alert_rows().values()] == ["resolved"] * 3,
                   proc=proc)
        # 2. on the alerts topic too
        wait_until("the resolutions on the alerts topic",
                   lambda: sum(a.state == "resolved" for a in published()) == 3, proc=proc)
    finally:
        assert proc.stop() == 0
    cleared = alert_rows()
    # 4. the restarted service (the version in force from the start, the table from its changelog): cam's next frames
    proc = ServiceProc(service_env["config_path"], service_env["tmp"] / "analytics-2.log", _port())
    try:
        proc.wait_ready()
        for tf in phase2_frames(cam):
            kafka.send(topics.camera_key(cam), m.encode(tf))
        wait_until("the frames after the restart", lambda: pg_rows(
            "SELECT 1 FROM crossings WHERE camera_id = %s AND seq >= 13", (cam,)), proc=proc)
        wait_until("the last frame's state saved (after its outputs were published)",
                   lambda: saved(cam).get("last_seq") == 18, proc=proc)
    finally:
        assert proc.stop() == 0
    got = published()
    resolved = sorted(a.alert_id for a in got if a.state == "resolved")
    assert resolved == sorted(cleared) and len(set(resolved)) == 3  # each once: none again after the restart
    assert alert_rows() == cleared  # cleared_ts_ms as the version set it
    assert all(a.ts_ms >= a.fired_ts_ms for a in got)
    assert saved(cam2) == {}  # the removed camera's table entry is gone (a tombstone last on the changelog)


def _port() -> int:
    from storelens.runtime.localdeploy import free_port

    return free_port()
