"""Review fixes (31b): the cameras bench's verdict and its Ultralytics side, and detect-track's snapshot restore.

* ``bench/cameras.py``: "kept up" needs the unpaced capacity per camera to reach the cameras' fps and the paced
  lag not to grow (a lag growing steadily passed when a short run ended before it reached 1 s);
* the Ultralytics processes read the same ready-made 480x360 5 fps camera file as the pipeline (they decoded and
  resized the 25 fps source inside their timed loop);
* a detect-track state record that does not decode, of another ``state_format``, or whose camera state does not
  unpickle is logged, counted (``storelens_errors_total{reason="tracker_state"}``) and skipped: fresh trackers,
  where the worker failed at every start (real Kafka of the stack).
"""
from __future__ import annotations

import pathlib
import pickle
import sys
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.localdeploy import KAFKA
from test_runtime_readiness import _kafka_up

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")


# -- 1. the cameras bench's verdict ----------------------------------------------------------------------------

RISING = list(np.linspace(0.0, 0.9, 40))  # 6 cameras at 4.7 fps each over 40 frames: never 1 s, but growing
FLAT = [0.2 + 0.05 * (i % 3) for i in range(40)]


@pytest.mark.parametrize("per_camera_fps, lags, ok, why", [
    (4.7, RISING, False, "capacity 4.7 < 5 fps; lag grew"),  # "yes" before (max of the second half < 1 s)
    (5.2, FLAT, True, ""),
    (5.2, RISING, False, "lag grew"),  # enough capacity, but the paced run fell behind
    (4.7, FLAT, False, "capacity 4.7 < 5 fps"),
    (5.2, [0.2] * 20 + [1.1] * 20, False, "lag grew"),  # (and over LAG_OK_S)
])
def test_cameras_verdict(per_camera_fps, lags, ok, why):
    import cameras

    got, reason = cameras.kept_up(per_camera_fps, lags)
    assert got is ok
    assert reason.startswith(why) if why else reason == ""
    assert cameras.DEFAULT_FRAMES >= 100  # 20 s of 5 fps: a verdict means something


# -- 2. Ultralytics reads the pipeline's own camera files ------------------------------------------------------

@pytest.mark.parametrize("k", [0, 3])
def test_ultralytics_reads_the_pipelines_frames(tmp_path, k):
    """The frames a ``YOLO.track()`` process is fed are pixel for pixel those the pipeline's ingest reads from the
    camera file (``pipeline.frames: bgr``; with jpeg the pipeline's are the JPEG of the same)."""
    import cameras
    from storelens.backends.video import camera_frames, decode_frame
    from storelens.config import parse_config

    if not VIDEO.is_file():
        pytest.fail(f"missing test data {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    n = 4
    path = cameras.write_camera_file(k, n, str(tmp_path / f"camera{k}.mp4"))
    cam = parse_config({"store": {"id": "b"}, "cameras": [{"id": f"cam{k}", "source": path}]}).cameras[0]
    ours = [decode_frame(f) for f in camera_frames(cam, frame_format="bgr") if not f.end_of_stream]
    reader = cameras.FileFrames(path)
    theirs = [reader.read() for _ in range(n)]
    assert len(ours) == n
    for a, b in zip(ours, theirs):
        assert a.shape == (cameras.SIZE[1], cameras.SIZE[0], 3) and np.array_equal(a, b)
    assert np.array_equal(reader.read(), ours[0])  # a run longer than the file loops over it


# -- 3. detect-track's snapshots that do not restore ----------------------------------------------------------

FORMAT = "pickle:storelens-detect-track-1"  # what detect-track writes (workers.SNAPSHOT_STATE_FORMAT)


def _site(run: str) -> dict:
    return {"store": {"id": "s"}, "tracker": {"backend": "bytereid"}, "heatmap": {"enabled": False},
            "cameras": [{"id": "cam", "source": str(VIDEO)}, {"id": "cam2", "source": str(VIDEO)}],
            "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": f"t-rf31b-{run}.", "group_prefix": f"t-rf31b-{run}",
                      "partitions": 1}}


class _NoDetections:
    def detect(self, image):
        raise AssertionError("no frame is processed here")


