"""Person detection behind a small Protocol; the Ultralytics YOLO backend.

``weights`` may be a local file or folder (``.pt``, ``.onnx``, an OpenVINO
``*_openvino_model/`` folder, ...) or a standard Ultralytics model name such
as ``yolo11n.pt``, which Ultralytics downloads where there is internet. A
path that looks local but does not exist is an error, not a download.

Example:
    >>> from storelens.config import DetectorConfig
    >>> det = UltralyticsDetector(DetectorConfig(weights="/models/yolo11n_openvino_model"))  # doctest: +SKIP
    >>> dets = det.detect(image_bgr)                                                        # doctest: +SKIP
    >>> dets.bbox_xyxy.shape, dets.confidence.shape                                          # doctest: +SKIP
    ((5, 4), (5,))
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from storelens.config import DetectorConfig
from storelens.errors import ModelError

log = logging.getLogger(__name__)


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


_HUB_NAME = re.compile(r"^(yolo[a-z0-9.-]*)\.(pt|yaml)$", re.IGNORECASE)


def resolve_weights(weights: str) -> str:
    """Return a loadable weights reference or raise :class:`ModelError`.

    Existing local paths pass; bare Ultralytics model names (``yolo11n.pt``)
    pass through for Ultralytics to download; anything else is an error.
    """
    if os.path.exists(weights):
        return weights
    if os.sep not in weights and _HUB_NAME.match(weights):
        return weights
    raise ModelError(
        f"detector weights not found: {weights} (set detector.weights to a local file/folder "
        "or a standard Ultralytics model name such as yolo11n.pt)"
    )


class UltralyticsDetector:
    """YOLO person detector through ``ultralytics.YOLO`` (PyTorch, ONNX Runtime or OpenVINO)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        weights = resolve_weights(cfg.weights)
        if cfg.threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
        # Ultralytics prints progress to stdout; keep stdout for our own output (e.g. --json).
        with contextlib.redirect_stdout(sys.stderr):
            try:
                from ultralytics import YOLO

                logging.getLogger("ultralytics").setLevel(logging.WARNING)
                self.model = YOLO(weights, task="detect")
            except Exception as exc:  # ultralytics raises many types for bad weights
                raise ModelError(f"cannot load detector weights {weights}: {exc}") from exc
            self.cfg = cfg
            # Warm up: the first call compiles/allocates and would distort timings.
            self.detect(np.zeros((cfg.imgsz, cfg.imgsz, 3), np.uint8))

    def detect(self, image_bgr: np.ndarray) -> Detections:
        res = self.model.predict(
            image_bgr, imgsz=self.cfg.imgsz, conf=self.cfg.confidence, iou=self.cfg.iou,
            classes=self.cfg.classes, device=self.cfg.device, verbose=False,
        )[0]
        boxes = res.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        return Detections(
            boxes.xyxy.cpu().numpy().astype(np.float32),
            boxes.conf.cpu().numpy().astype(np.float32),
            boxes.cls.cpu().numpy().astype(np.int32),
        )


def build_detector(cfg: DetectorConfig) -> Detector:
    if cfg.backend == "ultralytics":
        return UltralyticsDetector(cfg)
    raise ModelError(f"unknown detector backend {cfg.backend!r}")
