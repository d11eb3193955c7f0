"""Fixes of a read-only review of the merged batch 32 (each test fails on the code before):

1. the store's occupancy of a site without ``store.entrance_lines`` (the default) dropped after the upgrade: the
   stage now keeps it over every line, clamped once for the store, but a camera state saved before had no clamped
   outs (``store_clamped`` ``{}``: they were the camera's own) and a history had no ``@store`` row, so the store's
   number became ins minus outs. A state without the ledger's marker, and an embedded start without a store's row
   (or with a file camera among the store's), go on from the cameras' own occupancies, the number they gave before;
2. ``staff_only`` with ``exclude_staff`` counted a uniformed staff member who was inside already when the alert
   analyzer's bookkeeping began (a state saved before it kept who is inside, a site version adding the rule): the
   zone analyzer kept the open visit, no new ``enter`` came, the alert fired. Who is inside is now the zone
   analyzer's open visits (and so is the zone's occupancy: a rule a version added fired for nobody inside then);
3. the staff marks grew with every uniformed track that walked past (outside the zone too) into every frame's
   changelog entry: only those inside a staff-only zone are kept now;
4. a site version stored before a ``loitering`` rule on a zone with ``loiter_after_s`` 0 was refused no longer
   applied anywhere (API, pipeline, ``storelens run --db``): it applies without that rule, with a warning; new input
   (``PUT /v1/site``) is still refused naming the field.

Real stages, runner, SQLite history and API app; frames are real ``TrackedFrame`` messages.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest

from storelens import cli
from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.analytics import AnalyticsStage, derive, occupancy_reset
from storelens.storage import SqlStorage
from storelens.storage import site as sq
from test_alerts import IN, OUT, walk
from test_alerts_review_32b import STAFF, _frames, _staff_site
from test_occupancy_review_32 import people, row, run, site

# -- 1. the store's occupancy of a state or history from before the upgrade ------------------------------------------


def _today(cfg) -> int:
    return occupancy_reset(cfg).last_reset_ms(int(time.time() * 1000)) + 1000


def _old_state(stage: AnalyticsStage, cam: str) -> dict:
    """The camera's state as the version before saved it on a site without store.entrance_lines: no clamped outs
    (the camera's own occupancy was clamped, not the store's) and no marker of the store's ledger."""
    state = json.loads(json.dumps(stage.camera_state(cam)))
    state.pop("store_ledger", None)
    state["store_clamped"] = {}
    return state


def test_a_state_saved_before_the_upgrade_keeps_the_stores_number() -> None:
    cfg = parse_config(site(entrance=None))  # no store.entrance_lines: every line is the store's
    t0 = _today(cfg)
    frames = people([("a", t, OUT) for t in (1, 2, 3)] + [("a", t, IN) for t in range(11, 16)], 0, t0)
    before = AnalyticsStage(cfg)
    for tf in frames:
        before.handle(topics.TRACKS, tf)
    assert before.occupancy["a"].value == 5 and before.line_counts("a")["door"] == {"in": 5, "out": 3}
    saved = _old_state(before, "a")
    assert saved["occupancy"][:3] == [5, 5, 3] and saved["store_clamped"] == {}

    after = AnalyticsStage(cfg)
    after.load_camera_state("a", saved)
    # the sum of the cameras' own occupancies, as before the upgrade (was 2: 5 in - 3 out)
    assert after.store_totals().occupancy == 5
    # the next crossing's rows (the @store row the API reads) go on from it: one more in
    got = [r for tf in walk("a", 20, IN, 100, frames[-1].ts_ms + 5000)
           for r in after.handle(topics.TRACKS, tf).records if isinstance(r, m.OccupancyUpdate)]
    assert [(r.camera_id, r.occupancy) for r in got] == [("a", 6), (STORE_OCCUPANCY_ID, 6)]
    # a state of this version is taken as it is (not seeded again)
    again = AnalyticsStage(cfg)
    again.load_camera_state("a", after.camera_state("a"))
    assert again.store_totals().occupancy == 6


def _drop_store_rows(path) -> None:
    """The history of the version before on a site without entrance lines: no @store row."""
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM occupancy WHERE camera_id = ?", (STORE_OCCUPANCY_ID,))


