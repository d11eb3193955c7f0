"""Follow-ups of a read-only review of the detect-track stage.

1. A camera's reference frame follows a new stream of it: after an end-of-stream marker (a re-pointed camera), a
   site version that removed and added it again, a change of its frames' size or a time earlier than its last
   reference frame, the next frame is its reference frame (before, the old view stayed up to
   ``snapshot_every_min``, or for good for a file camera restarted at its ``start_ts_ms``).
2. A break in a camera's frames longer than its tracker keeps a lost track (a reconnect, a stall) starts a new
   tracker session: nobody after the break takes an id of before it (before, the frame after the break was the
   tracker's next frame); frames at their ordinary spacing keep their ids; a tracker state restored after a restart
   knows its last frame's time.
3. A detection whose box is not finite or has no width or height is left out before tracking (counted as
   ``bad_box``), not crashing detect-track at every redelivery of the frame.
"""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from storelens.backends.detectors.base import Detections
from storelens.backends.video import RawFrame, encode_frame
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset

T0 = 1_700_000_000_000
STEP_MS = 80  # TUD-Stadtmitte is 25 fps; a camera sampled at 12.5


def _site(tracker: dict | None = None, heatmap: bool = True) -> dict:
    doc: dict = {"store": {"id": "s"}, "cameras": [{"id": "c1", "source": "rtsp://cam/one"}]}
    if tracker is not None:
        doc["tracker"] = tracker
    if not heatmap:  # no reference frames: the tests of tracking skip the face detector
        doc["heatmap"] = {"enabled": False}
    return doc


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")))
    out = [cap.read()[1] for _ in range(40)]
    cap.release()
    assert all(f is not None for f in out)
    return out


class _Memo:
    """The real detector, each image's detections computed once (the tests feed the same frames several times)."""

    def __init__(self) -> None:
        from storelens.backends.detectors import build_detector

        self.detector = build_detector(parse_config(_site()).detector)
        self.seen: dict[bytes, Detections] = {}
        self.extra: Detections | None = None  # added to every result (item 3)

    def detect(self, image: np.ndarray) -> Detections:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()
        if key not in self.seen:
            self.seen[key] = self.detector.detect(image)
        d = self.seen[key]
        if self.extra is None:
            return d
        return Detections(np.vstack([d.bbox_xyxy, self.extra.bbox_xyxy]).astype(np.float32),
                          np.concatenate([d.confidence, self.extra.confidence]).astype(np.float32),
                          np.concatenate([d.class_id, self.extra.class_id]).astype(np.int32))


@pytest.fixture(scope="module")
def detector() -> _Memo:
    return _Memo()


_SHARED: dict = {}  # the models of every stage of the tests (each compiles in seconds)


def _factory(config):
    """Trackers of ``config``'s backend, their appearance model built once for every test."""
    from storelens.backends.trackers import DeepSortTracker, build_embedder, tracker_factory

    key = config.tracker.backend
    if key not in _SHARED:
        if key == "deepsort":
            embedder = build_embedder(config.tracker)
            _SHARED[key] = lambda: DeepSortTracker(config.tracker, embedder)
        else:
            _SHARED[key] = tracker_factory(config.tracker)  # bytereid: one re-id model for every tracker
    return _SHARED[key]


def _stage(detector, tracker: dict | None = None, config=None):
    """The real detect-track stage on ``detector`` (its models built once: :func:`_factory`, the face detector)."""
    from storelens.stages.core import build_detect_track
    from storelens.stages.snapshots import face_finder

    config = config or parse_config(_site(tracker, heatmap=False))
    stage = build_detect_track(config, detector=detector, tracker_factory=_factory(config))
    if config.heatmap.enabled:
        stage.snapshots.find_faces = _SHARED.setdefault("faces", face_finder(config))
    return stage


def _frame(seq: int, ts_ms: int, image: np.ndarray, camera: str = "c1") -> m.Frame:
    return encode_frame(camera, seq, RawFrame(seq, ts_ms, image), None, 90, frame_format="bgr")


# -- 1. the reference frame of a new stream -------------------------------------------------------------------------

