"""OpenCV's YuNet face detector (``faces.detector.backend: yunet``, the default).

``cv2.FaceDetectorYN`` with the YuNet ONNX weights from the shared assets
(``models/face_detection_yunet_2026may.onnx``). The network input size is set
per image, so any image size works; ``max_side`` optionally downscales large
frames first (faster, loses small faces) and maps the results back.
"""
from __future__ import annotations

import cv2
import numpy as np

from storelens.backends.face_detectors.base import FACE_DETECTORS, Faces, downscale, resolve_weights
from storelens.config.faces import YuNetFaceDetectorConfig
from storelens.errors import ModelError

YUNET_ASSET = ("models", "face_detection_yunet_2026may.onnx")


@FACE_DETECTORS.register("yunet")
class YuNetFaceDetector:
    """OpenCV YuNet (``cv2.FaceDetectorYN``); the input size follows each image."""

    def __init__(self, cfg: YuNetFaceDetectorConfig | None = None) -> None:
        self.cfg = cfg = cfg or YuNetFaceDetectorConfig()
        self.weights = resolve_weights(cfg.weights, YUNET_ASSET, "YuNet face detector")
        try:
            self._net = cv2.FaceDetectorYN.create(
                self.weights, "", (320, 320), cfg.score_threshold, cfg.nms_threshold, cfg.top_k
            )
        except cv2.error as exc:
            raise ModelError(f"cannot load YuNet face detector {self.weights}: {exc}") from exc
        self._size: tuple[int, int] = (320, 320)

    def detect(self, image_bgr: np.ndarray) -> Faces:
        img, scale = downscale(image_bgr, self.cfg.max_side)
        h, w = img.shape[:2]
        if (w, h) != self._size:
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, raw = self._net.detect(img)
        if raw is None or len(raw) == 0:
            return Faces.empty()
        raw = raw.astype(np.float32)
        # YuNet can emit non-finite rows on tiny or flat inputs (seen on small CCTV person crops)
        raw = raw[np.isfinite(raw).all(axis=1)]
        if len(raw) == 0:
            return Faces.empty()
        xywh = raw[:, 0:4]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)
        faces = Faces(boxes, raw[:, 4:14].reshape(-1, 5, 2).copy(), raw[:, 14].copy())
        return faces.scaled(1.0 / scale)
