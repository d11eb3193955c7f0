"""Drawing of heatmaps (OpenCV): a grid of values -> colour map -> alpha blend on a background -> PNG.

The rules that make the grids are :mod:`storelens.domain.heatmap`; this module only draws.
Colours scale with the square root of value / peak, the peak being the 95th percentile of
the non-empty cells (a few busy cells would leave the rest of the map blank otherwise);
empty cells stay transparent.
"""
from __future__ import annotations

import numpy as np

#: Opacity of the colour over the background: empty cells 0, the others from MIN to MAX.
MIN_ALPHA = 0.25
MAX_ALPHA = 0.7
#: The colour scale tops out at this percentile of the non-empty cells.
PEAK_PERCENTILE = 95


def _canvas(background: np.ndarray | None, width: int, height: int) -> np.ndarray:
    import cv2

    if background is None:
        return np.full((height, width, 3), 64, np.uint8)
    if background.ndim == 2:
        background = cv2.cvtColor(background, cv2.COLOR_GRAY2BGR)
    if background.shape[:2] != (height, width):
        background = cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA)
    return background


def decode_image(data: bytes | None) -> np.ndarray | None:
    """A JPEG/PNG's BGR pixels, or ``None`` (no data, or undecodable)."""
    if not data:
        return None
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img


def overlay(grid: np.ndarray, cell_px: int, width: int, height: int,
            background: np.ndarray | None = None) -> np.ndarray:
    """BGR image ``height`` x ``width``: ``grid`` (rows, cols) of cells of ``cell_px`` blended on ``background``."""
    import cv2

    canvas = _canvas(background, width, height).astype(np.float32)
    g = np.asarray(grid, np.float64)
    nonzero = g[g > 0]
    if not nonzero.size:
        return canvas.astype(np.uint8)
    peak = float(np.percentile(nonzero, PEAK_PERCENTILE))
    norm = np.sqrt(np.clip(g / peak, 0, 1)).astype(np.float32)
    rows, cols = g.shape
    big_w, big_h = cols * cell_px, rows * cell_px
    # smooth at the cell scale: linear upsampling of the grid, then crop to the frame
    norm_big = cv2.resize(norm, (big_w, big_h), interpolation=cv2.INTER_LINEAR)[:height, :width]
    mask_big = cv2.resize((g > 0).astype(np.float32), (big_w, big_h), interpolation=cv2.INTER_LINEAR)[:height, :width]
    colour = cv2.applyColorMap((norm_big * 255).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
    alpha = np.where(mask_big > 0, MIN_ALPHA + (MAX_ALPHA - MIN_ALPHA) * norm_big, 0.0)[..., None] * np.clip(
        mask_big, 0, 1)[..., None]
    out = canvas * (1 - alpha) + colour * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def heatmap_png(grid: np.ndarray, cell_px: int, width: int, height: int, background: bytes | np.ndarray | None = None
                ) -> bytes:
    """PNG bytes of :func:`overlay` (``background``: BGR pixels or JPEG/PNG bytes, resized to the frame)."""
    bg = decode_image(background) if isinstance(background, (bytes, bytearray)) else background
    return encode_png(overlay(grid, cell_px, width, height, bg))
