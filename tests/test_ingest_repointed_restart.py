"""A file camera re-pointed by a site version, and ingest restarted: downstream never confuses its new stream's
frames with its old stream's (ingest service, real Kafka of the local stack, real detect-track).

* (a) re-pointed while ingest runs: the old stream ends with its marker, the new file's frames are numbered
  above it (as before);
* (b) ingest restarted after the re-point: the new file is numbered as the former process numbered it (kept on
  the compacted ``ingest-state`` topic), so downstream skips the replay and takes the rest. Before, the restarted
  process numbered the new file from 0 again, below what downstream had seen: the frames it had not yet seen
  were dropped as redeliveries (a restart mid-file) and the replayed end-of-stream marker went out with a seq
  below the camera's last;
* (c) ingest restarted again, nothing changed: the same numbers again, everything skipped.
"""
from __future__ import annotations

import json
import signal
import time

import pytest

from storelens.backends.video import camera_frames
from storelens.config import CameraConfig, parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime import kafka, workers
from storelens.runtime.ingest import CameraSupervisor, StreamStart, stream_id
from storelens.runtime.service import ServiceRuntime
from storelens.stages.core import TRACK_ID_SESSION_FACTOR, build_detect_track
from test_bus import _kafka_cfg
from test_runtime_readiness import _delete_topics, _run_ingest, _wait, needs_kafka

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames
SHOP = asset("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4")  # 384x288, 25 fps, 295 frames
OLD = {"id": "cam", "source": str(CAMPUS), "target_fps": 5.0}
NEW = {"id": "cam", "source": str(SHOP), "target_fps": 2.0}


def _runtime() -> ServiceRuntime:
    """An ingest process's runtime (a free port; pytest's signal handlers put back by the caller)."""
    rt = ServiceRuntime("ingest", port=0, host="127.0.0.1")
    rt.start()
    return rt


def _frames(cfg) -> list[m.Frame]:
    """The camera's frames on ``frames`` in the order downstream reads them (one partition: keyed by camera)."""
    got = kafka.consume_all(cfg, topics.topic_name(topics.FRAMES, cfg.topic_prefix), timeout_s=10)
    return [f for f in (m.decode(m.Frame, x.value) for x in sorted(got, key=lambda x: x.offset))
            if f.camera_id == "cam"]


