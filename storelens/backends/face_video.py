"""Videos of people from still photos, for end-to-end tests and benchmarks of the faces stages.

Real CCTV with the same people on two different days is not something the
shared assets have; the labelled identity photos are. :func:`write_visit_video`
places photos one after another on a plain background, each held still for a
while at its own position with empty frames between people, so detection,
tracking, person crops, faces, attributes and re-identification all run on
real images exactly as they would on a camera (one track per photo).

Example:
    >>> from storelens.paths import asset                                # doctest: +SKIP
    >>> write_visit_video([asset("faces", "identities", "obama", "obama.jpg")], "/tmp/v1.mp4")  # doctest: +SKIP
    PosixPath('/tmp/v1.mp4')
"""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

#: Left edges (as a share of the canvas width) cycled through for successive photos.
_SLOTS = (0.05, 0.55, 0.3)


def write_visit_video(
    photos: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    size_wh: tuple[int, int] = (1280, 720),
    fps: float = 10.0,
    hold_frames: int = 24,
    gap_frames: int = 12,
    photo_height_frac: float = 0.9,
) -> pathlib.Path:
    """Write an MJPEG ``.avi`` (or what the suffix says) showing each photo for ``hold_frames`` frames.

    Photos keep their aspect ratio, scaled to ``photo_height_frac`` of the
    canvas height (narrower if needed), placed at alternating positions so
    that successive people never overlap; ``gap_frames`` empty frames separate them.
    """
    import cv2

    w, h = size_wh
    out = pathlib.Path(out_path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(out), fourcc, fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {out}")
    background = np.full((h, w, 3), 128, np.uint8)
    try:
        for _ in range(gap_frames):
            writer.write(background)
        for i, p in enumerate(photos):
            img = cv2.imread(os.fspath(p))
            if img is None:
                raise FileNotFoundError(f"cannot read photo {p}")
            s = min(photo_height_frac * h / img.shape[0], 0.42 * w / img.shape[1])
            img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                             interpolation=cv2.INTER_AREA)
            frame = background.copy()
            x0 = min(int(_SLOTS[i % len(_SLOTS)] * w), w - img.shape[1])
            y0 = (h - img.shape[0]) // 2
            frame[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            for _ in range(hold_frames):
                writer.write(frame)
            for _ in range(gap_frames):
                writer.write(background)
    finally:
        writer.release()
    return out