def _re_added(stage, config) -> None:
    def version(n: int, cams: list) -> m.SiteUpdate:
        return m.SiteUpdate(version=n, ts_ms=T0, store_id="s", cameras_json=json.dumps(cams))

    cams = [c.model_dump(mode="json") for c in config.cameras]
    other = {**cams[0], "id": "c2"}
    assert stage.apply_site(version(1, [other]))  # c1 removed
    assert stage.apply_site(version(2, [other, {**cams[0], "source": "rtsp://cam/new"}]))  # and added again


@pytest.mark.parametrize("between, scale, later", [
    ("marker", 0.5, True),        # a re-pointed camera: ingest ends the old stream with a marker
    ("re-added", 0.5, True),      # removed by one site version, added by the next
    ("nothing", 1.5, True),       # the stream switched resolution
    ("marker", 1.0, False),       # a file camera started again at its start_ts_ms (same size)
    ("nothing", 1.0, False),      # ... without a marker in between
])
def test_a_new_stream_of_a_camera_gets_its_reference_frame_at_once(images, detector, between, scale, later) -> None:
    config = parse_config(_site())
    stage = _stage(detector, config=config)
    got = []
    for i in range(3):
        out = stage.handle(topics.FRAMES, _frame(i + 1, T0 + 60_000 + i * STEP_MS, images[i]))
        got += [p.message for p in out.publish if p.topic == topics.CAMERA_SNAPSHOTS]
    assert [(s.width, s.height, s.seq) for s in got] == [(640, 480, 1)]
    if between == "marker":
        stage.handle(topics.FRAMES, m.Frame(camera_id="c1", seq=4, ts_ms=T0 + 60_000 + 3 * STEP_MS,
                                            end_of_stream=True))
    elif between == "re-added":
        _re_added(stage, config)
    t1 = T0 + 120_000 if later else T0  # a minute later, or before the last reference frame
    new = [cv2.resize(im, None, fx=scale, fy=scale) if scale != 1.0 else im for im in images[10:13]]
    got = []
    for i, im in enumerate(new):
        out = stage.handle(topics.FRAMES, _frame(10 + i, t1 + i * STEP_MS, im))
        got += [p.message for p in out.publish if p.topic == topics.CAMERA_SNAPSHOTS]
    h, w = new[0].shape[:2]
    assert [(s.width, s.height, s.seq, s.ts_ms) for s in got] == [(w, h, 10, t1)]
    shown = cv2.imdecode(np.frombuffer(got[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (h, w)


def test_the_same_stream_keeps_its_reference_frame_for_snapshot_every_min(images, detector) -> None:
    stage = _stage(detector, config=parse_config(_site()))
    got = []
    for i in range(6):  # the same size, later times, no marker: one reference frame
        out = stage.handle(topics.FRAMES, _frame(i + 1, T0 + i * 60_000, images[i]))
        got += [p.message.seq for p in out.publish if p.topic == topics.CAMERA_SNAPSHOTS]
    assert got == [1]


# -- 2. a break in the stream ends the tracker session --------------------------------------------------------------

def _ids(stage, frames: list[tuple[int, int, np.ndarray]]) -> list[set[int]]:
    return [{t.track_id for t in stage.process(_frame(seq, ts, im)).tracks} for seq, ts, im in frames]


@pytest.mark.parametrize("tracker, gap_ms, restart, new_ids", [
    (None, 0, False, False),                     # bytereid (the default), frames at their ordinary spacing
    (None, 60_000, False, True),                 # a minute's break (a reconnect)
    (None, 60_000, True, True),                  # ... and the service restarted from the camera's saved state
    (None, 2_000, False, False),                 # a break the tracker re-finds people over (31 frames of 80 ms)
    ({"backend": "deepsort"}, 0, False, False),  # deep-sort: max_age 30 frames + 1
    ({"backend": "deepsort"}, 60_000, False, True),
])
def test_a_break_longer_than_the_refind_window_starts_new_track_ids(images, detector, tracker, gap_ms, restart,
                                                                    new_ids) -> None:
    stage = _stage(detector, tracker)
    first = _ids(stage, [(i + 1, T0 + i * STEP_MS, images[i]) for i in range(20)])
    if restart:  # a restarted service: the camera's state restored from its snapshot
        saved = stage.camera_snapshot("c1")
        stage = _stage(detector, tracker)
        assert stage.restore_camera("c1", saved) is None
    t1 = T0 + 20 * STEP_MS + gap_ms
    second = _ids(stage, [(21 + i, t1 + i * STEP_MS, images[20 + i]) for i in range(20)])
    before, after = set().union(*first), set().union(*second)
    assert before and after
    if new_ids:
        assert not before & after  # nobody after the break has an id of before it
        assert min(after) > max(before)  # the new session's ids follow the old ones
    else:  # an ordinary interval, and a break the tracker still re-finds people over: the same people go on
        assert second[0] & first[-1]
        assert len(before & after) >= 3
    if tracker is None:  # the new session's tracker is told the camera's rate at once: 2.4 s at 12.5 fps
        assert stage.tracker("c1")._bot.max_frames_lost == 30


def test_a_break_uses_the_rate_the_frames_came_at(images, detector) -> None:
    """At 2 fps (frames 500 ms apart) bytereid keeps a lost track 5 frames (``track_buffer`` 60 at 25 fps) and can
    still match it in the 6th: a 4 s break ends the session (at 12.5 fps a 2 s one does not, above)."""
    stage = _stage(detector)
    ids = _ids(stage, [(i + 1, T0 + i * 500, images[2 * i]) for i in range(6)])
    assert stage.tracker("c1").refind_window_ms(500) == 3000
    later = _ids(stage, [(7, T0 + 5 * 500 + 4_000, images[12])])
    assert ids[-1] and later[0] and not later[0] & set().union(*ids)


# -- 3. a box that is not finite ------------------------------------------------------------------------------------

BAD = {"nan": [np.nan, 10, 60, 200], "inf": [10, 10, np.inf, 200], "no width": [50, 50, 50, 200],
       "upside down": [50, 300, 90, 200]}


@pytest.mark.parametrize("bad", list(BAD))
def test_bytereid_tracker_leaves_out_a_box_that_is_not_finite(images, bad) -> None:
    from storelens.backends.trackers import ByteReidTracker

    valid = [285.0, 160.0, 345.0, 330.0]
    dets = Detections(np.array([BAD[bad], valid], np.float32), np.array([0.9, 0.9], np.float32),
                      np.zeros(2, np.int32))
    tracker = _factory(parse_config(_site()))()
    assert isinstance(tracker, ByteReidTracker)
    tracks = tracker.update(images[0], dets)
    assert len(tracks) == 1 and tracks.bbox_xyxy[0].tolist() == valid


def test_detect_track_counts_bad_boxes_and_tracks_the_rest(images, detector, caplog) -> None:
    stage = _stage(detector)
    plain = [len(stage.process(_frame(i + 1, T0 + i * STEP_MS, images[i])).tracks) for i in range(3)]
    stage = _stage(detector)
    detector.extra = Detections(np.array([BAD["nan"], BAD["inf"]], np.float32), np.array([0.9, 0.8], np.float32),
                                np.zeros(2, np.int32))
    try:
        with caplog.at_level("WARNING", logger="storelens.stages.core"):
            outs = [stage.handle(topics.FRAMES, _frame(i + 1, T0 + i * STEP_MS, images[i])) for i in range(3)]
    finally:
        detector.extra = None
    assert [o.info.get("errors") for o in outs] == [{"bad_box": 2}] * 3  # the runner counts them
    assert [len(o.publish[0].message.tracks) for o in outs] == plain and plain[-1] > 0
    assert sum("not finite" in r.getMessage() for r in caplog.records) == 1  # logged once for the camera


def test_a_batch_of_cameras_leaves_bad_boxes_out_before_the_shared_re_id(images, detector) -> None:
    """Two cameras in one batch: one detector call, ONE re-id inference for both (``embed_many``)."""
    doc = _site(heatmap=False)
    doc["cameras"].append({"id": "c2", "source": "rtsp://cam/two"})
    stage = _stage(detector, config=parse_config(doc))
    detector.extra = Detections(np.array([BAD["nan"]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int32))
    try:
        for i in range(3):
            outs = stage.handle_batch(topics.FRAMES, [_frame(i + 1, T0 + i * STEP_MS, images[i], cam)
                                                      for cam in ("c1", "c2")])
            assert [o.info.get("errors") for o in outs] == [{"bad_box": 1}] * 2
    finally:
        detector.extra = None
    assert all(len(o.publish[0].message.tracks) > 0 for o in outs)
