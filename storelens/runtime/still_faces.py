"""Faces in still images: ``storelens faces IMAGE [IMAGE ...] [--config FILE] [--json]``.

For every image: detect the faces (largest first), run the quality gate, age,
gender (with abstention, see :mod:`storelens.domain.demographics`), the child
flag and emotion, and return one JSON-ready document::

    {"images": [{"path": "a.jpg", "faces": [{"bbox_xyxy": [x0, y0, x1, y1], "age": 34.2,
      "age_interval": [27.9, 44.8], "child": false, "gender": "male", "gender_confidence": 0.97,
      "emotion": "happy", "emotion_confidence": 0.91, "quality": {"ok": true, ...}}]},
     {"path": "broken.jpg", "error": "cannot read image: ..."}]}

``age`` and ``age_interval`` are ``null`` and ``gender`` is ``"unknown"``
where the models are unsure, for children (gender only), and for faces too
small, blurred or with implausible landmarks to judge (quality reasons
``too_small``, ``blurry``, ``bad_landmarks``). An image that cannot be read
is an entry with an ``error``; the others are still analysed.

Settings come from the ``faces`` section of a site file (``--config``):
``faces.detector``, ``faces.quality``, ``faces.age_gender``, ``faces.emotion``,
``faces.aggregation.min_emotion_confidence``.

Example:
    >>> from storelens.paths import asset
    >>> doc = StillFaceAnalyzer().analyze([str(asset("faces", "identities", "obama", "obama.jpg")), "missing.jpg"])
    >>> doc["images"][0]["faces"][0]["gender"], "error" in doc["images"][1]
    ('male', True)
"""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

from storelens.config.faces import FacesConfig

#: Quality reasons under which a face is not judged at all (age and gender abstain).
UNJUDGEABLE = frozenset({"too_small", "blurry", "bad_landmarks"})


def load_faces_config(path: str | os.PathLike[str] | None) -> FacesConfig:
    """The ``faces`` section of the site file ``path`` (``None``, or an empty file: the defaults).

    That section is validated as in a site file, relative model paths relative to the file's folder, not the
    working directory; the rest of the file only for unknown keys (a :class:`ConfigError` naming it), its
    ``${VAR}``s need not be set: this command opens no camera and reads no history
    (:func:`~storelens.config.site.parse_faces_section`). A file of only a ``faces`` section is one too."""
    if path is None:
        return FacesConfig()
    from storelens.config.site import parse_faces_section, read_yaml

    p = pathlib.Path(path)
    raw = read_yaml(p)
    if raw is None:
        return FacesConfig()
    return parse_faces_section(raw, origin=str(p), base=p.parent.resolve())


def _r(x: float, nd: int = 1) -> float:
    return round(float(x), nd)


