"""Facial expression: the mini-Xception FER2013 model (see :mod:`storelens.backends.face_attributes`)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from storelens.backends.face_attributes.base import hog_style_box
from storelens.backends.face_attributes.keras_graph import KerasGraph
from storelens.backends.face_detectors.base import Faces
from storelens.config.faces import EmotionConfig
from storelens.domain.face_aggregate import EMOTIONS
from storelens.errors import ModelError
from storelens.paths import asset

FER_ASSET = ("models", "fer2013_mini_XCEPTION.102-0.66.hdf5")


class EmotionClassifier:
    """Facial expression probabilities over :data:`EMOTIONS` (mini-Xception, FER2013)."""

    def __init__(self, cfg: EmotionConfig | None = None) -> None:
        self.cfg = cfg = cfg or EmotionConfig()
        path = cfg.weights if cfg.weights is not None else str(asset(*FER_ASSET))
        if not os.path.isfile(path):
            raise ModelError(f"emotion model weights not found: {path}")
        if cfg.threads is not None:
            import torch

            if torch.get_num_threads() != cfg.threads:
                torch.set_num_threads(cfg.threads)
        self.model = KerasGraph(path)
        h, w, ch = self.model.input_shape
        if ch != 1:
            raise ModelError(f"{path}: expected a grey (1-channel) input, got {ch} channels")
        self.size = (int(w), int(h))
        probe = self.model(np.zeros((1, h, w, 1), np.float32))
        if probe.shape != (1, len(EMOTIONS)):
            raise ModelError(f"{path}: output shape {probe.shape}, expected (1, {len(EMOTIONS)})")

    def crop_box(self, bbox_xyxy: np.ndarray) -> np.ndarray:
        b = hog_style_box(bbox_xyxy) if self.cfg.crop == "square" else np.asarray(bbox_xyxy, np.float64)
        m = self.cfg.margin
        w, h = b[2] - b[0], b[3] - b[1]
        return b + np.array([-m * w, -m * h, m * w, m * h])

    def face_input(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
        """The (64, 64) float32 network input for one face, scaled to [-1, 1]."""
        x0, y0, x1, y1 = (int(round(v)) for v in self.crop_box(bbox_xyxy))
        h, w = image_bgr.shape[:2]
        # Pad with edge pixels where the crop leaves the image (a face at the frame border).
        pad = max(0, -x0, -y0, x1 - w, y1 - h)
        img = image_bgr
        if pad:
            img = cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
        crop = img[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        grey = cv2.resize(grey, self.size)
        return preprocess_grey(grey)

    def classify_inputs(self, batch: np.ndarray) -> np.ndarray:
        """(N, 64, 64) inputs already scaled to [-1, 1] -> (N, 7) probabilities."""
        batch = np.asarray(batch, np.float32)
        if len(batch) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        return self.model(batch[..., None])

    def classify(self, image_bgr: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, 7) probabilities for the faces of one image."""
        return self.classify_inputs(np.stack([self.face_input(image_bgr, b) for b in faces.bbox_xyxy])
                                    if len(faces) else np.zeros((0,) + self.size[::-1], np.float32))


def preprocess_grey(grey_uint8: np.ndarray) -> np.ndarray:
    """The original training scaling: ``(x / 255 - 0.5) * 2``."""
    x = grey_uint8.astype(np.float32) / 255.0
    return (x - 0.5) * 2.0
