"""The ``openvino`` detector backend (the default) gives Ultralytics' boxes, without PyTorch.

Real weights (the shared int8 YOLO11n OpenVINO export and the YOLOv8n int8 ONNX file) on real frames
(CAVIAR shop entrance, TUD-Campus street, the Mall concourse), compared box by box with
``backend: ultralytics`` on the same weights and settings.
"""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from storelens.backends.detectors import OpenVINOYoloDetector, UltralyticsDetector, build_detector
from storelens.config import DetectorConfig, OpenVINODetectorConfig, UltralyticsDetectorConfig, parse_config
from storelens.errors import ConfigError, ModelError
from storelens.paths import asset

CLIPS = {
    "caviar": asset("video", "caviar", "EnterExitCrossingPaths1front", "EnterExitCrossingPaths1front.mp4"),
    "tud": asset("mot", "TUD-Campus", "TUD-Campus.mp4"),
    "mall": asset("video", "mall", "mall_0001-0800.mp4"),
}


def frames(clip: str, n: int, step: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIPS[clip]))
    out = []
    for i in range(n * step):
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(frame)
    cap.release()
    assert len(out) == n, clip
    return out


# (clip, settings): the default weights at the tracker's 0.1 and the CLI's 0.35, several classes, tiles, the ONNX file
CASES = [
    pytest.param("caviar", {"confidence": 0.1}, id="caviar-conf0.1"),
    pytest.param("tud", {"confidence": 0.35}, id="tud-conf0.35"),
    pytest.param("tud", {"confidence": 0.25, "classes": [0, 1, 2, 24, 26], "iou": 0.5}, id="tud-several-classes"),
    pytest.param("mall", {"confidence": 0.2, "tiles": (2, 2), "head_nms": 0.5}, id="mall-tiles"),
]


@pytest.mark.parametrize(("clip", "settings"), CASES)
def test_same_boxes_as_ultralytics_on_the_same_weights(clip, settings):
    # precision "default": OpenVINO's own choice, as Ultralytics compiles it (bf16 on AVX512-BF16 CPUs)
    ours = OpenVINOYoloDetector(OpenVINODetectorConfig(**settings, precision="default"))
    theirs = UltralyticsDetector(UltralyticsDetectorConfig(**settings))
    images = frames(clip, 12, 5)
    total = 0
    for image, mine in zip(images, ours.detect_many(images)):
        ref = theirs.detect(image)
        assert len(mine) == len(ref)
        order, ref_order = np.lexsort(mine.bbox_xyxy.T), np.lexsort(ref.bbox_xyxy.T)
        np.testing.assert_allclose(mine.bbox_xyxy[order], ref.bbox_xyxy[ref_order], atol=0.01)
        np.testing.assert_allclose(mine.confidence[order], ref.confidence[ref_order], atol=1e-4)
        assert (mine.class_id[order] == ref.class_id[ref_order]).all()
        assert mine.bbox_xyxy.dtype == np.float32 and mine.class_id.dtype == np.int32
        total += len(mine)
    assert total >= 12, total  # people were found: the comparison compared something
    if settings.get("classes", [0]) == [0]:
        assert all((d.class_id == 0).all() for d in ours.detect_many(images[:2]))


def test_an_onnx_export_finds_the_people_onnxruntime_finds():
    """The int8 ONNX file: Ultralytics runs it on ONNX Runtime, we on OpenVINO; int8 kernels differ a little,
    so the confident boxes are matched by IoU rather than compared to the pixel."""
    settings = {"confidence": 0.3, "weights": str(asset("models", "yolov8n_int8.onnx"))}
    ours = OpenVINOYoloDetector(OpenVINODetectorConfig(**settings))
    theirs = UltralyticsDetector(UltralyticsDetectorConfig(**settings))
    matched = total = 0
    for image in frames("tud", 12, 5):
        mine, ref = ours.detect(image), theirs.detect(image)
        total += max(len(mine), len(ref))
        if len(mine) and len(ref):
            a, b = mine.bbox_xyxy[:, None], ref.bbox_xyxy[None]
            inter = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None).prod(-1)
            area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
            iou = inter / (area(a) + area(b) - inter)
            matched += int((iou.max(1) >= 0.8).sum())
    assert total >= 12 and matched >= 0.9 * total, (matched, total)


