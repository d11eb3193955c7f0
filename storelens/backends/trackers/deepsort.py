"""deep-sort-realtime with an appearance embedder (``tracker.backend: deepsort``).

:class:`DeepSortTracker` adapts
``deep_sort_realtime.DeepSort``. Appearance features come from an
:class:`~storelens.backends.appearance.Embedder` we pass in or the one
``tracker.embedder`` names (:mod:`storelens.backends.appearance`), so the
expensive part is swappable.

Only confirmed tracks that matched a detection in this frame are returned,
with the detection's own box, so every box is a real observation.

Example:
    >>> from storelens.config import DeepSortTrackerConfig
    >>> tracker = DeepSortTracker(DeepSortTrackerConfig())                 # doctest: +SKIP
    >>> tracks = tracker.update(image_bgr, detections)             # doctest: +SKIP
    >>> tracks.track_id, tracks.bbox_xyxy                          # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from storelens.backends.appearance import Embedder, build_appearance_embedder
from storelens.backends.detectors.base import Detections
from storelens.backends.trackers.base import TRACKERS, Tracks, check_feature_dim, iou_matrix, l2_normalize
from storelens.config.trackers import DeepSortTrackerConfig


def _nn_cosine_distance_unit(samples: list[np.ndarray], features: np.ndarray) -> np.ndarray:
    """Smallest cosine distance from each feature to a track's gallery, for unit-length float32 rows.

    deep-sort-realtime's own version re-normalises the whole gallery in float64
    on every call, which was 70% of the tracker's time with 10+ people.
    """
    gallery = np.asarray(samples, dtype=np.float32)
    return 1.0 - (gallery @ np.asarray(features, dtype=np.float32).T).max(axis=0)


def _xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    x, y, a, h = xyah
    w = a * h
    return np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2], np.float32)


class DeepSortTracker:
    """deep-sort-realtime ``DeepSort`` fed with our detections and embeddings.

    Embeddings are L2-normalised once here, so the gallery distance can skip
    deep-sort-realtime's per-call normalisation (same cosine distance, less work).
    """

    def __init__(self, cfg: DeepSortTrackerConfig, embedder: Embedder | None = None) -> None:
        from deep_sort_realtime.deepsort_tracker import DeepSort

        self.cfg = cfg
        self.embedder = embedder if embedder is not None else build_appearance_embedder(cfg.appearance)
        self._ds = DeepSort(
            max_age=cfg.max_age, n_init=cfg.n_init, max_iou_distance=cfg.max_iou_distance,
            max_cosine_distance=cfg.max_cosine_distance, nn_budget=cfg.nn_budget,
            embedder=None, bgr=True,
        )
        from deep_sort_realtime.deep_sort import nn_matching

        self._stale: dict[str, int] = {}  # frames since a track's feature was last embedded
        self.embedded = 0  # detections embedded / reusing their track's feature (for benchmarks)
        self.reused = 0
        metric = self._ds.tracker.metric
        if metric._metric is nn_matching._nn_cosine_distance:  # same distance on unit vectors, less work
            metric._metric = _nn_cosine_distance_unit

    #: With the embedder (:func:`~storelens.backends.trackers.base.snapshot_format`): its galleries hold its features.
    SNAPSHOT_FORMAT = "pickle:deep-sort-realtime-1.3.2"

    def snapshot(self) -> bytes:
        """The tracker's whole state (Kalman filters, galleries, id counter) as bytes.

        Private to detect-track (its compacted state topic), never a wire
        message between services; :meth:`restore` of it continues identically.
        """
        import pickle

        return pickle.dumps((self._ds, self._stale), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """The state of ``data`` with today's settings (``max_age``, ``n_init``, the distances, ``nn_budget``), not
        the pickled ones: a restart may come with a new site file (the tracks alive keep their state). A state
        whose features are not of the embedder's length raises ``ValueError``."""
        import pickle

        ds, stale = pickle.loads(data)  # noqa: S301 (our own snapshot topic)
        cfg, tracker = self.cfg, ds.tracker
        saved = [f for t in tracker.tracks for f in t.features]
        saved += [f for s in tracker.metric.samples.values() for f in s]
        check_feature_dim(saved, getattr(self.embedder, "dim", None))
        tracker.max_age, tracker.n_init, tracker.max_iou_distance = cfg.max_age, cfg.n_init, cfg.max_iou_distance
        tracker.metric.matching_threshold, tracker.metric.budget = cfg.max_cosine_distance, cfg.nn_budget
        for t in tracker.tracks:  # each track copied max_age and n_init when it started
            t._max_age, t._n_init = cfg.max_age, cfg.n_init
        self._ds, self._stale = ds, stale

    def _reusable_features(self, boxes: np.ndarray) -> list[np.ndarray | None]:
        """For each detection, a track feature it may reuse instead of being embedded, or ``None``."""
        reuse: list[np.ndarray | None] = [None] * len(boxes)
        if self.cfg.appearance_refresh_frames == 0 or len(boxes) == 0:
            return reuse
        kf = self._ds.tracker.kf
        cands = [t for t in self._ds.tracker.tracks
                 if t.is_confirmed() and t.time_since_update == 0 and t.features
                 and self._stale.get(t.track_id, 0) < self.cfg.appearance_refresh_frames]
        if not cands:
            return reuse
        # every live track's predicted box: a detection must overlap exactly one of them
        live = [t for t in self._ds.tracker.tracks if not t.is_deleted()]
        pred = np.array([_xyah_to_xyxy((kf._motion_mat @ t.mean)[:4]) for t in live], np.float32)
        iou = iou_matrix(boxes, pred)
        touching = iou > 0.1
        col = {id(t): j for j, t in enumerate(live)}
        for t in cands:
            j = col[id(t)]
            dets = np.flatnonzero(touching[:, j])
            if len(dets) == 1 and iou[dets[0], j] >= self.cfg.appearance_skip_iou and touching[dets[0]].sum() == 1:
                reuse[dets[0]] = t.features[-1]
        return reuse

    def refind_window_ms(self, frame_interval_ms: float) -> float:
        """How long after its last sighting a lost track can still be matched, frames coming ``frame_interval_ms``
        apart: it is deleted after ``max_age`` missed frames, so ``max_age + 1`` intervals (see
        :class:`~storelens.backends.trackers.base.RefindWindowAware`)."""
        return (self.cfg.max_age + 1) * float(frame_interval_ms)

    def update(self, image_bgr: np.ndarray, detections: Detections) -> Tracks:
        detections, _ = detections.well_formed_only()  # no finite box of positive size: out (detect-track counts them)
        boxes = detections.bbox_xyxy
        reuse = self._reusable_features(boxes)
        todo = [i for i, f in enumerate(reuse) if f is None]
        fresh = l2_normalize(self.embedder.embed(image_bgr, boxes[todo])) if todo else None
        embeds: list[np.ndarray] = list(reuse)  # type: ignore[arg-type]
        for k, i in enumerate(todo):
            embeds[i] = fresh[k]
        self.embedded += len(todo)
        self.reused += len(boxes) - len(todo)
        raw = [
            ([float(x1), float(y1), float(x2 - x1), float(y2 - y1)], float(c), int(k))
            for (x1, y1, x2, y2), c, k in zip(boxes, detections.confidence, detections.class_id)
        ]
        tracks = self._ds.update_tracks(raw, embeds=embeds, others=[f is None for f in reuse])
        stale = {}
        for t in tracks:
            if t.time_since_update == 0:
                stale[t.track_id] = 0 if t.get_det_supplementary() else self._stale.get(t.track_id, 0) + 1
        self._stale = stale
        ids, out_boxes, confs, classes = [], [], [], []
        for t in tracks:
            if not t.is_confirmed() or t.time_since_update > 0:
                continue
            ltrb = t.to_ltrb(orig=True, orig_strict=True)
            if ltrb is None:
                continue
            ids.append(int(t.track_id))
            out_boxes.append(ltrb)
            confs.append(t.get_det_conf() or 0.0)
            classes.append(int(t.get_det_class() or 0))
        if not ids:
            return Tracks(np.zeros((0,), np.int64), np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))
        return Tracks(np.asarray(ids, np.int64), np.asarray(out_boxes, np.float32),
                      np.asarray(confs, np.float32), np.asarray(classes, np.int32))


@TRACKERS.register("deepsort")
def build(cfg: DeepSortTrackerConfig, embedder: Embedder | None = None) -> DeepSortTracker:
    return DeepSortTracker(cfg, embedder)
