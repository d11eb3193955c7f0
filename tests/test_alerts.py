"""Alerts: the ``alerts:`` config, the hold/resolve/cooldown rules, the analyzer in the analytics stage,
the ``alerts`` table (upsert that keeps the API's columns) and the API (list, ack, resolve)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from storelens.api.testing import signed_in_client
from storelens.api import create_app
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.alerts import HoldAlert, first_fire
from storelens.errors import ConfigError
from storelens.stages.analytics import AnalyticsStage, derive
from storelens.storage import SqlStorage

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


def site(alerts: list[dict], **zone_kw) -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "zones": [
        {"id": "z", "polygon": SQUARE, "enter_after_ms": 0, "exit_after_ms": 0, "lost_after_ms": 0, **zone_kw},
        {"id": "q", "kind": "queue", "polygon": [[200, 0], [300, 0], [300, 100], [200, 100]], "service_edge": [0, 1],
         "enter_after_ms": 0, "exit_after_ms": 0, "lost_after_ms": 0}]}],
        "alerts": {"rules": alerts}}


# -- config ------------------------------------------------------------------------------------

def test_config_parses_every_kind() -> None:
    cfg = parse_config(site([
        {"kind": "camera_occupancy", "id": "a", "camera": "c", "max": 5, "hold_s": 2, "severity": "critical"},
        {"kind": "zone_occupancy", "id": "b", "camera": "c", "zone": "z", "max": 2},
        {"kind": "queue_length", "id": "d", "camera": "c", "zone": "q", "min_length": 3, "hold_s": 30},
        {"kind": "loitering", "id": "e", "camera": "c", "zone": "z", "cooldown_s": 0},
        {"kind": "staff_only", "id": "f", "camera": "c", "zone": "z"},
    ]))
    assert [r.kind for r in cfg.alerts.rules] == ["camera_occupancy", "zone_occupancy", "queue_length", "loitering",
                                           "staff_only"]
    rules = cfg.alerts.rules
    assert rules[0].severity == "critical" and rules[1].cooldown_s == 60.0 and rules[2].hold_s == 30
    assert len(parse_config({**site([]), "alerts": {}}).alerts.rules) == 0


@pytest.mark.parametrize("rule, error", [
    ({"kind": "queue_length", "id": "x", "camera": "nope", "zone": "q", "min_length": 3},
     "alerts.rules.0.camera: no such camera 'nope'"),
    ({"kind": "loitering", "id": "x", "camera": "c", "zone": "nope"},
     "alerts.rules.0.zone: camera 'c' has no zone 'nope'"),
    ({"kind": "flood", "id": "x", "camera": "c"}, "alerts.rules.0: Input tag 'flood'"),
    ({"kind": "zone_occupancy", "id": "x", "camera": "c", "max": 3},
     "alerts.rules.0.zone_occupancy.zone: Field required"),
    ({"kind": "camera_occupancy", "id": "x", "camera": "c", "max": 3, "zone": "z"},
     "alerts.rules.0.camera_occupancy.zone"),
    ({"kind": "camera_occupancy", "id": "x", "camera": "c", "max": -1}, "alerts.rules.0.camera_occupancy.max"),
    ({"kind": "staff_only", "id": "x", "camera": "c", "zone": "z", "limit": 1},
     "alerts.rules.0.staff_only.limit: Extra"),
    ({"kind": "staff_only", "id": "x y", "camera": "c", "zone": "z"}, "alerts.rules.0.staff_only.id"),
    ({"kind": "staff_only", "id": "x", "camera": "c", "zone": "z", "severity": "fatal"},
     "alerts.rules.0.staff_only.severity"),
])
def test_config_errors_name_the_field(rule: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        parse_config(site([rule]))
    assert error in str(exc.value)


def test_config_rule_ids_are_unique() -> None:
    rule = {"kind": "staff_only", "id": "x", "camera": "c", "zone": "z"}
    with pytest.raises(ConfigError, match="duplicate alert rule id"):
        parse_config(site([rule, rule]))


# -- rules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("hold_ms, cooldown_ms, frames, expected", [
    # hold 0: fire at the first true frame, resolve at the first false one
    (0, 0, "TTFF", "f.r."),
    # hold 100 (frames every 50 ms): true for 100 ms -> fire at the third true frame
    (100, 0, "TTTTFFFF", "..f...r."),
    # interrupted before the hold: nothing
    (100, 0, "TTFTTFTT", "........"),
    # a short dip while firing does not resolve
    (100, 0, "TTTFTTFFF", "..f.....r"),
    # fires once however long it stays true
    (0, 0, "TTTTTT", "f....."),
    # cooldown 200 ms after the resolve: true again at once -> fires when the cooldown ended
    (0, 200, "TFTTTTTT", "fr...f.."),
    # cooldown 0: fires again at once
    (0, 0, "TFTF", "frfr"),
])
def test_hold_alert(hold_ms: int, cooldown_ms: int, frames: str, expected: str) -> None:
    a = HoldAlert(hold_ms, cooldown_ms)
    got = "".join({None: ".", "fire": "f", "resolve": "r"}[a.update(i * 50, c == "T")] for i, c in enumerate(frames))
    assert got == expected
    # same answers after a snapshot round trip at every frame
    b = HoldAlert(hold_ms, cooldown_ms)
    out = []
    for i, c in enumerate(frames):
        out.append({None: ".", "fire": "f", "resolve": "r"}[b.update(i * 50, c == "T")])
        b = HoldAlert.from_state(b.state())
    assert "".join(out) == expected


def test_first_fire_agrees_with_hold_alert() -> None:
    rng = __import__("random").Random(3)
    for _ in range(200):
        conds = [rng.random() < 0.7 for _ in range(60)]
        times = [i * 40 for i in range(60)]
        a = HoldAlert(200, 10**9)
        got = next((i for i, (t, c) in enumerate(zip(times, conds)) if a.update(t, c) == "fire"), None)
        assert got == first_fire(times, conds, 200)


# -- the analyzer ------------------------------------------------------------------------------

def box(x: float) -> m.BoxXYXY:
    return m.BoxXYXY(x1=x - 10, y1=20, x2=x + 10, y2=80)


def frames_of(people: list[list[tuple[int, float]]], dt: int = 100) -> list[m.TrackedFrame]:
    """Per frame: (track id, x of the box centre)."""
    return [m.TrackedFrame(camera_id="c", seq=i, ts_ms=1000 + i * dt, width=640, height=480,
                           tracks=[m.Track(track_id=t, bbox_xyxy=box(x)) for t, x in p]) for i, p in enumerate(people)]


def alerts_of(records: list) -> list[tuple[str, str, int, float]]:
    return [(a.rule_id, a.state, a.seq, a.value) for a in records if isinstance(a, m.Alert)]


def test_occupancy_queue_and_staff_rules() -> None:
    cfg = parse_config(site([
        {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 2, "hold_s": 0.2, "cooldown_s": 0},
        {"kind": "zone_occupancy", "id": "zfull", "camera": "c", "zone": "z", "max": 1, "hold_s": 0},
        {"kind": "queue_length", "id": "queue", "camera": "c", "zone": "q", "min_length": 2, "hold_s": 0.1},
        {"kind": "staff_only", "id": "staff", "camera": "c", "zone": "z"},
    ]))
    people = [[(1, 50)], [(1, 50), (2, 50)], [(1, 50), (2, 250), (3, 250)], [(1, 50), (2, 250), (3, 250)],
              [(1, 50), (2, 250), (3, 250)], [(1, 500)], [(1, 500)], [(1, 500)]]
    got = alerts_of(derive(cfg, frames_of(people)))
    assert got == [
        ("staff", "firing", 0, 1.0),
        ("zfull", "firing", 1, 2.0),
        ("zfull", "resolved", 2, 1.0),
        ("queue", "firing", 3, 2.0),   # 2 in the queue from seq 2, held 100 ms
        ("crowd", "firing", 4, 3.0),   # 3 in view from seq 2, held 200 ms
        ("staff", "resolved", 5, 0.0),
        ("queue", "resolved", 6, 0.0),
        ("crowd", "resolved", 7, 1.0),
    ]


def test_loitering_rule_and_alert_messages() -> None:
    cfg = parse_config(site([{"kind": "loitering", "id": "loit", "camera": "c", "zone": "z", "severity": "info"}],
                            loiter_after_s=0.3))
    people = [[(7, 50)]] * 6 + [[]] * 2
    recs = derive(cfg, frames_of(people))
    alerts = [r for r in recs if isinstance(r, m.Alert)]
    assert [(a.state, a.seq) for a in alerts] == [("firing", 3), ("resolved", 6)]
    fired, resolved = alerts
    assert fired.alert_id == resolved.alert_id == "loit:c:3"
    assert (fired.kind, fired.severity, fired.zone_id, fired.camera_id) == ("loitering", "info", "z", "c")
    assert resolved.fired_ts_ms == fired.ts_ms == 1300 and resolved.fired_seq == fired.fired_seq == 3
    assert "loitering in z" in fired.message


def test_stage_publishes_alerts_and_survives_a_snapshot() -> None:
    cfg = parse_config(site([{"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0, "hold_s": 0.3}]))
    assert topics.ALERTS in AnalyticsStage.outputs
    frames = frames_of([[(1, 500)]] * 6 + [[]] * 5)
    straight = [r for r in derive(cfg, frames) if isinstance(r, m.Alert)]
    stage = AnalyticsStage(cfg)
    pubs = []
    for i, tf in enumerate(frames):
        if i in (2, 7):  # restart from the snapshot
            state = stage.camera_state("c")
            stage = AnalyticsStage(cfg)
            stage.load_camera_state("c", state)
        pubs += [p for p in stage.handle(topics.TRACKS, tf).publish if p.topic == topics.ALERTS]
    assert [p.message for p in pubs] == straight
    assert [(a.state, a.seq) for a in straight] == [("firing", 3), ("resolved", 9)]


def test_a_firing_alert_resolves_once_after_another_rule_is_added() -> None:
    """Alert rules edited while an alert fires (a site version adds a rule): the camera's new alert analyzer goes on
    from the old one's state, so the firing alert resolves once, under its own id, and does not fire again (before,
    the new analyzer started empty: the alert never resolved and fired a second time)."""
    import json

    rule = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0, "hold_s": 0.3}
    cfg = parse_config(site([rule]))
    frames = frames_of([[(1, 500)]] * 6 + [[]] * 5)
    straight = [(a.alert_id, a.state) for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    assert straight == [("crowd:c:3", "firing"), ("crowd:c:3", "resolved")]
    stage = AnalyticsStage(cfg)
    got = []
    for i, tf in enumerate(frames):
        if i == 5:  # firing since frame 3: a second rule is saved
            other = {"kind": "zone_occupancy", "id": "zfull", "camera": "c", "zone": "z", "max": 5}
            update = m.SiteUpdate(version=1, store_id="s", alert_rules_json=json.dumps([rule, other]),
                                  cameras_json=json.dumps([c.model_dump(mode="json") for c in cfg.cameras]))
            assert stage.handle(topics.SITE_CONFIG, update).info["applied"]
        got += [(p.message.alert_id, p.message.state) for p in stage.handle(topics.TRACKS, tf).publish
                if p.topic == topics.ALERTS]
    assert got == straight


def test_no_rules_no_analyzer() -> None:
    assert "alerts" not in AnalyticsStage(parse_config(site([]))).analyzers["c"]


# -- storage and API ---------------------------------------------------------------------------

def _alert(state: str, ts: int, seq: int, fired: int = 1000, fired_seq: int = 0, aid: str = "r:c:0") -> m.Alert:
    return m.Alert(alert_id=aid, rule_id="r", kind="camera_occupancy", severity="warning", camera_id="c", state=state,
                   ts_ms=ts, seq=seq, fired_ts_ms=fired, fired_seq=fired_seq, value=3, threshold=2, message="x")


@pytest.fixture(params=["sqlite", "postgres"])
def history(request, tmp_path):
    if request.param == "sqlite":
        with SqlStorage(str(tmp_path / "h.db")) as st:
            yield st
        return
    import uuid

    from psycopg import sql

    from storelens.storage import PostgresStorage
    from test_storage_pg import PG_DSN, admin

    schema = f"test_{uuid.uuid4().hex[:16]}"
    try:
        st = PostgresStorage(PG_DSN, schema=schema)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        yield st
    finally:
        st.close()
        with admin() as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_table_upsert_keeps_api_columns_and_never_reopens(history) -> None:
    from storelens.storage import alerts as aq

    with history as st:
        st.write_records([_alert("firing", 1000, 0)])
        assert aq.acknowledge(st, "r:c:0", "ann", 5)["acked_by"] == "ann"
        assert aq.acknowledge(st, "r:c:0", "bob", 6)["acked_by"] == "ann"  # first one kept
        st.write_records([_alert("resolved", 2000, 10)])
        row = aq.get_alert(st, "r:c:0")
        assert (row["state"], row["cleared_ts_ms"], row["acked_by"], row["fired_ts_ms"]) == ("resolved", 2000, "ann",
                                                                                             1000)
        st.write_records([_alert("firing", 1000, 0)])  # redelivered
        assert aq.get_alert(st, "r:c:0")["state"] == "resolved"
        assert aq.acknowledge(st, "nope", "ann", 5) is None


def test_api_lists_acks_and_resolves(history) -> None:
    cfg = parse_config(site([]))
    with history as st:
        st.write_records([_alert("firing", 1000 + i * 100, i, fired=1000 + i * 100, fired_seq=i, aid=f"r:c:{i}")
                          for i in range(5)])
        app = create_app(cfg, st)
        app.state.context.auth.create_user("ann", "ann's long password", "manager")
        client = TestClient(app)
        assert client.post("/v1/alerts/r:c:1/ack").status_code == 401
        assert client.post("/v1/auth/login", data={"username": "ann", "password": "ann's long password"}).is_success
        r = client.get("/v1/alerts", params={"limit": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 5 and [a["alert_id"] for a in body["alerts"]] == ["r:c:4", "r:c:3"]
        assert body["alerts"][0]["zone_id"] is None and body["alerts"][0]["state"] == "firing"
        page2 = client.get("/v1/alerts", params={"limit": 2, "offset": 2}).json()
        assert [a["alert_id"] for a in page2["alerts"]] == ["r:c:2", "r:c:1"]
        rng = client.get("/v1/alerts", params={"from_ms": 1100, "to_ms": 1300}).json()
        assert [a["alert_id"] for a in rng["alerts"]] == ["r:c:2", "r:c:1"]
        assert client.get("/v1/alerts", params={"from_ms": 5, "to_ms": 5}).status_code == 422
        assert client.get("/v1/alerts", params={"state": "bogus"}).status_code == 422

        r = client.post("/v1/alerts/r:c:1/ack")  # the signed-in user acknowledges (session cookie)
        assert r.status_code == 200 and r.json()["acked_by"] == "ann" and r.json()["acked_ts_ms"] > 0
        r = signed_in_client(app, role="manager").post("/v1/alerts/r:c:2/resolve")
        assert r.status_code == 200 and r.json()["state"] == "resolved" and r.json()["resolved_by"].startswith("key:")
        assert signed_in_client(app, role="viewer").post("/v1/alerts/r:c:3/ack").status_code == 403
        assert [a["alert_id"] for a in client.get("/v1/alerts", params={"state": "acked"}).json()["alerts"]] == [
            "r:c:1"]
        assert client.get("/v1/alerts", params={"state": "unacked"}).json()["total"] == 4
        assert [a["alert_id"] for a in client.get("/v1/alerts", params={"state": "resolved"}).json()["alerts"]] == [
            "r:c:2"]
        assert client.get("/v1/alerts", params={"state": "firing"}).json()["total"] == 4
        assert client.post("/v1/alerts/nope/ack").status_code == 404
        assert client.post("/v1/alerts/nope/resolve").status_code == 404
        audit = signed_in_client(app).get("/v1/audit", params={"action": "POST /v1/alerts/{alert_id}/ack"}).json()
        entries = {(e["actor"], e["target"], e["detail"]["status"]) for e in audit["entries"]}
        assert {("ann", "/v1/alerts/r:c:1/ack", 200), ("anonymous", "/v1/alerts/r:c:1/ack", 401)} <= entries


# -- store occupancy, queue wait, camera health (issue 12 item 5) --------------------------------

HEALTH_ERRORS = [
    ({"kind": "store_occupancy", "id": "x", "max": 3, "camera": "c"}, "alerts.rules.0.store_occupancy.camera"),
    ({"kind": "store_occupancy", "id": "x"}, "alerts.rules.0.store_occupancy.max: Field required"),
    ({"kind": "store_occupancy", "id": "x", "max": -2}, "alerts.rules.0.store_occupancy.max"),
    ({"kind": "queue_wait", "id": "x", "camera": "c", "zone": "z", "min_wait_s": 60},
     "alerts.rules.0.zone: zone 'z' of camera 'c' is a 'area' zone, queue_wait needs a 'queue' zone"),
    ({"kind": "queue_wait", "id": "x", "camera": "c", "zone": "q", "min_wait_s": 0},
     "alerts.rules.0.queue_wait.min_wait_s"),
    ({"kind": "queue_wait", "id": "x", "camera": "c", "zone": "q"},
     "alerts.rules.0.queue_wait.min_wait_s: Field required"),
    ({"kind": "queue_wait", "id": "x", "camera": "c", "zone": "q", "min_wait_s": 5, "window_s": 0},
     "alerts.rules.0.queue_wait.window_s"),
    ({"kind": "camera_down", "id": "x", "camera": "c"}, "alerts.rules.0.camera_down.after_s: Field required"),
    ({"kind": "camera_down", "id": "x", "camera": "nope", "after_s": 5},
     "alerts.rules.0.camera: no such camera 'nope'"),
    ({"kind": "camera_frozen", "id": "x", "camera": "c", "after_s": -1}, "alerts.rules.0.camera_frozen.after_s"),
    ({"kind": "camera_frozen", "id": "x", "camera": "c", "after_s": 5, "zone": "z"},
     "alerts.rules.0.camera_frozen.zone"),
    ({"kind": "no_detections", "id": "x", "camera": "c", "after_s": 5, "when_open": "sometimes"},
     "alerts.rules.0.no_detections.when_open"),
    ({"kind": "no_detections", "id": "x", "after_s": 5}, "alerts.rules.0.no_detections.camera: Field required"),
]


@pytest.mark.parametrize("rule, error", HEALTH_ERRORS)
def test_new_kinds_config_errors_name_the_field(rule: dict, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(site([rule]))
    assert error in str(exc.value)


def test_new_kinds_parse() -> None:
    from storelens.config.alerts import ALERT_KINDS

    cfg = parse_config(site([
        {"kind": "store_occupancy", "id": "full", "max": 40, "hold_s": 10},
        {"kind": "queue_wait", "id": "wait", "camera": "c", "zone": "q", "min_wait_s": 300, "hold_s": 60},
        {"kind": "camera_down", "id": "down", "camera": "c", "after_s": 30, "severity": "critical"},
        {"kind": "camera_frozen", "id": "frozen", "camera": "c", "after_s": 30},
        {"kind": "no_detections", "id": "blind", "camera": "c", "after_s": 3600, "when_open": True},
    ]))
    rules = cfg.alerts.rules
    assert {r.kind for r in cfg.alerts.rules} | {"camera_occupancy", "zone_occupancy", "queue_length", "loitering",
                                                  "staff_only"} == set(ALERT_KINDS)
    assert rules[0].camera is None and rules[1].window_s is None and rules[4].when_open
    assert [r.id for r in cfg.alerts.store_rules()] == ["full", "down"]
    assert [r.id for r in cfg.alerts.for_camera("c")] == ["wait", "frozen", "blind"]


def tframe(cam: str, seq: int, ts: int, people=(), digest: bytes = b"", stationary=()) -> m.TrackedFrame:
    """people: (track id, x of the box centre, y of its bottom)."""
    tracks = [m.Track(track_id=t, bbox_xyxy=m.BoxXYXY(x1=x - 10, y1=y - 60, x2=x + 10, y2=y)) for t, x, y in people]
    tracks += [m.Track(track_id=t, stationary=True, bbox_xyxy=box(500)) for t in stationary]
    return m.TrackedFrame(camera_id=cam, seq=seq, ts_ms=ts, width=640, height=480, tracks=tracks, image_digest=digest)


def restarted_records(cfg, frames: list) -> list:
    """Every record, the stage rebuilt from every camera's snapshot before each frame (the analytics service's
    table after a restart)."""
    stage, out = AnalyticsStage(cfg), []
    for tf in frames:
        states = {c: stage.camera_state(c) for c in stage.cameras}
        stage = AnalyticsStage(cfg)
        for c, st in states.items():
            stage.load_camera_state(c, st)
        out += stage.handle(topics.TRACKS, tf).records
    return out


def restarted(cfg, frames: list) -> list:
    """Like ``derive`` but the stage is rebuilt from every camera's snapshot before each frame: the alerts."""
    return [r for r in restarted_records(cfg, frames) if isinstance(r, m.Alert)]


