"""Three gaps of the alerts (each test fails on the code before):

1. a camera a site version removed while the Kafka analytics service was down: at the restart its open alerts are
   resolved once (history, the ``alerts`` topic, the webhooks) and its table entry is dropped, as a removal while
   the service runs does (they stayed ``firing`` for ever, the entry in the table);
2. at the start of an embedded run, a file camera's open alert whose rule the site no longer has (or has changed)
   is resolved (a file camera's alerts were all left open: the run reads the file again and gives the same alerts,
   but not those of a rule gone);
3. the warning of an ``alerts.webhooks[].rules`` id the site lacks is logged once per (webhook, rule) in a process,
   not again at every build of a site version (ingest builds each version from the site file).
"""
from __future__ import annotations

import json
import logging
import time

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.analytics_app import INPUT_KEY
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.sinks import HistorySink
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import alerts as aq
from test_alert_webhooks import Server
from test_alerts import IN, kafka_site, tframe, two_cameras, walk

T0 = 1_767_225_600_000


def _version(cameras: list[dict], rules: list[dict], n: int, store: str = "shop") -> m.SiteUpdate:
    return m.SiteUpdate(version=n, ts_ms=T0, actor="test", store_id=store, cameras_json=json.dumps(cameras),
                        alert_rules_json=json.dumps(rules))


# -- 1. a camera removed while the analytics service was down ---------------------------------------------------------

D_CROWD = {"kind": "camera_occupancy", "id": "dcrowd", "camera": "d", "max": 0}
E_CROWD = {"kind": "camera_occupancy", "id": "ecrowd", "camera": "e", "max": 0}
E_CAM = {"id": "e", "source": "e.mp4", "lines": [{"id": "door", "a": [0, 300], "b": [640, 300]}]}


@pytest.mark.parametrize("removed, by", [("d", "version"), ("e", "version"), ("d", "site file")],
                         ids=["site-file-camera", "camera-a-version-added", "site-file-edited"])
def test_a_camera_removed_while_the_service_was_down_has_its_alerts_resolved_once(tmp_path, removed, by) -> None:
    """Someone walks in front of ``removed`` (its crowd rule fires); the service stops; a site version removes the
    camera (and its rule); the service starts again (the version in force from the start, the table recovered from
    its changelog): its first ticks resolve the alert once -- the history row, one ``resolved`` on ``alerts``, one
    webhook -- and drop the camera's table entry (a tombstone) keeping its input offset. ``d`` is a camera of the
    site file, ``e`` one a version added (the restarted process never heard of it); or the site file loses ``d``
    (no version: the restarted process reads the edited file)."""
    from storelens.runtime.kafka import KafkaBus
    from test_analytics_site_followups_9 import Service, _alerts_sent, _recovered

    server = Server([])
    raw = two_cameras([D_CROWD])
    raw["alerts"]["webhooks"] = [{"url": server.url, "backoff_s": 0.05}]
    cfg = kafka_site(raw, "t-gaps30")
    cams = [c.model_dump(mode="json") for c in cfg.cameras]
    bus = KafkaBus(cfg.kafka, "t-gaps30-site")
    site_topic = topics.topic_name(topics.SITE_CONFIG, cfg.kafka.topic_prefix)
    first = Service(cfg, tmp_path)
    try:
        if removed == "e":  # a version adds camera e and its rule (the running service applies it)
            added = _version(cams + [E_CAM], [D_CROWD, E_CROWD], 1)
            bus.publish_wait(site_topic, b"shop", m.encode(added), None, timeout_s=30)
            first.app.follow_site()
            assert "e" in first.app.stage.counters
        last = None
        for tf in sorted(walk("c", 1, IN, 0, T0) + walk(removed, 2, IN, 0, T0 + 50), key=lambda f: f.ts_ms):
            offset = first.frame(tf)
            last = offset if tf.camera_id == removed else last
        fired = [a for _, a in _alerts_sent(first) if a.camera_id == removed]
        assert [a.state for a in fired] == ["firing"]
        alert_id = fired[0].alert_id
    finally:
        first.close()  # the service is down
    # meanwhile a version removes the camera and its rule, or the site file loses them
    if by == "version":
        gone = _version(cams, [D_CROWD], 2) if removed == "e" else _version(
            [c for c in cams if c["id"] != "d"], [], 1)
        bus.publish_wait(site_topic, b"shop", m.encode(gone), None, timeout_s=30)
    else:
        raw["cameras"], raw["alerts"]["rules"] = raw["cameras"][:1], []
        cfg = parse_config(raw)  # the same broker, topics and group (kafka_site set them in raw)
    bus.close()

    again = Service(cfg, tmp_path)  # the same history (SQLite file), the table from the changelog
    try:
        again.app.follow_site()  # as build_app: the newest version in force before the first frame
        again.app.table.data.update(_recovered(again))
        assert topics.camera_key(removed) in again.app.table.data
        for i in range(2):  # the ticks once the tables are ready: the second one finds nothing more to resolve
            again.loop.run_until_complete(again.app.tick_at(int(time.time() * 1000) + i * 1000))
        sent = [a for _, a in _alerts_sent(again) if a.alert_id == alert_id]
        assert [a.state for a in sent] == ["firing", "resolved"]
        resolved = sent[1]
        assert resolved.camera_id == removed and resolved.message.endswith("(camera removed)")
        assert resolved.ts_ms >= resolved.fired_ts_ms == fired[0].fired_ts_ms
        row = aq.get_alert(again.storage, alert_id)
        assert row["state"] == "resolved" and row["kind"] == "camera_occupancy"
        assert topics.camera_key(removed) not in again.app.table.data
        assert again.app._resume_offset(0) == last + 1  # its input offset kept in the partition's marker
        log = {k: v for k, v, _ in again.changelog()}
        assert log[topics.camera_key(removed)] == b""  # a tombstone: a next restart does not load it again
        assert json.loads(log[f"{INPUT_KEY}/0".encode()])[INPUT_KEY]["next_offset"] == last + 1
    finally:
        again.close()  # the webhooks deliver what is queued
        server.close()
    posted = [(h["X-StoreLens-Delivery"], json.loads(body)["state"]) for h, body in server.requests]
    assert posted == [(f"{alert_id}:firing", "firing"), (f"{alert_id}:resolved", "resolved")]


