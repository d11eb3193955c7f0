"""The deep-sort adapter: confirmed tracks only, boxes in place, lazy appearance features."""
from __future__ import annotations

import numpy as np
import pytest

from storelens.config import DeepSortTrackerConfig
from storelens.backends.detectors import Detections
from storelens.backends.trackers import DeepSortTracker, OpenVinoMobileNetEmbedder, iou_matrix


@pytest.mark.parametrize(("a", "b", "want"), [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),
], ids=["same", "half-overlap", "disjoint", "contained"])
def test_iou_matrix(a, b, want):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(want, abs=1e-6)


class CountingEmbedder:
    """The real embedder, counting how many boxes it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def embed(self, image, boxes):
        self.calls.append(len(boxes))
        return self.inner.embed(image, boxes)


@pytest.fixture(scope="module")
def embedder():
    return OpenVinoMobileNetEmbedder()


def _scene(t: int) -> tuple[np.ndarray, Detections]:
    """Two people walking apart (isolated) and two walking side by side (touching boxes)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([
        [20 + 3 * t, 100, 80 + 3 * t, 260],
        [500 - 3 * t, 200, 560 - 3 * t, 360],
        [250, 50 + 2 * t, 310, 210 + 2 * t],
        [280, 60 + 2 * t, 340, 220 + 2 * t],  # overlaps the previous one (IoU ~0.3)
    ], np.float32)
    return img, Detections(boxes, np.full(4, 0.9, np.float32), np.zeros(4, np.int32))


# refresh=5: all four while tentative (2 frames), the touching pair every frame (2 x 18),
# each isolated person once per 6 frames (2 x 3)
@pytest.mark.parametrize(("refresh", "max_embedded"), [(0, 4 * 20), (5, 4 * 2 + 2 * 18 + 2 * 3)])
def test_lazy_appearance_embeds_only_what_is_ambiguous(embedder, refresh, max_embedded):
    emb = CountingEmbedder(embedder)
    tracker = DeepSortTracker(DeepSortTrackerConfig(n_init=2, appearance_refresh_frames=refresh), embedder=emb)
    ids_seen = []
    for t in range(20):
        tracks = tracker.update(*_scene(t))
        ids_seen.append(sorted(tracks.track_id.tolist()))
        if len(tracks):
            # every reported box is this frame's detection, not a prediction
            _, dets = _scene(t)
            assert iou_matrix(tracks.bbox_xyxy, dets.bbox_xyxy).max(axis=1).min() > 0.99
    # the same four identities throughout once confirmed
    assert ids_seen[0] == [] and all(ids == [1, 2, 3, 4] for ids in ids_seen[2:])
    assert sum(emb.calls) <= max_embedded
    if refresh:
        # isolated people reuse their feature, refreshed at least every `refresh` frames;
        # the two touching people are embedded every frame
        assert tracker.reused > 0 and sum(emb.calls) >= 2 * 20
    else:
        assert tracker.reused == 0 and sum(emb.calls) == 4 * 20


def test_snapshot_restore_continues_identically(embedder):
    """A tracker restored from a snapshot (as after a crash) produces exactly the same tracks."""
    cfg = DeepSortTrackerConfig(n_init=2)
    a = DeepSortTracker(cfg, embedder=embedder)
    for t in range(8):
        a.update(*_scene(t))
    snap = a.snapshot()
    b = DeepSortTracker(cfg, embedder=embedder)
    b.restore(snap)
    for t in range(8, 20):
        ta, tb = a.update(*_scene(t)), b.update(*_scene(t))
        assert ta.track_id.tolist() == tb.track_id.tolist() and len(ta) == 4
        assert np.array_equal(ta.bbox_xyxy, tb.bbox_xyxy)
