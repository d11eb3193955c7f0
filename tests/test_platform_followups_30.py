"""Follow-ups of a review of the distributed deployment (batch 30).

1. The analytics service's faust producer takes every message its topics take (``producer_max_request_size`` at
   least the largest limit of its outputs, ``dead-letter`` and the changelog), and ``fit_output`` checks an output
   against the lower of its topic's and the producer's limit: a 1.6 MB heatmap goes through a real broker.
2. k8s: the Prometheus metrics token lives in its own Secret (Prometheus may read it without reading the JWT
   signing key or the admin password).
3. k8s/README.md names every topic the analytics service creates (for sites that create topics as KafkaTopic
   resources), the changelog and faust's leader topic included.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.analytics_app import AnalyticsApp, changelog_spec
from storelens.runtime.runner import fit_output
from storelens.runtime.service import ServiceRuntime
from storelens.stages.analytics import AnalyticsStage
from storelens.stages.base import Outputs, Publish
from storelens.storage import SqlStorage
from test_alerts import kafka_site, two_cameras
from test_k8s import K8S_DIR, STACKS, _id, component, deployments, expected_services, of_kind, pod_spec, render


def _heatmap(n_cells: int) -> m.HeatmapWindow:
    """A heatmap window of ``n_cells`` cells (110,000: ~1.6 MB encoded, as cell_px 2 on a 1080p camera)."""
    return m.HeatmapWindow(camera_id="c", window_start_ms=0, window_end_ms=60_000, cell_px=2, width=1920,
                           height=1080, cells=[m.HeatmapCell(gx=i % 960, gy=i // 960, occupancy_ms=100_000 + i,
                                                             dwell_ms=200_000 + i) for i in range(n_cells)])


@pytest.fixture
def analytics(tmp_path):
    """An :class:`AnalyticsApp` (not started; no broker needed) over a SQLite history."""
    cfg = parse_config(two_cameras([]))
    loop = asyncio.new_event_loop()
    app = AnalyticsApp(cfg, SqlStorage(str(tmp_path / "h.db")), None, ServiceRuntime("analytics", port=0),
                       loop=loop)
    yield app
    loop.close()


# ---------------------------------------------------------------------------------------------
# 1. The producer's request size
# ---------------------------------------------------------------------------------------------


def test_the_analytics_producer_takes_what_its_topics_take(analytics):
    written = [*AnalyticsStage.outputs, topics.DEAD_LETTER]
    limits = {b: topics.spec(b).max_message_bytes for b in written} | {
        "changelog": changelog_spec(analytics.config.kafka).max_message_bytes}
    assert max(limits.values()) > 1_000_000, "the topics of the service allow messages over faust's default"
    cap = analytics.app.conf.producer_max_request_size
    assert cap >= max(limits.values()), (cap, limits)
    # a camera's state (its heatmap grids) can pass 1 MiB: the changelog takes what the heatmaps topic takes
    assert limits["changelog"] >= topics.spec(topics.HEATMAPS).max_message_bytes


@pytest.mark.parametrize("producer_max, dead", [
    (None, False),        # the topic's 8 MiB only: fits
    (8 * 1024**2, False),  # the producer takes as much
    (1_000_000, True),    # the producer refuses it: a counted dead letter, not an exception when sending
])
def test_fit_output_checks_the_lower_of_topic_and_producer_limit(analytics, producer_max, dead):
    hm = _heatmap(110_000)
    assert 1_000_000 < len(m.encode(hm)) < 8 * 1024**2
    before = analytics.core.dead_letters
    out = fit_output(analytics.core, topics.HEATMAPS, "heatmaps", b"c", hm, {}, None, producer_max)
    assert (out.topic == topics.DEAD_LETTER) is dead
    assert analytics.core.dead_letters - before == int(dead)
    if dead:
        assert "too_large" in out.message.reason and "1000000 bytes" in out.message.reason
        assert topics.fits(1_000_000, b"c", out.value)


def test_a_heatmap_over_a_megabyte_goes_through_the_broker(tmp_path):
    """The analytics service publishes a 1.6 MB heatmap (under the topic's 8 MiB) on a real broker: before, its
    producer refused it (``MessageSizeTooLargeError`` out of the send)."""
    from storelens.runtime.kafka import KafkaAdmin, read_to_end

    cfg = kafka_site(two_cameras([]), "t-plat30")
    loop = asyncio.new_event_loop()
    app = AnalyticsApp(cfg, SqlStorage(str(tmp_path / "h.db")), None, ServiceRuntime("analytics", port=0),
                       loop=loop, limits={})
    try:
        loop.run_until_complete(app.app.maybe_start_producer())
        hm = _heatmap(110_000)
        loop.run_until_complete(app._send(Outputs(publish=[Publish(topics.HEATMAPS, "c", hm)])))
        got = read_to_end(cfg.kafka, topics.topic_name(topics.HEATMAPS, cfg.kafka.topic_prefix))
        assert [(k, v) for k, v, _ in got] == [(b"c", m.encode(hm))]
        assert app.core.dead_letters == 0
    finally:
        loop.run_until_complete(app.app.producer.stop())
        loop.close()
        admin = KafkaAdmin(cfg.kafka)
        try:
            admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.kafka.topic_prefix)], 30)
        finally:
            admin.close()


def test_ensure_app_topics_raises_the_limit_of_an_existing_changelog():
    """A changelog created before (Kafka's 1 MiB) gets the changelog's limit: topic creation alone keeps the old."""
    import dataclasses

    from storelens.runtime.analytics_app import CHANGELOG_MAX_BYTES, changelog_topic, ensure_app_topics
    from storelens.runtime.kafka import KafkaAdmin, ensure_topics

    cfg = kafka_site(two_cameras([]), "t-plat30cl")
    admin = KafkaAdmin(cfg.kafka)
    name = changelog_topic(cfg.kafka)
    try:
        admin.delete_topics([name], 30)
        old = dataclasses.replace(changelog_spec(cfg.kafka), max_message_bytes=1_048_588)
        for _ in range(50):  # the deletion completes asynchronously on the broker
            if ensure_topics(cfg.kafka, [old]):
                break
            asyncio.run(asyncio.sleep(0.2))
        else:
            pytest.fail(f"{name} could not be recreated")
        assert admin.topic_configs([name])[name]["max.message.bytes"].value == "1048588"
        assert ensure_app_topics(cfg) == []
        conf = admin.topic_configs([name])[name]
        assert int(conf["max.message.bytes"].value) == CHANGELOG_MAX_BYTES
        assert conf["cleanup.policy"].value == "compact", "its other settings are kept"
    finally:
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.kafka.topic_prefix)], 30)
        admin.close()


# ---------------------------------------------------------------------------------------------
# 2. The metrics token's own Secret
# ---------------------------------------------------------------------------------------------


def _secret_uses(docs: list[dict]) -> list[tuple[str, str, str]]:
    """Every use of a Secret by a workload: (Secret, key or ``*``, where), from env, envFrom and volumes."""
    out = []
    for d in docs:
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec is None:
            continue
        where = f"{d['kind']}/{d['metadata']['name']}"
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    out.append((ref["name"], ref["key"], f"{where} env {e['name']}"))
            out += [(f["secretRef"]["name"], "*", f"{where} envFrom") for f in c.get("envFrom", []) if "secretRef" in f]
        out += [(v["secret"]["secretName"], "*", f"{where} volume") for v in spec.get("volumes", []) if "secret" in v]
    return out


MONITORED = [t for t in [*STACKS, K8S_DIR / "overlays" / "chain"] if "api" in expected_services(t)]


@pytest.mark.parametrize("target", MONITORED, ids=_id)
def test_the_metrics_token_secret_holds_nothing_else(target):
    """Prometheus may read the Secret its ServiceMonitor names: no workload reads anything else from it (before,
    the token sat in storelens-auth with the JWT signing key: whoever scrapes could sign admin sessions)."""
    docs = render(target)
    (api,) = [d for d in deployments(docs) if component(d) == "api"]
    (c,) = pod_spec(api)["containers"]
    (token_env,) = [e for e in c["env"] if e["name"] == "STORELENS_METRICS_TOKEN"]
    ref = token_env["valueFrom"]["secretKeyRef"]
    names = {ref["name"]} | {ep["authorization"]["credentials"]["name"]
                             for sm in of_kind(docs, "ServiceMonitor") for ep in sm["spec"]["endpoints"]}
    assert len(names) == 1, f"the ServiceMonitor and the api name different Secrets: {names}"
    others = [u for u in _secret_uses(docs) if u[0] in names and not u[2].endswith("env STORELENS_METRICS_TOKEN")]
    assert others == [], f"the metrics token's Secret also holds: {others}"
    assert all(ep["authorization"]["credentials"] == {"name": ref["name"], "key": ref["key"]}
               for sm in of_kind(docs, "ServiceMonitor") for ep in sm["spec"]["endpoints"])


def test_at_least_one_target_has_the_service_monitor():
    assert any(of_kind(render(t), "ServiceMonitor") for t in MONITORED), "the monitoring component is used nowhere"


# ---------------------------------------------------------------------------------------------
# 3. Every topic analytics creates is in k8s/README.md's KafkaTopic table
# ---------------------------------------------------------------------------------------------


def _topic_table() -> dict[str, dict[str, str]]:
    """k8s/README.md's table of the topics to create as KafkaTopic resources: name pattern -> column -> cell."""
    text = (K8S_DIR / "README.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| `<kafka.")]
    header = next((ln for ln in text.splitlines() if ln.startswith("| topic | partitions |")), None)
    assert header is not None, "k8s/README.md has no table of the topics to create as KafkaTopic resources"
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for ln in lines:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0].strip("`")] = dict(zip(cols, cells))
    return rows


