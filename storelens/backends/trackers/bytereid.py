"""``bytereid``: BYTE association + Kalman motion + person re-id appearance.

Built on Ultralytics' own BoT-SORT/ByteTrack code (``ultralytics.trackers``,
already a dependency for the detector), which gives:

* BYTE two-stage association: confident detections (>= ``track_high_thresh``)
  are matched first on IoU fused with appearance; the remaining tracks then
  take low-score detections (``track_low_thresh`` .. high) on IoU alone, so a
  person briefly half-hidden keeps the track alive. Low-score detections never
  start tracks;
* a Kalman filter per track (x, y, w, h and their velocities);
* lost tracks kept ``track_buffer`` frames (counted at ``fps``: the same time at any frame rate,
  :meth:`ByteReidTracker.set_frame_rate`) and re-found by motion.

What we add:

* appearance from Intel Open Model Zoo's person re-identification model
  (:class:`~storelens.backends.appearance.omz_reid_openvino.OpenVinoReidEmbedder`),
  one batched inference per frame, computed lazily: a confident detection that
  overlaps exactly one live track and nothing else reuses that track's
  appearance for up to ``appearance_refresh_frames`` frames, and one that
  touches no track and is too weak to start one is not embedded at all
  (1.5 crops per frame on the demo's street video instead of 10.1). Several cameras can
  share one inference: :meth:`ByteReidTracker.plan_appearance` per camera,
  one ``embed_many`` call, :meth:`ByteReidTracker.update_with_features` per camera;
* a margin on appearance (``appearance_margin``, :func:`appearance_margin_mask`): a pair's appearance may
  stand in for its IoU only if no other detection near the same track looks clearly more like it, so two
  weak likenesses cannot swap the ids of people crossing (at 5 fps);
* re-activation of lost tracks by appearance after the first stage: an
  unmatched confident detection takes a lost track whose appearance is similar
  enough, within a radius (in box heights) that grows with the time lost;
* output only of tracks confirmed and matched to a *confident* detection in
  this frame, with that detection's box: low-score detections never reach
  crossings or crops;
* per-track appearance (unit 256-d vector, moving average) published with
  each track (:class:`AppearanceTracks`), for linking people across cameras;
* per-tracker ids and :meth:`ByteReidTracker.snapshot`/:meth:`restore`
  (one pickle of the whole state).

The detector must pass detections down to ``track_low_thresh`` (0.1), i.e.
``detector.confidence: 0.1``, or the second stage has nothing to work with.
"""
from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from storelens.backends.appearance.base import APPEARANCE, Embedder
from storelens.backends.detectors.base import Detections
from storelens.backends.trackers.base import TRACKERS, Tracks, check_feature_dim, iou_matrix
from storelens.config.tracker_bytereid import ByteReidTrackerConfig


@dataclass(frozen=True)
class AppearanceTracks(Tracks):
    """:class:`Tracks` plus each track's appearance embedding (unit rows; zeros when unknown)."""

    appearance: np.ndarray  # (N, D) float32


def _empty_tracks(dim: int) -> AppearanceTracks:
    return AppearanceTracks(np.zeros((0,), np.int64), np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                            np.zeros((0,), np.int32), np.zeros((0, dim), np.float32))


class _Boxes:
    """The numpy-backed, boolean-indexable detections object Ultralytics' trackers take."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32)
        self.cls = np.asarray(cls, np.float32)

    @property
    def xywh(self) -> np.ndarray:
        x1, y1, x2, y2 = self.xyxy.T
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)

    def __getitem__(self, idx) -> "_Boxes":
        return _Boxes(self.xyxy[idx], self.conf[idx], self.cls[idx])

    def __len__(self) -> int:
        return len(self.conf)


def _features_as_given(feats, _dets):
    """Ultralytics' ``encoder`` hook: the features we computed, row by row (module level: picklable)."""
    return list(feats)


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xywh = np.asarray(xywh, np.float32).reshape(-1, 4)
    half = xywh[:, 2:] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


#: Boxes overlapping more than this are "touching": a detection touching two tracks is ambiguous.
_TOUCH_IOU = 0.2

_BOT_CLASS = None

