"""Follow-ups of the ingest-state and oversized-message fixes (issue 9).

* A fresh ingest process that takes over a kept stream and gets a sampling change before its first frame resumes
  after the kept stream's last skipped source frame (before: from frame 1, under numbers that meant later frames,
  and that wrong start was kept).
* A camera re-pointed while ingest was down gets its former stream's end-of-stream marker first: detect-track
  starts a new tracker session for the new source (before: the old tracks went on into the new file).
* A stopped camera stops retrying to keep its stream's start (before: until the process stopped; the supervisor
  gave up joining it after 30 s and a stale start could land last).
* A stage worker dead-letters an output over its topic's limit on the broker when that is lower than declared (a
  topic made by the Topic Operator without ``max.message.bytes``: ~1 MiB); before, a 1.5 MB crop was refused by the
  broker and the worker crashed on the next flush. The dead letter names the deployment's topic (with its prefix),
  as every other dead letter does.
* Ingest's re-encoding of frames over the ``frames`` limit never tries a JPEG quality above the camera's own and
  comes back to the best quality once frames fit again (before: one busy frame left the camera at quality 30).
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time

import cv2
import numpy as np
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
from test_oversized_messages import CONFIG_CAMERAS, Cropper
from test_runtime_readiness import _delete_topics, _metric, _site, _wait, needs_kafka

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames
SHOP = asset("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4")  # 384x288, 25 fps, 295 frames
MiB = 1024**2


def _decoded(sink: list):
    return lambda key, value: sink.append(m.decode(m.Frame, value))


def _failed(errors: list):
    return lambda cam, exc: errors.append((cam.id, exc))


# -- 1. a sampling change before the taken-over stream's first frame ------------------------------------------------

def test_a_sampling_change_before_the_first_frame_of_a_taken_over_stream_resumes_after_the_kept_frame():
    """A fresh process takes over the kept stream (first seq 1000, after source frame 200) and is still skipping
    to frame 200 when a site version changes the camera's sampling: the resumed stream goes on after frame 200 with
    seq 1000, and that is the start kept. Before, it started at frame 1 under seq 1000 and kept (1000, 0).

    (The process's stop stands in for "still skipping": the first run ends before it publishes a frame.)"""
    cam = CameraConfig(id="cam", source=str(SHOP), target_fps=5.0)
    slower = cam.model_copy(update={"target_fps": 2.0})
    kept, frames, errors, stopping = [], [], [], [True]
    sup = CameraSupervisor(_decoded(frames), lambda: stopping[0], _failed(errors),
                           streams={"cam": StreamStart(stream_id(cam), 1000, 200)},
                           on_stream=lambda c, s, stopped: kept.append(s))
    sup.apply([cam])
    sup.threads()["cam"].join(60)
    assert frames == [] and kept == []  # the former process's stream: nothing new to keep
    stopping[0] = False
    sup.apply([slower])
    sup.threads()["cam"].join(60)
    assert not errors
    assert kept == [StreamStart(stream_id(cam), 1000, 200)]
    want = list(camera_frames(slower, first_seq=1000, after_source_frame=200))
    assert [(f.seq, f.ts_ms, f.source_frame, f.end_of_stream) for f in frames] == [
        (f.seq, f.ts_ms, f.source_frame, f.end_of_stream) for f in want]
    assert frames[0].seq == 1000 and frames[0].source_frame > 200


# -- 2. a camera re-pointed while ingest was down ----------------------------------------------------------------

def test_a_camera_repointed_while_ingest_was_down_ends_its_old_stream_first():
    """Process 1 publishes eight frames of file A and is stopped (SIGTERM: no marker). While ingest is down the
    camera is re-pointed to file B. Process 2 publishes A's end-of-stream marker first, then B numbered after it;
    detect-track (real detector and tracker) reading both gives B's people a new tracker session. A marker
    published again (a process that stopped before it kept B's start) changes nothing there."""
    a = CameraConfig(id="cam", source=str(CAMPUS), target_fps=5.0)
    b = CameraConfig(id="cam", source=str(SHOP), target_fps=2.0)
    kept, errors, p1, p2 = [], [], [], []
    stop = threading.Event()

    def publish1(key: bytes, value: bytes) -> None:
        p1.append(m.decode(m.Frame, value))
        if len(p1) == 8:
            stop.set()
    sup = CameraSupervisor(publish1, stop.is_set, _failed(errors), streams={},
                           on_stream=lambda c, s, stopped: kept.append(s))
    sup.apply([a])
    sup.threads()["cam"].join(60)
    assert len(p1) == 8 and not any(f.end_of_stream for f in p1) and kept == [StreamStart(stream_id(a), 0, 0)]

    t0 = int(time.time() * 1000)
    sup = CameraSupervisor(_decoded(p2), lambda: False, _failed(errors), streams={"cam": kept[-1]},
                           on_stream=lambda c, s, stopped: kept.append(s))
    sup.apply([b])
    sup.threads()["cam"].join(60)
    assert not errors
    new = kept[-1]
    assert new.stream_id == stream_id(b) and new.after_source_frame == 0
    marker, first = p2[0], p2[1]
    assert marker.end_of_stream and marker.seq == new.first_seq - 1 >= t0 and marker.ts_ms == b.start_ts_ms
    assert first.seq == new.first_seq and first.source_frame == 1 and not first.end_of_stream
    want = list(camera_frames(b, first_seq=new.first_seq))
    assert [(f.seq, f.source_frame, f.end_of_stream) for f in p2[1:]] == [
        (f.seq, f.source_frame, f.end_of_stream) for f in want]

    config = parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam", "source": str(CAMPUS)}],
                           "heatmap": {"enabled": False}})
    stage = build_detect_track(config)
    # as if process 2 stopped after its marker, before it kept B's start: process 3 publishes another marker, above
    again = [m.Frame(camera_id="cam", seq=marker.seq + 100, ts_ms=b.start_ts_ms, end_of_stream=True)]
    for f in p2[1:]:
        again.append(m.Frame())
        again[-1].CopyFrom(f)
        again[-1].seq += 101
    out = [stage.process(f) for f in p1 + p2[:1] + again[:9]]  # B's first eight frames (4 s) show its people
    old_ids = {t.track_id for tf in out[:len(p1)] for t in tf.tracks}
    new_ids = {t.track_id for tf in out[len(p1):] if tf is not None for t in tf.tracks}
    assert old_ids and new_ids
    assert max(old_ids) // TRACK_ID_SESSION_FACTOR < min(new_ids) // TRACK_ID_SESSION_FACTOR
    assert len({i // TRACK_ID_SESSION_FACTOR for i in new_ids}) == 1  # the marker again: no third session


# -- 4. a stopped camera stops retrying to keep its start ---------------------------------------------------------

def test_a_camera_stopped_while_keeping_its_start_gives_up_and_publishes_nothing():
    """The broker does not take the new stream's start (``on_stream`` retries until the camera's stream stops); a
    site version re-points the camera meanwhile: the first stream gives up at once, publishes nothing, and the
    replacement keeps its own start and publishes its file. Before, the retries went on until the process stopped
    (``apply`` gave up joining after 30 s and a stale start could land after the replacement's)."""
    a = CameraConfig(id="cam", source=str(CAMPUS), target_fps=1.0)
    b = CameraConfig(id="cam", source=str(SHOP), target_fps=1.0)
    tried, kept, frames, errors, gave_up = [], [], [], [], []

    def on_stream(cam: CameraConfig, start: StreamStart, stopped) -> bool:
        tried.append(start)
        if start.stream_id == stream_id(a):  # never taken, offered again until the stream stops
            while not stopped():
                time.sleep(0.01)
            gave_up.append(start)
            return False
        kept.append(start)
        return True
    sup = CameraSupervisor(_decoded(frames), lambda: False, _failed(errors), streams={}, on_stream=on_stream)
    sup.apply([a])
    first_thread = sup.threads()["cam"]
    _wait(lambda: tried or errors, 30, "the first stream's start offered")
    assert not errors
    sup.apply([b])
    assert not first_thread.is_alive() and gave_up == tried[:1]
    sup.threads()["cam"].join(60)
    assert not errors and [s.stream_id for s in kept] == [stream_id(b)]
    assert frames and all(f.seq >= kept[0].first_seq for f in frames) and frames[0].source_frame == 1
    assert frames[-1].end_of_stream and sum(f.end_of_stream for f in frames) == 1


# -- 3, 5. a topic whose limit on the broker is lower than declared ------------------------------------------------

@needs_kafka
@pytest.mark.timeout(180)
def test_a_stage_worker_dead_letters_an_output_over_the_brokers_lower_topic_limit():
    """person-crops made at 1 MiB (as the Topic Operator makes a KafkaTopic without ``max.message.bytes``); a
    1.5 MB crop (under the declared 2 MiB) is dead-lettered ``too_large`` by the stage worker, naming the
    deployment's topic, and the crops after it arrive; the worker stops cleanly. Before, the broker refused the
    crop and the worker exited 1 on the next flush (and was restarted onto the same frame)."""
    cfg = _kafka_cfg().model_copy(update={"partitions": 1})
    low = dataclasses.replace(topics.spec(topics.PERSON_CROPS), max_message_bytes=MiB)
    kafka.ensure_topics(cfg, [low])
    config = _site(cfg, CONFIG_CAMERAS)
    rt = ServiceRuntime("cropper", port=0)
    worker = workers.StageWorker(config, rt, Cropper())
    crops_topic = worker.transport.topic(topics.PERSON_CROPS)
    big = os.urandom(1_500_000)
    for s in range(4):
        worker.transport.publish(topics.FRAMES, b"cam", m.encode(m.Frame(
            camera_id="cam", seq=s, ts_ms=1000 + s, jpeg=big if s == 0 else b"jpg-%d" % s)))
    worker.transport.bus.flush()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()

    def read(topic: str, kind):
        return [m.decode(kind, v) for _, v, _ in kafka.read_to_end(cfg, topic, 0, "check", 30)]
    try:
        _wait(lambda: not thread.is_alive() or len(read(crops_topic, m.PersonCrop)) == 3, 60, "the small crops")
        assert thread.is_alive(), f"the worker stopped: {result}"
        crops = read(crops_topic, m.PersonCrop)
        letters = read(worker.transport.topic(topics.DEAD_LETTER), m.DeadLetter)
    finally:
        rt.stopping.set()
        thread.join(60)
        _delete_topics(cfg)
    assert result == [0]
    assert [c.seq for c in crops] == [1, 2, 3]
    assert len(letters) == 1 and letters[0].reason.startswith("too_large")
    assert f"limit of {MiB} bytes" in letters[0].reason and letters[0].source_topic == crops_topic
    assert _metric(rt, "storelens_errors_total", reason="too_large") == 1
    assert _metric(rt, "storelens_dead_letters_total", topic=crops_topic) == 1
    assert not _metric(rt, "storelens_delivery_errors_total", topic=crops_topic)


# -- 6. ingest's re-encoding of frames over the limit ----------------------------------------------------------------

def _image(kind: str) -> np.ndarray:
    """320x240: ``noise`` (a JPEG of it is large), ``some`` (noise over 40% of it), ``flat``."""
    img = np.full((240, 320, 3), 128, np.uint8)
    cols = {"noise": 320, "some": 128, "flat": 0}[kind]
    img[:, :cols] = np.random.default_rng(1).integers(0, 256, (240, cols, 3), dtype=np.uint8)
    return img


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _tables(jpeg: bytes) -> bytes:
    """The JPEG's quantization tables (its DQT segments): they tell the quality it was encoded at."""
    out, i = b"", 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF and jpeg[i + 1] != 0xDA:  # up to the start of scan
        n = int.from_bytes(jpeg[i + 2:i + 4], "big")
        if jpeg[i + 1] == 0xDB:
            out += jpeg[i + 4:i + 2 + n]
        i += 2 + n
    return out


def _quality(jpeg: bytes) -> int:
    by_tables = {_tables(_jpeg(_image("flat"), q)): q for q in range(1, 101)}
    return by_tables[_tables(jpeg)]


FIT_LIMIT = 26_000  # noise at quality 100 fits at 30 only; "some" at 75; "flat" as it is
# (case, camera jpeg_quality, frames, retry_best_after, qualities published ("as is": unchanged), qualities tried)
FITTER_CASES = [
    ("never_above_the_cameras_own_quality", 60, ["noise"], 25, [30], [[50, 30]]),
    ("the_best_again_once_a_frame_fits", 100, ["noise", "flat", "some"], 25, [30, "as is", 75],
     [[75, 50, 30], [75, 50, 30]]),
    ("the_best_again_after_frames_at_a_lower_one", 100, ["noise", "some", "some", "some", "noise"], 2,
     [30, 30, 30, 75, 30], [[75, 50, 30], [30], [30], [75, 50, 30], [75, 50, 30]]),
    ("the_remembered_quality_first", 100, ["noise", "some"], 25, [30, 30], [[75, 50, 30], [30]]),
]


@pytest.mark.parametrize("case,own,kinds,retry_after,published,tried", FITTER_CASES, ids=[c[0] for c in FITTER_CASES])
def test_frame_fitter_qualities(monkeypatch, case, own, kinds, retry_after, published, tried):
    from prometheus_client import CollectorRegistry

    from storelens.backends import video
    from storelens.runtime.service import ServiceMetrics

    calls: list[list[int]] = []
    real = video.reencode_jpeg

    def spy(frame, fits, qualities=video.SHRINK_QUALITIES):  # the real re-encoding, its qualities noted
        calls.append(list(qualities))
        return real(frame, fits, qualities)
    monkeypatch.setattr(video, "reencode_jpeg", spy)
    headers = m.type_headers(m.Frame)
    errors = ServiceMetrics(CollectorRegistry()).errors
    fit = workers.FrameFitter(FIT_LIMIT, errors, headers, quality_of=lambda key: {b"cam": own}.get(key))
    fit.retry_best_after = retry_after
    got = []
    for seq, kind in enumerate(kinds):
        value = m.encode(m.Frame(camera_id="cam", seq=seq, ts_ms=seq, jpeg=_jpeg(_image(kind), own),
                                 width=320, height=240))
        out, why = fit(b"cam", value)
        assert out is not None and not why and topics.fits(FIT_LIMIT, b"cam", out, headers)
        frame = m.decode(m.Frame, out)
        assert (frame.seq, frame.width, frame.height) == (seq, 320, 240)
        got.append("as is" if out == value else _quality(frame.jpeg))
    assert got == published
    assert calls == tried
