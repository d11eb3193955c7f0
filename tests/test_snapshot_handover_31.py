"""detect-track's hand-over of a partition to a replica started meanwhile (KEDA scale-out, a rollout with several
replicas), on the real Kafka of the stack with the real DetectTrackStage and detector.

A new replica reads the state topic at ``attach()``, before its consumer joins; the join makes the owner revoke the
partition, which writes a newer snapshot and commits its offset. The new replica's first ``on_assign`` restored the
read of ``attach()`` (up to ``snapshot_every`` frames and the rebalance older) while its consumer started at the
newer committed offset: the frames in between never reached its trackers (tracks broken into new ids). It now reads
the state topic as it is at the assignment, unless nothing was written to it since the last read (its end offset).
"""
from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.localdeploy import KAFKA
from test_runtime_readiness import _delete_topics, _kafka_up

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")
FRAMES = 16
EVERY = 4  # snapshot_every of both replicas

pytestmark = pytest.mark.skipif(not _kafka_up(), reason=f"no Kafka at {KAFKA} (scripts/stack.sh up)")


def _config():
    from storelens.config import parse_config

    run = uuid.uuid4().hex[:10]
    return parse_config({
        "store": {"id": "s"}, "tracker": {"backend": "bytereid"}, "heatmap": {"enabled": False},
        "cameras": [{"id": "cam", "source": str(VIDEO)}],
        "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": f"t-sh31-{run}.", "group_prefix": f"t-sh31-{run}",
                  "partitions": 1}})


