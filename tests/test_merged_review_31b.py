"""Review of the merged ingest / detect-track batch (31b), each with a test that fails on the code before.

1. A file's kept position never goes backwards (a same-rate restart replays the file from its start) nor loses its
   ``ended``: stopped mid-replay and restarted at another rate, an ended file publishes its marker only.
2. + 3. The position is kept about once a second of the file (and at its end), only for frames known delivered.
4. A re-pointed camera's end marker is delivered before the new stream's start is kept.
5. A partition revoked then assigned again with a snapshot that is not restorable starts fresh trackers with a new
   id base (not the old trackers and ids of minutes before).
6. This replica's own snapshot does not make its next assignment read the state topic again; a bad record of the
   state topic is counted once over the reads.
7. A live source whose grab works but whose frames never decode is reopened with a growing backoff.
"""
from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from storelens.config import CameraConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.ingest import CameraSupervisor, StreamStart, stream_id
from storelens.runtime.localdeploy import KAFKA
from test_runtime_readiness import _delete_topics, _kafka_up
from test_snapshot_handover_31 import EVERY, _config, _poll, detector, site  # noqa: F401 (fixtures)

kafka = pytest.mark.skipif(not _kafka_up(), reason=f"no Kafka at {KAFKA} (scripts/stack.sh up)")


def _video(path, frames: int, fps: float = 10.0) -> str:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        w.write(np.full((48, 64, 3), (i * 8) % 256, np.uint8))
    w.release()
    return str(path)


def _run(cam: CameraConfig, streams: dict | None, stop_after: int | None = None, delivered=None, out=None):
    """One ingest process over ``cam``: the frames published (to ``out``) and the positions kept."""
    out = [] if out is None else out
    kept, errors, stopping = [], [], [False]

    def publish(key, value):
        out.append(m.decode(m.Frame, value))
        if stop_after is not None and len(out) >= stop_after:
            stopping[0] = True

    sup = CameraSupervisor(publish, lambda: stopping[0], lambda c, e: errors.append(e), streams=streams,
                           on_stream=lambda c, s, stopped: True, on_position=lambda c, s: kept.append(s),
                           **({} if delivered is None else {"delivered": delivered}))
    sup.apply([cam])
    sup.threads()[cam.id].join(120)
    assert not errors
    return out, kept


# 1 ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ended, position", [(True, (30, 30)), (False, (25, 25))])
def test_a_same_rate_replay_never_moves_the_kept_position_back(tmp_path, ended, position):
    cam = CameraConfig(id="c", source=_video(tmp_path / "v.avi", 30))
    saved = StreamStart(stream_id(cam), 0, 0, ended, 0.0, position)
    _, kept = _run(cam, {"c": saved}, stop_after=10)  # a restart at the same rate, stopped mid-replay
    assert all(k.position >= position and k.ended >= ended for k in kept)  # before: (1, 1), (2, 2)... ended lost
    last = kept[-1] if kept else saved
    out, _ = _run(cam.model_copy(update={"target_fps": 5.0}), {"c": last})
    if ended:  # its marker only (before: seqs 9-18 of the file again, then a second end marker)
        assert [(f.seq, f.end_of_stream) for f in out] == [(30, True)]
    else:  # on after the last source frame kept, above its seq
        assert out[0].seq >= 25 and out[0].source_frame > 25 and out[-1].end_of_stream


# 2 + 3 ------------------------------------------------------------------------------------------------------------

def test_the_position_is_kept_about_once_a_second_of_the_file_and_at_its_end(tmp_path):
    cam = CameraConfig(id="c", source=_video(tmp_path / "long.avi", 1000))
    out, kept = _run(cam, {})
    assert len(out) == 1001 and out[-1].end_of_stream
    assert len(kept) <= 1000 / 10 + 2  # before: one record per frame (1001)
    assert [k.position for k in kept] == sorted(k.position for k in kept)
    assert kept[-1].ended and kept[-1].position == (1000, 1000)


def test_only_delivered_frames_move_the_position(tmp_path):
    cam = CameraConfig(id="c", source=_video(tmp_path / "v.avi", 100))
    upto = 35  # the frames after it never reported delivered (a crash would lose them with the producer's buffer)
    out: list = []
    _, kept = _run(cam, {}, delivered=lambda c, stopped: len(out) <= upto, out=out)
    assert len(out) == 101 and kept
    assert all(k.position[1] <= upto and not k.ended for k in kept)


# 4 ----------------------------------------------------------------------------------------------------------------

