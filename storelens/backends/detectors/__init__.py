"""Person detection behind a small Protocol (:mod:`.base`), one module per backend, chosen by ``detector.backend``.

* ``openvino`` (default): :class:`~storelens.backends.detectors.openvino_yolo.OpenVINOYoloDetector` (a YOLO
  export on OpenVINO, no PyTorch);
* ``ultralytics``: :class:`~storelens.backends.detectors.ultralytics.UltralyticsDetector` (YOLO).
"""
from __future__ import annotations

from storelens.backends.detectors.base import DETECTORS, Detections, Detector
from storelens.backends.detectors.openvino_yolo import OpenVINOYoloDetector
from storelens.backends.detectors.ultralytics import UltralyticsDetector, resolve_weights
from storelens.config.detectors import DetectorConfig

__all__ = ["DETECTORS", "Detections", "Detector", "DetectorConfig", "OpenVINOYoloDetector", "UltralyticsDetector",
           "build_detector", "resolve_weights"]


def build_detector(cfg: DetectorConfig) -> Detector:
    """The detector ``cfg.backend`` names."""
    return DETECTORS.build(cfg)