#: The smallest appearance gate :func:`proximity_gate` gives (some overlap is always needed).
_MIN_PROXIMITY = 0.01


def proximity_gate(iou_at_fps: float, fps: float, frame_rate: float) -> float:
    """The IoU gate for appearance (``proximity_thresh``) at ``frame_rate``, given ``iou_at_fps`` at ``fps``.

    Two boxes of the same size shifted by ``d`` box widths overlap with IoU ``(1 - d) / (1 + d)``; the gate's
    IoU is read as such a shift, the prediction error it allows. Below ``fps`` that error grows with the
    square root of the frame interval, and the gate is the IoU of the grown shift: the same allowance for a
    prediction made further ahead. At or above ``fps`` the gate stays as configured. It never reaches 0
    (boxes must still overlap: appearance does not match across the frame; lost tracks have re-activation).

    >>> [round(proximity_gate(0.5, 25, f), 3) for f in (30, 25, 12.5, 25 / 3, 5, 1)]
    [0.5, 0.5, 0.359, 0.268, 0.146, 0.01]
    """
    if frame_rate >= fps or iou_at_fps <= 0:
        return iou_at_fps
    shift = (1 - iou_at_fps) / (1 + iou_at_fps) * math.sqrt(fps / frame_rate)
    return max(_MIN_PROXIMITY, (1 - shift) / (1 + shift))


def appearance_margin_mask(cos: np.ndarray, near: np.ndarray, margin: float) -> np.ndarray:
    """Track-detection pairs whose appearance may not stand in for their IoU (``appearance_margin``).

    ``cos``: (tracks, detections) cosine similarities; ``near``: the pairs within the IoU gate. A pair is
    masked when some other detection near the same track looks more like it by more than ``margin``: the
    track's own person is then elsewhere, and a weak likeness would only let it take a neighbour's box (at
    5 fps, two such pairs swapped the ids of people crossing; BENCHMARKS.md). Pairs outside the gate
    compete with nothing.

    >>> cos = np.array([[0.9, 0.3, 0.8], [0.2, 0.4, 0.1]])
    >>> near = np.array([[True, True, False], [True, True, True]])
    >>> appearance_margin_mask(cos, near, 0.25).astype(int).tolist()
    [[0, 1, 0], [0, 0, 1]]
    """
    if cos.size == 0:
        return np.zeros(cos.shape, bool)
    best = np.where(near, cos, -np.inf).max(axis=1, keepdims=True)
    return near & (cos < best - margin)