@pytest.mark.parametrize("sources, drop_store, store_after", [
    # live cameras, a history without the store's row: each camera's own occupancy (a 3, b 0), + 1 in
    (("rtsp://cam/a", "rtsp://cam/b"), True, 4),
    # b a file: the store's row is not taken; a's own occupancy (3), b's out re-read from its start (2), + 1 in
    (("rtsp://cam/a", "b.mp4"), False, 3),
    # live cameras with the store's row (this version's history): as before, the row's 2 + 1
    (("rtsp://cam/a", "rtsp://cam/b"), False, 3),
], ids=["no-store-row", "file-camera", "store-row"])
def test_an_embedded_start_goes_on_from_the_cameras_own_occupancy(tmp_path, sources, drop_store,
                                                                   store_after) -> None:
    cfg = parse_config(site(sources))
    t0 = _today(cfg)
    # a: staff leave while nobody is in (absorbed by a's own occupancy), 3 come in; b: one leaves while b is empty
    before = people([("a", 9, OUT), ("a", 1, IN), ("a", 2, IN), ("a", 3, IN), ("b", 1, OUT)], 100, t0)
    after = people([("a", 4, IN)], 0, max(f.ts_ms for f in before) + 5000)
    path = tmp_path / "h.db"
    with SqlStorage(str(path)) as st:
        first = EmbeddedPipeline(cfg, storage=st)
        first._resume_counts()
        run(first.analytics, st, before)
        assert (row(st, "a"), row(st, "b")) == ((3, 3, 1), (0, 0, 1))
        if drop_store:
            _drop_store_rows(path)
        second = EmbeddedPipeline(cfg, storage=st)
        second._resume_counts()
        if sources[1].endswith(".mp4"):  # the file is read again from its start
            run(second.analytics, st, [f for f in before if f.camera_id == "b"])
        run(second.analytics, st, after)
        assert row(st, "a") == (4, 4, 1)
        assert second.analytics.store_occupancy() == store_after
        assert row(st, STORE_OCCUPANCY_ID)[0] == store_after
        assert not second.result.errors


# -- 2. and 3. staff_only: the staff inside, from the zone analyzer ----------------------------------------------------

def _alerts(records) -> list[tuple[str, int]]:
    return [(r.state, r.seq) for r in records if isinstance(r, m.Alert)]


def test_a_staff_member_inside_before_a_restart_fires_nothing() -> None:
    cfg = parse_config(_staff_site({}))
    frames = _frames([[STAFF]] * 8 + [[]])
    assert _alerts(derive(cfg, frames)) == []
    stage = AnalyticsStage(cfg)
    for tf in frames[:4]:
        stage.handle(topics.TRACKS, tf)
    state = json.loads(json.dumps(stage.camera_state("c")))
    for key in ("inside", "staff"):  # a state saved before the alerts kept who is inside
        state["analyzers"]["alerts"].pop(key, None)
    restarted = AnalyticsStage(cfg)
    restarted.load_camera_state("c", state)
    got = [r for tf in frames[4:] for r in restarted.handle(topics.TRACKS, tf).records]
    assert _alerts(got) == []  # was [("firing", 4), ("resolved", 8)]


ZFULL = {"kind": "zone_occupancy", "id": "zfull", "camera": "c", "zone": "z", "max": 5}
STRANGER_IN = (2, 60, "")


@pytest.mark.parametrize("before, person, expected", [
    # another rule of the camera: its alerts' state (the zone's occupancy) is taken over, nobody was "inside"
    ([ZFULL], STAFF, []),  # was [("firing", 4), ("resolved", 8)]
    # exclude_staff turned on: the alert of the staff member resolves at once
    ([{"exclude_staff": False}], STAFF, [("firing", 0), ("resolved", 4)]),  # was resolved at 8 (their exit)
    ([], STAFF, []),  # the camera's first rule
    ([], STRANGER_IN, [("firing", 4), ("resolved", 8)]),  # anybody else inside then: the alert (was none at all)
], ids=["other-rule", "exclude-staff-on", "first-rule", "stranger"])
def test_a_version_adding_the_rule_while_staff_are_inside_fires_nothing(before, person, expected) -> None:
    raw = _staff_site({})
    rule = raw["alerts"]["rules"][0]
    raw["alerts"]["rules"] = [{**rule, **r} if "kind" not in r else r for r in before]
    cfg = parse_config(raw)
    stage = AnalyticsStage(cfg)
    frames = _frames([[person]] * 8 + [[]])
    got = []
    for i, tf in enumerate(frames):
        if i == 4:  # the person is inside; a version adds the staff_only rule (excluding staff)
            update = m.SiteUpdate(version=1, store_id=cfg.store.id, alert_rules_json=json.dumps([ZFULL, rule]),
                                  cameras_json=json.dumps([c.model_dump(mode="json") for c in cfg.cameras]))
            assert stage.handle(topics.SITE_CONFIG, update).info["applied"]
        got += stage.handle(topics.TRACKS, tf).records
    assert _alerts(got) == expected


