"""The face detector's contract: :class:`FaceDetector` returns :class:`Faces` (boxes + 5 landmarks).

Landmark order, *as seen in the image*: 0 eye on the image's left, 1 eye on
the image's right, 2 nose tip, 3 mouth corner on the image's left, 4 mouth
corner on the image's right (see :mod:`storelens.backends.face_detectors`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from storelens.backends.registry import Registry
from storelens.config.faces import FaceDetectorConfig
from storelens.errors import ModelError
from storelens.paths import asset


@dataclass(frozen=True)
class Faces:
    """Faces of one image, in that image's pixel coordinates."""

    bbox_xyxy: np.ndarray  # (N, 4) float32
    landmarks5: np.ndarray  # (N, 5, 2) float32, order in the module docstring
    score: np.ndarray  # (N,) float32

    @classmethod
    def empty(cls) -> "Faces":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, idx) -> "Faces":
        """Subset by index, slice or boolean mask; always returns :class:`Faces`."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Faces(self.bbox_xyxy[idx], self.landmarks5[idx], self.score[idx])

    def scaled(self, s: float) -> "Faces":
        """Coordinates multiplied by ``s`` (e.g. from a resized image back to source pixels)."""
        if s == 1.0:
            return self
        return Faces(self.bbox_xyxy * np.float32(s), self.landmarks5 * np.float32(s), self.score)

    def translated(self, dx: float, dy: float) -> "Faces":
        """Coordinates shifted by (dx, dy) (e.g. from a person crop back to the frame)."""
        return Faces(
            self.bbox_xyxy + np.array([dx, dy, dx, dy], np.float32),
            self.landmarks5 + np.array([dx, dy], np.float32),
            self.score,
        )


class FaceDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Faces: ...


#: Face detector backends by ``faces.detector.backend``.
FACE_DETECTORS: Registry[FaceDetector] = Registry(FaceDetectorConfig, "faces.detector.backend")


def resolve_weights(path: str | None, default: tuple[str, ...], what: str) -> str:
    p = path if path is not None else str(asset(*default))
    if not os.path.isfile(p):
        raise ModelError(f"{what} weights not found: {p}")
    return p


def downscale(image_bgr: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``image_bgr`` shrunk so its longer side is at most ``max_side`` (``None``: never), and the scale used.

    Detectors map their results back with ``faces.scaled(1 / scale)``.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image_bgr, 1.0
    scale = max_side / max(h, w)
    small = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small, scale


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def add_new_faces(faces: Faces, extra: Faces, max_iou: float = 0.3) -> Faces:
    """``faces`` plus the faces of ``extra`` that overlap none of them (IoU <= ``max_iou``).

    >>> f = Faces(np.array([[0, 0, 10, 10]], np.float32), np.zeros((1, 5, 2), np.float32), np.ones(1, np.float32))
    >>> g = Faces(np.array([[1, 1, 10, 10], [50, 50, 90, 90]], np.float32), np.zeros((2, 5, 2), np.float32),
    ...           np.ones(2, np.float32))
    >>> add_new_faces(f, g).bbox_xyxy.tolist()
    [[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 90.0, 90.0]]
    """
    if len(extra) == 0:
        return faces
    new = extra[np.flatnonzero((box_iou(extra.bbox_xyxy, faces.bbox_xyxy) > max_iou).sum(axis=1) == 0)]
    if len(new) == 0:
        return faces
    return Faces(np.concatenate([faces.bbox_xyxy, new.bbox_xyxy]), np.concatenate([faces.landmarks5, new.landmarks5]),
                 np.concatenate([faces.score, new.score]))
