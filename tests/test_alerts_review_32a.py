"""Review of the alerts (32a): the embedded take-over, a rule's validation and the stored values (each test fails on
the code before).

1. An audit's ``count_accuracy`` alert (written by ``storelens audit`` / ``/v1/audits`` with the camera's id) is left
   alone by the next embedded run: it was resolved as "rule removed", its value 0.0, its message replaced, and the
   webhooks got a ``resolved`` of an alert they never got firing.
2. A live camera's ``no_detections`` / ``camera_frozen`` / ``camera_down`` alert taken over at an embedded restart
   resolves after its hold once a detection, a changed image or a frame of the camera says the run is over (it stayed
   firing a whole ``after_s``, the condition forced true meanwhile).
3. An alert resolved by hand while the condition goes on is taken over by the next embedded run (still shown
   resolved): no second alert of the incident (it fired a new id and webhook), then cleared when the condition ends.
4. A ``loitering`` rule on a zone whose ``loiter_after_s`` is 0 (loiter events off) is refused (it never fired).
5. A resolved alert keeps the value and the text that fired it (the resolution's 0.0 and text replaced them).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import alerts as aq
from test_alert_webhooks import Server
from test_alerts import tframe, two_cameras
from test_dashboard_browser import browser, open_view, serve_site, settle, sign_in  # noqa: F401 (browser: fixture)

T0 = 1_767_225_600_000
HOUR_MS = 3_600_000


def _alerts(records) -> list[m.Alert]:
    return [r for r in records if isinstance(r, m.Alert)]


def _live(rules: list[dict]) -> dict:
    raw = two_cameras(rules)
    raw["cameras"][0]["source"], raw["cameras"][1]["source"] = "rtsp://cam/c", "rtsp://cam/d"
    return raw


# -- 1. an audit's count_accuracy alert and the next embedded run -----------------------------------------------------

def _clip(path, frames: int = 6) -> str:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for i in range(frames):
        w.write(np.full((64, 96, 3), 40 + i * 20, np.uint8))
    w.release()
    return str(path)


def test_an_audits_count_accuracy_alert_is_left_alone_by_the_next_embedded_run(tmp_path) -> None:
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.storage.audit import Clip, record_audit

    server = Server([])
    try:
        cfg = parse_config({
            "store": {"id": "shop"}, "faces": {"enabled": False}, "audit": {"min_accuracy": 0.9},
            "cameras": [{"id": "c", "source": _clip(tmp_path / "c.avi"),
                         "lines": [{"id": "door", "a": [0, 30], "b": [96, 30]}]}],
            "alerts": {"webhooks": [{"url": server.url, "backoff_s": 0.05}]}})
        clips = [Clip(f"k{i}", "c", "door", f"e{i}", T0 + i, T0, T0 + 3000, "", 1, 0) for i in range(2)]
        with SqlStorage(str(tmp_path / "h.db")) as st:
            summary, audit_id, alerted = record_audit(cfg, st, clips, {"k0": (1, 0), "k1": (0, 0)}, now_ms=T0)
            assert alerted and summary.accuracy == 0.5
            alert_id = f"count_accuracy:shop:{audit_id}"
            before = aq.get_alert(st, alert_id)
            assert before["camera_id"] == "c" and before["state"] == "firing"

            result = EmbeddedPipeline(cfg, storage=st).run()  # the clip's frames through YOLO + tracker + analytics
            assert result.frames_per_camera["c"] > 0 and "alerts_carry_over" not in result.errors
            after = aq.get_alert(st, alert_id)
        # before: resolved "(rule removed)", value 0.0, and a "resolved" webhook
        assert after == before and after["value"] == 0.5 and after["cleared_ts_ms"] is None
        assert server.requests == []
    finally:
        server.close()


# -- 2. a live camera's health alert taken over at a restart ----------------------------------------------------------

HOLD_S = 1.0
HEALTH = {
    "no_detections": {"kind": "no_detections", "id": "empty", "camera": "c", "after_s": 3600, "hold_s": HOLD_S},
    "camera_frozen": {"kind": "camera_frozen", "id": "frozen", "camera": "c", "after_s": 3600, "hold_s": HOLD_S},
    "camera_down": {"kind": "camera_down", "id": "down", "camera": "d", "after_s": 3600, "hold_s": HOLD_S},
}
STEP_MS = 250
FIRED_MS = T0 + HOUR_MS + round(HOLD_S * 1000)


def _first_run(kind: str) -> list[m.TrackedFrame]:
    """Frames that fire the rule of ``kind`` at T0 + 1 h + its hold: c's empty view with the same image (d: one frame
    at T0)."""
    frames = [tframe("c", i, ts, digest=b"\x01" * 8) for i, ts in enumerate([T0, FIRED_MS - 1000, FIRED_MS])]
    return ([tframe("d", 0, T0)] if kind == "camera_down" else []) + frames


def _fine(i: int, t1: int) -> list[m.TrackedFrame]:
    """Frame ``i`` of the restart, every camera fine: somebody in view, a new image, both cameras sending."""
    ts = t1 + i * STEP_MS
    return [tframe("c", 100 + i, ts, [(1, 320, 300)], digest=bytes([i + 2]) * 8),
            tframe("d", 100 + i, ts + 1, [(2, 320, 300)], digest=bytes([i + 2]) * 8)]


@pytest.mark.parametrize("kind", list(HEALTH))
def test_a_health_alert_taken_over_resolves_within_its_hold_when_the_camera_is_fine(history_store, kind) -> None:
    cfg = parse_config(_live([HEALTH[kind]]))
    stage = AnalyticsStage(cfg)
    fired = [a for tf in _first_run(kind) for a in _alerts(stage.handle(topics.TRACKS, tf).records)]
    history_store.write_records(fired + _alerts(stage.end_streams().records))  # the embedded stop leaves it open
    assert [(a.state, a.ts_ms) for a in fired] == [("firing", FIRED_MS)]

    t1 = T0 + 2 * HOUR_MS  # the next embedded run
    stage = AnalyticsStage(cfg)
    assert stage.adopt_alerts(aq.firing_alerts(history_store), t1) == []
    out = []
    for i in range(int(6 * HOLD_S * 1000 / STEP_MS)):  # 6 s of stream time (before: firing for after_s, 1 h)
        for tf in _fine(i, t1):
            out += _alerts(stage.handle(topics.TRACKS, tf).records)
    history_store.write_records(out)
    assert [(a.alert_id, a.state) for a in out] == [(fired[0].alert_id, "resolved")]
    # the hold from the first frame that says the run is over (a changed image: the second one)
    assert out[0].ts_ms - t1 <= HOLD_S * 1000 + STEP_MS + 1
    assert aq.count_alerts(history_store, "firing") == 0


# -- 3. resolved by hand, then an embedded restart while the condition goes on ----------------------------------------

CROWD = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0, "cooldown_s": 60}


def test_an_alert_resolved_by_hand_is_the_same_incident_after_a_restart(history_store) -> None:
    cfg = parse_config(_live([CROWD]))
    stage = AnalyticsStage(cfg)
    first = [a for i in range(3) for a in _alerts(stage.handle(
        topics.TRACKS, tframe("c", i, T0 + i * 100, [(1, 320, 300)])).records)]
    history_store.write_records(first + _alerts(stage.end_streams().records))
    alert_id = first[0].alert_id
    aq.resolve(history_store, alert_id, "ann", T0 + 500)

    t1 = T0 + 10_000  # the next embedded run: the person still in view
    stage = AnalyticsStage(cfg)
    assert stage.adopt_alerts(aq.firing_alerts(history_store), t1) == []
    out = [a for i in range(20) for a in _alerts(stage.handle(
        topics.TRACKS, tframe("c", 100 + i, t1 + i * 100, [(1, 320, 300)])).records)]
    history_store.write_records(out)
    assert out == []  # before: a second alert, crowd:c:100, to the history and the webhooks
    rows, _ = aq.list_alerts(history_store)
    assert [(r["alert_id"], r["state"], r["resolved_by"], r["cleared_ts_ms"]) for r in rows] == [
        (alert_id, "resolved", "ann", None)]

    # the person leaves: the stage sees the incident end (cleared), still one alert
    out = _alerts(stage.handle(topics.TRACKS, tframe("c", 200, t1 + 5000)).records)
    history_store.write_records(out)
    assert [(a.alert_id, a.state) for a in out] == [(alert_id, "resolved")]
    rows, _ = aq.list_alerts(history_store)
    assert [(r["alert_id"], r["state"], r["resolved_by"], r["cleared_ts_ms"]) for r in rows] == [
        (alert_id, "resolved", "ann", t1 + 5000)]
    assert aq.firing_alerts(history_store) == []


# -- 4. a loitering rule on a zone without loiter events --------------------------------------------------------------

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


@pytest.mark.parametrize("zone_kw, zones, where", [
    ({"loiter_after_s": 0}, {}, "its loiter_after_s"),
    ({}, {"loiter_after_s": 0}, "zones.loiter_after_s"),
    ({"loiter_after_s": 0}, {"loiter_after_s": 30}, "its loiter_after_s"),
])
def test_a_loitering_rule_on_a_zone_without_loiter_events_is_refused(zone_kw, zones, where) -> None:
    raw = {"store": {"id": "s"}, "zones": zones, "cameras": [{"id": "c", "source": "x.mp4", "zones": [
        {"id": "other", "polygon": SQUARE}, {"id": "z", "polygon": SQUARE, **zone_kw}]}],
        "alerts": {"rules": [{"kind": "camera_occupancy", "id": "a", "camera": "c", "max": 3},
                             {"kind": "loitering", "id": "slow", "camera": "c", "zone": "z"}]}}
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    assert f"alerts.rules.1.zone: zone 'z' of camera 'c' has loiter_after_s 0 ({where}" in str(exc.value)
    assert "'slow' would never fire" in str(exc.value)
    raw["cameras"][0]["zones"][1]["loiter_after_s"] = 5  # loiter events on: accepted
    assert parse_config(raw).alerts.rules[1].kind == "loitering"


# -- 5. a resolved alert keeps what fired it --------------------------------------------------------------------------

MAX5 = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 5, "cooldown_s": 0}


def _eight_then_none(cfg) -> list[m.Alert]:
    stage = AnalyticsStage(cfg)
    frames = [tframe("c", i, T0 + i * 100, [(t, 40 + t * 60, 300) for t in range(8)] if i < 3 else [])
              for i in range(5)]
    return [a for tf in frames for a in _alerts(stage.handle(topics.TRACKS, tf).records)]


@pytest.mark.parametrize("batches", ["apart", "one batch", "resolution redelivered"])
def test_a_resolved_alert_keeps_the_value_and_text_that_fired_it(history_store, batches) -> None:
    cfg = parse_config(_live([MAX5]))
    fired, resolved = _eight_then_none(cfg)
    assert (fired.state, fired.value, resolved.state, resolved.value) == ("firing", 8.0, "resolved", 0.0)
    if batches == "one batch":
        history_store.write_records([fired, resolved])
    else:
        history_store.write_records([fired])
        history_store.write_records([resolved])
        if batches == "resolution redelivered":
            history_store.write_records([resolved])
    body = signed_in_client(create_app(cfg, history_store)).get("/v1/alerts").json()
    (a,) = body["alerts"]
    assert (a["state"], a["value"], a["threshold"]) == ("resolved", 8.0, 5.0)  # before: 0.0
    assert a["message"] == "c: 8 people in view (max 5) - resolved"  # before: "c: 0 people in view (max 5) - ..."
    assert a["cleared_ts_ms"] == resolved.ts_ms


def test_a_resolution_for_a_removed_rule_keeps_the_firing_text_and_says_why(history_store) -> None:
    cfg = parse_config(_live([MAX5]))
    fired, _ = _eight_then_none(cfg)
    history_store.write_records([fired])
    stage = AnalyticsStage(parse_config(_live([])))  # the next run: the rule is gone
    closed = stage.adopt_alerts(aq.firing_alerts(history_store), T0 + 60_000)
    assert [(a.alert_id, a.value) for a in closed] == [(fired.alert_id, 0.0)]
    history_store.write_records(closed)
    row = aq.get_alert(history_store, fired.alert_id)
    assert (row["state"], row["value"]) == ("resolved", 8.0)
    assert row["message"] == "c: 8 people in view (max 5) - resolved (rule removed)"


def test_the_dashboard_shows_a_resolved_alerts_firing_value(tmp_path, browser) -> None:  # noqa: F811
    """The alerts page's "fired at … · threshold …" of a resolved alert is the value that fired it (it read 0)."""
    from playwright.sync_api import expect

    raw = {**_live([MAX5]), "storage": {"path": str(tmp_path / "h.db")}}
    storage = SqlStorage(str(tmp_path / "h.db"))
    fired, resolved = _eight_then_none(parse_config(raw))
    storage.write_records([fired])
    storage.write_records([resolved])
    with serve_site(raw, storage) as served:
        page = sign_in(browser, served, "viewer")
        open_view(page, "alerts")
        settle(page)
        card = page.get_by_test_id(f"alert-{fired.alert_id}")
        expect(card.get_by_test_id("alert-state")).to_have_text("resolved")
        expect(card.get_by_test_id("alert-value")).to_contain_text("fired at 8 · threshold 5")  # before: value 0
        expect(card).to_contain_text("c: 8 people in view (max 5) - resolved")
