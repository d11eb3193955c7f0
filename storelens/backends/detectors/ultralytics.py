"""The Ultralytics YOLO person detector (``detector.backend: ultralytics``).

``weights`` may be a local file or folder (``.pt``, ``.onnx``, an OpenVINO
``*_openvino_model/`` folder, ...) or a standard Ultralytics model name such
as ``yolo11n.pt``, which Ultralytics downloads where there is internet. A
path that looks local but does not exist is an error, not a download.

Example:
    >>> from storelens.config import UltralyticsDetectorConfig
    >>> det = UltralyticsDetector(UltralyticsDetectorConfig(weights="/models/yolo11n_openvino_model"))  # doctest: +SKIP
    >>> dets = det.detect(image_bgr)                                                        # doctest: +SKIP
    >>> dets.bbox_xyxy.shape, dets.confidence.shape                                          # doctest: +SKIP
    ((5, 4), (5,))
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Sequence

import numpy as np

from storelens.backends.detectors.base import DETECTORS, Detections
from storelens.backends.detectors.tiling import dedupe_heads, detect_as_configured
from storelens.config.detectors import UltralyticsDetectorConfig
from storelens.errors import ModelError

log = logging.getLogger(__name__)


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


@DETECTORS.register("ultralytics")
class UltralyticsDetector:
    """YOLO person detector through ``ultralytics.YOLO`` (PyTorch, ONNX Runtime or OpenVINO).

    With ``tiles`` other than ``[1, 1]`` each frame is cut into overlapping tiles
    (:mod:`storelens.backends.detectors.tiling`), each detected at ``imgsz`` and merged;
    ``head_nms`` then keeps one box per head point.

    :meth:`detect_many` detects several images (one frame per camera) in one ``predict`` call per
    image size, with the same results as :meth:`detect` on each (a static-batch export, such as the
    int8 OpenVINO model, still runs its inference image by image inside that call).
    """

    def __init__(self, cfg: UltralyticsDetectorConfig) -> None:
        weights = resolve_weights(cfg.weights)
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
        if cfg.threads:  # PyTorch weights only (the config refuses others)
            import torch

            # after the warm-up: Ultralytics' predictor setup (at the first predict) sets PyTorch's threads to the
            # CPUs less one whatever OMP_NUM_THREADS says, so setting OMP_NUM_THREADS before (as done before)
            # changed nothing
            torch.set_num_threads(cfg.threads)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        return detect_as_configured(image_bgr, self._detect_one, self.cfg)

    def detect_many(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """:meth:`detect` of each image, in order, in one ``predict`` call per image size (tiled: image by image).

        Images of one size only: Ultralytics letterboxes a list of mixed sizes to a square, where a
        single image (of a dynamic-shape model) keeps its aspect ratio, and the boxes would differ.
        """
        cfg = self.cfg
        if tuple(cfg.tiles) != (1, 1):
            return [self.detect(image) for image in images]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape, []).append(i)
        out: list[Detections] = [Detections.empty()] * len(images)
        for idx in by_size.values():
            for i, dets in zip(idx, self._predict([images[i] for i in idx])):
                out[i] = dedupe_heads(dets, cfg.head_nms)
        return out

    def _detect_one(self, image_bgr: np.ndarray) -> Detections:
        return self._predict(image_bgr)[0]

    def _predict(self, source: np.ndarray | list[np.ndarray]) -> list[Detections]:
        """One ``predict`` call on an image or a list of images: their detections, in order."""
        cfg = self.cfg
        results = self.model.predict(source, imgsz=cfg.imgsz, conf=cfg.confidence, iou=cfg.iou, classes=cfg.classes,
                                     device=cfg.device, verbose=False)
        return [_detections(res.boxes) for res in results]


def _detections(boxes) -> Detections:
    """An Ultralytics ``Boxes`` as :class:`Detections`."""
    if boxes is None or len(boxes) == 0:
        return Detections.empty()
    return Detections(
        boxes.xyxy.cpu().numpy().astype(np.float32),
        boxes.conf.cpu().numpy().astype(np.float32),
        boxes.cls.cpu().numpy().astype(np.int32),
    )
