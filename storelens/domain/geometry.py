"""Plane geometry in image coordinates (x right, y down), vectorised where it matters.

Example:
    >>> side_of_line((320, 310), (0, 300), (640, 300))   # below A->B: right-hand side
    1
    >>> segments_intersect((10, 290), (10, 320), (0, 300), (640, 300))
    True
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Point = tuple[float, float]


def cross(a: Point, b: Point, p: Point) -> float:
    """z of (B - A) x (P - A); positive when P is right of A->B on screen (y down)."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def side_of_line(p: Point, a: Point, b: Point) -> int:
    """+1 right-hand side of A->B (the ``in`` side), -1 left-hand side, 0 on the line."""
    c = cross(a, b, p)
    # int(): with numpy inputs the comparisons are np.bool_, which cannot be subtracted
    return int(c > 0) - int(c < 0)


def signed_distance(p: Point, a: Point, b: Point) -> float:
    """Distance of P from the infinite line AB in pixels, positive on the right-hand side."""
    return cross(a, b, p) / math.hypot(b[0] - a[0], b[1] - a[1])


def segments_intersect(p0: Point, p1: Point, a: Point, b: Point) -> bool:
    """Whether segment P0-P1 touches segment A-B (endpoints included)."""
    d1, d2 = cross(a, b, p0), cross(a, b, p1)
    d3, d4 = cross(p0, p1, a), cross(p0, p1, b)
    if ((d1 > 0 and d2 < 0) or (d1 < 0 and d2 > 0)) and ((d3 > 0 and d4 < 0) or (d3 < 0 and d4 > 0)):
        return True

    def on_seg(p: Point, q: Point, r: Point) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    return (
        (d1 == 0 and on_seg(a, b, p0))
        or (d2 == 0 and on_seg(a, b, p1))
        or (d3 == 0 and on_seg(p0, p1, a))
        or (d4 == 0 and on_seg(p0, p1, b))
    )


def segment_in_frame(a: Point, b: Point, width: float, height: float) -> bool:
    """Whether some point of segment A-B lies in a frame of ``width`` x ``height`` pixels (``[0, width]`` x
    ``[0, height]``, its edges included): a counting line entirely outside never counts anybody.

    >>> segment_in_frame((-50, 300), (700, 300), 640, 480), segment_in_frame((700, 0), (900, 400), 640, 480)
    (True, False)
    """
    def inside(p: Point) -> bool:
        return 0 <= p[0] <= width and 0 <= p[1] <= height

    if inside(a) or inside(b):
        return True
    corners = [(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))]
    return any(segments_intersect(a, b, corners[i], corners[(i + 1) % 4]) for i in range(4))


def polygon_in_frame(polygon: Sequence[Point], width: float, height: float) -> bool:
    """Whether some point of the polygon (its edges or inside) lies in a frame of ``width`` x ``height`` pixels
    (:func:`segment_in_frame`): a zone entirely outside never has anybody in it.

    >>> polygon_in_frame([(600, 400), (900, 400), (900, 900)], 640, 480), polygon_in_frame(
    ...     [(700, 0), (900, 0), (900, 400)], 640, 480), polygon_in_frame([(-9, -9), (999, -9), (500, 999)], 640, 480)
    (True, False, True)
    """
    pts = [(float(x), float(y)) for x, y in polygon]
    if any(segment_in_frame(a, b, width, height) for a, b in zip(pts, pts[1:] + pts[:1])):
        return True
    return bool(points_in_polygon(np.array([[width / 2, height / 2]]), np.array(pts))[0])  # the frame inside it


def projection_t(p: Point, a: Point, b: Point) -> float:
    """Position of P's projection along A->B: 0 at A, 1 at B."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)


def anchors_bottom_center(bbox_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N, 2) bottom-centre points, the usual floor-contact anchor."""
    b = np.asarray(bbox_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N, 2) points, (M, 2) polygon -> (N,) bool, even-odd rule."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / (y2 - y1) + x1)
    return (crosses.sum(axis=1) % 2) == 1