def _bot_class() -> type:
    """Ultralytics' BOTSORT with appearance re-activation of lost tracks (built on first use: ultralytics is heavy)."""
    global _BOT_CLASS
    if _BOT_CLASS is not None:
        return _BOT_CLASS
    import lap  # Ultralytics' own assignment solver (its trackers import it anyway; scipy.optimize costs 0.5 s)
    from ultralytics.trackers.basetrack import TrackState
    from ultralytics.trackers.bot_sort import BOTSORT

    class _Bot(BOTSORT):
        cfg: ByteReidTrackerConfig

        def get_dists(self, tracks, detections):
            """BoT-SORT's cost (the IoU cost fused with the score, or the appearance cost where lower, within the
            IoU and appearance gates), except that a pair :func:`appearance_margin_mask` masks keeps its fused IoU
            cost. Ultralytics calls it for the first association and for unconfirmed tracks (one frame old)."""
            dists = super().get_dists(tracks, detections)
            if self.cfg.appearance_margin is None or dists.size == 0:
                return dists
            from ultralytics.trackers.utils import matching

            iou_cost = matching.iou_distance(tracks, detections)
            cos = 1.0 - matching.embedding_distance(tracks, detections)  # -1: no feature on either side
            masked = appearance_margin_mask(cos, iou_cost <= 1 - self.proximity_thresh, self.cfg.appearance_margin)
            if masked.any():  # the (fused) IoU cost is at most 1, the appearance cost's ceiling: min() gave no less
                fused = matching.fuse_score(iou_cost, detections) if self.args.fuse_score else iou_cost
                dists[masked] = fused[masked]
            return dists

        def _post_first_association(self, strack_pool, detections, u_track, u_detection, activated, refind):
            cfg = self.cfg
            lost = [i for i in u_track if strack_pool[i].state == TrackState.Lost and strack_pool[i].smooth_feat is not None]
            dets = [j for j in u_detection if detections[j].curr_feat is not None]
            if not lost or not dets:
                return u_track, u_detection
            sim = np.stack([strack_pool[i].smooth_feat for i in lost]) @ np.stack([detections[j].curr_feat for j in dets]).T
            t_xywh = np.stack([strack_pool[i].xywh for i in lost])  # predicted (Kalman) positions
            d_xywh = np.stack([detections[j].xywh for j in dets])
            gone_s = np.array([(self.frame_id - strack_pool[i].end_frame) / self.frame_rate for i in lost])
            radius = cfg.reactivate_radius_heights * t_xywh[:, 3] * (1.0 + gone_s)
            dist = np.linalg.norm(t_xywh[:, None, :2] - d_xywh[None, :, :2], axis=2)
            ok = (sim >= cfg.reactivate_similarity) & (dist <= radius[:, None])
            if not ok.any():
                return u_track, u_detection
            matched_t, matched_d = set(), set()
            _, cols, _ = lap.lapjv(np.where(ok, 1.0 - sim, 10.0), extend_cost=True)  # optimal, like scipy's
            for r, c in enumerate(cols):
                if c >= 0 and ok[r, c]:
                    self._apply_match(strack_pool[lost[r]], detections[dets[c]], activated, refind)
                    matched_t.add(lost[r])
                    matched_d.add(dets[c])
            return [i for i in u_track if i not in matched_t], [j for j in u_detection if j not in matched_d]

    _Bot.__module__, _Bot.__qualname__ = __name__, "_Bot"  # picklable as storelens...bytereid._Bot
    _BOT_CLASS = _Bot
    return _Bot


def __getattr__(name: str):
    if name == "_Bot":  # unpickling a snapshot in a fresh process
        return _bot_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bot_args(cfg: ByteReidTrackerConfig) -> SimpleNamespace:
    """The settings Ultralytics' tracker reads from ``args`` (copied into the tracker, and pickled with it)."""
    return SimpleNamespace(
        tracker_type="botsort", track_high_thresh=cfg.track_high_thresh, track_low_thresh=cfg.track_low_thresh,
        new_track_thresh=cfg.new_track_thresh, track_buffer=cfg.track_buffer, match_thresh=cfg.match_thresh,
        fuse_score=True, gmc_method="none", proximity_thresh=cfg.proximity_thresh,
        appearance_thresh=cfg.appearance_thresh, with_reid=True, model="auto",
    )


def _make_bot(cfg: ByteReidTrackerConfig):
    bot = _bot_class()(_bot_args(cfg))
    bot.cfg = cfg
    bot.frame_rate = cfg.fps  # until the frames say otherwise (ByteReidTracker.set_frame_rate)
    bot.encoder = _features_as_given
    return bot