def _digests(pattern: str) -> list[m.TrackedFrame]:
    return [tframe("c", i, 1000 + i * 100, [(1, 500, 80)], digest=ch.encode() * 8 if ch != "-" else b"")
            for i, ch in enumerate(pattern)]


def _people(pattern: str, ts0: int = 1000) -> list[m.TrackedFrame]:
    # P: a person, S: only a stationary track (a mannequin still is a detection), .: nobody
    return [tframe("c", i, ts0 + i * 100, [(1, 500, 80)] if ch == "P" else (), stationary=[9] if ch == "S" else ())
            for i, ch in enumerate(pattern)]


MON_9AM = 1_767_571_200_000 + 9 * 3_600_000  # Monday 5 January 2026, 09:00 UTC
HEALTH_CASES = [
    # camera_frozen: the image B repeats from seq 2 (ts 1200); 0.3 s later (seq 5) it fires, a new image resolves
    ("frozen", {"kind": "camera_frozen", "id": "r", "camera": "c", "after_s": 0.3, "cooldown_s": 0},
     _digests("AABBBBBBC"), [("r", "firing", 5, 0.3), ("r", "resolved", 8, 0.0)]),
    # cooldown 0.5 s: frozen again at once after the resolve (seq 4, ts 1400) -> fires at 1900, not at 1700
    ("frozen-cooldown", {"kind": "camera_frozen", "id": "r", "camera": "c", "after_s": 0.2, "cooldown_s": 0.5},
     _digests("ABBBCDDDDDDDD"), [("r", "firing", 3, 0.2), ("r", "resolved", 4, 0.0), ("r", "firing", 9, 0.4)]),
    # ... with hold_s 0.1: fires 0.1 s later, resolves 0.1 s after the image changed
    ("frozen-hold", {"kind": "camera_frozen", "id": "r", "camera": "c", "after_s": 0.3, "hold_s": 0.1},
     _digests("AABBBBBBCDE"), [("r", "firing", 6, 0.4), ("r", "resolved", 9, 0.0)]),
    # frames without a digest (an old ingest) never count as frozen
    ("no-digest", {"kind": "camera_frozen", "id": "r", "camera": "c", "after_s": 0.1}, _digests("--------"), []),
    # no_detections: nobody from seq 2 (ts 1200) -> fires at seq 7 (0.5 s), somebody again at seq 9 -> resolved
    ("empty", {"kind": "no_detections", "id": "r", "camera": "c", "after_s": 0.5, "cooldown_s": 0},
     _people("PP.......PP"), [("r", "firing", 7, 0.5), ("r", "resolved", 9, 0.0)]),
    # a stationary track is a detection: the camera is not blind
    ("mannequin", {"kind": "no_detections", "id": "r", "camera": "c", "after_s": 0.2}, _people("PSSSSSS"), []),
    # when_open: closed before 09:00 (the run restarts at opening), open from 09:00
    ("when-open", {"kind": "no_detections", "id": "r", "camera": "c", "after_s": 0.3, "when_open": True},
     _people("........", ts0=MON_9AM - 400), [("r", "firing", 7, 0.3)]),
    ("when-open-closed", {"kind": "no_detections", "id": "r", "camera": "c", "after_s": 0.3, "when_open": True},
     _people("........", ts0=MON_9AM - 1000), []),
]


