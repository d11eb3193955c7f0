"""Face detection (boxes + 5 landmarks) behind a small Protocol (:mod:`.base`), chosen by ``faces.detector.backend``.

Every backend returns :class:`Faces` in the input image's pixel coordinates,
with the five landmarks in one fixed order, *as seen in the image*:

    0 eye on the image's left   (the person's right eye; YuNet "right eye")
    1 eye on the image's right  (the person's left eye)
    2 nose tip
    3 mouth corner on the image's left  (YuNet "mouth right")
    4 mouth corner on the image's right (YuNet "mouth left")

That is YuNet's own order, and facenet-pytorch's MTCNN returns the same one
(checked on the 16 matched faces of ``faces/identities*`` in the shared assets:
every MTCNN point lies nearest the YuNet point of the same index), so no
backend reorders points.

* ``yunet`` (default): :class:`~.yunet.YuNetFaceDetector`, OpenCV's ``cv2.FaceDetectorYN``;
* ``mtcnn``: :class:`~.mtcnn.MtcnnFaceDetector`, facenet-pytorch's MTCNN.

A detector object keeps per-image state (the input size) and is not
thread-safe: use one per worker thread.

Example:
    >>> import cv2
    >>> from storelens.paths import asset
    >>> det = YuNetFaceDetector(YuNetFaceDetectorConfig())
    >>> faces = det.detect(cv2.imread(str(asset("faces", "identities", "obama", "obama.jpg"))))
    >>> len(faces), faces.bbox_xyxy.shape, faces.landmarks5.shape
    (1, (1, 4), (1, 5, 2))
"""
from __future__ import annotations

from storelens.backends.face_detectors.base import FACE_DETECTORS, FaceDetector, Faces, downscale
from storelens.backends.face_detectors.mtcnn import MTCNN_DEFAULT_SCORE_THRESHOLD, MtcnnFaceDetector
from storelens.backends.face_detectors.yunet import YUNET_ASSET, YuNetFaceDetector
from storelens.config.faces import FaceDetectorConfig, MtcnnFaceDetectorConfig, YuNetFaceDetectorConfig

__all__ = ["FACE_DETECTORS", "MTCNN_DEFAULT_SCORE_THRESHOLD", "YUNET_ASSET", "FaceDetector", "FaceDetectorConfig",
           "Faces", "MtcnnFaceDetector", "MtcnnFaceDetectorConfig", "YuNetFaceDetector", "YuNetFaceDetectorConfig",
           "build_face_detector", "downscale"]


def build_face_detector(cfg: FaceDetectorConfig | None = None) -> FaceDetector:
    """The face detector ``cfg.backend`` names (``None``: the default settings)."""
    return FACE_DETECTORS.build(cfg if cfg is not None else FaceDetectorConfig())