class ByteReidTracker:
    """The ``bytereid`` backend: ``update(image, detections) -> AppearanceTracks`` (see module doc)."""

    #: With the embedder (:func:`~storelens.backends.trackers.base.snapshot_format`): its tracks hold its features.
    SNAPSHOT_FORMAT = "pickle:bytereid-1"

    def __init__(self, cfg: ByteReidTrackerConfig | None = None, embedder: Embedder | None = None) -> None:
        self.cfg = cfg or ByteReidTrackerConfig()
        if embedder is None:
            import storelens.backends.appearance.omz_reid_openvino  # noqa: F401 (registers omz-reid-openvino)

            embedder = APPEARANCE.build(self.cfg.appearance)
        self.embedder = embedder
        self.dim = int(getattr(embedder, "dim", 256))
        self._bot = _make_bot(self.cfg)
        self._stale: dict[int, int] = {}  # track id -> frames since its appearance was last embedded
        self.embedded = 0  # confident detections embedded / reusing their track's appearance (benchmarks)
        self.reused = 0

    # -- state --------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Whole state (tracks, Kalman filters, appearances, id counter); :meth:`restore` continues identically.

        Of the removed tracks Ultralytics keeps (up to 1000, each with its appearance and Kalman state), only those
        still in the lost list: a lost track removed at a frame leaves that list at the next frame, by its id in the
        removed list; nothing else reads that list. The others were most of a busy camera's snapshot (1.2-1.6 MB
        after a few hundred people), sent with every camera of a partition to the state topic.
        """
        bot = copy.copy(self._bot)  # shallow: the live tracker keeps its own list
        lost = {t.track_id for t in bot.lost_stracks}
        bot.removed_stracks = [t for t in bot.removed_stracks if t.track_id in lost]
        return pickle.dumps((self.SNAPSHOT_FORMAT, bot, self._stale), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        fmt, bot, stale = pickle.loads(data)  # noqa: S301 (our own snapshot topic)
        if fmt != self.SNAPSHOT_FORMAT:
            raise ValueError(f"unknown tracker snapshot format {fmt!r}")
        check_feature_dim([f for t in (*bot.tracked_stracks, *bot.lost_stracks, *bot.removed_stracks)
                           for f in (getattr(t, "smooth_feat", None), getattr(t, "curr_feat", None))],
                          getattr(self.embedder, "dim", None))
        # a snapshot written before the tracker followed the frame rate (rolling upgrade): the rate it was tuned at
        bot.__dict__.setdefault("frame_rate", self.cfg.fps)
        # every setting is today's, not the pickled one (a restart may come with a new site file, and a snapshot
        # may predate some settings): those read through ``cfg`` at each frame (appearance_margin, reactivate_*),
        # the thresholds Ultralytics copied into ``bot.args`` and its gates, and the frame-counted ones at the
        # rate the tracker followed (:meth:`set_frame_rate`). With the same settings nothing changes.
        bot.cfg = self.cfg
        bot.args = _bot_args(self.cfg)
        bot.proximity_thresh, bot.appearance_thresh = self.cfg.proximity_thresh, self.cfg.appearance_thresh
        self._bot, self._stale = bot, stale
        self.set_frame_rate(bot.frame_rate)

    def set_frame_rate(self, fps: float) -> None:
        """Frames now come at ``fps``: ``track_buffer`` (frames at ``cfg.fps``) keeps the same time in seconds
        (60 frames at 25 fps = 2.4 s = 12 frames at 5 fps), the re-activation radius grows per real second, and
        below ``cfg.fps`` the appearance gate widens (:func:`proximity_gate`, ``proximity_follows_frame_rate``).

        >>> t = ByteReidTracker(embedder=object())                                  # doctest: +SKIP
        >>> t.set_frame_rate(5.0); t._bot.max_frames_lost                            # doctest: +SKIP
        12
        """
        self._bot.frame_rate = float(fps)
        self._bot.max_frames_lost = max(1, round(self.cfg.track_buffer * fps / self.cfg.fps))
        if self.cfg.proximity_follows_frame_rate:
            self._bot.proximity_thresh = proximity_gate(self.cfg.proximity_thresh, self.cfg.fps, fps)

    def refind_window_ms(self, frame_interval_ms: float) -> float:
        """How long after its last sighting a lost track can still be matched, frames coming ``frame_interval_ms``
        apart: it is kept ``max_frames_lost`` frames (``track_buffer`` at the rate the tracker was told, about
        :attr:`~storelens.config.tracker_bytereid.ByteReidTrackerConfig.refind_ms`) and is matched before it is
        dropped in the frame after them. A break in the frames longer than that ends the camera's tracker session
        (detect-track): the tracker counts frames, and took the frame after an hour's break for the next one (a
        person then took a lost or tracked id).

        >>> t = ByteReidTracker(embedder=object())                                  # doctest: +SKIP
        >>> t.set_frame_rate(5.0); t.refind_window_ms(200.0)                         # doctest: +SKIP
        2600.0
        """
        return (self._bot.max_frames_lost + 1) * float(frame_interval_ms)

    # -- per frame ----------------------------------------------------------

    def plan_appearance(self, detections: Detections) -> tuple[np.ndarray, list[int]]:
        """Features known without inference (reused), and the detection indices that need embedding.

        Only confident detections are embedded: low-score ones are matched on IoU alone.
        """
        n = len(detections)
        feats = np.zeros((n, self.dim), np.float32)
        high = np.flatnonzero(detections.confidence >= self.cfg.track_high_thresh)
        if len(high) == 0:
            return feats, []
        from ultralytics.trackers.basetrack import TrackState

        refresh = self.cfg.appearance_refresh_frames
        live = [t for t in (*self._bot.tracked_stracks, *self._bot.lost_stracks)]
        if refresh == 0 or not live:
            return feats, high.tolist()
        # where every live track will be, its size velocity zeroed for all (Ultralytics' prediction zeroes it for
        # lost tracks only): a steadier box for this test of reuse. With Ultralytics' own prediction here the
        # scores of bench/tracker_sweep.py are the same, with more crops at 5 fps (1.19 a frame against 1.15)
        means = np.stack([t.mean for t in live])
        means[:, 6:8] = 0.0
        pred = _xywh_to_xyxy((means @ self._bot.kalman_filter._motion_mat.T)[:, :4])
        iou = iou_matrix(detections.bbox_xyxy[high], pred)
        touching = iou > _TOUCH_IOU
        todo = []
        for k, i in enumerate(high):
            js = np.flatnonzero(touching[k])
            if len(js) == 0 and detections.confidence[i] < self.cfg.new_track_thresh:
                continue  # near no track and too weak to start one: its appearance would serve nothing
            if len(js) == 1:
                j = js[0]
                t = live[j]
                if (t.state == TrackState.Tracked and t.is_activated and t.smooth_feat is not None
                        and iou[k, j] >= self.cfg.appearance_skip_iou and touching[:, j].sum() == 1
                        and self._stale.get(t.track_id, refresh) < refresh):
                    feats[i] = t.smooth_feat
                    continue
            todo.append(int(i))
        return feats, todo

    def update(self, image_bgr: np.ndarray, detections: Detections) -> AppearanceTracks:
        """Track one frame's detections; those without a finite box of positive size are left out
        (:meth:`~storelens.backends.detectors.base.Detections.well_formed`; detect-track counts them)."""
        detections, _ = detections.well_formed_only()
        feats, todo = self.plan_appearance(detections)
        if todo:
            feats[todo] = self.embedder.embed(image_bgr, detections.bbox_xyxy[todo])
        return self.update_with_features(detections, feats, todo)

    def update_with_features(self, detections: Detections, feats: np.ndarray, embedded: list[int]) -> AppearanceTracks:
        """The association step, given every detection's feature (zeros: none) and which were freshly embedded."""
        n_high = int((detections.confidence >= self.cfg.track_high_thresh).sum())
        self.embedded += len(embedded)
        self.reused += n_high - len(embedded)
        boxes = _Boxes(detections.bbox_xyxy, detections.confidence, detections.class_id)
        self._bot.update(boxes, None, feats=feats)
        fresh = set(embedded)
        frame = self._bot.frame_id
        out = [t for t in self._bot.tracked_stracks
               if t.is_activated and t.frame_id == frame and t.score >= self.cfg.track_high_thresh]
        live_ids = {t.track_id for t in (*self._bot.tracked_stracks, *self._bot.lost_stracks)}
        stale = {k: v for k, v in self._stale.items() if k in live_ids}
        for t in self._bot.tracked_stracks:
            if t.frame_id == frame:
                stale[t.track_id] = 0 if int(t.idx) in fresh else stale.get(t.track_id, 0) + 1
        self._stale = stale
        if not out:
            return _empty_tracks(self.dim)
        idx = np.array([int(t.idx) for t in out])
        app = np.stack([t.smooth_feat if t.smooth_feat is not None else np.zeros(self.dim, np.float32) for t in out])
        return AppearanceTracks(np.array([t.track_id for t in out], np.int64), detections.bbox_xyxy[idx].astype(np.float32),
                                detections.confidence[idx].astype(np.float32), detections.class_id[idx].astype(np.int32),
                                app.astype(np.float32))


@TRACKERS.register("bytereid")
def build(cfg: ByteReidTrackerConfig, embedder: Embedder | None = None) -> ByteReidTracker:
    return ByteReidTracker(cfg, embedder)
