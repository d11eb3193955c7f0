"""Reference frames of the cameras for detect-track: the first frame of each camera, then every
``heatmap.snapshot_every_min`` minutes, and the first frame of a new stream of a camera at once (after its
end-of-stream marker or a new tracker session, a camera removed and added again, frames of another size or earlier
than the last reference frame: :meth:`Snapshotter.due`), with the head region of every person blurred (every
detection of the frame and every track box: a tracker confirms a track only after a few frames).

The head region is the top :data:`HEAD_FRACTION` of each box (the box widened a little),
blurred strongly enough that no face is recognisable: cheap, needs no face model, and
covers faces turned away from the camera too. A person the detector missed has no box, so
with ``heatmap.snapshot_blur_faces`` (default) every face the face detector finds in the
whole frame (``faces.detector`` at :data:`FACE_SCORE_THRESHOLD`: recall first, a false
face only blurs a patch) is blurred as well. The JPEG keeps the decoded frame's size;
``width``/``height`` are the source size (heatmap grids are in source pixels).

These reference frames are the only images StoreLens stores; they are served by
``/v1/cameras/{camera_id}/snapshot`` and under the heatmap PNGs.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from storelens.config import SiteConfig
from storelens.contract import messages as m

#: Part of a person box (from its top) treated as the head.
HEAD_FRACTION = 0.22
#: Widening of the head region on each side, as a part of the box width.
HEAD_MARGIN = 0.05
#: Score threshold of the face detector on reference frames (below the recognition default: recall first).
FACE_SCORE_THRESHOLD = 0.5
#: Widening of a detected face box on each side, as a part of its size (hair, ears, the chin).
FACE_MARGIN = 0.3

log = logging.getLogger(__name__)


def _pixelate(out: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> None:
    import cv2

    roi = out[y1:y2, x1:x2]
    # pixelate then blur: nothing of a face survives, whatever its size
    small = cv2.resize(roi, (max(1, roi.shape[1] // 12), max(1, roi.shape[0] // 12)), interpolation=cv2.INTER_AREA)
    roi[:] = cv2.GaussianBlur(cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_LINEAR),
                              (0, 0), max(2.0, min(roi.shape[:2]) / 6))


def blur_faces(image: np.ndarray, faces_xyxy: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy of ``image`` with every face box (widened by :data:`FACE_MARGIN`) blurred; and how many."""
    out = image.copy()
    h, w = out.shape[:2]
    n = 0
    for x1, y1, x2, y2 in np.asarray(faces_xyxy, np.float64).reshape(-1, 4):
        fw, fh = x2 - x1, y2 - y1
        if fw <= 0 or fh <= 0:
            continue
        bx1, bx2 = int(max(0, x1 - FACE_MARGIN * fw)), int(min(w, np.ceil(x2 + FACE_MARGIN * fw)))
        by1, by2 = int(max(0, y1 - FACE_MARGIN * fh)), int(min(h, np.ceil(y2 + FACE_MARGIN * fh)))
        if bx2 > bx1 and by2 > by1:
            _pixelate(out, bx1, by1, bx2, by2)
            n += 1
    return out, n


