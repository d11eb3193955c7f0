"""The person detector's contract: :class:`Detector` returns :class:`Detections`; :data:`DETECTORS` builds them.

A detector may also have ``detect_many(images) -> list[Detections]``: the same result as ``detect`` on
each image, in fewer model calls (the frames of several cameras at once); :func:`detect_many` uses it
where it exists and calls ``detect`` image by image otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence

import numpy as np

from storelens.backends.registry import Registry
from storelens.config.detectors import DetectorConfig


@dataclass(frozen=True)
class Detections:
    """Detections of one image, in that image's pixel coordinates."""

    bbox_xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32
    #: Every box already checked well formed (:meth:`well_formed_only`'s result): the trackers' own check of it,
    #: a safety net for other callers, is then skipped (detect-track checks each frame's detections once).
    checked: bool = field(default=False, compare=False)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return len(self.confidence)

    def well_formed(self) -> np.ndarray:
        """Mask of the detections a tracker can take: a finite box of positive width and height and a finite
        score (a model fed a broken frame may give NaN or inf, which crashed the appearance crops).

        >>> d = Detections(np.array([[0, 0, 5, 9], [0, 0, np.nan, 9], [4, 0, 4, 9]], np.float32),
        ...                np.array([0.9, 0.9, 0.9], np.float32), np.zeros(3, np.int32))
        >>> d.well_formed().tolist()
        [True, False, False]
        """
        boxes = np.asarray(self.bbox_xyxy, np.float64).reshape(-1, 4)
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(np.asarray(self.confidence, np.float64))
        with np.errstate(invalid="ignore"):
            return ok & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])

    def well_formed_only(self) -> tuple["Detections", int]:
        """``(the detections a tracker can take, how many were left out)`` (:meth:`well_formed`), marked
        :attr:`checked`; ``self`` when every one is (then marked checked itself: a later call returns at once).

        >>> d = Detections(np.array([[0, 0, 5, 9], [0, 0, np.inf, 9]], np.float32), np.array([0.9, 0.9], np.float32),
        ...                np.zeros(2, np.int32))
        >>> kept, dropped = d.well_formed_only()
        >>> len(kept.bbox_xyxy), dropped, kept.checked, d.select([0]).well_formed_only()[1]
        (1, 1, True, 0)
        >>> kept.well_formed_only()[0] is kept
        True
        """
        if self.checked:
            return self, 0
        keep = self.well_formed()
        if keep.all():
            object.__setattr__(self, "checked", True)  # a cache of what the boxes are (frozen: set once, to True)
            return self, 0
        return replace(self.select(keep), checked=True), int((~keep).sum())

    def select(self, keep: np.ndarray) -> "Detections":
        """The detections ``keep`` (a mask or indices) selects."""
        return Detections(self.bbox_xyxy[keep], self.confidence[keep], self.class_id[keep])

    def scaled(self, sx: float, sy: float) -> "Detections":
        """Boxes scaled by (sx, sy), e.g. from a resized frame back to source pixels."""
        if sx == 1.0 and sy == 1.0:
            return self
        return Detections(self.bbox_xyxy * np.array([sx, sy, sx, sy], np.float32), self.confidence, self.class_id)


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Detections: ...


def detect_many(detector: Detector, images: Sequence[np.ndarray]) -> list[Detections]:
    """``detector.detect`` of each image, in order: through the detector's own ``detect_many`` (batched) if it
    has one, else image by image.

    >>> class Nobody:
    ...     def detect(self, image_bgr): return Detections.empty()
    >>> [len(d) for d in detect_many(Nobody(), [np.zeros((4, 4, 3), np.uint8)] * 2)]
    [0, 0]
    """
    many = getattr(detector, "detect_many", None)
    if many is not None:
        return list(many(images))
    return [detector.detect(image) for image in images]


#: Detector backends by ``detector.backend``.
DETECTORS: Registry[Detector] = Registry(DetectorConfig, "detector.backend")
