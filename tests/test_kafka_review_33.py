"""Fixes of a review of the Kafka parts (issue 9 follow-ups, 33), on the stack's real Kafka:

1. A site edit whose publish to ``site-config`` fails answers 503 (saved, not yet delivered), no longer 500, and the
   API sends the newest saved version again (:class:`~storelens.api.app.SiteRedelivery`: at its start, then
   periodically) until the broker has it; of two replicas publishing versions N+1 and N in that order, the one that
   published N sends N+1 again, so the compacted topic's last value is the newest version.
2. analytics' changelog gets ``segment.ms`` and ``min.cleanable.dirty.ratio`` as ``ingest-state`` does (its open
   segment is compacted), also an existing changelog created without them.
"""
from __future__ import annotations

import time
import uuid

import pytest

from storelens.api.app import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.contract.topics import TopicSpec
from storelens.runtime.localdeploy import KAFKA, free_port
from storelens.storage import SqlStorage

from test_runtime_readiness import _delete_topics, _kafka_up

pytestmark = pytest.mark.skipif(not _kafka_up(), reason=f"no Kafka at {KAFKA} (scripts/stack.sh up)")

LINE = {"id": "door", "a": [0, 100], "b": [640, 100]}


def _site(prefix: str, bootstrap: str = KAFKA):
    return parse_config({"store": {"id": "s33"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}],
                         "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "group_prefix": prefix[:-1],
                                   "partitions": 1, "replication_factor": 1}})


def _versions_on_topic(cfg) -> list[int]:
    """The versions of the store's ``SiteUpdate`` messages on ``site-config``, in offset order."""
    from storelens.runtime.kafka import TopicTail

    tail = TopicTail(cfg.kafka, topics.topic_name(topics.SITE_CONFIG, cfg.kafka.topic_prefix))
    try:
        return [m.decode(m.SiteUpdate, msg.value).version for msg in tail.read_to_end()
                if msg.key == cfg.store.id.encode()]
    finally:
        tail.close()


class Switch:
    """An ``on_site_change`` whose publisher the test replaces (the broker back), as a process's hook is."""

    def __init__(self, publisher) -> None:
        self.publisher = publisher

    def __call__(self, update: m.SiteUpdate) -> None:
        self.publisher(update)


def _redelivery(app):
    from storelens.api.app import SiteRedelivery

    (chore,) = [c for c in app.state.chores.chores if isinstance(c, SiteRedelivery)]
    return chore


@pytest.fixture
def kafka_site(tmp_path):
    prefix = f"sltest-k33-{uuid.uuid4().hex[:10]}."
    cfg = _site(prefix)
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:
        yield cfg, storage
    finally:
        storage.close()
        _delete_topics(cfg.kafka)


@pytest.mark.parametrize("recovery", ["same process, broker back", "restart"])
def test_an_edit_the_broker_did_not_take_answers_503_and_is_sent_again(kafka_site, recovery) -> None:
    from storelens.runtime.workers import SiteConfigPublisher

    cfg, storage = kafka_site
    # a publisher aimed at a closed port: the broker never acknowledges
    unreachable = SiteConfigPublisher(_site(cfg.kafka.topic_prefix, f"127.0.0.1:{free_port()}"), timeout_s=1.0)
    working = SiteConfigPublisher(cfg)
    hook = Switch(unreachable)
    app = create_app(cfg, storage, on_site_change=hook)
    client = signed_in_client(app)
    try:
        r = client.put("/v1/site/cameras/cam-1/lines/door", json=LINE)
        assert r.status_code == 503, r.text
        assert "site version 1 saved, not yet delivered to the pipeline; it will be retried" in r.json()["detail"]
        assert client.get("/v1/site").json()["version"] == 1  # saved and in force in the API
        assert app.state.context.metrics.errors.labels("site_not_delivered")._value.get() == 1
        # repeating the edit is not needed (and based on version 0, refused)
        assert client.put("/v1/site/cameras/cam-1/lines/door?base_version=0", json=LINE).status_code == 409
        working.publish([])  # creates the topic: nothing of version 1 on it
        assert _versions_on_topic(cfg) == []

        if recovery == "restart":  # a new API process: its chore is due at its start
            app = create_app(cfg, storage, on_site_change=working)
        else:  # the same process: the chore sends it again once the broker answers
            assert _redelivery(app).run() is None and _redelivery(app).due() is False  # still unreachable
            hook.publisher = working
        chore = _redelivery(app)
        chore._next_s = None  # due now (the restart's is already)
        assert chore.due()
        sent = chore.run()
        assert sent is not None and sent.version == 1
        assert _versions_on_topic(cfg) == [1]
        assert chore.run() is None  # nothing waits: nothing sent again
        assert _versions_on_topic(cfg) == [1]
    finally:
        unreachable.close()
        working.close()