@pytest.mark.parametrize("name, rule, frames, expected", HEALTH_CASES, ids=[c[0] for c in HEALTH_CASES])
def test_camera_health_rules(name: str, rule: dict, frames: list, expected: list) -> None:
    raw = site([rule])
    raw["store"]["opening_hours"] = {"mon": ["09:00", "17:00"]}
    cfg = parse_config(raw)
    got = derive(cfg, frames)
    assert [(a.rule_id, a.state, a.seq, round(a.value, 3)) for a in got if isinstance(a, m.Alert)] == expected
    assert restarted(cfg, frames) == [a for a in got if isinstance(a, m.Alert)]  # snapshots change nothing
    fired = None
    for a in got:
        if isinstance(a, m.Alert):
            fired = a.seq if a.state == "firing" else fired
            assert a.alert_id == f"r:c:{fired}" and a.camera_id == "c" and a.kind == rule["kind"]


def test_queue_wait_rule() -> None:
    # Queue q (x 200..300, y 0..100), service edge = its top side. Tracks 1, 2, 3 queue (the stream has shown
    # them for 10 s, the whole window: the service rate is over the time the stream showed); 1 leaves through
    # the service edge at seq 22 (served), 2 at seq 25. Window 10 s: after the first exit 2 queue, 1 served ->
    # W = 2 * 10 / 1 = 20 s >= 15 -> fires; after the second: 1 * 10 / 2 = 5 s -> resolves.
    cfg = parse_config(site([{"kind": "queue_wait", "id": "w", "camera": "c", "zone": "q", "min_wait_s": 15,
                              "window_s": 10, "cooldown_s": 0}]))
    q = [(1, 250, 80), (2, 230, 80), (3, 270, 80)]
    steps = [q, q, [(1, 250, -30)] + q[1:], q[1:], q[1:], [(2, 230, -30), q[2]], [q[2]], [q[2]]]
    frames = [tframe("c", i, i * 500, q) for i in range(20)]
    frames += [tframe("c", 20 + i, 10_000 + i * 100, p) for i, p in enumerate(steps)]
    got = [a for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    assert [(a.state, a.seq, a.value, a.threshold) for a in got] == [("firing", 22, 20.0, 15.0),
                                                                      ("resolved", 25, 5.0, 15.0)]
    assert got[0].zone_id == "q" and "predicted wait 20 s in queue q" in got[0].message
    assert restarted(cfg, frames) == got
    # nobody served in the window: no prediction, no alert (queue_length covers a stalled queue)
    stalled = [tframe("c", i, 1000 + i * 100, q) for i in range(30)]
    assert not [a for a in derive(cfg, stalled) if isinstance(a, m.Alert)]


def two_cameras(rules: list[dict], entrance_lines=None, source_d: str = "d.mp4") -> dict:
    door = [{"id": "door", "a": [0, 300], "b": [640, 300]}]  # moving down the image = in
    store = {"id": "shop"} | ({"entrance_lines": entrance_lines} if entrance_lines else {})
    return {"store": store, "cameras": [{"id": "c", "source": "c.mp4", "lines": door},
                                        {"id": "d", "source": source_d, "lines": door}],
            "alerts": {"rules": rules}}


def walk(cam: str, track: int, ys: list[int], seq0: int, ts0: int) -> list[m.TrackedFrame]:
    """A frame every 0.4 s: 30-40 px steps of a 60 px box are a walk (faster, the line counter sees no person)."""
    return [tframe(cam, seq0 + i, ts0 + i * 400, [(track, 320, y)]) for i, y in enumerate(ys)]


IN, OUT = [250, 280, 320, 350], [350, 320, 280, 250]


@pytest.mark.parametrize("entrance, expected", [
    # sum of both cameras: 1 (c) + 1 (d) = 2 > 1 at d's crossing frame; c's exit -> 1 -> resolved
    (None, [("firing", "d", 2, 2.0), ("resolved", "c", 6, 1.0)]),
    # only c's door is an entrance: never more than 1
    (["c/door"], []),
])
def test_store_occupancy_rule(entrance, expected) -> None:
    cfg = parse_config(two_cameras([{"kind": "store_occupancy", "id": "full", "max": 1, "cooldown_s": 0}], entrance))
    frames = sorted(walk("c", 1, IN, 0, 1000) + walk("d", 2, IN, 0, 1050) + walk("c", 1, OUT, 4, 2600),
                    key=lambda f: f.ts_ms)
    got = [a for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    seq_of = {(f.camera_id, f.seq): f.ts_ms for f in frames}
    assert [(a.state, next(c for (c, s), t in seq_of.items() if t == a.ts_ms), a.seq, a.value) for a in got] == expected
    for a in got:
        assert a.kind == "store_occupancy" and a.camera_id == "" and a.alert_id == f"full:shop:{got[0].ts_ms}"
        assert a.message.startswith("shop: ")
    assert restarted(cfg, frames) == got
    stage = AnalyticsStage(cfg)
    pubs = [p for tf in frames for p in stage.handle(topics.TRACKS, tf).publish if p.topic == topics.ALERTS]
    assert [p.message for p in pubs] == got and {p.camera_id for p in pubs} <= {"shop"}


def test_camera_down_from_the_other_cameras_frames() -> None:
    cfg = parse_config(two_cameras([{"kind": "camera_down", "id": "down", "camera": "d", "after_s": 0.5,
                                     "cooldown_s": 0}]))
    c = [tframe("c", i, 1000 + i * 100) for i in range(20)]
    d = [tframe("d", i, 1000 + i * 100) for i in range(3)] + [tframe("d", 3, 2500)]  # silent 1200..2500
    frames = sorted(c + d, key=lambda f: (f.ts_ms, f.camera_id))
    got = [a for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    # d's last frame before the gap: seq 2 at 1200 -> down at 1700 (c's frame), back at 2500
    assert [(a.state, a.ts_ms, a.seq, a.value, a.camera_id) for a in got] == [
        ("firing", 1700, 2, 0.5, "d"), ("resolved", 2500, 3, 0.0, "d")]
    assert got[0].alert_id == got[1].alert_id == "down:d:2" and "no frame for 0.5 s" in got[0].message
    assert restarted(cfg, frames) == got
    # a source that ended is not down
    ended = sorted(c + d[:3] + [m.TrackedFrame(camera_id="d", seq=3, ts_ms=1200, end_of_stream=True)],
                   key=lambda f: (f.ts_ms, f.camera_id, f.end_of_stream))
    assert not [a for a in derive(cfg, ended) if isinstance(a, m.Alert)]


def test_camera_down_from_the_runner_tick_without_a_broker(tmp_path) -> None:
    """Every camera silent: the runner's tick (wall time) moves the store clock; the alert is stored, published and
    posted to a (Slack-format) webhook like any other (in-process bus, SQLite sink, a local HTTP server). Ticks are
    called with explicit times: no sleeping."""
    import json

    from storelens.runtime.bus import InProcessBus
    from storelens.runtime.runner import Runner, RunnerCore
    from storelens.runtime.sinks import HistorySink
    from storelens.runtime.transports import InProcessTransport
    from storelens.runtime.webhooks import webhook_sinks
    from storelens.storage import alerts as aq
    from test_alert_webhooks import Server

    rules = [{"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2, "cooldown_s": 0}]
    raw = two_cameras(rules, source_d="rtsp://cam-d.local/stream")
    hook = Server([])
    raw["alerts"]["webhooks"] = [{"url": hook.url, "format": "slack"}]
    cfg = parse_config(raw)
    t0 = 1_767_225_600_000
    bus = InProcessBus()
    alerts_sub = bus.subscribe(topics.ALERTS)
    stage = AnalyticsStage(cfg)
    hooks = webhook_sinks(cfg)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        runner = Runner(RunnerCore(stage, [HistorySink(st), *hooks]), InProcessTransport(bus, list(stage.inputs),
                                                                                        outputs=stage.outputs))
        for tf in [tframe("c", 0, t0), tframe("d", 0, t0), tframe("c", 1, t0 + 500), tframe("d", 1, t0 + 500)]:
            bus.publish(topics.TRACKS, topics.camera_key(tf.camera_id), m.encode(tf))
            assert runner.handle(runner.transport.poll(1.0))
        wall = t0 + 10_000  # the wall clock, whatever it is, only its differences count
        for dt in (0, 1000, 1900):  # the first tick anchors the clock (frames came since); then 1 s, 1.9 s silent
            assert runner.tick(wall + dt)
        assert alerts_sub.poll(0) is None
        assert runner.tick(wall + 2000)  # store clock t0 + 500 + 2000: d silent for 2 s
        msg = alerts_sub.poll(1.0)
        assert msg is not None and msg.key == topics.camera_key("d")
        fired = m.decode(m.Alert, msg.value)
        assert (fired.state, fired.alert_id, fired.ts_ms, fired.value) == ("firing", "down:d:1", t0 + 2500, 2.0)
        assert aq.get_alert(st, "down:d:1")["state"] == "firing"
        bus.publish(topics.TRACKS, topics.camera_key("d"), m.encode(tframe("d", 2, t0 + 2600)))
        assert runner.handle(runner.transport.poll(1.0))
        assert m.decode(m.Alert, alerts_sub.poll(1.0).value).state == "resolved"
        assert aq.get_alert(st, "down:d:1")["state"] == "resolved"
    hooks[0].sender.flush()
    hooks[0].sender.close()
    hook.close()
    assert [json.loads(body)["text"] for _, body in hook.requests] == [
        "[WARNING] d: no frame for 2.0 s (alert at 2 s) (rule down, alert down:d:1)",
        "[RESOLVED] d: no frame for 0.0 s (alert at 2 s) - resolved (rule down, alert down:d:1)"]
    # a site of files only: ticks do nothing (slow detection does not make a file late)
    files = AnalyticsStage(parse_config(two_cameras(rules)))
    files.handle(topics.TRACKS, tframe("c", 0, t0))
    assert all(not files.tick(t0 + s * 1000).records for s in range(100))


def kafka_site(raw: dict, name: str):
    """``raw`` (a site dict) on the test broker under a fresh topic prefix and group ``name-<run>``, its analytics
    topics created; fails when no broker answers."""
    import os
    import uuid

    from storelens.runtime.analytics_app import ensure_app_topics
    from storelens.runtime.kafka import BrokerProbe

    run = f"{name}-{uuid.uuid4().hex[:8]}"
    raw["kafka"] = {"bootstrap_servers": os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
                    "topic_prefix": f"{run}.", "group_prefix": run, "partitions": 1}
    cfg = parse_config(raw)
    if not BrokerProbe(cfg.kafka)(5.0):
        pytest.fail(f"no Kafka at {cfg.kafka.bootstrap_servers}: `make test` starts it (scripts/stack.sh up)")
    ensure_app_topics(cfg)
    return cfg


def test_camera_down_tick_in_the_kafka_analytics_service(tmp_path) -> None:
    """The analytics service (faust app) ticks the same stage through the same ``RunnerCore.tick``: the alert goes
    to its sinks and to the ``alerts`` topic of a real broker (the tick is called with explicit times)."""
    import asyncio

    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.kafka import read_to_end
    from storelens.runtime.service import ServiceRuntime
    from storelens.storage import alerts as aq

    cfg = kafka_site(two_cameras([{"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2,
                                   "cooldown_s": 0}], source_d="rtsp://cam-d.local/stream"), "t-alerts")
    loop = asyncio.new_event_loop()
    t0 = 1_767_225_600_000
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = AnalyticsApp(cfg, st, None, ServiceRuntime("analytics", port=0), loop=loop)
        try:
            app._tables_ready = True  # no worker here: the table is "recovered"
            for cam in ("c", "d"):
                app.stage.handle(topics.TRACKS, tframe(cam, 0, t0))
            for dt in (0, 1000, 1999, 2000):
                loop.run_until_complete(app.tick_at(t0 + 60_000 + dt))
            loop.run_until_complete(app.app.producer.flush())
            assert aq.get_alert(st, "down:d:0")["state"] == "firing"
            sent = [m.decode(m.Alert, v) for _, v, _ in read_to_end(cfg.kafka, app.topic_names[topics.ALERTS], 0,
                                                                  "check", 30)]
            assert [(a.alert_id, a.state, a.ts_ms) for a in sent] == [("down:d:0", "firing", t0 + 2000)]
        finally:
            loop.run_until_complete(app.app.producer.stop())
            app.close()
            loop.close()
