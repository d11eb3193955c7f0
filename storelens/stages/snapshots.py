"""Reference frames of the cameras for detect-track: the first frame of each camera, then every
``heatmap.snapshot_every_min`` minutes, with the head region of every person blurred (every
detection of the frame and every track box: a tracker confirms a track only after a few frames).

The head region is the top :data:`HEAD_FRACTION` of each box (the box widened a little),
blurred strongly enough that no face is recognisable: cheap, needs no face model, and
covers faces turned away from the camera too. The JPEG keeps the decoded frame's size;
``width``/``height`` are the source size (heatmap grids are in source pixels).
"""
from __future__ import annotations

import numpy as np

from storelens.config import SiteConfig
from storelens.contract import messages as m

#: Part of a person box (from its top) treated as the head.
HEAD_FRACTION = 0.22
#: Widening of the head region on each side, as a part of the box width.
HEAD_MARGIN = 0.05


def blur_heads(image: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy of ``image`` with the head region of every box blurred; and how many regions were blurred."""
    import cv2

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
        roi = out[hy1:hy2, hx1:hx2]
        # pixelate then blur: nothing of a face survives, whatever its size
        small = cv2.resize(roi, (max(1, roi.shape[1] // 12), max(1, roi.shape[0] // 12)), interpolation=cv2.INTER_AREA)
        roi[:] = cv2.GaussianBlur(cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_LINEAR),
                                  (0, 0), max(2.0, min(roi.shape[:2]) / 6))
        n += 1
    return out, n


class Snapshotter:
    """Decides when a camera's frame becomes its reference frame and makes it (faces blurred)."""

    def __init__(self, config: SiteConfig) -> None:
        self.enabled = config.heatmap.enabled
        self.every_ms = config.heatmap.snapshot_every_min * 60_000
        self.quality = config.heatmap.snapshot_jpeg_quality
        self.last_ts: dict[str, int] = {}
        self.pending: list[m.CameraSnapshot] = []

    def due(self, camera_id: str, ts_ms: int) -> bool:
        last = self.last_ts.get(camera_id)
        return self.enabled and (last is None or (self.every_ms > 0 and ts_ms - last >= self.every_ms))

    def offer(self, frame: m.Frame, image: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        """A decoded frame and its person boxes (in ``image`` pixels): keep a snapshot if one is due."""
        if not self.due(frame.camera_id, frame.ts_ms):
            return
        import cv2

        blurred, n = blur_heads(image, boxes_xyxy)
        ok, buf = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        self.last_ts[frame.camera_id] = frame.ts_ms
        self.pending.append(m.CameraSnapshot(
            camera_id=frame.camera_id, ts_ms=frame.ts_ms, seq=frame.seq,
            width=frame.source_width or frame.width or image.shape[1],
            height=frame.source_height or frame.height or image.shape[0], jpeg=buf.tobytes(), blurred=n))

    def pop(self) -> list[m.CameraSnapshot]:
        """The snapshots made since the last call."""
        out, self.pending = self.pending, []
        return out
