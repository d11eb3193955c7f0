"""Tiled inference for small, crowded people: split a frame into overlapping tiles, detect, merge.

A detector with a fixed input size (the Ultralytics exports in the assets are
static 640x640, so ``imgsz`` cannot grow) sees a 640x480 frame at scale 1; in
a 2x2 grid with 20 % overlap each tile is about 356x267 and is scaled up
about 1.8x, so people far from the camera get enough pixels to be found. The
cost is one detector call per tile (4x for 2x2).

In crowds a detector also gives the same person twice (a whole-body box and
an upper-body box, or two cut boxes from neighbouring tiles) with an IoU too
low for NMS. :func:`head_nms` keeps one box per head point: two boxes whose
head points (box centre column, 10 % of the height below the top) are closer
than ``head_nms`` times the narrower box's width are one person.

Pure numpy + OpenCV; :class:`~storelens.backends.detectors.ultralytics.UltralyticsDetector`
uses it when ``detector.tiles`` is not ``[1, 1]`` or ``detector.head_nms`` is set.

Example:
    >>> tile_grid(640, 480, (2, 2), 0.2)
    [(0, 0, 356, 267), (284, 0, 640, 267), (0, 213, 356, 480), (284, 213, 640, 480)]
    >>> boxes = np.array([[10, 10, 50, 110], [12, 11, 51, 108], [300, 10, 340, 110]], np.float32)
    >>> keep = merge_boxes(boxes, np.array([0.9, 0.8, 0.7], np.float32), iou=0.6)
    >>> keep.tolist()
    [0, 2]
    >>> whole_and_upper = np.array([[10, 10, 50, 110], [12, 12, 48, 60]], np.float32)
    >>> head_nms(whole_and_upper, np.array([0.9, 0.5], np.float32), 0.6).tolist()
    [0]
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from storelens.backends.detectors.base import Detections

Tile = tuple[int, int, int, int]


def tile_grid(width: int, height: int, grid: tuple[int, int], overlap: float) -> list[Tile]:
    """``grid = (columns, rows)`` tiles ``(x1, y1, x2, y2)`` covering the image; neighbours share ``overlap`` of a tile.

    Tiles are listed row by row; the last column/row ends exactly at the image edge.
    """
    nx, ny = int(grid[0]), int(grid[1])
    if nx < 1 or ny < 1:
        raise ValueError(f"tile grid must be >= 1x1, got {grid}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")
    tw = width / (nx - (nx - 1) * overlap)
    th = height / (ny - (ny - 1) * overlap)
    xs = [round(i * tw * (1 - overlap)) for i in range(nx)]
    ys = [round(j * th * (1 - overlap)) for j in range(ny)]
    return [(x, y, width if i == nx - 1 else min(width, round(x + tw)),
             height if j == ny - 1 else min(height, round(y + th)))
            for j, y in enumerate(ys) for i, x in enumerate(xs)]


def merge_boxes(boxes_xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression across tiles: indices kept, best score first.

    The same person seen whole in two overlapping tiles gives two boxes with a
    high IoU; the lower-scored one is dropped.
    """
    b = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    if len(s) == 0:
        return np.zeros((0,), np.int64)
    import cv2

    xywh = np.c_[b[:, :2], b[:, 2:] - b[:, :2]]
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), s.tolist(), 0.0, float(iou))
    return np.asarray(idx, np.int64).reshape(-1)


def head_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, radius: float, head_frac: float = 0.1) -> np.ndarray:
    """Indices kept (best score first): a box is dropped when its head point lies within ``radius`` times
    the narrower box's width of the head point of a better-scored box that is kept."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    hx = (b[:, 0] + b[:, 2]) / 2
    hy = b[:, 1] + head_frac * (b[:, 3] - b[:, 1])
    w = b[:, 2] - b[:, 0]
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            r = radius * np.minimum(w[i], w[k])
            if np.any((hx[k] - hx[i]) ** 2 + (hy[k] - hy[i]) ** 2 < r * r):
                continue
        keep.append(int(i))
    return np.asarray(keep, np.int64)


def dedupe_heads(dets: Detections, radius: float) -> Detections:
    """:func:`head_nms` over all boxes of one image (any class); ``radius`` 0 returns ``dets`` unchanged."""
    if not radius or len(dets) < 2:
        return dets
    keep = head_nms(dets.bbox_xyxy, dets.confidence, radius)
    return Detections(dets.bbox_xyxy[keep], dets.confidence[keep], dets.class_id[keep])


def detect_tiled(image_bgr: np.ndarray, detect: Callable[[np.ndarray], Detections], grid: tuple[int, int],
                 overlap: float, merge_iou: float, full_frame: bool = False) -> Detections:
    """Run ``detect`` on each tile (and on the whole frame if ``full_frame``), shift boxes back, merge.

    ``full_frame`` adds people larger than a tile (close to the camera), which
    a tile only sees cut in parts.
    """
    h, w = image_bgr.shape[:2]
    parts: list[Detections] = []
    if full_frame:
        parts.append(detect(image_bgr))
    for x1, y1, x2, y2 in tile_grid(w, h, grid, overlap):
        d = detect(image_bgr[y1:y2, x1:x2])
        if len(d):
            parts.append(Detections(d.bbox_xyxy + np.array([x1, y1, x1, y1], np.float32), d.confidence, d.class_id))
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([p.bbox_xyxy for p in parts]).astype(np.float32)
    conf = np.concatenate([p.confidence for p in parts]).astype(np.float32)
    cls = np.concatenate([p.class_id for p in parts]).astype(np.int32)
    keep_parts = []
    for c in np.unique(cls):  # per class, like the detector's own NMS
        members = np.nonzero(cls == c)[0]
        keep_parts.append(members[merge_boxes(boxes[members], conf[members], merge_iou)])
    keep = np.concatenate(keep_parts)
    keep = keep[np.argsort(-conf[keep], kind="stable")]
    return Detections(boxes[keep], conf[keep], cls[keep])


def detect_as_configured(image_bgr: np.ndarray, detect_one: Callable[[np.ndarray], Detections], cfg) -> Detections:
    """``detect_one`` on the whole image, or on its tiles (``cfg.tiles`` other than ``[1, 1]``), then one box per
    head (``cfg.head_nms``): the ``detect`` of both YOLO backends (``cfg``: a ``YoloDetectorConfig``)."""
    if tuple(cfg.tiles) == (1, 1):
        dets = detect_one(image_bgr)
    else:
        dets = detect_tiled(image_bgr, detect_one, cfg.tiles, cfg.tile_overlap,
                            cfg.iou if cfg.tile_merge_iou is None else cfg.tile_merge_iou, cfg.tile_full_frame)
    return dedupe_heads(dets, cfg.head_nms)
