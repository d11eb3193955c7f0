"""Face embeddings for returning-customer recognition (Protocol in :mod:`.base`), by ``faces.embedder.backend``.

* ``dlib`` (default): :class:`~.dlib.DlibFaceEmbedder`, dlib's ResNet (128-d);
* ``facenet``: :class:`~.facenet.FacenetEmbedder`, facenet-pytorch's InceptionResnetV1 (512-d);
  torch and facenet-pytorch load only when it is built.

:class:`~.dlib.DlibHogFaceDetector` is a small face detector for tests and benchmarks.
"""
from __future__ import annotations

from storelens.backends.face_embedders.base import FACE_EMBEDDERS, FaceEmbedder, as_faces_array, l2_normalize, to_rgb
from storelens.backends.face_embedders.dlib import (
    CHIP_PADDING,
    CHIP_SIZE,
    CHIP_TEMPLATE_5,
    RECOGNITION_MODEL_FILE,
    SHAPE_PREDICTOR_FILE,
    DlibFaceEmbedder,
    DlibHogFaceDetector,
    FaceBoxes,
    packaged_model,
)
from storelens.backends.face_embedders.facenet import FacenetEmbedder
from storelens.config.faces import DlibEmbedderConfig, EmbedderConfig, FacenetEmbedderConfig

__all__ = ["CHIP_PADDING", "CHIP_SIZE", "CHIP_TEMPLATE_5", "FACE_EMBEDDERS", "RECOGNITION_MODEL_FILE",
           "SHAPE_PREDICTOR_FILE", "DlibEmbedderConfig", "DlibFaceEmbedder", "DlibHogFaceDetector", "EmbedderConfig",
           "FaceBoxes", "FaceEmbedder", "FacenetEmbedder", "FacenetEmbedderConfig", "as_faces_array", "build_embedder",
           "l2_normalize", "packaged_model", "to_rgb"]


def build_embedder(cfg: EmbedderConfig | None = None) -> FaceEmbedder:
    """The embedder ``faces.embedder`` asks for (``None``: the default settings)."""
    return FACE_EMBEDDERS.build(cfg if cfg is not None else EmbedderConfig())
