"""Per-camera alerts and their delivery (review 9): alerts left open by an embedded stop are taken over by the next
run, site versions that remove or change a rule resolve its open alert, the embedded shutdown bounds the webhook
flush, two queue_wait rules of a zone each have their own window, webhook rule filters must name rules, and the
ack / resolve routes record the signed-in principal."""
from __future__ import annotations

import json
import logging
import pathlib
import time

import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config, with_site_update
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.localdeploy import free_port
from storelens.runtime.sinks import HistorySink
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import alerts as aq
from test_alert_webhooks import Server

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
QUEUE = [[200, 0], [300, 0], [300, 100], [200, 100]]
ZONE_KW = {"enter_after_ms": 0, "exit_after_ms": 0, "lost_after_ms": 0}
T0 = 1_767_225_600_000  # live frames carry wall-clock times (and seqs from them)


def two_camera_site(rules: list[dict], source: str = "rtsp://cam.local/c", webhooks: list | None = None) -> dict:
    zones = [{"id": "z", "polygon": SQUARE, **ZONE_KW},
             {"id": "q", "kind": "queue", "polygon": QUEUE, "service_edge": [0, 1], **ZONE_KW}]
    return {"store": {"id": "s"},
            "cameras": [{"id": "c", "source": source, "zones": zones},
                        {"id": "d", "source": "rtsp://cam.local/d", "zones": [dict(zones[0])]}],
            "alerts": {"rules": rules, **({"webhooks": webhooks} if webhooks else {})}}


def frame(cam: str, i: int, people: list[tuple[int, float]], digest: bytes = b"", ts0: int = T0) -> m.TrackedFrame:
    """A live camera's frame ``i`` (100 ms apart): (track id, x of the box centre) each."""
    tracks = [m.Track(track_id=t, bbox_xyxy=m.BoxXYXY(x1=x - 10, y1=20, x2=x + 10, y2=80)) for t, x in people]
    return m.TrackedFrame(camera_id=cam, seq=ts0 + i * 100, ts_ms=ts0 + i * 100, width=640, height=480,
                          tracks=tracks, image_digest=digest)


def run(stage: AnalyticsStage, frames: list, storage) -> list[m.Alert]:
    """Handle ``frames`` (tracked frames or site versions), write every record to ``storage``; the alerts."""
    out = []
    for f in frames:
        topic = topics.SITE_CONFIG if isinstance(f, m.SiteUpdate) else topics.TRACKS
        res = stage.handle(topic, f)
        storage.write_records(res.records)
        out += [r for r in res.records if isinstance(r, m.Alert)]
    return out


def version(cfg, n: int, rules: list[dict], cameras: list | None = None) -> m.SiteUpdate:
    cams = cameras if cameras is not None else [c.model_dump(mode="json") for c in cfg.cameras]
    return m.SiteUpdate(version=n, store_id="s", alert_rules_json=json.dumps(rules), cameras_json=json.dumps(cams))


# -- 1. alerts left open by an embedded stop ------------------------------------------------------------------------

CROWD = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0, "cooldown_s": 0}
FROZEN = {"kind": "camera_frozen", "id": "frozen", "camera": "c", "after_s": 0.5, "cooldown_s": 0}