def test_it_is_the_default_and_runs_without_pytorch():
    assert type(DetectorConfig()) is OpenVINODetectorConfig
    assert type(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}).detector) \
        is OpenVINODetectorConfig
    code = ("import sys, numpy as np\n"
            "from storelens.backends.detectors import build_detector\n"
            "from storelens.config import DetectorConfig\n"
            "d = build_detector(DetectorConfig())\n"
            "print(len(d.detect(np.zeros((360, 480, 3), np.uint8))), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "False"]


def test_compiled_model_cache(tmp_path):
    cache = tmp_path / "ov-cache"
    first = build_detector(OpenVINODetectorConfig(cache_dir=str(cache)))
    assert any(cache.iterdir())  # the compiled blob was written
    again = build_detector(OpenVINODetectorConfig(cache_dir=str(cache)))  # and is read back
    image = frames("caviar", 1, 1)[0]
    a, b = first.detect(image), again.detect(image)
    np.testing.assert_array_equal(a.bbox_xyxy, b.bbox_xyxy)


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda d: str(d / "missing"), r"detector weights not found: .*missing.*backend: ultralytics",
                 id="missing"),
    pytest.param(lambda d: "yolo11n.pt", r"detector weights not found: yolo11n\.pt.*backend: ultralytics",
                 id="hub-name"),
    pytest.param(lambda d: (d / "w.pt").write_bytes(b"x") and str(d / "w.pt"),
                 r"reads an OpenVINO model folder, \.xml or \.onnx, not w\.pt", id="pt-file"),
    pytest.param(lambda d: (d / "empty_openvino_model").mkdir() or str(d / "empty_openvino_model"),
                 r"no OpenVINO \.xml model in", id="folder-without-xml"),
    pytest.param(lambda d: (d / "bad.xml").write_text("<net>") and str(d / "bad.xml"),
                 r"cannot load detector model .*bad\.xml", id="corrupt-xml"),
])
def test_bad_weights_are_a_clear_error(tmp_path, make, message):
    with pytest.raises(ModelError, match=message):
        build_detector(OpenVINODetectorConfig(weights=make(tmp_path)))


@pytest.mark.parametrize(("device", "message"), [
    ("NOSUCHDEVICE", r"cannot load detector model .* on NOSUCHDEVICE"),
    ("cuda:0", r"detector\.device cuda:0 is a PyTorch device: set detector\.backend: ultralytics"),
])
def test_unknown_device_is_a_clear_error(device, message):
    with pytest.raises(ModelError, match=message):
        build_detector(OpenVINODetectorConfig(device=device))


@pytest.mark.parametrize("classes", [[80], [0, -1]])
def test_a_class_the_model_does_not_have_is_a_clear_error(classes):
    with pytest.raises(ConfigError, match=r"detector\.classes: \[-?\d+\] not among the model's 80 classes \(0\.\.79\)"):
        build_detector(OpenVINODetectorConfig(classes=classes))


def test_precision_is_chosen_and_reported():
    """``precision: f32``, the default, runs the float layers in f32 on any CPU (``default`` is the CPU's own:
    bf16 on AVX512-BF16 machines), and the detector says what it runs; a precision OpenVINO has not is a config
    error."""
    f32 = build_detector(OpenVINODetectorConfig())
    assert f32.inference_precision == "f32"
    assert build_detector(OpenVINODetectorConfig(precision="default")).inference_precision in ("f32", "bf16", "f16")
    people = f32.detect(frames("tud", 1, 1)[0])
    assert len(people) > 0 and (people.class_id == 0).all()
    with pytest.raises(ConfigError, match=r"detector\.precision"):
        parse_config({"store": {"id": "s"}, "detector": {"precision": "int4"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
