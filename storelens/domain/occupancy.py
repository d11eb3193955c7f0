"""Occupancy of a region per frame from person boxes: anchors, region counts, a calibrated correction.

Pure numpy. Used by ``bench/occupancy_mall.py`` and ``tests/test_occupancy_mall.py``.

* **Anchor.** Crowd-counting ground truth (the Mall set) marks heads, and a
  region drawn on the floor of a high camera is "where the people are" as the
  annotator saw them. The head point of a person box (centre column,
  ``head_frac`` of the box height below its top) is what matches that, and it
  survives the usual crowd failure modes: people cut off by the bottom image
  edge, and boxes of occluded people that end at the occluder (their
  bottom-centre lands on the other person's body, not on their feet). Use the
  bottom-centre (``"bottom_center"``, the counting convention) when the region is
  a floor area and whole bodies are visible.
* **Correction.** A detector misses more people where they are small (far
  from the camera) and where they occlude each other. :class:`BandCalibration`
  multiplies the count in each horizontal band of the image by a factor fitted
  on frames with ground truth (least squares, optionally with an offset):
  one number per band, so a few dozen annotated frames of a camera fit it.

Example:
    >>> boxes = np.array([[10, 20, 30, 80], [100, 50, 120, 110]], np.float32)
    >>> anchor_points(boxes, "head").tolist()
    [[20.0, 26.0], [110.0, 56.0]]
    >>> mask = np.zeros((120, 160), bool); mask[:, :64] = True
    >>> count_in_mask(anchor_points(boxes), mask)
    1
    >>> cal = BandCalibration.fit([[2, 10], [4, 20], [3, 17]], [14, 28, 23], edges=[0, 60, 120], ridge=0)
    >>> [round(f, 2) for f in cal.factors], round(cal.apply([3, 15]), 1)
    ([2.0, 1.0], 21.0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

Anchor = Literal["head", "bottom_center", "center"]

#: Head centre below the top of a whole-body person box, as a share of its height (about half a head).
HEAD_FRAC = 0.1


def anchor_points(boxes_xyxy: np.ndarray, anchor: Anchor = "head", head_frac: float = HEAD_FRAC) -> np.ndarray:
    """(N, 4) boxes -> (N, 2) points: head estimate, bottom-centre (feet) or centre."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    x = (b[:, 0] + b[:, 2]) / 2
    if anchor == "head":
        y = b[:, 1] + head_frac * (b[:, 3] - b[:, 1])
    elif anchor == "bottom_center":
        y = b[:, 3]
    elif anchor == "center":
        y = (b[:, 1] + b[:, 3]) / 2
    else:
        raise ValueError(f"unknown anchor {anchor!r}")
    return np.stack([x, y], axis=1)


def inside_mask(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which (x, y) points (0-based pixel coordinates) fall on a true pixel of ``mask`` (H, W); outside: no."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    xi = np.floor(p[:, 0] + 0.5).astype(np.int64)
    yi = np.floor(p[:, 1] + 0.5).astype(np.int64)
    h, w = mask.shape[:2]
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out = np.zeros(len(p), bool)
    out[ok] = np.asarray(mask, bool)[yi[ok], xi[ok]]
    return out


def count_in_mask(points: np.ndarray, mask: np.ndarray) -> int:
    """Number of points inside ``mask``."""
    return int(inside_mask(points, mask).sum())


def band_counts(points: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Points per horizontal band ``[edges[i], edges[i+1])`` of image rows (y)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return np.histogram(p[:, 1], bins=np.asarray(edges, np.float64))[0]


@dataclass(frozen=True)
class BandCalibration:
    """Corrected count = ``sum(factors[i] * count in band i) + offset``.

    ``edges`` are image rows; bands follow the perspective (far people are
    higher up in the image, smaller and missed more often).
    """

    edges: tuple[float, ...]
    factors: tuple[float, ...]
    offset: float = 0.0
    #: Frames the fit used (for reports).
    n_frames: int = field(default=0, compare=False)

    @classmethod
    def fit(cls, band_counts_per_frame: Sequence[Sequence[float]], truth: Sequence[float], edges: Sequence[float],
            offset: bool = False, ridge: float = 1e-3) -> "BandCalibration":
        """Least squares of ``truth`` on the per-band detected counts (a tiny ridge keeps empty bands at 1)."""
        x = np.asarray(band_counts_per_frame, np.float64).reshape(len(truth), -1)
        y = np.asarray(truth, np.float64)
        if x.shape[1] != len(edges) - 1:
            raise ValueError(f"{x.shape[1]} band counts per frame but {len(edges) - 1} bands")
        if len(y) == 0:
            raise ValueError("no frames to fit")
        # Ridge towards factor 1 (no correction) and offset 0: solve for deviations from the identity.
        a = np.c_[x, np.ones(len(y))] if offset else x
        prior = np.r_[np.ones(x.shape[1]), [0.0]] if offset else np.ones(x.shape[1])
        r = ridge * len(y) * np.eye(a.shape[1])
        if offset:
            r[-1, -1] = 0.0
        dev = np.linalg.solve(a.T @ a + r, a.T @ (y - a @ prior))
        w = prior + dev
        factors = tuple(float(v) for v in w[: x.shape[1]])
        return cls(tuple(float(e) for e in edges), factors, float(w[-1]) if offset else 0.0, len(y))

    def apply(self, band_counts_of_frame: Sequence[float]) -> float:
        """Corrected count of one frame (not rounded, never below 0)."""
        c = np.asarray(band_counts_of_frame, np.float64).reshape(-1)
        return max(0.0, float(c @ np.asarray(self.factors)) + self.offset)

    def correct(self, points: np.ndarray) -> float:
        """Corrected count of one frame from its anchor points (already restricted to the region)."""
        return self.apply(band_counts(points, self.edges))
