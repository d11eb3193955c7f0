"""Review follow-ups (30b): a removed camera's entry saved under a newer site version, text a site version cannot
store, the audit of a sign-in under an unknown name, a files-only site's store-wide alert of a changed rule, a file
re-read at another frame rate, the site-file warning when only the order differs."""
from __future__ import annotations

import time

import pytest

from storelens.contract import topics
from test_alerts import IN, kafka_site, two_cameras, walk

T0 = 1_767_225_600_000

# -- 1. a removed camera's entry saved under a newer site version (the camera added again) ---------------------------

D_CROWD = {"kind": "camera_occupancy", "id": "dcrowd", "camera": "d", "max": 0}


def test_a_removed_cameras_entry_saved_under_a_newer_version_is_kept_by_the_tick(tmp_path) -> None:
    """A version removes d (resolved, d in removed_closed) but its entry stays (its partition not assigned at the
    save); another worker, under a newer version that added d again, saves d's state: the tick keeps it. Before,
    "resolved already" was read first and the entry (counts, open visits and alerts) was dropped."""
    from test_analytics_site_followups_9 import Service

    s = Service(kafka_site(two_cameras([D_CROWD]), "t-fu30b-1"), tmp_path)
    try:
        for tf in sorted(walk("c", 1, IN, 0, T0) + walk("d", 2, IN, 0, T0 + 50), key=lambda f: f.ts_ms):
            s.frame(tf)
        s.app._assigned = lambda: set()  # a rebalance took the partition meanwhile
        s.site_version([], ["c"])
        assert "d" in s.app.stage.removed_closed
        key = topics.camera_key("d")
        newer = {**s.app.table.data[key], "site_version": s.app.stage.site_version + 1}
        s.app.table.data[key] = newer  # another worker's save under the version that added d again
        s.app._assigned = lambda: {0}
        s.loop.run_until_complete(s.app.tick_at(int(time.time() * 1000)))
        assert s.app.table.data.get(key) == newer
    finally:
        s.close()


# -- 2. a site version holding text the database cannot serve, imported by the CLI -----------------------------------

SHELF_SITE = """store: {id: s, timezone: UTC}
cameras:
  - id: c
    source: c.mp4
    zones:
      - {id: shelf, kind: shelf, polygon: [[0,0],[100,0],[100,100],[0,100]], product: "wine%s"}
"""


@pytest.mark.parametrize("escape, what", [("\\ud800", "a lone surrogate"), ("\\0", "NUL")])
def test_site_import_of_unstorable_text_exits_2_naming_the_field(tmp_path, capsys, escape: str, what: str) -> None:
    """`storelens site import` of a zone whose product holds a lone surrogate (a YAML escape) or NUL: exit 2 naming
    the field, nothing saved, GET /v1/site and /v1/zones answer 200. Before, the version was saved and every read
    of the site answered 500."""
    from storelens.api import create_app
    from storelens.api.testing import signed_in_client
    from storelens.cli import main
    from storelens.config import load_config
    from storelens.storage import SqlStorage
    from storelens.storage import site as sq

    site, edited, db = tmp_path / "site.yaml", tmp_path / "edited.yaml", tmp_path / "h.db"
    site.write_text(SHELF_SITE % "")
    edited.write_text(SHELF_SITE % escape)
    assert main(["site", "import", str(site), "--config", str(site), "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["site", "import", str(edited), "--config", str(site), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert f"cameras[0].zones[0].product: must not contain {what}" in err, err
    with SqlStorage(str(db)) as storage:
        assert sq.latest_version(storage) == 1
        c = signed_in_client(create_app(load_config(str(site)), storage), "admin", raise_server_exceptions=False)
        assert c.get("/v1/site").status_code == 200
        zones = c.get("/v1/zones")
        assert zones.status_code == 200 and {z["product"] for z in zones.json()["zones"]} == {"wine"}


# -- 3. a failed sign-in under a name no user has ---------------------------------------------------------------------

@pytest.mark.parametrize("username, audited", [
    ("S3cret!pw", "(unknown user)"),  # a password typed in the name field: not kept
    ("nobody", "(unknown user)"),
    ("admin", "admin"),  # a user's wrong password: the user is named, as before
])
def test_a_failed_sign_in_under_an_unknown_name_does_not_keep_the_name(username: str, audited: str) -> None:
    from fastapi.testclient import TestClient

    from storelens.api import create_app
    from storelens.config import parse_config
    from storelens.storage import SqliteStorage
    from storelens.storage import auth as auth_store

    with SqliteStorage(":memory:") as storage:
        app = create_app(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "c.mp4"}]}), storage)
        app.state.context.auth.create_user("admin", "right-password-123", "admin")
        client = TestClient(app)
        answers = [client.post("/v1/auth/login", data={"username": username, "password": "x"}) for _ in range(6)]
        assert [r.status_code for r in answers] == [401] * 5 + [429]  # counted and limited as before
        rows, _ = auth_store.list_audit(storage, limit=1000)
        failed = [(e["actor"], e["target"]) for e in rows if e["action"] == "auth.login-failed"]
        assert failed == [(audited, audited)] * 5
        if audited != username:
            assert username not in repr(rows)


# -- 5. a file read again at another frame rate -----------------------------------------------------------------------