@pytest.fixture(scope="module")
def detector():
    from storelens.backends.detectors import build_detector

    if not VIDEO.is_file():
        pytest.fail(f"missing test data {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    return build_detector(_config().detector)


@pytest.fixture()
def site():
    """A site on fresh topics of the stack's broker, with FRAMES frames of one camera on its frames topic."""
    from storelens.backends.video import encode_frame, read_file_frames
    from storelens.runtime.kafka import KafkaBus, ensure_topics

    config = _config()
    ensure_topics(config.kafka)
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    frames = []
    for raw in read_file_frames(str(VIDEO)):
        frames.append(encode_frame("cam", len(frames), raw, 480, 80))
        if len(frames) == FRAMES:
            break
    bus = KafkaBus(config.kafka, "t-sh31")
    try:
        bus.publish_all(t_frames, [(topics.camera_key("cam"), m.encode(f), m.type_headers(f)) for f in frames],
                        partition=0)
        yield config
    finally:
        bus.close()
        _delete_topics(config.kafka)


def _poll(consumer, what: str, timeout_s: float = 120.0):
    """The next message of ``consumer`` (rebalance hooks served on the way); a guard, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None:
            return msg
    pytest.fail(f"no message for {what} within {timeout_s} s")


@pytest.mark.parametrize("before_attach, after_attach", [
    (10, 3),  # A's last periodic snapshot (offset 8) read at attach, A hands over at 13: B restored 8 before
    (10, 0),  # the frames after A's last periodic snapshot alone: B restored 8 before, A committed 10
    (8, 0),  # nothing newer than what attach read: the same either way
])
def test_a_replica_started_meanwhile_restores_what_the_owner_handed_over(site, detector, before_attach,
                                                                        after_attach):
    from storelens.runtime import workers
    from storelens.runtime.kafka import KafkaConsumer
    from storelens.runtime.service import ServiceRuntime
    from storelens.stages.core import build_detect_track

    config = site
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    stage_a = build_detect_track(config, detector=detector)
    a = workers.detect_track_worker(config, ServiceRuntime("detect-track", port=0), stage_a, snapshot_every=EVERY)
    a_open, b_consumer = True, None
    try:
        def a_handles(n: int) -> None:
            for _ in range(n):
                msg = _poll(a.transport, "replica A")
                assert msg.topic == t_frames
                assert a.runner.handle(msg)

        a_handles(before_attach)
        assert stage_a.last_seq["cam"] == before_attach - 1

        # replica B starts: attach() reads the state topic before its consumer joins
        stage_b = build_detect_track(config, detector=detector)
        rt_b = ServiceRuntime("detect-track", port=0)
        hooks_b = workers.SnapshotHooks(stage_b, config, snapshot_every=EVERY)
        hooks_b.attach(SimpleNamespace(rt=rt_b))
        periodic = before_attach // EVERY * EVERY
        assert hooks_b.snapshots[0].next_offset == periodic  # A's last periodic snapshot

        a_handles(after_attach)  # A goes on until the rebalance reaches it
        handed = before_attach + after_attach
        a_open = False
        a.transport.close()  # A's revoke: a snapshot of the partition, its offset committed, the group left
        assert a.runner.hooks.snapshots[0].next_offset == handed  # handed over up to there
        assert "cam" not in stage_a.last_seq  # and forgotten: another replica owns the partition now

        # B's consumer joins: its first assignment (the real group's) restores the partition
        b_consumer = KafkaConsumer(config.kafka, stage_b.name, [t_frames], on_assign=hooks_b.on_assign,
                                   on_revoke=hooks_b.on_revoke, commit_every=10**12,
                                   commit_interval_s=float("inf"), commit_on_revoke=False)
        first = _poll(b_consumer, "replica B")
        skip_below = dict(hooks_b.skip_below)  # (B's revoke at its close forgets the partition, its trackers too)
        last_seq_b = stage_b.last_seq.get("cam")
        tracked = stage_b.process(m.decode(m.Frame, first.value))
    finally:
        if a_open:
            a.transport.close()
        if b_consumer is not None:
            b_consumer.close()

    assert hooks_b.snapshots[0].next_offset == handed  # the revoke's snapshot (B read the attach's one before)
    assert last_seq_b == handed - 1  # before: periodic - 1 (A's frames after it lost to B's trackers)
    assert first.offset == handed == skip_below[0]  # B goes on right after the state it restored
    assert m.decode(m.Frame, first.value).seq == handed
    assert rt_b.registry.get_sample_value("storelens_errors_total", {"reason": "tracker_state"}) is None
    assert tracked is not None and tracked.seq == handed  # not a redelivery: processed on the restored trackers


def test_an_assignment_reads_the_state_topic_again_only_when_it_changed(site, detector, monkeypatch):
    """Start-up cost: the first assignment takes attach()'s read when nothing was written since (the state topic's
    end offset is where that read ended); a snapshot written since makes it read again."""
    from storelens.runtime import workers
    from storelens.runtime.kafka import KafkaBus
    from storelens.runtime.service import ServiceRuntime
    from storelens.stages.core import build_detect_track

    config = site
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    reads = []
    real = workers._latest_snapshots
    monkeypatch.setattr(workers, "_latest_snapshots", lambda *a, **k: reads.append(1) or real(*a, **k))

    src = build_detect_track(config, detector=detector)
    state_topic = topics.topic_name(topics.DETECT_TRACK_STATE, config.kafka.topic_prefix)
    bus = KafkaBus(config.kafka, "t-sh31")

    def another_replica_snapshots(next_offset: int) -> None:
        src.last_seq["cam"] = next_offset - 1
        snap = m.StageSnapshot(stage="detect-track", input_topic=t_frames, input_partition=0, next_offset=next_offset,
                               state_format=workers.SNAPSHOT_STATE_FORMAT,
                               camera_state={"cam": src.camera_snapshot("cam")})
        bus.publish_all(state_topic, [(f"{t_frames}/0".encode(), m.encode(snap), ())], partition=0)

    try:
        another_replica_snapshots(7)
        stage = build_detect_track(config, detector=detector)
        hooks = workers.SnapshotHooks(stage, config)
        hooks.attach(SimpleNamespace(rt=ServiceRuntime("detect-track", port=0)))
        assert len(reads) == 1
        for written_since, expect_reads, next_offset in [(None, 1, 7), (None, 1, 7), (12, 2, 12), (None, 2, 12)]:
            if written_since is not None:
                another_replica_snapshots(written_since)
            hooks.on_assign([(t_frames, 0)])
            assert len(reads) == expect_reads  # before: a read at each assignment but the first one
            assert stage.last_seq["cam"] == next_offset - 1 and hooks.skip_below[0] == next_offset
            hooks.on_revoke([(t_frames, 0)])  # nothing handled: no snapshot of its own
    finally:
        bus.close()
