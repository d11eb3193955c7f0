"""What the face attribute models share: the square face box dlib's HOG detector would draw."""
from __future__ import annotations

import numpy as np

# dlib HOG-style square box from a YuNet box (see module docstring).
_HOG_SIDE_OVER_WIDTH = 1.084
_HOG_CENTRE_SHIFT_OVER_HEIGHT = 0.059


def hog_style_box(bbox_xyxy: np.ndarray) -> np.ndarray:
    """The square (x0, y0, x1, y1) box dlib's HOG face detector would draw for a YuNet box."""
    x0, y0, x1, y1 = (float(v) for v in bbox_xyxy)
    w, h = x1 - x0, y1 - y0
    side = _HOG_SIDE_OVER_WIDTH * w
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + _HOG_CENTRE_SHIFT_OVER_HEIGHT * h
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float64)