def blur_heads(image: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy of ``image`` with the head region of every box blurred; and how many regions were blurred."""

    out = image.copy()
    h, w = out.shape[:2]
    n = 0
    for x1, y1, x2, y2 in np.asarray(boxes_xyxy, np.float64).reshape(-1, 4):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        hx1, hx2 = int(max(0, x1 - HEAD_MARGIN * bw)), int(min(w, np.ceil(x2 + HEAD_MARGIN * bw)))
        hy1, hy2 = int(max(0, y1 - HEAD_MARGIN * bh)), int(min(h, np.ceil(y1 + HEAD_FRACTION * bh)))
        if hx2 <= hx1 or hy2 <= hy1:
            continue
        _pixelate(out, hx1, hy1, hx2, hy2)
        n += 1
    return out, n


def face_finder(config: SiteConfig) -> Callable[[np.ndarray], np.ndarray]:
    """Face boxes ``(N, 4)`` of an image by ``faces.detector`` at :data:`FACE_SCORE_THRESHOLD` (or lower)."""
    from storelens.backends.face_detectors import build_face_detector

    cfg = config.faces.detector
    if hasattr(cfg, "score_threshold"):
        cfg = cfg.model_copy(update={"score_threshold": min(cfg.score_threshold, FACE_SCORE_THRESHOLD)})
    detector = build_face_detector(cfg)
    return lambda image: detector.detect(image).bbox_xyxy


class Snapshotter:
    """Decides when a camera's frame becomes its reference frame and makes it (faces blurred)."""

    def __init__(self, config: SiteConfig, find_faces: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.config = config
        self.enabled = config.heatmap.enabled
        self.every_ms = config.heatmap.snapshot_every_min * 60_000
        self.quality = config.heatmap.snapshot_jpeg_quality
        self.blur_faces = config.heatmap.snapshot_blur_faces
        #: Face boxes of an image (built from ``faces.detector`` by :meth:`warm_up` or the first snapshot unless
        #: given).
        self.find_faces = find_faces
        self.last_ts: dict[str, int] = {}
        self.last_size: dict[str, tuple[int, int]] = {}  # camera -> (width, height) of its last snapshot
        self.pending: list[m.CameraSnapshot] = []

    def warm_up(self) -> None:
        """Build the face detector now if snapshots will need it (raises
        :class:`~storelens.errors.ModelError` naming a missing weights file)."""
        if self.enabled and self.blur_faces and self.find_faces is None:
            self.find_faces = face_finder(self.config)

    def _faces(self, image: np.ndarray) -> np.ndarray:
        if not self.blur_faces:
            return np.zeros((0, 4), np.float32)
        if self.find_faces is None:
            self.find_faces = face_finder(self.config)
        return self.find_faces(image)

    def due(self, camera_id: str, ts_ms: int, size: tuple[int, int] | None = None) -> bool:
        """Whether a frame of ``camera_id`` at ``ts_ms`` (of ``size``, source pixels) is to become its reference
        frame: the camera's first (also after :meth:`forget`), one ``snapshot_every_min`` after the last, and one
        of another size or earlier than the last (another stream of the camera: a re-pointed or re-sized camera,
        a file camera started again at its ``start_ts_ms``), so the reference frame shows the current view."""
        if not self.enabled:
            return False
        last = self.last_ts.get(camera_id)
        if last is None or ts_ms < last:
            return True
        if size is not None and self.last_size.get(camera_id, size) != size:
            return True
        return self.every_ms > 0 and ts_ms - last >= self.every_ms

    def forget(self, camera_id: str) -> None:
        """The camera's stream ended or the camera went: its next frame is its reference frame."""
        self.last_ts.pop(camera_id, None)
        self.last_size.pop(camera_id, None)

    def offer(self, frame: m.Frame, image: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        """A decoded frame and its person boxes (in ``image`` pixels): keep a snapshot if one is due."""
        size = (frame.source_width or frame.width or image.shape[1], frame.source_height or frame.height
                or image.shape[0])
        if not self.due(frame.camera_id, frame.ts_ms, size):
            return
        import cv2

        blurred, n = blur_heads(image, boxes_xyxy)
        blurred, n_faces = blur_faces(blurred, self._faces(image))
        n += n_faces
        ok, buf = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        self.last_ts[frame.camera_id] = frame.ts_ms
        self.last_size[frame.camera_id] = size
        self.pending.append(m.CameraSnapshot(
            camera_id=frame.camera_id, ts_ms=frame.ts_ms, seq=frame.seq, width=size[0], height=size[1],
            jpeg=buf.tobytes(), blurred=n))

    def pop(self) -> list[m.CameraSnapshot]:
        """The snapshots made since the last call."""
        out, self.pending = self.pending, []
        return out