@pytest.mark.parametrize("case, closes", [
    ("never held", True),  # removed by the version in force before its state was loaded: closed from its state
    ("held", False),  # the stage held it when the version came: resolved then (not twice, e.g. by a tick meanwhile)
    ("saved under a newer version", False),  # this process has not seen the version that added it yet
])
def test_which_saved_states_of_a_camera_not_in_the_site_are_closed(case, closes) -> None:
    cfg = parse_config(two_cameras([D_CROWD]))
    stage = AnalyticsStage(cfg)
    for tf in walk("d", 2, IN, 0, T0):
        stage.handle(topics.TRACKS, tf)
    saved = stage.camera_state("d")
    assert saved["analyzers"]["alerts"]["open"] and saved["last_frame_ts_ms"] == T0 + 1200
    now = AnalyticsStage(cfg) if case != "held" else stage
    cams = [c.model_dump(mode="json") for c in cfg.cameras if c.id == "c"]
    held = now.handle(topics.SITE_CONFIG, _version(cams, [], 1)).records
    assert [a.state for a in held] == (["resolved"] if case == "held" else [])
    if case == "saved under a newer version":
        saved["site_version"] = 2
    out = now.close_removed_camera("d", saved)
    if not closes:
        assert out is None
        return
    [a] = out.records
    assert (a.state, a.camera_id, a.ts_ms, a.message.endswith("(camera removed)")) == ("resolved", "d", T0 + 1200, True)
    assert [(p.topic, p.camera_id) for p in out.publish] == [(topics.ALERTS, "d")]
    assert now.close_removed_camera("d", saved) is None  # once
    assert now.close_removed_camera("c", now.camera_state("c")) is None  # a camera of the site


# -- 2. a file camera's alert whose rule went between two embedded runs ---------------------------------------------

CROWD = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0}
ZONED = {"kind": "zone_occupancy", "id": "crowd", "camera": "c", "zone": "z", "max": 0}
SQUARE = [[0, 0], [640, 0], [640, 480], [0, 480]]


def _files_site(rules: list[dict], webhook: str) -> dict:
    raw = two_cameras(rules)  # c.mp4 and d.mp4: file cameras
    raw["cameras"][0]["zones"] = [{"id": "z", "polygon": SQUARE}]
    raw["alerts"]["webhooks"] = [{"url": webhook, "backoff_s": 0.05}]
    return raw


