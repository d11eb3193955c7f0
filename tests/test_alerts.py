"""Alerts: the ``alerts:`` config, the hold/resolve/cooldown rules, the analyzer in the analytics stage,
the ``alerts`` table (upsert that keeps the API's columns) and the API (list, ack, resolve)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

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
        {"id": "z", "polygon": SQUARE, "enter_after_ms": 0, "exit_after_ms": 0, **zone_kw},
        {"id": "q", "kind": "queue", "polygon": [[200, 0], [300, 0], [300, 100], [200, 100]], "service_edge": [0, 1],
         "enter_after_ms": 0, "exit_after_ms": 0}]}],
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
        client = TestClient(create_app(cfg, st))
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

        r = client.post("/v1/alerts/r:c:1/ack", json={"by": "ann"})
        assert r.status_code == 200 and r.json()["acked_by"] == "ann" and r.json()["acked_ts_ms"] > 0
        r = client.post("/v1/alerts/r:c:2/resolve")
        assert r.status_code == 200 and r.json()["state"] == "resolved" and r.json()["resolved_by"] == "api"
        assert [a["alert_id"] for a in client.get("/v1/alerts", params={"state": "acked"}).json()["alerts"]] == [
            "r:c:1"]
        assert client.get("/v1/alerts", params={"state": "unacked"}).json()["total"] == 4
        assert [a["alert_id"] for a in client.get("/v1/alerts", params={"state": "resolved"}).json()["alerts"]] == [
            "r:c:2"]
        assert client.get("/v1/alerts", params={"state": "firing"}).json()["total"] == 4
        assert client.post("/v1/alerts/nope/ack").status_code == 404
        assert client.post("/v1/alerts/nope/resolve").status_code == 404
        assert client.post("/v1/alerts/r:c:1/ack", json={"by": ""}).status_code == 422