def test_of_two_replicas_publishing_in_reverse_order_the_newest_version_is_last_on_the_topic(kafka_site) -> None:
    """Replica A saves version 1; before its publish reaches the broker, replica B saves and publishes version 2;
    then A's version 1 arrives: A looks again after its publish and sends version 2 again (before, the compacted
    topic kept version 1 as its last value)."""
    from storelens.runtime.workers import SiteConfigPublisher

    cfg, storage = kafka_site
    pub_a, pub_b = SiteConfigPublisher(cfg), SiteConfigPublisher(cfg)
    app_b = create_app(cfg, storage, on_site_change=pub_b)
    client_b = signed_in_client(app_b)
    answers = []

    def slow_a(update: m.SiteUpdate) -> None:
        if not answers:  # B's edit happens while A's publish is on its way
            app_b.state.context.refresh_site()
            answers.append(client_b.put("/v1/site/cameras/cam-1/lines/exit", json={**LINE, "id": "exit"}))
        pub_a(update)

    client_a = signed_in_client(create_app(cfg, storage, on_site_change=slow_a))
    try:
        r = client_a.put("/v1/site/cameras/cam-1/lines/door", json=LINE)
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        assert [a.status_code for a in answers] == [200] and answers[0].json()["version"] == 2
        versions = _versions_on_topic(cfg)
        assert versions[:2] == [2, 1] and versions[-1] == 2, versions  # the compacted topic keeps version 2
    finally:
        pub_a.close()
        pub_b.close()


def _changelog_configs(cfg, settled=lambda conf: True) -> dict[str, str]:
    """The changelog's settings, once ``settled(conf)`` (at most ~10 s: a broker applies a topic's new settings
    shortly after AlterConfigs answers, and describes a topic just created shortly after)."""
    from storelens.runtime.analytics_app import changelog_topic
    from storelens.runtime.kafka import BrokerError, KafkaAdmin

    admin = KafkaAdmin(cfg.kafka)
    name = changelog_topic(cfg.kafka)
    conf: dict[str, str] = {}
    try:
        for _ in range(50):
            try:
                conf = {k: c.value for k, c in admin.topic_configs([name])[name].items()}
            except BrokerError:
                conf = {}
            if conf and settled(conf):
                break
            time.sleep(0.2)
        return conf
    finally:
        admin.close()


def _compacted_soon(conf: dict[str, str]) -> bool:
    return int(conf["segment.ms"]) <= 3_600_000 and float(conf["min.cleanable.dirty.ratio"]) == 0.1


@pytest.mark.parametrize("existing", [False, True], ids=["new changelog", "changelog created before without them"])
def test_the_changelog_is_compacted_in_its_open_segment_too(existing) -> None:
    from storelens.runtime.analytics_app import _changelog_base, ensure_app_topics
    from storelens.runtime.kafka import ensure_topics

    cfg = _site(f"sltest-k33c-{uuid.uuid4().hex[:10]}.")
    try:
        if existing:  # as an older release created it: compacted, the broker's segment.ms and dirty ratio
            ensure_topics(cfg.kafka, [TopicSpec(_changelog_base(cfg.kafka), "x", 1, -1, compacted=True,
                                                max_message_bytes=8 * 1024**2)])
            before = _changelog_configs(cfg)
            assert int(before["segment.ms"]) > 3_600_000 and float(before["min.cleanable.dirty.ratio"]) == 0.5
        ensure_app_topics(cfg)
        conf = _changelog_configs(cfg, _compacted_soon)
        assert int(conf["segment.ms"]) <= 3_600_000, conf["segment.ms"]
        assert float(conf["min.cleanable.dirty.ratio"]) == 0.1
        assert conf["cleanup.policy"] == "compact" and conf["max.message.bytes"] == str(8 * 1024**2)
    finally:
        _delete_topics(cfg.kafka)