def test_a_file_read_again_at_a_higher_frame_rate_keeps_the_alerts_id(tmp_path) -> None:
    """Run 1 reads c at 10 fps: someone in view from 1500 ms, crowd fires at seq 5 and is open at the stop. Run 2
    reads the same timeline at 20 fps (seq 5 is at 1250 ms, nobody in view yet): the alert taken over is measured
    again from its firing time, not its seq: still the one alert crowd:c:5. Before, seq 5 (1250 ms) measured it,
    it resolved and the same incident fired again as crowd:c:10."""
    from storelens.config import parse_config
    from storelens.stages.analytics import AnalyticsStage
    from storelens.storage import SqlStorage
    from test_alerts import tframe
    from test_analytics_followups_30 import _rows, _run

    def frames(step_ms: int, n: int) -> list:
        return [tframe("c", i, 1000 + i * step_ms, [(1, 320, 300)] if 1000 + i * step_ms >= 1500 else [])
                for i in range(n)]

    cfg = parse_config(two_cameras([{"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 0,
                                     "cooldown_s": 0}]))
    with SqlStorage(str(tmp_path / "h.db")) as st:
        _run(st, AnalyticsStage(cfg), frames(100, 10))
        assert _rows(st) == [("crowd:c:5", "firing")]
        sent = _run(st, AnalyticsStage(cfg), frames(50, 20))
        assert sent == [] and _rows(st) == [("crowd:c:5", "firing")]


# -- 4. a files-only site's store-wide alert of a rule whose threshold changed ----------------------------------------

def _store_run(st, rule: dict, frames: list, stop: bool) -> list:
    """One embedded run over c's and d's files (both walk in: 2 people in the store), written to ``st``; ``stop``:
    ended by the embedded stop, else by the files' end-of-stream markers."""
    from storelens.config import parse_config
    from storelens.stages.analytics import AnalyticsStage
    from test_analytics_followups_30 import _run

    return _run(st, AnalyticsStage(parse_config(two_cameras([rule]))), frames, stop)


FULL = {"kind": "store_occupancy", "id": "full", "max": 1, "cooldown_s": 0}


@pytest.mark.parametrize("second_max, cut, stop, after", [
    (5, False, True, "resolved"),  # measured again at its firing time: 2 people, max 5: resolved under its id
    (1, False, True, "firing"),  # the same files and rule: the same alert, still open, not fired again
    (5, True, False, "resolved"),  # the files end before its firing time: resolved at their end
    (5, True, True, "firing"),  # an embedded stop before it: left to the next run
], ids=["threshold", "same-rule", "files-end-before", "stop-before"])
def test_a_files_only_sites_store_alert_of_a_changed_threshold_is_taken_over(tmp_path, second_max, cut, stop,
                                                                             after) -> None:
    """Run 1: store_occupancy max 1 fires (c and d walk in) and is open at the embedded stop. Run 2 reads the same
    files under the rule of the same id with max 5: the alert is taken over, measured again from its firing time
    and resolved under its id. Before, a files-only site's store-wide alert was left firing for ever."""
    from storelens.storage import SqlStorage
    from test_analytics_followups_30 import _rows

    frames = sorted(walk("c", 1, IN, 0, 1000) + walk("d", 2, IN, 0, 1050), key=lambda f: f.ts_ms)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        [fired] = _store_run(st, FULL, frames, stop=True)
        assert _rows(st) == [(fired.alert_id, "firing")]
        again = [f for f in frames if f.ts_ms < fired.fired_ts_ms] if cut else frames
        sent = _store_run(st, {**FULL, "max": second_max}, again, stop)
        assert _rows(st) == [(fired.alert_id, after)]  # one alert of the incident
        assert [(a.alert_id, a.state) for a in sent] == ([] if after == "firing" else [(fired.alert_id, after)])
        if after == "resolved":
            assert sent[0].ts_ms >= fired.fired_ts_ms == sent[0].fired_ts_ms


# -- 6. the site-file warning when only the order of the cameras or alert rules differs ------------------------------

RULE_C = {"kind": "camera_occupancy", "id": "rc", "camera": "c", "max": 3}
RULE_D = {"kind": "camera_occupancy", "id": "rd", "camera": "d", "max": 3}


@pytest.mark.parametrize("cameras, rules, named", [
    (["d", "c"], [RULE_C, RULE_D], "order of the cameras"),
    (["c", "d"], [RULE_D, RULE_C], "order of the alert rules"),
    (["d", "c"], [RULE_D, RULE_C], "order of the cameras; order of the alert rules"),
])
def test_the_site_file_warning_names_an_order_difference(cameras, rules, named) -> None:
    """Before, the warning named nothing: "differ from site version 2 ()"."""
    import json

    from storelens.config import parse_config
    from storelens.config.site import site_file_override
    from storelens.contract import messages as m

    cfg = parse_config(two_cameras([RULE_C, RULE_D]))
    by_id = {c.id: c.model_dump(mode="json", exclude_defaults=True) for c in cfg.cameras}
    update = m.SiteUpdate(version=2, store_id="shop", cameras_json=json.dumps([by_id[c] for c in cameras]),
                          alert_rules_json=json.dumps(rules))
    warning = site_file_override(cfg, update)
    assert warning is not None and f"differ from site version 2 ({named})," in warning, warning
