"""Review follow-ups (30c): a removed camera's entry saved under a newer site version at the version's save, a
taken-over store-wide alert across a site version before the first frame, a site file holding text the database
cannot store, the sign-in limit keys without the typed name, the k8s runbook."""
from __future__ import annotations

import pytest

from storelens.contract import topics
from test_alerts import IN, kafka_site, two_cameras, walk
from test_review_followups_30b import SHELF_SITE  # a zone whose product is 'wine<escape>'

T0 = 1_767_225_600_000

# -- 1. a removed camera's entry saved under a newer site version, dropped at the version's save ---------------------

D_CROWD = {"kind": "camera_occupancy", "id": "dcrowd", "camera": "d", "max": 0}


def test_a_removed_cameras_entry_saved_under_a_newer_version_is_kept_by_the_versions_save(tmp_path) -> None:
    """The partition stays assigned; before the version that removes d is handled, another worker under a newer
    version (d added again) saved d's state: the version's save (_flush_site_states -> _drop_entries) keeps it.
    Before, the site_version guard was only in _close_removed_cameras and the entry was deleted."""
    from test_analytics_site_followups_9 import Service

    s = Service(kafka_site(two_cameras([D_CROWD]), "t-fu30c-1"), tmp_path)
    try:
        for tf in sorted(walk("c", 1, IN, 0, T0) + walk("d", 2, IN, 0, T0 + 50), key=lambda f: f.ts_ms):
            s.frame(tf)
        key = topics.camera_key("d")
        newer = {**s.app.table.data[key], "site_version": s.app.stage.site_version + 2}
        s.app.table.data[key] = newer  # another worker's save under the version after the one removing d
        s.site_version([], ["c"])
        assert "d" in s.app.stage.removed_closed
        assert s.app.table.data.get(key) == newer
    finally:
        s.close()


# -- 2. a store-wide alert taken over before the first frame, a site version before that frame ---------------------

def test_an_alert_taken_over_before_the_first_frame_survives_a_site_version_before_it() -> None:
    """adopt_alerts([row]) before any frame, then a site version changing another rule (a camera_down's after_s):
    apply_site rebuilds StoreAlerts and loads the old one's state, whose clock is None. Before, load_state
    returned early and the taken-over alert (open, adopted, its hold) was dropped."""
    import json

    from storelens.config import parse_config
    from storelens.contract import messages as m
    from storelens.stages.analytics import AnalyticsStage

    rules = [{"kind": "store_occupancy", "id": "full", "max": 1, "cooldown_s": 0},
             {"kind": "camera_down", "id": "down", "camera": "d", "after_s": 5}]
    cams = [{"id": "c", "source": "c.mp4"}, {"id": "d", "source": "d.mp4"}]
    st = AnalyticsStage(parse_config({"store": {"id": "s"}, "cameras": cams, "alerts": {"rules": rules}}))
    row = {"alert_id": "full:s:5000", "rule_id": "full", "kind": "store_occupancy", "camera_id": "", "fired_seq": 5,
           "fired_ts_ms": 5000, "severity": "warning", "threshold": 1.0, "zone_id": ""}
    st.adopt_alerts([row], 99_000)
    assert "full" in st.store_alerts.open
    adopted = dict(st.store_alerts.adopted)
    update = m.SiteUpdate(version=1, ts_ms=1, actor="t", store_id="s", cameras_json=json.dumps(cams),
                          alert_rules_json=json.dumps([rules[0], {**rules[1], "after_s": 9}]))
    st.handle(topics.SITE_CONFIG, update)
    assert st.store_alerts.open.get("full", [None])[0] == "full:s:5000"
    assert st.store_alerts.adopted == adopted
    hold = st.store_alerts.holds["full"]
    assert hold.firing and hold.fired_ms == 5000


# -- 3. a site file holding text the database cannot store ---------------------------------------------------------