def test_undecodable_or_foreign_snapshots_start_fresh_trackers(caplog):
    if not _kafka_up():
        pytest.skip(f"no Kafka at {KAFKA}")
    from storelens.config import parse_config
    from storelens.runtime.kafka import KafkaAdmin, KafkaBus, ensure_topics
    from storelens.runtime.service import ServiceRuntime
    from storelens.runtime.workers import SnapshotHooks
    from storelens.stages.core import build_detect_track

    config = parse_config(_site(uuid.uuid4().hex[:10]))
    ensure_topics(config.kafka, [s for s in topics.TOPICS if s.name == topics.DETECT_TRACK_STATE])
    t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    state_topic = topics.topic_name(topics.DETECT_TRACK_STATE, config.kafka.topic_prefix)

    src = build_detect_track(config, detector=_NoDetections())
    src.last_seq.update({"cam": 11, "cam2": 11})
    good = {cam: src.camera_snapshot(cam) for cam in ("cam", "cam2")}

    def snap(p: int, state: dict[str, bytes], fmt: str = FORMAT) -> tuple[bytes, bytes]:
        s = m.StageSnapshot(stage="detect-track", input_topic=t_frames, input_partition=p, next_offset=12,
                            state_format=fmt, camera_state=state)
        return f"{t_frames}/{p}".encode(), m.encode(s)

    records = [
        snap(0, {"cam": good["cam"]}), (f"{t_frames}/0".encode(), b"\xff\xff not a StageSnapshot"),  # newest: garbage
        snap(1, {"cam": good["cam"]}, "pickle:storelens-detect-track-2"),  # a newer version's (a rollback)
        snap(2, {"cam": b"not a pickle"}),  # the right format, a camera state that does not unpickle
        snap(3, {"cam2": good["cam2"]}),  # a good one still restores
    ]
    bus = KafkaBus(config.kafka, "t-rf31b")
    admin = KafkaAdmin(config.kafka)
    try:
        bus.publish_all(state_topic, [(k, v, ()) for k, v in records], partition=0)

        stage = build_detect_track(config, detector=_NoDetections())
        rt = ServiceRuntime("detect-track", port=0)
        hooks = SnapshotHooks(stage, config)
        hooks.attach(SimpleNamespace(rt=rt))  # raised DecodeError at the garbage record before
        assert sorted(hooks.snapshots) == [2, 3]  # partition 0's older snapshot is not taken either
        hooks.on_assign([(t_frames, p) for p in range(4)])  # raised UnpicklingError at partition 2 before
    finally:
        bus.close()
        try:
            admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(config.kafka.topic_prefix)])
        finally:
            admin.close()

    assert rt.registry.get_sample_value("storelens_errors_total", {"reason": "tracker_state"}) == 3
    skipped = [r for r in caplog.records if "tracker state snapshot skipped" in r.getMessage()]
    assert [r.partition for r in skipped] == [0, 1]
    assert "storelens-detect-track-2" in skipped[1].reason
    not_restored = [r for r in caplog.records if "tracker state not restored" in r.getMessage()]
    assert [r.camera for r in not_restored] == ["cam"] and "UnpicklingError" in not_restored[0].reason
    assert "cam" not in stage.last_seq and "cam" not in stage._trackers  # a fresh tracker at its next frame
    assert stage.last_seq["cam2"] == 11  # restored
    assert hooks.skip_below == {2: 12, 3: 12}
    assert pickle.loads(good["cam"])["last_seq"] == 11


def test_camera_state_that_does_not_unpickle_starts_a_new_session(caplog):
    """restore_camera itself (the rebalance hook's call): an unreadable camera state is a new tracker session, its
    ids above the old session's, not an exception."""
    from storelens.config import parse_config
    from storelens.stages.core import TRACK_ID_SESSION_FACTOR, build_detect_track

    stage = build_detect_track(parse_config(_site("x")), detector=_NoDetections())
    stage.id_base["cam"] = 7 * TRACK_ID_SESSION_FACTOR
    for data in (b"not a pickle", pickle.dumps({"tracker": None}), pickle.dumps(["a list"])):
        reason = stage.restore_camera("cam", data)  # raised (UnpicklingError, KeyError, TypeError) before
        assert reason is not None and "does not unpickle" in reason
    assert "cam" not in stage.last_seq and "cam" not in stage._trackers
    assert stage.id_base["cam"] == 10 * TRACK_ID_SESSION_FACTOR
    assert len([r for r in caplog.records if "tracker state not restored" in r.getMessage()]) == 3
