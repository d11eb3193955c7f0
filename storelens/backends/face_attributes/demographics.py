"""Age and gender from two models, fused and calibrated, with abstention (``faces.age_gender.model``).

* :class:`OmzAgeGender`: Open Model Zoo's ``age-gender-recognition-retail-0013``
  (OpenVINO IR in the shared assets): input ``Nx3x62x62`` BGR raw 0-255, the
  square crop of 1.2 x the longer side of the face box (OMZ's
  interactive_face_detection_demo), outputs age / 100 and softmax
  ``[female, male]``. Trained on adults 18-75 only: it calls every child an adult.
* :class:`DemographicsEstimator`: runs the model(s) ``cfg.model`` names on each
  face (and its mirror image when ``cfg.flip``), and returns the raw outputs
  (:class:`RawAgeGender`), the calibrated :class:`AgeGender` the pipeline
  aggregates, or the per-face :class:`~storelens.domain.demographics.FaceDemographics`
  (with abstention) the still-image command reports. The fusion and its
  measurement are in :mod:`storelens.domain.demographics` and ``bench/demographics.py``.

Example:
    >>> import cv2
    >>> from storelens.paths import asset
    >>> from storelens.backends.face_detectors import YuNetFaceDetector
    >>> img = cv2.imread(str(asset("faces", "identities", "rose_leslie", "img1.jpg")))
    >>> d = DemographicsEstimator().demographics(img, YuNetFaceDetector().detect(img))[0]
    >>> d.gender, d.child, 20 < d.age_years < 40, d.age_interval_years[0] < d.age_years < d.age_interval_years[1]
    ('female', False, True, True)
"""
from __future__ import annotations

import os
import threading
import cv2
import numpy as np

from storelens.backends.face_attributes.age_gender import AgeGender, AgeGenderEstimator
from storelens.backends.face_detectors.base import Faces
from storelens.config.faces import AgeGenderConfig
from storelens.domain.demographics import DEFAULT_FUSIONS, FaceDemographics, Fusion, RawAgeGender, Rule, logit
from storelens.errors import ModelError

#: Path parts of the OMZ age/gender IR under the shared assets.
OMZ_AGE_GENDER_ASSET = ("models", "age-gender-recognition-retail-0013", "FP16-INT8",
                        "age-gender-recognition-retail-0013.xml")
OMZ_INPUT_PX = 62
OMZ_CROP_SCALE = 1.2


def omz_crop(image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
    """OMZ's square face crop (1.2 x the longer box side, same centre, clipped to the image), 62x62."""
    h, w = image_bgr.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in bbox_xyxy)
    side = OMZ_CROP_SCALE * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = min(max(0, int(round(cx - side / 2))), w - 1), min(max(0, int(round(cy - side / 2))), h - 1)
    c, d = min(w, max(a + 1, int(round(cx + side / 2)))), min(h, max(b + 1, int(round(cy + side / 2))))
    return cv2.resize(image_bgr[b:d, a:c], (OMZ_INPUT_PX, OMZ_INPUT_PX))


