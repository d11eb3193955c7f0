"""The face embedder's contract (:class:`FaceEmbedder`) and what every embedder shares: input checks, normalisation."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from storelens.backends.registry import Registry
from storelens.config.faces import EmbedderConfig


def to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    """A contiguous RGB copy of an HxWx3 uint8 BGR image (``ValueError`` for anything else)."""
    img = np.asarray(image_bgr)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    return np.ascontiguousarray(img[..., ::-1])


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        return x / max(float(np.linalg.norm(x)), 1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def as_faces_array(faces: Any) -> np.ndarray:
    """Normalise ``faces`` to (N, 4) boxes or (N, 5, 2) landmarks (float64).

    Accepts arrays of either shape (a single face may drop the leading axis),
    or an object with ``landmarks5`` (preferred) or ``bbox_xyxy``.
    """
    if hasattr(faces, "landmarks5"):
        arr = np.asarray(faces.landmarks5, np.float64)
    elif hasattr(faces, "bbox_xyxy"):
        arr = np.asarray(faces.bbox_xyxy, np.float64)
    else:
        arr = np.asarray(faces, np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.shape == (4,) or arr.shape == (5, 2):
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] == 4:
        return arr
    if arr.ndim == 3 and arr.shape[1:] == (5, 2):
        return arr
    raise ValueError(f"faces must be (N, 4) boxes or (N, 5, 2) landmarks, got shape {arr.shape}")


class FaceEmbedder(Protocol):
    """Faces of one image -> one L2-normalised embedding per face."""

    #: Embedding dimension D.
    dim: int
    #: Model name, stored with results (embeddings of different models are not comparable).
    name: str

    def embed(self, image_bgr: np.ndarray, faces: Any) -> np.ndarray:
        """``faces``: (N, 4) boxes ``x1, y1, x2, y2`` or (N, 5, 2) landmarks of ``image_bgr``.

        Returns (N, D) float32 rows of unit length, in the order of ``faces``.
        """
        ...


#: Face embedder backends by ``faces.embedder.backend``.
FACE_EMBEDDERS: Registry[FaceEmbedder] = Registry(EmbedderConfig, "faces.embedder.backend")
