"""OpenCV's YuNet face detector (``faces.detector.backend: yunet``, the default).

``cv2.FaceDetectorYN`` with the YuNet ONNX weights from the shared assets
(``models/face_detection_yunet_2026may.onnx``). The network input size is set
per image, so any image size works; ``max_side`` optionally downscales large
frames first (faster, loses small faces) and maps the results back. YuNet
does not find faces much larger than its 640 px training input (a face
filling a 1500 px image is missed), so images longer than
``large_face_side`` (640) are searched a second time downscaled to it, and
the faces only that pass finds are added.
"""
from __future__ import annotations

import cv2
import numpy as np

from storelens.backends.face_detectors.base import FACE_DETECTORS, Faces, add_new_faces, downscale, resolve_weights
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
        faces = self._detect(img)
        bound = self.cfg.large_face_side
        if bound and max(img.shape[:2]) > bound:
            # Second pass at the network's own scale for faces too large to be found at full size.
            small, s2 = downscale(img, bound)
            faces = add_new_faces(faces, self._detect(small).scaled(1.0 / s2))
        return faces.scaled(1.0 / scale)

    def _detect(self, img: np.ndarray) -> Faces:
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
        return Faces(boxes, raw[:, 4:14].reshape(-1, 5, 2).copy(), raw[:, 14].copy())