@pytest.mark.parametrize("how, rules, reason, after_reread", [
    ("site file", [], "rule removed", None),
    ("site version", [], "rule removed", None),
    ("site file", [ZONED], "rule changed", None),
    ("site version", [ZONED], "rule changed", None),
    # still in force: taken over; reading the file again keeps it open under the same id
    ("site file", [CROWD], None, "firing"),
    # another threshold: the same rule, taken over; the re-read (1 person, max 3) resolves it under its id
    ("site version", [{**CROWD, "max": 3}], None, "resolved"),
])
def test_the_next_embedded_run_resolves_a_file_cameras_alert_whose_rule_went(tmp_path, how, rules, reason,
                                                                            after_reread) -> None:
    """The first run leaves c's crowd alert firing (the embedded stop leaves alerts open); before the next run the
    site file, or a site version saved through the API, removes or changes the rule; the next run's start (the
    version in force applied, then EmbeddedPipeline._carry_over_alerts) resolves it in the history and to the
    webhooks. Before, a file camera's alert was left firing whatever became of its rule."""
    from storelens.runtime.webhooks import close_webhooks, webhook_sinks

    server = Server([])
    try:
        with SqlStorage(str(tmp_path / "h.db")) as st:
            cfg = parse_config(_files_site([CROWD], server.url))
            stage = AnalyticsStage(cfg)
            frames = [tframe("c", i, 1000 + i * 100, [(1, 320, 300)]) for i in range(3)]
            for tf in frames:
                st.write_records(stage.handle(topics.TRACKS, tf).records)
            st.write_records(stage.end_streams().records)
            alert_id = "crowd:c:0"
            assert aq.get_alert(st, alert_id)["state"] == "firing"

            if how == "site file":
                pipeline = EmbeddedPipeline(parse_config(_files_site(rules, server.url)), storage=st)
            else:  # the run's start puts the newest version in force in every stage (EmbeddedPipeline._run)
                pipeline = EmbeddedPipeline(cfg, storage=st)
                cams = [c.model_dump(mode="json") for c in cfg.cameras]
                pipeline.analytics.handle(topics.SITE_CONFIG, _version(cams, rules, 1))
            sinks = webhook_sinks(pipeline.config)
            pipeline._carry_over_alerts([HistorySink(st), *sinks])
            assert close_webhooks(sinks, 5.0) == 0
            row = aq.get_alert(st, alert_id)
            if reason is None:  # taken over (AlertAnalyzer.adopt): the re-read of the file says what becomes of it
                assert row["state"] == "firing" and not server.requests
                out = [r for tf in frames for r in pipeline.analytics.handle(topics.TRACKS, tf).records]
                st.write_records(out + pipeline.analytics.end_streams().records)
                assert [(r["alert_id"], r["state"]) for r in aq.list_alerts(st)[0]] == [(alert_id, after_reread)]
            else:
                assert row["state"] == "resolved" and row["message"].endswith(f"({reason})")
                assert row["kind"] == "camera_occupancy" and row["cleared_ts_ms"] >= row["fired_ts_ms"]
                assert [h["X-StoreLens-Delivery"] for h, _ in server.requests] == [f"{alert_id}:resolved"]
    finally:
        server.close()


# -- 3. the warning of a webhook's rule the site lacks, once per process ---------------------------------------------

def _webhook_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "alerts.webhooks" in r.getMessage()]


@pytest.mark.parametrize("file_rules, version_rules, warned_by", [
    # the site file lacks the rule: loading it warns; no version build says it again
    ([], [[], [], []], "<config>"),
    # the file has it, version 1 removes it: version 1 warns, the next builds say nothing more
    ([CROWD], [[], [], []], "site version 1"),
])
def test_a_webhooks_missing_rule_is_warned_of_once_per_process(caplog, file_rules, version_rules, warned_by) -> None:
    """Ingest (the Kafka service and the embedded run's site watcher) builds each site version from the site file
    (storelens.runtime.workers._site_cameras, storelens.runtime.embedded.version_cameras), the stages from the
    version before: every build of a version without the rule warned again (ingest's: at every version)."""
    from storelens.runtime.embedded import version_cameras
    from storelens.runtime.workers import _site_cameras

    hook = {"url": "https://hooks.example.com/gaps30", "rules": ["crowd"]}
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        raw = two_cameras(file_rules)
        raw["alerts"]["webhooks"] = [hook]
        cfg = parse_config(raw)
        cams = [c.model_dump(mode="json") for c in cfg.cameras]
        stage = AnalyticsStage(cfg)
        for n, rules in enumerate(version_rules, start=1):
            update = _version(cams, rules, n)
            assert _site_cameras(cfg, update) is not None  # the ingest service
            assert version_cameras(cfg, update) is not None  # the embedded site watcher
            assert stage.handle(topics.SITE_CONFIG, update).info["applied"]  # a stage
    warned = _webhook_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"{warned_by}: alerts.webhooks.0.rules: no such alert rule "
                                                     "'crowd'"), warned
    # a version that has the rule again, then one without: warned again, once
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
        for n, rules in ((10, [CROWD]), (11, []), (12, [])):
            update = _version(cams, rules, n)
            _site_cameras(cfg, update)
            stage.handle(topics.SITE_CONFIG, update)
    warned = _webhook_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith("site version 11: alerts.webhooks.0.rules"), warned