@pytest.mark.parametrize("escape, what", [("\\ud800", "a lone surrogate"), ("\\0", "NUL")])
def test_load_config_refuses_a_site_file_with_unstorable_text_naming_the_field(tmp_path, escape: str,
                                                                              what: str) -> None:
    """A site file whose zone product holds a lone surrogate or NUL: ConfigError naming the field. Before, it was
    accepted, then GET /v1/site and /v1/zones answered 500 and every API edit 422'd naming a field never sent."""
    from storelens.config import load_config
    from storelens.errors import ConfigError

    site = tmp_path / "site.yaml"
    site.write_text(SHELF_SITE % escape)
    with pytest.raises(ConfigError) as err:
        load_config(str(site))
    assert f"cameras[0].zones[0].product: must not contain {what}" in str(err.value)
    site.write_text(SHELF_SITE % "")
    assert load_config(str(site)).cameras[0].zones[0].product == "wine"


# -- 4. the sign-in limit keys in the shared Redis hold no typed name ----------------------------------------------

def test_signin_limit_keys_in_redis_hold_no_typed_name_and_still_limit_per_name(tmp_path) -> None:
    """A password typed in the name field ("S3cret!pw..."): after the failed sign-in no key of the stack's Redis
    holds it (in any case); 5 failures of that name (in two cases, from one client) and the 6th answers 429. Before,
    the keys were login-user/<name>/<client> and login-account/<name>."""
    import os
    import uuid

    import redis
    from fastapi.testclient import TestClient

    from storelens.api import create_app
    from storelens.config import parse_config
    from storelens.storage import SqliteStorage

    url = os.environ.get("STORELENS_REDIS_URL", "redis://127.0.0.1:16379/0")
    site = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}], "live": {"redis_url": url},
            "auth": {"login_failures_per_minute": 5, "login_attempts_per_minute": 100,
                     "login_account_failures_per_minute": 50}}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    typed = f"S3cret!pw-{uuid.uuid4().hex[:8]}"
    client = TestClient(app, client=("203.0.113.30", 50000))

    def login(user: str) -> int:
        return client.post("/v1/auth/login", data={"username": user, "password": "wrong password"}).status_code

    assert login(typed) == 401
    r = redis.Redis.from_url(url)
    keys = [k.decode("utf-8", "replace").lower() for k in r.scan_iter(count=1000)]
    assert keys and not [k for k in keys if typed.lower() in k], keys
    answers = [login(u) for u in [typed] * 2 + [typed.lower(), typed.upper()]]
    assert answers == [401] * 4 and login(typed.swapcase()) == 429


# -- 5. k8s/README.md: the migration runbook, the leader topic's KafkaTopic, the metrics Secret ---------------------

def test_k8s_readme_runbook_leader_topic_and_metrics_secret() -> None:
    """Each runbook patch (a store's and the chain's) sets progressDeadlineSeconds at least the patched startup
    probe's time (failureThreshold x the api's periodSeconds) and no typed image; the leader topic's KafkaTopic has a
    valid metadata.name and the real name in spec.topicName; the upgrade section creates storelens-metrics and the
    api rows list it. Before, the patch left the 600 s default (rollout status gave up after 10 minutes)."""
    import pathlib
    import re

    import yaml

    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "k8s" / "README.md").read_text()
    upgrades = readme.split("## Upgrades and migrations", 1)[1].split("\n## ", 1)[0]
    # Since test_db_upgrade_31: the migration runs in the api's db-upgrade initContainer (not under the startup
    # probe; the manifests are checked there), so no runbook patches the probe any more.
    assert "db-upgrade" in upgrades and "storelens db upgrade" in upgrades and "progressDeadlineSeconds" in upgrades
    assert "startupProbe/failureThreshold" not in upgrades
    assert "create secret generic storelens-metrics" in upgrades and "CreateContainerConfigError" in upgrades
    leader = [d for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) for d in yaml.safe_load_all(block)
              if isinstance(d, dict) and d.get("kind") == "KafkaTopic" and "__leader" in str(d)]
    assert leader and all(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", d["metadata"]["name"]) and
                          d["spec"]["topicName"].endswith("-analytics-__assignor-__leader") for d in leader)
    assert "exits 1" in readme.split("without the leader topic", 1)[1][:40]
    rows = [line for line in readme.splitlines() if line.startswith("| `storelens-api` |")]
    assert len(rows) == 2 and all("metrics" in r.split("|")[4] for r in rows), rows