class OmzAgeGender:
    """OMZ age-gender-recognition-retail-0013 (see the module docstring)."""

    def __init__(self, cfg: AgeGenderConfig | None = None) -> None:
        cfg = cfg or AgeGenderConfig()
        if cfg.omz_weights is not None:
            path = cfg.omz_weights
        else:
            from storelens.paths import asset

            path = str(asset(*OMZ_AGE_GENDER_ASSET))
        if not os.path.isfile(path):
            raise ModelError(f"faces.age_gender.omz_weights: age/gender model not found: {path} "
                             "(an OpenVINO .xml with its .bin beside it; set STORELENS_ASSETS to the shared assets)")
        import openvino as ov

        try:
            core = ov.Core()
            model = core.read_model(path)
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([-1, 3, OMZ_INPUT_PX, OMZ_INPUT_PX])})
            self._model = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                            "INFERENCE_NUM_THREADS": int(cfg.threads)})
            self._age_out, self._prob_out = self._model.output("age_conv3"), self._model.output("prob")
        except Exception as exc:  # openvino raises RuntimeError subclasses for bad IRs / missing outputs
            raise ModelError(f"faces.age_gender.omz_weights: cannot load {path}: {exc}") from exc
        self._request = self._model.create_infer_request()
        self._lock = threading.Lock()

    def run(self, crops_bgr: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(age_years, p_male)`` of 62x62 BGR crops."""
        if not crops_bgr:
            return np.zeros(0), np.zeros(0)
        x = np.stack(crops_bgr).transpose(0, 3, 1, 2).astype(np.float32)
        with self._lock:
            r = self._request.infer({0: x})
            age = np.asarray(r[self._age_out], np.float64).reshape(len(x)) * 100.0
            prob = np.asarray(r[self._prob_out], np.float64).reshape(len(x), 2)
        return age, prob[:, 1]


def _mirror(image_bgr: np.ndarray, faces: Faces) -> tuple[np.ndarray, np.ndarray]:
    w = image_bgr.shape[1]
    b = faces.bbox_xyxy.astype(np.float64)
    return np.ascontiguousarray(image_bgr[:, ::-1]), np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1)


class DemographicsEstimator:
    """Age, gender and child flag per face from ``cfg.model`` (``dlib``/``omz``/``fused``), see module docstring.

    ``estimate`` has :class:`AgeGenderEstimator`'s signature, so it can stand in for it in
    :class:`~storelens.backends.face_attributes.FaceAnalyzer`.
    """

    def __init__(self, cfg: AgeGenderConfig | None = None, fusion: Fusion | None = None) -> None:
        self.cfg = cfg = cfg or AgeGenderConfig()
        fusion = fusion or DEFAULT_FUSIONS[(cfg.model, cfg.flip)]
        if fusion.kind != cfg.model:
            raise ValueError(f"fusion kind {fusion.kind!r} does not match faces.age_gender.model {cfg.model!r}")
        self.rule = Rule(fusion, cfg.min_gender_confidence, cfg.max_age_spread_years, cfg.child_below_years)
        self.dlib = AgeGenderEstimator(cfg) if cfg.model in ("dlib", "fused") else None
        self.omz = OmzAgeGender(cfg) if cfg.model in ("omz", "fused") else None

    def _dlib(self, image_bgr: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
        est = self.dlib
        with est._lock:
            pairs = [est.chips(image_bgr, b) for b in boxes]
        g = est._gender.run(np.stack([p[0] for p in pairs])).astype(np.float64)
        a = est._age.run(np.stack([p[1] for p in pairs])).astype(np.float64)
        return a, g[:, 1]

    def raw(self, image_bgr: np.ndarray, faces: Faces) -> RawAgeGender:
        n = len(faces)
        nan = np.full(n, np.nan)
        views = [(image_bgr, faces.bbox_xyxy.astype(np.float64))]
        if self.cfg.flip and n:
            views.append(_mirror(image_bgr, faces))
        d_age = d_sd = d_logit = d_conf = o_age = o_logit = nan
        if self.dlib is not None and n:
            outs = [self._dlib(img, boxes) for img, boxes in views]
            probs = np.mean([o[0] for o in outs], axis=0)
            w = self.dlib.age_weights.astype(np.float64)
            d_age = probs @ w
            d_sd = np.sqrt(np.maximum(probs @ (w * w) - d_age ** 2, 0.0))
            d_conf = probs.max(axis=1)
            d_logit = np.mean([logit(o[1]) for o in outs], axis=0)
        if self.omz is not None and n:
            outs = [self.omz.run([omz_crop(img, b) for b in boxes]) for img, boxes in views]
            o_age = np.mean([o[0] for o in outs], axis=0)
            o_logit = np.mean([logit(o[1]) for o in outs], axis=0)
        return RawAgeGender(d_age, d_sd, d_logit, d_conf, o_age, o_logit)

    def fuse(self, raw: RawAgeGender) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(age, interval_low, interval_high, p_male, spread)`` of raw outputs."""
        return self.rule.fuse(raw)

    def decide(self, raw: RawAgeGender) -> list[FaceDemographics]:
        return self.rule.decide(raw)

    def demographics(self, image_bgr: np.ndarray, faces: Faces) -> list[FaceDemographics]:
        """Per-face reported demographics (abstaining where unsure)."""
        if len(faces) == 0:
            return []
        return self.decide(self.raw(image_bgr, faces))

    def estimate(self, image_bgr: np.ndarray, faces: Faces) -> list[AgeGender]:
        """Calibrated age and p_male per face, with no abstention: the pipeline aggregates over frames.

        A child's face still gets its p_male here; its age goes with it into the track aggregate
        (:mod:`storelens.domain.face_aggregate`), which reports gender "unknown" for a track whose median
        age is under ``faces.aggregation.child_below_years`` (by default this section's ``child_below_years``),
        as :meth:`demographics` does for one image.
        """
        if len(faces) == 0:
            return []
        raw = self.raw(image_bgr, faces)
        age, _, _, p, _ = self.fuse(raw)
        conf = raw.d_conf if self.dlib is not None else np.full(len(age), np.nan)
        return [AgeGender(float(age[i]), float(conf[i]), float(p[i])) for i in range(len(age))]


def build_age_gender(cfg: AgeGenderConfig | None = None) -> DemographicsEstimator:
    """The age/gender estimator ``faces.age_gender`` configures."""
    return DemographicsEstimator(cfg)
