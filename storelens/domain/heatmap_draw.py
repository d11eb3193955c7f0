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
    """BGR image ``height`` x ``width``: ``grid`` (rows, cols) of cells of ``cell_px`` blended on ``background``.

    Only the rows and columns of the frame that non-empty cells can colour (their cell and its neighbours,
    reached by the linear upsampling) are computed; the rest is the background as it is.

        >>> g = np.zeros((3, 4)); g[1, 2] = 5.0
        >>> img = overlay(g, 16, 64, 48)
        >>> img.shape, int(img[0, 0, 0]), bool((img[24, 40] != 64).any())
        ((48, 64, 3), 64, True)
    """
    import cv2

    canvas = _canvas(background, width, height)
    g = np.asarray(grid, np.float64)
    nonzero = g[g > 0]
    if not nonzero.size:
        return canvas.copy()
    peak = float(np.percentile(nonzero, PEAK_PERCENTILE))
    norm = np.sqrt(np.clip(g / peak, 0, 1)).astype(np.float32)
    rows, cols = g.shape
    # smooth at the cell scale: linear upsampling of the grid (one cell of margin around the painted cells)
    rr, cc = np.nonzero(g > 0)
    r0, r1 = max(int(rr.min()) - 1, 0), min(int(rr.max()) + 2, rows)
    c0, c1 = max(int(cc.min()) - 1, 0), min(int(cc.max()) + 2, cols)
    # The sub-grid resizes to exactly the pixels the whole grid would give there: the same scale keeps the
    # sample positions, and the margin cells (empty) are what the edge of the sub-grid is clamped to.
    big = ((c1 - c0) * cell_px, (r1 - r0) * cell_px)
    norm_big = cv2.resize(norm[r0:r1, c0:c1], big, interpolation=cv2.INTER_LINEAR)
    mask_big = cv2.resize((g[r0:r1, c0:c1] > 0).astype(np.float32), big, interpolation=cv2.INTER_LINEAR)
    y0, y1 = r0 * cell_px, min(r1 * cell_px, height)
    x0, x1 = c0 * cell_px, min(c1 * cell_px, width)
    out = canvas.copy()
    if y1 <= y0 or x1 <= x0:
        return out
    nb, mb = norm_big[:y1 - y0, :x1 - x0], mask_big[:y1 - y0, :x1 - x0]
    colour = cv2.applyColorMap((nb * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = nb * np.float32(MAX_ALPHA - MIN_ALPHA)
    alpha += np.float32(MIN_ALPHA)
    alpha *= mb  # 0 where no painted cell reaches (the upsampled mask is 0 there)
    out[y0:y1, x0:x1] = cv2.blendLinear(colour, np.ascontiguousarray(canvas[y0:y1, x0:x1]), alpha, 1 - alpha)
    return out


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
