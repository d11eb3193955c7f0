"""dlib's ResNet face embeddings (``faces.embedder.backend: dlib``, the default), and dlib's HOG face detector.

:class:`DlibFaceEmbedder` turns faces into 128-d, L2-normalised float32
vectors; two embeddings of the same person have a high cosine similarity (dot
product), those of different people a low one (see ``bench/faces_verify.py``
for the numbers on the labelled faces in the shared assets). Each face is
aligned to the 150x150 "face chip" the network was trained on, either

* from a face **box** (N, 4) ``x1, y1, x2, y2``: dlib's 5-point shape
  predictor finds the eye corners and the nose in the box, then
  ``dlib.get_face_chips`` rotates and scales the face upright (dlib's own,
  reference alignment); or
* from **five landmarks** (N, 5, 2) in YuNet's order (eye on the image's left,
  eye on the image's right, nose tip, mouth corner on the image's left, mouth
  corner on the image's right; that is what :mod:`storelens.backends.face_detectors`
  returns): a least-squares similarity transform maps them onto
  :data:`CHIP_TEMPLATE_5`, their mean position in dlib's chips, and
  ``dlib.extract_image_chips`` cuts the chip. No shape predictor runs.

Any object with a ``landmarks5`` attribute (such as
``storelens.backends.face_detectors.Faces``) is embedded from its landmarks; one with only
``bbox_xyxy`` from its boxes.

Everything runs offline: the weights come from the ``face-recognition-models``
PyPI package (CC0; ``dlib_face_recognition_resnet_model_v1.dat`` and
``shape_predictor_5_face_landmarks.dat``) and are found through the installed
package, without importing it (its ``__init__`` needs ``pkg_resources``).
Pass ``recognition_weights`` / ``shape_predictor_weights`` to use other copies.
No internet access is needed, ever.

:class:`DlibHogFaceDetector` is a small face detector (dlib's HOG + linear
SVM) for tests and benchmarks when no other detector is given; the services
use YuNet (:mod:`storelens.backends.face_detectors`).

An embedder object is not thread-safe (dlib's jitter random generator and
network buffers are per object): use one per worker thread.

Example:
    >>> import cv2
    >>> from storelens.paths import asset
    >>> image = cv2.imread(str(asset("faces", "identities", "obama", "obama.jpg")))
    >>> boxes = DlibHogFaceDetector().detect(image).bbox_xyxy
    >>> emb = DlibFaceEmbedder()
    >>> vecs = emb.embed(image, boxes)
    >>> vecs.shape, vecs.dtype, round(float((vecs[0] ** 2).sum()), 3)
    ((1, 128), dtype('float32'), 1.0)
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from storelens.backends.face_embedders.base import FACE_EMBEDDERS, as_faces_array, l2_normalize, to_rgb
from storelens.config.faces import DlibEmbedderConfig
from storelens.errors import ModelError

#: Size (pixels) of dlib's aligned face chip and the padding around the face it expects.
CHIP_SIZE = 150
CHIP_PADDING = 0.25

#: Mean position of YuNet's five landmarks (order in the module docstring) inside
#: dlib's 150x150 face chips (padding 0.25). Measured on the 17 faces of
#: ``faces/identities*`` in the shared assets: each face was aligned by dlib
#: (HOG box, 5-point shape predictor, ``get_face_chip_details``) and its YuNet
#: landmarks were mapped into the chip. Standard deviation across faces: 2-3 px
#: for the eyes, 3-7 px for nose and mouth (head pose). Embeddings of the same
#: face aligned this way and by dlib have a cosine similarity of 0.975-0.999
#: (median 0.995) on those faces.
CHIP_TEMPLATE_5 = np.array(
    [[46.8, 45.1], [100.6, 45.0], [72.0, 78.1], [50.4, 102.1], [98.0, 101.9]], np.float64
)

RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - dlib-bin is a dependency
        raise ModelError(f"the face embedder needs dlib (pip install dlib-bin): {exc}") from exc
    return dlib


def packaged_model(filename: str) -> str:
    """Path of a model file shipped by the ``face-recognition-models`` package.

    Found from the package's location only, so its ``pkg_resources`` import never runs.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"{filename}: the face-recognition-models package is not installed "
            "(pip install face-recognition-models, or pass the weights path)"
        )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise ModelError(f"{filename} not found in the face-recognition-models package ({path})")
    return str(path)


def _weights(path: str | os.PathLike[str] | None, default_file: str, what: str) -> str:
    if path is None:
        return packaged_model(default_file)
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ModelError(f"{what} weights not found: {p}")
    return p