@kafka
def test_the_re_pointed_streams_marker_is_delivered_before_the_new_start_is_kept(tmp_path):
    from storelens.config import parse_config
    from storelens.runtime.kafka import KafkaBus, ensure_topics, read_to_end
    from storelens.runtime.workers import FrameDeliveries

    run = uuid.uuid4().hex[:10]
    config = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": str(tmp_path / "v.avi")}],
                           "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": f"t-mr31b-{run}.",
                                     "group_prefix": f"t-mr31b-{run}", "partitions": 1}})
    ensure_topics(config.kafka, [topics.spec(topics.FRAMES)])
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    cam = CameraConfig(id="c", source=_video(tmp_path / "v.avi", 20))
    old = cam.model_copy(update={"source": str(tmp_path / "old.avi")})  # the stream kept: another file
    bus = KafkaBus(config.kafka, "t-mr31b")
    deliveries = FrameDeliveries(bus)
    seen_at_start: list = []
    stop = threading.Event()

    def publish(key, value):
        deliveries.sent(key, bus.publish(t_frames, key, value))
        if not m.decode(m.Frame, value).end_of_stream:
            stop.set()

    def on_stream(c, start, stopped):  # what the frames topic holds when the new stream is kept
        seen_at_start.extend(m.decode(m.Frame, v) for _, v, _ in read_to_end(config.kafka, t_frames))
        return True

    try:
        sup = CameraSupervisor(publish, stop.is_set, lambda c, e: pytest.fail(str(e)),
                               streams={"c": StreamStart(stream_id(old), 0, 0, False, 0.0, (7, 7))},
                               on_stream=on_stream, delivered=deliveries)
        sup.apply([cam])
        sup.threads()["c"].join(60)
        bus.flush()
        after = [m.decode(m.Frame, v) for _, v, _ in read_to_end(config.kafka, t_frames)]
    finally:
        bus.close()
        _delete_topics(config.kafka)
    assert after[0].end_of_stream and not after[1].end_of_stream and after[0].seq < after[1].seq
    assert [(f.seq, f.end_of_stream) for f in seen_at_start] == [(after[0].seq, True)]


# 5 ----------------------------------------------------------------------------------------------------------------

T0 = 1_767_225_600_000  # frames one second apart: each session's id base differs


def _frames(n: int) -> list[m.Frame]:
    from storelens.backends.video import encode_frame, read_file_frames
    from test_snapshot_handover_31 import VIDEO

    out = []
    for raw in read_file_frames(str(VIDEO)):
        f = encode_frame("cam", len(out), raw, 480, 80)
        f.ts_ms = T0 + len(out) * 1000
        out.append(f)
        if len(out) == n:
            return out


def _state_topic(config):
    from storelens.runtime.kafka import KafkaAdmin, ensure_topics

    ensure_topics(config.kafka, [topics.spec(topics.DETECT_TRACK_STATE)])
    admin = KafkaAdmin(config.kafka)
    return topics.topic_name(topics.DETECT_TRACK_STATE, config.kafka.topic_prefix), admin


def _drop_topics(config, admin) -> None:
    try:
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(config.kafka.topic_prefix)])
    finally:
        admin.close()


@kafka
def test_a_partition_assigned_again_without_a_restorable_snapshot_starts_a_new_session(detector):  # noqa: F811
    from storelens.runtime import workers
    from storelens.runtime.kafka import KafkaBus
    from storelens.runtime.service import ServiceRuntime
    from storelens.stages.core import TRACK_ID_SESSION_FACTOR, build_detect_track, track_id_base

    config = _config()
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    frames = _frames(12)
    state_topic, admin = _state_topic(config)
    bus = KafkaBus(config.kafka, "t-mr31b")
    key = f"{t_frames}/0".encode()
    try:
        src = build_detect_track(config, detector=detector)  # replica A, before the hand-over
        for f in frames[:4]:
            src.process(f)
        snap = m.StageSnapshot(stage="detect-track", input_topic=t_frames, input_partition=0, next_offset=4,
                               state_format=workers.SNAPSHOT_STATE_FORMAT,
                               camera_state={"cam": src.camera_snapshot("cam")})
        bus.publish_all(state_topic, [(key, m.encode(snap), ())], partition=0)

        stage = build_detect_track(config, detector=detector)
        hooks = workers.SnapshotHooks(stage, config)
        hooks.attach(SimpleNamespace(rt=ServiceRuntime("detect-track", port=0)))
        hooks.on_assign([(t_frames, 0)])
        old_base = track_id_base(T0)
        assert stage.id_base["cam"] == old_base
        ids = [t.track_id for f in frames[4:6] for t in stage.process(f).tracks]
        assert ids and all(old_base < i < old_base + TRACK_ID_SESSION_FACTOR for i in ids)

        hooks.on_revoke([(t_frames, 0)])
        foreign = m.StageSnapshot(stage="detect-track", input_topic=t_frames, input_partition=0, next_offset=9,
                                  state_format="pickle:storelens-detect-track-99")  # a newer version's
        bus.publish_all(state_topic, [(key, m.encode(foreign), ())], partition=0)
        hooks.on_assign([(t_frames, 0)])  # the partition's snapshot is skipped: fresh trackers
        tracked = next(tf for f in frames[6:] if (tf := stage.process(f)) is not None and tf.tracks)
    finally:
        bus.close()
        _drop_topics(config, admin)
    new_base = track_id_base(frames[6].ts_ms)  # the new session's first frame
    assert new_base != old_base
    # before: the old tracker and id counter went on (ids of A's session, base T0)
    assert all(new_base < t.track_id < new_base + TRACK_ID_SESSION_FACTOR for t in tracked.tracks)