@pytest.mark.parametrize("rule, first, second, expected", [
    # somebody in view when the run stops, still there after the restart: one alert, resolved when nobody is
    (CROWD, [[(1, 500)]] * 3, [[(1, 500)]] * 4 + [[]] * 2, [("crowd:c:{t0}", "resolved", 4, 0.0)]),
    # a frozen image, still frozen after the restart: the next run's frozen time starts afresh (0 at its first
    # frame), so the taken-over alert waits after_s before it may resolve, and does not
    (FROZEN, [[]] * 8, [[]] * 10, []),
], ids=["crowd", "frozen"])
def test_the_next_embedded_run_takes_over_an_alert_left_open(tmp_path, rule, first, second, expected) -> None:
    """An embedded stop (end_streams) leaves the open alert firing in the history; the next run's start
    (EmbeddedPipeline._carry_over_alerts) takes it over: it resolves under its own id when the condition ends, no
    second alert fires, nothing stays firing. Before: it stayed firing forever and a second one fired."""
    cfg = parse_config(two_camera_site([rule]))
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage = AnalyticsStage(cfg)
        got = run(stage, [frame("c", i, p, b"frozen!!") for i, p in enumerate(first)], st)
        ended = stage.end_streams().records  # the embedded stop: open alerts stay open
        st.write_records(ended)
        got += [r for r in ended if isinstance(r, m.Alert)]
        assert [a.state for a in got] == ["firing"]
        fired = got[0]
        assert aq.count_alerts(st, "firing") == 1

        pipeline = EmbeddedPipeline(cfg, storage=st)  # the next process: its start, before any frame
        pipeline._carry_over_alerts([HistorySink(st)])
        t1 = T0 + 60_000
        again = run(pipeline.analytics, [frame("c", i, p, b"frozen!!", ts0=t1) for i, p in enumerate(second)], st)
        want = [(aid.format(t0=fired.seq), state, i, value) for aid, state, i, value in expected]
        assert [(a.alert_id, a.state, (a.seq - t1) // 100, a.value) for a in again] == want
        rows, total = aq.list_alerts(st, "all")
        assert total == 1 and rows[0]["alert_id"] == fired.alert_id
        assert aq.count_alerts(st, "firing") == (0 if expected else 1)


def test_the_next_run_resolves_open_alerts_of_rules_gone_and_leaves_file_cameras_alone(tmp_path) -> None:
    """At the start: an open alert whose rule the site file no longer has is resolved (rule removed), one whose
    camera is gone too (camera removed); a file camera's is left as it is (the run reads the file again and gives
    the same alert under the same id)."""
    zone_rule = {"kind": "zone_occupancy", "id": "zfull", "camera": "d", "zone": "z", "max": 0}
    with SqlStorage(str(tmp_path / "h.db")) as st:
        cfg = parse_config(two_camera_site([CROWD, zone_rule]))
        stage = AnalyticsStage(cfg)
        run(stage, [frame("c", 0, [(1, 500)]), frame("d", 0, [(1, 50)])], st)
        assert aq.count_alerts(st, "firing") == 2

        without = parse_config(two_camera_site([CROWD]))  # the site file lost rule zfull
        pipeline = EmbeddedPipeline(without, storage=st)
        pipeline._carry_over_alerts([HistorySink(st)])
        row = aq.get_alert(st, f"zfull:d:{T0}")
        assert row["state"] == "resolved" and row["message"].endswith("(rule removed)")
        assert row["kind"] == "zone_occupancy"
        assert aq.get_alert(st, f"crowd:c:{T0}")["state"] == "firing"  # taken over

        raw = two_camera_site([CROWD])
        raw["cameras"] = raw["cameras"][1:]  # camera c removed from the file (and its rule)
        raw["alerts"]["rules"] = []
        EmbeddedPipeline(parse_config(raw), storage=st)._carry_over_alerts([HistorySink(st)])
        row = aq.get_alert(st, f"crowd:c:{T0}")
        assert row["state"] == "resolved" and row["message"].endswith("(camera removed)")

        files = parse_config(two_camera_site([CROWD], source="c.mp4"))
        stage = AnalyticsStage(files)
        run(stage, [m.TrackedFrame(camera_id="c", seq=0, ts_ms=1000, width=640, height=480,
                                   tracks=frame("c", 0, [(1, 500)]).tracks)], st)
        EmbeddedPipeline(files, storage=st)._carry_over_alerts([HistorySink(st)])
        assert aq.get_alert(st, "crowd:c:0")["state"] == "firing"


# -- 2. site versions that remove or change a rule with an open alert -------------------------------------------------

MOVED = {**CROWD, "camera": "d"}
REKINDED = {"kind": "zone_occupancy", "id": "crowd", "camera": "c", "zone": "z", "max": 5}


ORPHANS = [("removed", [], None, "rule removed"), ("moved", [MOVED], None, "rule changed"),
           ("kind", [REKINDED], None, "rule changed"), ("camera-removed", [], "d only", "camera removed")]


# (a camera removed while the analytics service was down: resolved at its restart, tests/test_alerts_gaps_30.py)
@pytest.mark.parametrize("how, rules, cameras, reason", [
    pytest.param(how, *case[1:], id=f"{how}-{case[0]}") for how in ("in-memory", "snapshot") for case in ORPHANS
    if how == "in-memory" or case[2] is None])
def test_a_site_version_resolves_the_open_alert_of_a_rule_it_removes_or_changes(tmp_path, how, rules, cameras,
                                                                                  reason) -> None:
    """crowd fires at frame 1; a site version (DELETE / PUT /v1/site/alerts/rules/crowd, or a camera removed) gives
    one resolved message for it, at once (embedded, or the service holding the camera) or with the camera's next
    frame (the analytics service restarted: the camera's state loaded from its table after the version). Before,
    the alert was dropped and stayed firing."""
    cfg = parse_config(two_camera_site([CROWD]))
    cams = None if cameras is None else [c.model_dump(mode="json") for c in cfg.cameras if c.id == "d"]
    with SqlStorage(str(tmp_path / "h.db")) as st:
        stage = AnalyticsStage(cfg)
        got = run(stage, [frame("c", 0, []), frame("c", 1, [(1, 500)]), frame("d", 0, [])], st)
        if how == "snapshot":  # restarted: the version in force first, then each camera's state at its next frame
            saved = {c: stage.camera_state(c) for c in ("c", "d")}
            stage = AnalyticsStage(cfg)
            got += run(stage, [version(cfg, 1, rules, cams)], st)
            for cam in stage.cameras:
                stage.load_camera_state(cam, saved[cam])
            got += run(stage, [frame("d", 1, [])] + ([] if cameras else [frame("c", 2, [(1, 500)])]), st)
        else:
            got += run(stage, [version(cfg, 1, rules, cams)], st)
            got += run(stage, [frame("d", 1, [])] + ([] if cameras else [frame("c", 2, [(1, 500)])]), st)
        crowd = [(a.alert_id, a.state, a.kind) for a in got if a.alert_id.startswith("crowd:c:")]
        assert crowd == [(f"crowd:c:{T0 + 100}", "firing", "camera_occupancy"),
                         (f"crowd:c:{T0 + 100}", "resolved", "camera_occupancy")]
        resolved = [a for a in got if a.state == "resolved"][0]
        assert resolved.message.endswith(f"({reason})")
        assert aq.get_alert(st, f"crowd:c:{T0 + 100}")["state"] == "resolved"
        if rules == [MOVED]:  # the rule's new camera may fire its own alert
            assert [a.alert_id for a in got if a.camera_id == "d"] == []
            assert run(stage, [frame("d", 2, [(1, 50)])], st)[0].alert_id == f"crowd:d:{T0 + 200}"


def test_a_rule_edited_in_place_keeps_its_open_alert() -> None:
    """Another threshold (same camera, kind and zone): the open alert goes on, nothing is resolved."""
    cfg = parse_config(two_camera_site([CROWD]))
    stage = AnalyticsStage(cfg)
    for i in range(2):
        stage.handle(topics.TRACKS, frame("c", i, [(1, 500)]))
    assert not stage.handle(topics.SITE_CONFIG, version(cfg, 1, [{**CROWD, "max": 0, "hold_s": 1}])).records
    assert stage.analyzers["c"]["alerts"].open["crowd"][0] == f"crowd:c:{T0}"


# -- 3. the embedded shutdown and a webhook endpoint that is down -----------------------------------------------------

def test_closing_the_webhooks_of_a_dead_endpoint_is_bounded() -> None:
    """Five alerts to a port nobody listens on, default retries (5 tries, 1 s doubling: minutes in all): the close
    the embedded run does at its end (close_webhooks, EmbeddedPipeline.run with WEBHOOK_CLOSE_S) returns within
    its bound and reports the five left, dead-lettered. Before, flush() waited for every try."""
    from storelens.runtime.embedded import WEBHOOK_CLOSE_S
    from storelens.runtime.webhooks import CLOSED_REASON, close_webhooks, webhook_sinks

    assert WEBHOOK_CLOSE_S <= 10
    cfg = parse_config(two_camera_site([CROWD], webhooks=[{"url": f"http://127.0.0.1:{free_port()}/hook"}]))
    sinks = webhook_sinks(cfg)
    alerts = [m.Alert(alert_id=f"crowd:c:{i}", rule_id="crowd", kind="camera_occupancy", state="firing",
                      camera_id="c", ts_ms=T0 + i, seq=i, message="x") for i in range(5)]
    sinks[0].write(alerts)
    t = time.monotonic()
    left = close_webhooks(sinks, 1.0)
    assert time.monotonic() - t < 30
    sender = sinks[0].sender
    assert left == 5 and sender.delivered == 0 and not sender.pending()
    assert len(sender.dead_letters) == 5 and all(d.errors[-1] == CLOSED_REASON or d.errors for d in
                                                 sender.dead_letters)
    assert sum(d.errors[-1] == CLOSED_REASON for d in sender.dead_letters) >= 4  # never tried, or cut short


def test_closing_the_webhooks_delivers_what_it_can() -> None:
    server = Server([])
    try:
        cfg = parse_config(two_camera_site([CROWD], webhooks=[{"url": server.url}]))
        from storelens.runtime.webhooks import close_webhooks, webhook_sinks

        sinks = webhook_sinks(cfg)
        sinks[0].write([m.Alert(alert_id="crowd:c:1", rule_id="crowd", state="firing", camera_id="c")])
        assert close_webhooks(sinks, 5.0) == 0
        assert len(server.requests) == 1 and sinks[0].sender.delivered == 1
    finally:
        server.close()


# -- 4. two queue_wait rules of one zone ------------------------------------------------------------------------------

SHORT = {"kind": "queue_wait", "id": "short", "camera": "c", "zone": "q", "min_wait_s": 500, "window_s": 60}
LONG = {"kind": "queue_wait", "id": "long", "camera": "c", "zone": "q", "min_wait_s": 500, "window_s": 600}


@pytest.mark.parametrize("rules", [[SHORT, LONG], [LONG, SHORT]], ids=["short-first", "long-first"])
def test_two_queue_wait_rules_of_a_zone_each_use_their_window(rules) -> None:
    """Two people queue for 10 minutes, a third is served at 590 s: over 600 s the predicted wait is 2 * 590 / 1 =
    1180 s (long fires), over 60 s 2 * 60 / 1 = 120 s (short does not). Before, both used the window of the last
    rule of the zone: both fired, or neither."""
    from storelens.stages.analytics import derive

    raw = two_camera_site(rules)
    cfg = parse_config(raw)
    queue = [(1, 250, 80), (2, 230, 80)]
    people = [queue + [(3, 270, 80)]] * 590 + [queue + [(3, 270, -30)]] + [queue] * 5  # 3 leaves through the edge
    frames = [m.TrackedFrame(camera_id="c", seq=i, ts_ms=T0 + i * 1000, width=640, height=480,
                             tracks=[m.Track(track_id=t[0], bbox_xyxy=m.BoxXYXY(x1=t[1] - 10, y1=t[-1] - 60,
                                                                               x2=t[1] + 10, y2=t[-1]))
                                     for t in p])
              for i, p in enumerate(people)]
    got = [(a.rule_id, a.state, round(a.value)) for a in derive(cfg, frames) if isinstance(a, m.Alert)]
    assert got == [("long", "firing", 1180)]


# -- 5. webhook rule filters ------------------------------------------------------------------------------------------

def test_a_webhook_naming_a_rule_the_file_lacks_warns_and_gets_the_alerts_of_a_version_adding_it(caplog) -> None:
    """A rule added through the API (PUT /v1/site/alerts/rules/{id}, saved in site versions) that a webhook of the
    site file names: the file loads (a warning names the field), and the webhook gets that rule's alerts once a
    version puts it in force. Before, the file was a config error: no process started, the API neither."""
    from storelens.runtime.webhooks import close_webhooks, webhook_sinks

    server = Server([])
    try:
        raw = two_camera_site([], webhooks=[{"url": server.url, "rules": ["crowd"]},
                                            {"url": server.url + "?other", "rules": ["other"]}])
        with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
            cfg = parse_config(raw)
        assert [r.getMessage() for r in caplog.records if "alerts.webhooks" in r.getMessage()] == [
            "<config>: alerts.webhooks.0.rules: no such alert rule 'crowd' (rule ids: []): that webhook gets no "
            "alert of it unless a site version adds the rule (PUT /v1/site/alerts/rules/{id})",
            "<config>: alerts.webhooks.1.rules: no such alert rule 'other' (rule ids: []): that webhook gets no "
            "alert of it unless a site version adds the rule (PUT /v1/site/alerts/rules/{id})"]
        caplog.clear()
        stage = AnalyticsStage(cfg)
        with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
            assert stage.handle(topics.SITE_CONFIG, version(cfg, 1, [CROWD])).info["applied"]
        # 'other' is still missing: loading the file said so, once in the process (test_alerts_gaps_30)
        assert not [r.getMessage() for r in caplog.records if "alerts.webhooks" in r.getMessage()]
        alerts = [a for f in (frame("c", 0, [(1, 50)]), frame("c", 1, [(1, 50)]), frame("c", 2, []))
                  for a in stage.handle(topics.TRACKS, f).records if isinstance(a, m.Alert)]
        assert [(a.rule_id, a.state) for a in alerts] == [("crowd", "firing"), ("crowd", "resolved")]
        sinks = webhook_sinks(cfg)  # the site file's webhooks; the filter takes the alert's rule id as it is
        sinks[0].write(alerts)
        assert close_webhooks(sinks, 5.0) == 0
        # the first webhook gets both messages of the rule the version added, the second ('other') none
        got = [(h["X-StoreLens-Delivery"], json.loads(body)["rule_id"]) for h, body in server.requests]
        assert got == [(f"{alerts[0].alert_id}:firing", "crowd"), (f"{alerts[1].alert_id}:resolved", "crowd")]
    finally:
        server.close()


def test_a_site_version_removing_a_webhooks_rule_applies_with_a_warning(caplog) -> None:
    cfg = parse_config(two_camera_site([CROWD], webhooks=[{"url": "https://hooks.example.com/a", "rules": ["crowd"]}]))
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        new = with_site_update(cfg, version(cfg, 1, []))
    assert new.alerts.rules == [] and new.alerts.webhooks[0].rules == ["crowd"]
    assert any("alerts.webhooks.0.rules: no such alert rule 'crowd'" in r.getMessage() for r in caplog.records)
    assert AnalyticsStage(cfg).handle(topics.SITE_CONFIG, version(cfg, 1, [])).info["applied"]
    # once: a next version still without it says nothing more; one bringing it back and removing it again warns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        again = with_site_update(new, version(cfg, 2, []))
        assert not [r for r in caplog.records if "alerts.webhooks" in r.getMessage()]
        back = with_site_update(again, version(cfg, 3, [CROWD]))
        assert not [r for r in caplog.records if "alerts.webhooks" in r.getMessage()]
        with_site_update(back, version(cfg, 4, []))
    assert [r.getMessage().split(" in force")[0] for r in caplog.records if "alerts.webhooks" in r.getMessage()] == [
        "site version 4: alerts.webhooks.0.rules: no such alert rule 'crowd' (rule ids: [])"]


# -- 6. ack / resolve record the signed-in principal ------------------------------------------------------------------

def test_ack_and_resolve_record_the_principal_not_a_name_in_the_body(tmp_path) -> None:
    cfg = parse_config(two_camera_site([]))
    with SqlStorage(str(tmp_path / "h.db")) as st:
        st.write_records([m.Alert(alert_id=f"r:c:{i}", rule_id="r", kind="camera_occupancy", state="firing",
                                  camera_id="c", fired_ts_ms=1000, ts_ms=1000) for i in range(2)])
        app = create_app(cfg, st)
        app.state.context.auth.create_user("ann", "ann's long password", "manager")
        client = signed_in_client(app, role="manager")
        from fastapi.testclient import TestClient

        ann = TestClient(app)
        assert ann.post("/v1/auth/login", data={"username": "ann", "password": "ann's long password"}).is_success
        r = ann.post("/v1/alerts/r:c:0/ack", json={"by": "mallory"})
        assert r.status_code == 200 and r.json()["acked_by"] == "ann"
        r = client.post("/v1/alerts/r:c:1/resolve", json={"by": "mallory"})
        assert r.status_code == 200 and r.json()["resolved_by"].startswith("key:")
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    assert '{"by": "name"}' not in readme and "nobody can act in another's name" in readme