def test_the_kafkatopic_table_names_every_topic_analytics_creates_with_its_settings():
    """A site creating topics as KafkaTopic resources (no Create permission) needs every topic the services create:
    the table names each topic :func:`ensure_app_topics` creates on a real broker (the changelog included) with the
    settings it gets there, and faust's leader topic (before, neither analytics topic was named)."""
    from storelens.runtime.kafka import KafkaAdmin

    cfg = kafka_site(two_cameras([]), "t-plat30doc")  # runs ensure_app_topics under a fresh prefix
    kc = cfg.kafka
    admin = KafkaAdmin(kc)
    try:
        created = sorted(t for t in admin.list_topics().topics if t.startswith(kc.topic_prefix))
        configs = admin.topic_configs(created)
        partitions = {t: len(i.partitions) for t, i in admin.list_topics().topics.items() if t in created}
    finally:
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(kc.topic_prefix)], 30)
        admin.close()
    table = _topic_table()

    def pattern(name: str) -> str:
        base = name.removeprefix(kc.topic_prefix)
        return "<kafka.topic_prefix>" + re.sub(rf"^{re.escape(kc.group_prefix)}-", "<kafka.group_prefix>-", base)

    assert len(created) == len(topics.TOPICS) + 1, created  # the declared topics and the changelog
    missing = [pattern(t) for t in created if pattern(t) not in table]
    assert missing == [], f"k8s/README.md's KafkaTopic table misses {missing}"
    for name in created:
        row, conf = table[pattern(name)], configs[name]
        want_parts = str(kc.partitions) if row["partitions"] == "`kafka.partitions`" else row["partitions"]
        assert str(partitions[name]) == want_parts, name
        for key in ("cleanup.policy", "retention.ms", "max.message.bytes"):
            assert conf[key].value == row[key], (name, key, conf[key].value, row[key])
        retention_bytes = conf["retention.bytes"].value
        assert row["retention.bytes"] == ("-" if retention_bytes == "-1" else retention_bytes), name
        if row["segment.ms"] != "-":
            assert conf["segment.ms"].value == row["segment.ms"], name
    # faust's leader topic (not created by ensure_app_topics: by faust, under the group prefix only)
    loop = asyncio.new_event_loop()
    try:
        leader = AnalyticsApp(cfg, SqlStorage(":memory:"), None, ServiceRuntime("analytics", port=0),
                              loop=loop, limits={}).app._leader_assignor._leader_topic_name
    finally:
        loop.close()
    assert leader.startswith(f"{kc.group_prefix}-")
    assert "<kafka.group_prefix>-" + leader.removeprefix(f"{kc.group_prefix}-") in table
