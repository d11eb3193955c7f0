"""Follow-ups of a read-only review of the tracking path (detect-track, trackers, their configs).

1. A JPEG Frame without its size header (width/height/source_* 0) is tracked as with it: before, every box was
   scaled by 0 / image width (all at (0, 0, 0, 0)) and no person crop was made; a JPEG whose header gives only its
   height is checked against it.
2. A tracker state saved with another re-id model (``tracker.reid_weights`` 0288 -> 0287, same 256-d features) is
   not restored: the tag names the model (file stem and digest). A tag from before that is taken only with the
   default weights.
3. ``detector.threads`` with ``backend: ultralytics``: refused for OpenVINO/ONNX weights (Ultralytics compiles them
   with its own settings), honoured for PyTorch weights (it was ignored: Ultralytics' predictor setup resets
   PyTorch's threads to the CPUs less one, whatever OMP_NUM_THREADS said).
4. A set ``tracker.embedder_*`` key the chosen embedder has no setting for is a config error naming it (it was
   silently ignored).
"""
from __future__ import annotations

import pathlib
import pickle

import cv2
import numpy as np
import pytest

from storelens.backends.appearance.omz_reid_openvino import reid_model_path
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.errors import ConfigError
from storelens.paths import asset

T0 = 1_700_000_000_000
REID_0287, REID_0288 = reid_model_path("0287"), reid_model_path("0288")


def _site(tracker: dict | None = None, detector: dict | None = None) -> dict:
    doc: dict = {"store": {"id": "s"}, "cameras": [{"id": "c1", "source": "x.mp4"}]}
    if tracker is not None:
        doc["tracker"] = tracker
    if detector is not None:
        doc["detector"] = detector
    return doc


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")))
    out = [cap.read()[1] for _ in range(5)]
    cap.release()
    assert all(f is not None for f in out)
    return out


@pytest.fixture(scope="module")
def detector():
    from storelens.backends.detectors import build_detector

    return build_detector(parse_config(_site()).detector)


def _stage(detector, tracker: dict | None = None):
    from storelens.stages.core import build_detect_track

    return build_detect_track(parse_config(_site(tracker)), detector=detector)


# -- 1. a JPEG frame without its size header ------------------------------------------------------------------------

def test_jpeg_frame_without_size_header_gives_the_same_boxes_and_crops(frames, detector) -> None:
    from storelens.backends.trackers import tracker_factory
    from storelens.stages.core import build_detect_track

    config = parse_config(_site())
    make = tracker_factory(config.tracker)  # one re-id model for both (the trackers are each their own)
    with_size, without = (build_detect_track(config, detector=detector, tracker_factory=make) for _ in range(2))
    n_boxes = n_crops = 0
    for i, image in enumerate(frames[:3]):
        h, w = image.shape[:2]
        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        a = with_size.process(m.Frame(camera_id="c1", seq=i, ts_ms=T0 + 40 * i, jpeg=jpeg, width=w, height=h))
        b = without.process(m.Frame(camera_id="c1", seq=i, ts_ms=T0 + 40 * i, jpeg=jpeg))
        assert (b.width, b.height) == (a.width, a.height) == (w, h)
        assert list(b.tracks) == list(a.tracks)  # before: every box (0, 0, 0, 0)
        assert without.last_crops == with_size.last_crops  # before: none
        n_boxes += sum(t.bbox_xyxy.x2 > 0 for t in b.tracks)
        n_crops += len(without.last_crops)
    assert n_boxes >= 3 and n_crops >= 3  # TUD-Stadtmitte's first frames: several people


@pytest.mark.parametrize(("width", "height", "ok"), [
    (0, 0, True), (640, 480, True), (0, 480, False), (640, 0, False), (320, 240, False),
])
def test_jpeg_size_header_is_checked_when_either_side_is_set(frames, width, height, ok) -> None:
    from storelens.backends.video import decode_frame
    from storelens.errors import DecodeError

    frame = m.Frame(camera_id="c1", seq=1, jpeg=cv2.imencode(".jpg", frames[0])[1].tobytes(), width=width,
                    height=height)
    if ok:
        assert decode_frame(frame).shape == (480, 640, 3)
    else:
        with pytest.raises(DecodeError, match="JPEG is 640x480"):  # (0, 480): accepted before
            decode_frame(frame)


# -- 2. a tracker state of another re-id model ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(frames, detector) -> tuple[bytes, int]:
    """A camera's snapshot after 5 real frames, with the default re-id model (0288), and its id base."""
    stage = _stage(detector)
    for i, image in enumerate(frames):
        stage.process(m.Frame(camera_id="c1", seq=i, ts_ms=T0 + 40 * i, bgr=image.tobytes(), width=640, height=480))
    assert any(t.smooth_feat is not None for t in stage.tracker("c1")._bot.tracked_stracks)
    return stage.camera_snapshot("c1"), stage.id_base["c1"]


def _legacy(snapshot: bytes) -> bytes:
    """The snapshot as tagged before the tag named the model (``... embedder=omz-reid-openvino/256``)."""
    state = pickle.loads(snapshot)
    tag = state["tracker_format"]
    assert " model=person-reidentification-retail-0288:" in tag
    state["tracker_format"] = tag.split(" model=")[0]
    return pickle.dumps(state)


