"""The person detector's contract: :class:`Detector` returns :class:`Detections`; :data:`DETECTORS` builds them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from storelens.backends.registry import Registry
from storelens.config.detectors import DetectorConfig


@dataclass(frozen=True)
class Detections:
    """Detections of one image, in that image's pixel coordinates."""

    bbox_xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return len(self.confidence)

    def scaled(self, sx: float, sy: float) -> "Detections":
        """Boxes scaled by (sx, sy), e.g. from a resized frame back to source pixels."""
        if sx == 1.0 and sy == 1.0:
            return self
        return Detections(self.bbox_xyxy * np.array([sx, sy, sx, sy], np.float32), self.confidence, self.class_id)


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Detections: ...


#: Detector backends by ``detector.backend``.
DETECTORS: Registry[Detector] = Registry(DetectorConfig, "detector.backend")