# 6 ----------------------------------------------------------------------------------------------------------------

@kafka
def test_an_own_snapshot_does_not_make_the_next_assignment_read_again(site, detector, monkeypatch):  # noqa: F811
    from storelens.runtime import workers
    from storelens.runtime.service import ServiceRuntime
    from storelens.stages.core import build_detect_track

    config = site
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    stage = build_detect_track(config, detector=detector)
    a = workers.detect_track_worker(config, ServiceRuntime("detect-track", port=0), stage, snapshot_every=EVERY)
    hooks = a.runner.hooks
    reads = []
    real = workers._latest_snapshots
    monkeypatch.setattr(workers, "_latest_snapshots", lambda *a, **k: reads.append(1) or real(*a, **k))
    try:
        for _ in range(EVERY + 2):  # a periodic snapshot on the way
            assert a.runner.handle(_poll(a.transport, "the worker"))
        for _ in range(2):
            hooks.on_revoke([(t_frames, 0)])  # its own snapshot (and commit)
            hooks.on_assign([(t_frames, 0)])
            assert reads == []  # before: the whole state topic read again at each assignment
            assert stage.last_seq["cam"] == EVERY + 1 and hooks.skip_below[0] == EVERY + 2
    finally:
        a.transport.close()


@kafka
def test_a_bad_state_record_is_counted_once_over_the_reads():
    from storelens.runtime import workers
    from storelens.runtime.kafka import KafkaBus
    from storelens.runtime.service import ServiceRuntime
    from storelens.stages.core import build_detect_track

    config = _config()
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    state_topic, admin = _state_topic(config)
    bus = KafkaBus(config.kafka, "t-mr31b")
    rt = ServiceRuntime("detect-track", port=0)
    try:
        bus.publish_all(state_topic, [(f"{t_frames}/0".encode(), b"\xff not a StageSnapshot", ())], partition=0)
        hooks = workers.SnapshotHooks(build_detect_track(config, detector=SimpleNamespace()), config)
        hooks.attach(SimpleNamespace(rt=rt))
        for p in range(3):  # another replica writes between the assignments: each one reads the topic again
            other = m.StageSnapshot(stage="detect-track", input_topic=t_frames, input_partition=5 + p,
                                    next_offset=1, state_format=workers.SNAPSHOT_STATE_FORMAT)
            bus.publish_all(state_topic, [(f"{t_frames}/{5 + p}".encode(), m.encode(other), ())], partition=0)
            hooks.on_assign([(t_frames, 0)])
            hooks.on_revoke([(t_frames, 0)])
        assert sorted(hooks.snapshots) == [5, 6, 7]
    finally:
        bus.close()
        _drop_topics(config, admin)
    # before: 4 (the attach's read and each assignment's)
    assert rt.registry.get_sample_value("storelens_errors_total", {"reason": "tracker_state"}) == 1


# 7 ----------------------------------------------------------------------------------------------------------------

class _GrabsButNeverDecodes:
    def grab(self):
        return True

    def retrieve(self):
        return False, None

    def release(self):
        pass


def test_a_source_whose_frames_never_decode_is_reopened_with_a_growing_backoff(monkeypatch):
    from storelens.backends import video

    waits: list[float] = []
    monkeypatch.setattr(video, "open_capture", lambda source: _GrabsButNeverDecodes())
    monkeypatch.setattr(video, "_wait", lambda seconds, should_stop: waits.append(seconds))
    got = list(video.read_live_frames("rtsp://cam/1", max_backoff_s=8.0, backoff_s=0.5,
                                      should_stop=lambda: len(waits) >= 6))
    assert got == []
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # before: 0.5 for ever (a reopen every half second)