@pytest.mark.parametrize(("weights", "legacy", "restored"), [
    (None, False, True),  # the same (default) model
    (REID_0288, False, True),  # the same file, named
    (REID_0287, False, False),  # before: restored (the tag named the embedder and length only)
    (None, True, True),  # an older snapshot, default weights: as before
    (REID_0288, True, True),
    (REID_0287, True, False),  # an older snapshot cannot be told from another model's: refused off the default
])
def test_tracker_state_of_another_reid_model_starts_a_new_session(frames, detector, saved, weights, legacy,
                                                                   restored) -> None:
    from storelens.stages.core import TRACK_ID_SESSION_FACTOR

    snapshot, base = saved
    stage = _stage(detector, None if weights is None else {"reid_weights": weights})
    reason = stage.restore_camera("c1", _legacy(snapshot) if legacy else snapshot)
    if restored:
        assert reason is None and stage.id_base["c1"] == base
        assert stage.tracker("c1")._bot.tracked_stracks  # the saved tracks go on
    else:
        assert reason is not None and "person-reidentification-retail-0287" in reason
        assert stage.id_base["c1"] == base + TRACK_ID_SESSION_FACTOR
        assert not stage.tracker("c1")._bot.tracked_stracks
        tf = stage.process(m.Frame(camera_id="c1", seq=5, ts_ms=T0 + 200, bgr=frames[0].tobytes(), width=640,
                                   height=480))
        assert all(t.track_id > base + TRACK_ID_SESSION_FACTOR for t in tf.tracks)


# -- 3. detector.threads with backend: ultralytics ------------------------------------------------------------------

@pytest.mark.parametrize(("detector_cfg", "ok"), [
    ({"backend": "ultralytics", "threads": 2}, False),  # the default weights: the int8 OpenVINO folder
    ({"backend": "ultralytics", "threads": 2, "weights": str(asset("models", "yolov8n_int8.onnx"))}, False),
    ({"backend": "ultralytics", "threads": 1, "weights": "/models/yolo11n_openvino_model/"}, False),
    ({"backend": "ultralytics", "threads": 2, "weights": "yolo11n.pt"}, True),
    ({"backend": "ultralytics", "threads": 2, "weights": "/models/best.torchscript"}, True),
    ({"backend": "ultralytics"}, True),  # threads unset: any weights
    ({"backend": "openvino", "threads": 2}, True),
])
def test_ultralytics_threads_are_refused_for_weights_it_compiles_itself(detector_cfg, ok) -> None:
    if ok:
        assert parse_config(_site(detector=detector_cfg)).detector.threads == detector_cfg.get("threads")
    else:
        with pytest.raises(ConfigError, match=r"detector\.threads: .*use backend: openvino"):
            parse_config(_site(detector=detector_cfg))


def test_ultralytics_threads_are_honoured_for_pytorch_weights() -> None:
    import torch
    from ultralytics.utils import NUM_THREADS  # what Ultralytics' predictor setup sets PyTorch's threads to

    from storelens.backends.detectors.ultralytics import UltralyticsDetector
    from storelens.config import UltralyticsDetectorConfig

    before = torch.get_num_threads()
    threads = 3 if NUM_THREADS == 2 else 2
    try:
        # an untrained YOLO11n built from Ultralytics' own yaml: PyTorch weights, no download
        det = UltralyticsDetector(UltralyticsDetectorConfig(weights="yolo11n.yaml", threads=threads, imgsz=320))
        det.detect(np.zeros((240, 320, 3), np.uint8))
        assert torch.get_num_threads() == threads  # before: NUM_THREADS (OMP_NUM_THREADS set too late and reset)
    finally:
        torch.set_num_threads(before)


# -- 4. tracker.embedder_* keys of another embedder -----------------------------------------------------------------

@pytest.mark.parametrize(("tracker", "field"), [
    ({"backend": "deepsort", "embedder": "omz-reid-openvino", "embedder_input_wh": [96, 192]}, "embedder_input_wh"),
    # a non-default size: the default one is what a site written out in full says (test_cli_config_followups_30)
    ({"backend": "deepsort", "embedder": "mobilenet-torch", "embedder_input_wh": [96, 192]}, "embedder_input_wh"),
])
def test_embedder_key_the_embedder_has_not_is_a_config_error(tracker, field) -> None:
    with pytest.raises(ConfigError, match=rf"tracker\.{field}: embedder '{tracker['embedder']}' has no"):
        parse_config(_site(tracker))


def test_embedder_keys_of_the_embedder_and_the_examples_still_validate() -> None:
    from storelens.config import load_config

    ok = [({"backend": "deepsort", "embedder_input_wh": [96, 192]}, {"input_wh": (96, 192)}),
          ({"backend": "deepsort", "embedder": "omz-reid-openvino", "embedder_weights": REID_0287,
            "embedder_device": "cpu"}, {"weights": REID_0287, "device": "cpu"}),
          ({"backend": "deepsort", "embedder": "mobilenet-torch", "embedder_weights": "/w.pt"}, {"weights": "/w.pt"})]
    for tracker, want in ok:
        appearance = parse_config(_site(tracker)).tracker.appearance
        assert {k: getattr(appearance, k) for k in want} == want
    examples = sorted((pathlib.Path(__file__).parents[1] / "storelens" / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        load_config(path, open_cameras=False)