class StillFaceAnalyzer:
    """Loads the models once; :meth:`analyze` any number of images (see the module docstring)."""

    def __init__(self, cfg: FacesConfig | None = None) -> None:
        from storelens.backends.face_attributes import EmotionClassifier
        from storelens.backends.face_attributes.demographics import DemographicsEstimator
        from storelens.backends.face_detectors import build_face_detector
        from storelens.domain.face_quality import FaceQualityGate

        self.cfg = cfg = cfg or FacesConfig()
        self.detector = build_face_detector(cfg.detector)
        self.gate = FaceQualityGate(cfg.quality)
        self.demographics = DemographicsEstimator(cfg.age_gender)
        self.emotion = EmotionClassifier(cfg.emotion)

    def analyze_image(self, image_bgr: np.ndarray) -> list[dict]:
        """The faces of one BGR image, largest first."""
        from storelens.domain.face_aggregate import EMOTIONS

        faces = self.detector.detect(image_bgr)
        if len(faces) == 0:
            return []
        b = faces.bbox_xyxy
        faces = faces[np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")]
        quality = self.gate.check(image_bgr, faces)
        demo = self.demographics.demographics(image_bgr, faces)
        emo = self.emotion.classify(image_bgr, faces)
        min_emo = self.cfg.aggregation.min_emotion_confidence
        out = []
        for i, q in enumerate(quality):
            d = demo[i]
            judged = not (UNJUDGEABLE & set(q.reasons))
            e = np.asarray(emo[i], np.float64)
            k = int(e.argmax())
            out.append({
                "bbox_xyxy": [_r(v) for v in faces.bbox_xyxy[i]],
                "score": _r(faces.score[i], 3),
                "age": _r(d.age_years) if judged and d.age_years is not None else None,
                "age_interval": ([_r(v) for v in d.age_interval_years]
                                 if judged and d.age_interval_years is not None else None),
                "child": d.child if judged else None,
                "gender": d.gender if judged else "unknown",
                "gender_confidence": _r(d.gender_confidence, 3),
                "emotion": EMOTIONS[k] if judged and e[k] >= min_emo else "unknown",
                "emotion_confidence": _r(e[k], 3),
                "quality": {"ok": bool(q.ok), "reasons": list(q.reasons), "size_px": _r(q.size_px),
                            "sharpness": _r(q.sharpness), "yaw_deg": _r(q.yaw_deg), "pitch_deg": _r(q.pitch_deg),
                            "roll_deg": _r(q.roll_deg)},
            })
        return out

    def analyze(self, paths: Sequence[str]) -> dict:
        """``{"images": [...]}`` for ``paths``, in order; unreadable images get an ``error``."""
        import cv2

        images = []
        for path in paths:
            p = pathlib.Path(path)
            if not p.is_file():
                images.append({"path": str(path), "error": f"no such file: {path}"})
                continue
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                images.append({"path": str(path), "error": f"cannot read image (not a picture OpenCV decodes): {path}"})
                continue
            images.append({"path": str(path), "faces": self.analyze_image(img)})
        return {"images": images}


def render_table(doc: dict) -> str:
    """A short human-readable table of :meth:`StillFaceAnalyzer.analyze`'s result.

    >>> print(render_table({"images": [{"path": "x.jpg", "error": "no such file: x.jpg"}]}))
    x.jpg: error: no such file: x.jpg
    """
    lines = []
    for entry in doc["images"]:
        if "error" in entry:
            lines.append(f"{entry['path']}: error: {entry['error']}")
            continue
        lines.append(f"{entry['path']}: {len(entry['faces'])} face(s)")
        if entry["faces"]:
            lines.append(f"  {'#':>2}  {'box (x0,y0,x1,y1)':<24} {'age':>5} {'interval':>9} {'child':>5}  {'gender':<8}"
                         f"{'conf':>5}  {'emotion':<9} quality")
        for i, f in enumerate(entry["faces"], 1):
            box = ",".join(f"{v:.0f}" for v in f["bbox_xyxy"])
            age = "-" if f["age"] is None else f"{f['age']:.0f}"
            child = "-" if f["child"] is None else ("yes" if f["child"] else "no")
            iv = "-" if f["age_interval"] is None else f"{f['age_interval'][0]:.0f}-{f['age_interval'][1]:.0f}"
            q = "ok" if f["quality"]["ok"] else ",".join(f["quality"]["reasons"])
            lines.append(f"  {i:>2}  {box:<24} {age:>5} {iv:>9} {child:>5}  {f['gender']:<8}{f['gender_confidence']:>5.2f}  "
                         f"{f['emotion']:<9} {q}")
    return "\n".join(lines)


class StillFaceEmbedder:
    """The largest face of a still image as an L2-normalised embedding of ``faces.embedder`` (staff enrolment).

    Same detector (``faces.detector``) and embedder as the reid stage, so enrolled embeddings compare
    with those of the tracks. :meth:`embed_paths` returns one ``(path, embedding or None, error)`` per path.

    Example:
        >>> from storelens.paths import asset
        >>> photo = str(asset("faces", "identities", "obama", "obama.jpg"))
        >>> ((path, vec, err),) = StillFaceEmbedder().embed_paths([photo])
        >>> vec.shape, err, round(float(vec @ vec), 3)
        ((128,), None, 1.0)
    """

    def __init__(self, cfg: FacesConfig | None = None, detector=None, embedder=None) -> None:
        from storelens.backends.face_detectors import build_face_detector
        from storelens.backends.face_embedders import build_embedder

        self.cfg = cfg = cfg or FacesConfig()
        self.detector = detector if detector is not None else build_face_detector(cfg.detector)
        self.embedder = embedder if embedder is not None else build_embedder(cfg.embedder)
        #: The embedder's model name, stored with each embedding.
        self.model = getattr(self.embedder, "name", type(self.embedder).__name__)
        self.dim = int(cfg.embedder.dim)

    def embed_image(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """The largest face's unit-length float32 embedding, or ``None`` without a face."""
        faces = self.detector.detect(image_bgr)
        if len(faces) == 0:
            return None
        b = faces.bbox_xyxy
        face = faces[int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))]
        v = np.asarray(self.embedder.embed(image_bgr, face), np.float32).reshape(-1)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def embed_paths(self, paths: Sequence[str]) -> list[tuple[str, np.ndarray | None, str | None]]:
        import cv2

        out: list[tuple[str, np.ndarray | None, str | None]] = []
        for path in paths:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR) if pathlib.Path(path).is_file() else None
            if img is None:
                out.append((str(path), None, f"cannot read image: {path}"))
                continue
            v = self.embed_image(img)
            out.append((str(path), v, None if v is not None else f"no face found in {path}"))
        return out