def test_only_the_staff_inside_are_remembered() -> None:
    cfg = parse_config(_staff_site({}))
    stage = AnalyticsStage(cfg)
    # 1,000 uniformed tracks walk past outside the zone (x 500), one frame each
    for i in range(1000):
        tf = m.TrackedFrame(camera_id="c", seq=i, ts_ms=1000 + i * 100, width=640, height=480,
                            tracks=[m.Track(track_id=100 + i, bbox_xyxy=m.BoxXYXY(x1=490, y1=20, x2=510, y2=80),
                                            staff_uniform="red")])
        stage.handle(topics.TRACKS, tf)
    assert stage.camera_state("c")["analyzers"]["alerts"]["staff"] == []  # was all 1,000
    # a staff member inside is remembered while inside, forgotten at the exit
    for i, p in enumerate([[STAFF]] * 3 + [[]] * 3):
        tf = _frames([p])[0]
        tf.seq, tf.ts_ms = 2000 + i, 200_000 + i * 100
        out = stage.handle(topics.TRACKS, tf)
        assert _alerts(out.records) == []
        assert stage.camera_state("c")["analyzers"]["alerts"]["staff"] == ([STAFF[0]] if i < 3 else [])


# -- 4. a stored site version with a loitering rule that never fires -------------------------------------------------

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
LOITER = {"kind": "loitering", "id": "slow", "camera": "c", "zone": "z"}
CROWD = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 3}


def _loiter_site() -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "zones": [
        {"id": "z", "polygon": SQUARE, "loiter_after_s": 30}]}]}


def _old_version() -> dict:
    """A version saved before such rules were refused: a zone without loiter events, a loitering rule on it, and a
    camera the site file does not have."""
    return {"cameras": [{"id": "c", "source": "x.mp4", "zones": [{"id": "z", "polygon": SQUARE, "loiter_after_s": 0}]},
                        {"id": "d", "source": "d.mp4"}],
            "alert_rules": [LOITER, CROWD]}


def test_a_stored_version_with_a_never_firing_rule_still_applies(tmp_path, caplog) -> None:
    cfg = parse_config(_loiter_site())
    with SqlStorage(str(tmp_path / "h.db")) as st:
        assert sq.save_site(st, 0, _old_version(), "old", 1000) == 1
        update = sq.site_update(st, "s")
        with caplog.at_level(logging.WARNING, logger="storelens.config.site"):
            in_force, version = cli._site_in_force(cfg, st, say=False)  # storelens run --db
        assert version == 1 and [c.id for c in in_force.cameras] == ["c", "d"]
        assert [r.id for r in in_force.alerts.rules] == ["crowd"]
        warned = [r.getMessage() for r in caplog.records if "'slow' would never fire" in r.getMessage()]
        assert warned and "site version 1: alerts.rules.0.zone" in warned[0] and "left out" in warned[0]
        # the analytics stage (the site-config topic, the embedded site watch) puts it in force
        stage = AnalyticsStage(cfg)
        assert stage.handle(topics.SITE_CONFIG, update).info["applied"]
        assert stage.cameras == {"c", "d"} and list(stage.analyzers["c"]["alerts"].rules) == in_force.alerts.rules
        # the API serves the version, not the site file
        client = signed_in_client(create_app(cfg, st))
        got = client.get("/v1/site").json()
        assert got["version"] == 1 and [c["id"] for c in got["cameras"]] == ["c", "d"]
        assert [r["id"] for r in got["alert_rules"]] == ["crowd"]
        # new input is refused, naming the field
        r = client.put("/v1/site/alerts/rules/slow", json=LOITER)
        assert r.status_code == 422 and "alerts.rules.1.zone" in r.json()["detail"], r.text
        assert "'slow' would never fire" in r.json()["detail"]
        # another edit saves the version without the rule
        assert client.put("/v1/site/alerts/rules/crowd", json={**CROWD, "max": 4}).status_code == 200
        saved = json.loads(sq.site_update(st, "s").alert_rules_json)
        assert [(r["id"], r["max"]) for r in saved] == [("crowd", 4)]