class DlibFaceEmbedder:
    """dlib's ResNet face descriptor (128-d; 99.38% on LFW as reported by dlib).

    Args:
        recognition_weights: ``dlib_face_recognition_resnet_model_v1.dat``;
            ``None`` uses the copy in the ``face-recognition-models`` package.
        shape_predictor_weights: ``shape_predictor_5_face_landmarks.dat`` (used
            for box input only); ``None`` uses the packaged copy.
        num_jitters: 0 embeds each chip once. N > 1 embeds N randomly jittered
            copies (shifted, rotated, scaled, mirrored) and averages them:
            slightly more robust, N times slower. dlib's jitter generator is
            seeded per object, so the same sequence of calls gives the same
            result, but a face's embedding depends on what was embedded before.
        template: chip positions of the five landmarks (default
            :data:`CHIP_TEMPLATE_5`), for landmark input.
    """

    dim = 128
    name = DlibEmbedderConfig().model_name  # what the gallery and staff embeddings record

    def __init__(
        self,
        recognition_weights: str | os.PathLike[str] | None = None,
        shape_predictor_weights: str | os.PathLike[str] | None = None,
        num_jitters: int = 0,
        template: np.ndarray | None = None,
    ) -> None:
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        dlib = _dlib()
        self.recognition_weights = _weights(recognition_weights, RECOGNITION_MODEL_FILE, "face recognition")
        self.shape_predictor_weights = _weights(shape_predictor_weights, SHAPE_PREDICTOR_FILE, "shape predictor")
        try:
            self._net = dlib.face_recognition_model_v1(self.recognition_weights)
        except RuntimeError as exc:
            raise ModelError(f"cannot load face recognition weights {self.recognition_weights}: {exc}") from exc
        try:
            self._sp = dlib.shape_predictor(self.shape_predictor_weights)
        except RuntimeError as exc:
            raise ModelError(f"cannot load shape predictor {self.shape_predictor_weights}: {exc}") from exc
        self.num_jitters = int(num_jitters)
        self.template = np.asarray(CHIP_TEMPLATE_5 if template is None else template, np.float64)
        if self.template.shape != (5, 2):
            raise ValueError(f"template must be (5, 2), got {self.template.shape}")
        self._dlib = dlib

    # -- alignment ---------------------------------------------------------------

    def chips(self, image_bgr: np.ndarray, faces: Any) -> list[np.ndarray]:
        """Aligned 150x150 RGB face chips (uint8), one per face, as the network sees them."""
        return self._chips(to_rgb(image_bgr), as_faces_array(faces))

    def _chips(self, rgb: np.ndarray, arr: np.ndarray) -> list[np.ndarray]:
        dlib = self._dlib
        if len(arr) == 0:
            return []
        if arr.ndim == 2:  # boxes: dlib's 5-point shape predictor, then dlib's own chip alignment
            shapes = dlib.full_object_detections()
            for x1, y1, x2, y2 in arr:
                # dlib rectangles include their right/bottom pixel; our boxes end just past it
                rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
                shapes.append(self._sp(rgb, rect))
            return list(dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING))
        chip_pts = dlib.dpoints([dlib.dpoint(float(x), float(y)) for x, y in self.template])
        dims = dlib.chip_dims(CHIP_SIZE, CHIP_SIZE)
        details = [
            dlib.chip_details(chip_pts, dlib.dpoints([dlib.dpoint(float(x), float(y)) for x, y in lm]), dims)
            for lm in arr
        ]
        return list(dlib.extract_image_chips(rgb, details))

    # -- embedding -----------------------------------------------------------------

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """Aligned 150x150 RGB chips -> (N, 128) float32 unit vectors."""
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        chips = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
        for c in chips:
            if c.shape != (CHIP_SIZE, CHIP_SIZE, 3):
                raise ValueError(f"face chips must be {CHIP_SIZE}x{CHIP_SIZE}x3, got {c.shape}")
        vecs = self._net.compute_face_descriptor(chips, self.num_jitters)
        return l2_normalize(np.array([np.asarray(v) for v in vecs], np.float32))

    def embed_raw(self, image_bgr: np.ndarray, faces: Any) -> np.ndarray:
        """dlib's descriptors *before* normalisation (their Euclidean distance is dlib's metric)."""
        chips = self.chips(image_bgr, faces)
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        vecs = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], self.num_jitters)
        return np.array([np.asarray(v) for v in vecs], np.float32)

    def embed(self, image_bgr: np.ndarray, faces: Any) -> np.ndarray:
        """(N, 4) boxes, (N, 5, 2) landmarks or a ``Faces``-like object -> (N, 128) float32 unit rows."""
        return self.embed_chips(self.chips(image_bgr, faces))


@FACE_EMBEDDERS.register("dlib")
def build(cfg: DlibEmbedderConfig) -> DlibFaceEmbedder:
    """:class:`DlibFaceEmbedder` with ``cfg.weights`` as its recognition weights (``None``: the packaged ones)."""
    return DlibFaceEmbedder(recognition_weights=cfg.weights)


@dataclass(frozen=True)
class FaceBoxes:
    """Faces found by :class:`DlibHogFaceDetector`, in the image's pixel coordinates."""

    bbox_xyxy: np.ndarray  # (N, 4) float32, sorted left to right
    score: np.ndarray  # (N,) float32, SVM margin (higher = more face-like; 0 is the default cut)

    def __len__(self) -> int:
        return len(self.score)


class DlibHogFaceDetector:
    """dlib's frontal face detector (HOG + linear SVM), built into dlib: no weights file.

    For tests and benchmarks. It only finds roughly frontal faces of at least
    80x80 pixels (40x40 with ``upsample=1``, the default) and is slow on large
    images: about 0.4 s per megapixel with ``upsample=1``, 0.1 s with 0, on
    one core of the 2-core development machine.

    Args:
        upsample: how many times the image is upsampled 2x before detection.
        min_score: faces with a lower SVM score are dropped.
    """

    def __init__(self, upsample: int = 1, min_score: float = 0.0) -> None:
        self._det = _dlib().get_frontal_face_detector()
        self.upsample = int(upsample)
        self.min_score = float(min_score)

    def detect(self, image_bgr: np.ndarray) -> FaceBoxes:
        rects, scores, _ = self._det.run(to_rgb(image_bgr), self.upsample, self.min_score)
        if not rects:
            return FaceBoxes(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        order = np.argsort(boxes[:, 0], kind="stable")
        return FaceBoxes(boxes[order], np.asarray(scores, np.float32)[order])