@needs_kafka
@pytest.mark.timeout(300)
def test_a_repointed_file_camera_keeps_its_numbers_across_ingest_restarts():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    cfg = _kafka_cfg()
    config = parse_config({"store": {"id": cfg.group_prefix}, "cameras": [OLD], "kafka": cfg.model_dump(),
                           "heatmap": {"enabled": False}})
    runs: list[int] = []  # frames on the topic when each process stopped

    def one_process(until) -> None:
        rt = _runtime()
        thread = _run_ingest(config, rt)
        try:
            _wait(lambda: until(_frames(cfg)), 90, "the ingest process's frames", every_s=0.2)
        finally:
            rt.stopping.set()
            thread.join(60)
            rt.stop()
        assert not thread.is_alive()
        runs.append(len(_frames(cfg)))

    try:
        # (a) the site file's stream, then a site version re-points the camera while ingest runs; stopped once
        # the new stream has begun (mid-file or at its end: what follows holds either way)
        def repoint_once_ended(frames: list[m.Frame]) -> bool:
            if sum(f.end_of_stream for f in frames) == 1 and not repoint_once_ended.sent:
                pub = workers.SiteConfigPublisher(config)
                try:
                    pub(m.SiteUpdate(version=1, ts_ms=int(time.time() * 1000), actor="test",
                                     store_id=config.store.id, cameras_json=json.dumps([NEW])))
                finally:
                    pub.close()
                repoint_once_ended.sent = True
            return repoint_once_ended.sent and not frames[-1].end_of_stream or sum(f.end_of_stream
                                                                                    for f in frames) == 2
        repoint_once_ended.sent = False
        one_process(repoint_once_ended)
        # (b) a new process (the newest site version names the new file): its stream's end marker
        one_process(lambda frames: len(frames) > runs[0] and frames[-1].end_of_stream)
        # (c) another one, nothing changed: the same again
        one_process(lambda frames: len(frames) > runs[1] and frames[-1].end_of_stream)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        topic_frames = _frames(cfg)
        _delete_topics(cfg)

    old = list(camera_frames(CameraConfig(**OLD)))
    new = list(camera_frames(CameraConfig(**NEW)))
    p1, p2, p3 = topic_frames[:runs[0]], topic_frames[runs[0]:runs[1]], topic_frames[runs[1]:]
    # (a) the old stream and its marker, then the new file from its start above them
    assert [(f.seq, f.ts_ms, f.source_frame) for f in p1[:len(old)]] == [(f.seq, f.ts_ms, f.source_frame)
                                                                           for f in old]
    new_first = p1[len(old)].seq
    assert new_first > old[-1].seq and p1[len(old)].source_frame == 1
    mine = [(f.seq - new_first, f.ts_ms, f.source_frame, f.end_of_stream) for f in p1[len(old):]]
    want = [(f.seq, f.ts_ms, f.source_frame, f.end_of_stream) for f in new]
    assert mine == want[:len(mine)]
    # (b), (c): every restarted process publishes the new file with the numbers the first one gave it
    for replay in (p2, p3):
        assert [(f.seq - new_first, f.ts_ms, f.source_frame, f.end_of_stream) for f in replay] == want

    # detect-track reading the topic across the restarts: every frame of both files once, in order; nothing of
    # the replays; the new file's tracks are a tracker session of their own
    stage = build_detect_track(config)
    out: list[m.TrackedFrame] = []
    for f in topic_frames:
        tf = stage.process(f)
        if tf is not None:
            out.append(tf)
    frames_out = [tf for tf in out if not tf.end_of_stream]
    assert [(tf.ts_ms, tf.source_frame) for tf in frames_out] == [
        (f.ts_ms, f.source_frame) for f in old + new if not f.end_of_stream]
    seqs = [tf.seq for tf in out]
    assert seqs == sorted(seqs), "a tracked frame or marker went out below the camera's last seq"
    n_old = len(old) - 1
    old_ids = {t.track_id for tf in frames_out[:n_old] for t in tf.tracks}
    new_ids = {t.track_id for tf in frames_out[n_old:] for t in tf.tracks}
    assert old_ids and new_ids and max(old_ids) // TRACK_ID_SESSION_FACTOR < min(new_ids) // TRACK_ID_SESSION_FACTOR


def test_a_camera_repointed_while_ingest_was_down_starts_above_the_kept_stream():
    """No Kafka needed: the supervisor given a kept stream of another source numbers the new stream above it
    (the wall clock's ms) and keeps the new start before its first frame; the same source goes on with the kept
    numbers (the former process's) and keeps nothing new."""
    new = CameraConfig(**NEW)
    kept: list[tuple[str, StreamStart]] = []
    frames: list[m.Frame] = []
    t0 = int(time.time() * 1000)
    sup = CameraSupervisor(lambda k, v: frames.append(m.decode(m.Frame, v)), lambda: False, lambda c, e: None,
                           streams={"cam": StreamStart("0123456789abcdef", 40, 0)},
                           on_stream=lambda cam, s, stopped: kept.append((cam.id, s)))
    sup.apply([new])
    sup.threads()["cam"].join(60)
    assert len(kept) == 1 and kept[0][1].stream_id == stream_id(new)
    # the kept stream's end-of-stream marker first (test_ingest_followups_9), then the new stream after it
    assert frames[0].end_of_stream and frames[0].seq == kept[0][1].first_seq - 1 >= t0
    frames = frames[1:]
    assert frames[0].seq == kept[0][1].first_seq >= t0  # above the kept stream's 40 and whatever followed it
    assert frames[0].source_frame == 1 and frames[-1].end_of_stream
    again: list[m.Frame] = []
    sup = CameraSupervisor(lambda k, v: again.append(m.decode(m.Frame, v)), lambda: False, lambda c, e: None,
                           streams={"cam": kept[0][1]}, on_stream=lambda cam, s, stopped: kept.append((cam.id, s)))
    sup.apply([new])
    sup.threads()["cam"].join(60)
    assert len(kept) == 1 and [(f.seq, f.ts_ms) for f in again] == [(f.seq, f.ts_ms) for f in frames]
