"""Backends are registered by name and chosen by the ``backend`` field of their own settings class.

Table-driven over every kind: each registered name parses from a site file into its own config class
and builds (the cheap ones for real); unknown names are errors naming the field; a backend defined
here, in one place with one registration, is selectable from a site config dict.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pytest

from storelens.backends.appearance import APPEARANCE
from storelens.backends.detectors import DETECTORS, Detections, build_detector
from storelens.backends.face_detectors import FACE_DETECTORS, YuNetFaceDetector, build_face_detector
from storelens.backends.face_embedders import FACE_EMBEDDERS, DlibFaceEmbedder, build_embedder
from storelens.backends.registry import Registry
from storelens.backends.trackers import TRACKERS
from storelens.config.tracker_bytereid import ByteReidTrackerConfig
from storelens.config import (
    AppearanceEmbedderConfig,
    BackendConfig,
    DeepSortTrackerConfig,
    DetectorConfig,
    DlibEmbedderConfig,
    EmbedderConfig,
    FaceDetectorConfig,
    FacenetEmbedderConfig,
    MobileNetOpenVinoEmbedderConfig,
    MobileNetTorchEmbedderConfig,
    MtcnnFaceDetectorConfig,
    TrackerConfig,
    OpenVINODetectorConfig,
    UltralyticsDetectorConfig,
    YuNetFaceDetectorConfig,
    parse_config,
)
from storelens.errors import ConfigError, ModelError

SITE = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://host/stream"}]}


def site(**sections) -> dict:
    return {**SITE, **sections}


def section(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def with_section(path: str, value: dict) -> dict:
    """A site dict with ``value`` at the dotted ``path`` (``faces.detector`` -> ``{"faces": {"detector": ...}}``)."""
    *parents, leaf = path.split(".")
    doc: dict = {leaf: value}
    for p in reversed(parents):
        doc = {p: doc}
    return site(**doc)


# (registry, site-file section, its kind, {name: (settings class, cheap build check or None)})
KINDS = [
    pytest.param(DETECTORS, "detector", DetectorConfig, {"ultralytics": (UltralyticsDetectorConfig, None),
                                                         "openvino": (OpenVINODetectorConfig, None)}, id="detector"),
    pytest.param(TRACKERS, "tracker", TrackerConfig, {"deepsort": (DeepSortTrackerConfig, None),
                                                      "bytereid": (ByteReidTrackerConfig, None)}, id="tracker"),
    pytest.param(FACE_DETECTORS, "faces.detector", FaceDetectorConfig, {
        "yunet": (YuNetFaceDetectorConfig, lambda b: isinstance(b, YuNetFaceDetector)
                  and len(b.detect(np.zeros((64, 64, 3), np.uint8))) == 0),
        "mtcnn": (MtcnnFaceDetectorConfig, None),
    }, id="face-detector"),
    pytest.param(FACE_EMBEDDERS, "faces.embedder", EmbedderConfig, {
        "dlib": (DlibEmbedderConfig, lambda b: isinstance(b, DlibFaceEmbedder) and b.dim == 128),
        "facenet": (FacenetEmbedderConfig, None),
    }, id="face-embedder"),
]


@pytest.mark.parametrize(("registry", "path", "kind", "backends"), KINDS)
def test_every_backend_is_registered_and_parses_into_its_own_config(registry, path, kind, backends):
    assert registry.names() == sorted(backends)
    assert sorted(kind.variants) == sorted(backends)
    for name, (cls, _) in backends.items():
        doc = with_section(path, {"backend": name})
        if name == "facenet":  # no measured match threshold for facenet: the site sets one
            doc["faces"]["gallery"] = {"match_threshold": 0.7}
        cfg = section(parse_config(doc), path)
        assert type(cfg) is cls and cfg.backend == name and isinstance(cfg, kind)
        assert type(kind(backend=name)) is cls  # the kind's constructor picks the class too


@pytest.mark.parametrize(("registry", "path", "kind", "backends"), KINDS)
def test_missing_backend_key_means_the_default(registry, path, kind, backends):
    default = section(parse_config(site()), path)
    assert default.backend == kind.default_backend and type(default) is backends[kind.default_backend][0]
    assert type(section(parse_config(with_section(path, {})), path)) is type(default)
    assert type(kind()) is type(default)


@pytest.mark.parametrize(("registry", "path", "kind", "backends"), KINDS)
def test_cheap_backends_build_for_real(registry, path, kind, backends):
    for name, (cls, check) in backends.items():
        if check is not None:
            assert check(registry.build(cls())), name


def test_build_wrappers_dispatch_through_the_registries():
    assert isinstance(build_face_detector(YuNetFaceDetectorConfig()), YuNetFaceDetector)
    assert isinstance(build_face_detector(), YuNetFaceDetector)
    assert isinstance(build_embedder(), DlibFaceEmbedder)


def test_appearance_embedders_are_registered_and_set_by_the_flat_tracker_keys():
    assert APPEARANCE.names() == sorted(AppearanceEmbedderConfig.variants) == ["mobilenet-openvino", "mobilenet-torch",
                                                                               "omz-reid-openvino"]
    tracker = parse_config(site(tracker={"backend": "deepsort", "embedder_input_wh": [32, 96],
                                         "embedder_device": "cpu"})).tracker
    assert tracker.appearance == MobileNetOpenVinoEmbedderConfig(input_wh=(32, 96))
    torch = parse_config(site(tracker={"backend": "deepsort", "embedder": "mobilenet-torch",
                                       "embedder_weights": "/w.pt"})).tracker
    assert torch.embedder == "mobilenet-torch" and torch.appearance == MobileNetTorchEmbedderConfig(weights="/w.pt")


@pytest.mark.parametrize(("path", "doc", "known"), [
    ("detector.backend", {"detector": {"backend": "yolo-nas"}}, "openvino, ultralytics"),
    ("tracker.backend", {"tracker": {"backend": "sort"}}, "bytereid, deepsort"),
    ("tracker.embedder", {"tracker": {"backend": "deepsort", "embedder": "osnet"}},
     "mobilenet-openvino, mobilenet-torch, omz-reid-openvino"),
    ("faces.detector.backend", {"faces": {"detector": {"backend": "haar"}}}, "mtcnn, yunet"),
    ("faces.embedder.backend", {"faces": {"embedder": {"backend": "arcface"}}}, "dlib, facenet"),
])
def test_unknown_backend_is_an_error_naming_the_field_and_the_known_names(path, doc, known):
    with pytest.raises(ConfigError) as err:
        parse_config(site(**doc), origin="site.yaml")
    assert f"config error in site.yaml: {path}: unknown" in str(err.value) and f"known: {known}" in str(err.value)


@pytest.mark.parametrize(("doc", "path"), [
    ({"faces": {"detector": {"backend": "mtcnn", "top_k": 10}}}, "faces.detector.top_k"),  # YuNet's, not MTCNN's
    ({"faces": {"embedder": {"backend": "dlib", "pretrained": "vggface2"}}}, "faces.embedder.pretrained"),
    ({"detector": {"confidence": 2}}, "detector.confidence"),
    ({"tracker": {"max_age": 30}}, "tracker.max_age"),  # deep-sort's, not the default bytereid's
    ({"tracker": {"backend": "deepsort", "track_buffer": 60}}, "tracker.track_buffer"),  # bytereid's
    ({"tracker": {"backend": "deepsort", "max_age": 0}}, "tracker.max_age"),
])
def test_settings_of_another_backend_are_rejected_by_name(doc, path):
    with pytest.raises(ConfigError, match=rf": {path}: "):
        parse_config(site(**doc))


def test_registry_build_of_an_unregistered_name_names_the_field():
    class ToolConfig(BackendConfig):
        default_backend: ClassVar[str] = "saw"

    class SawConfig(ToolConfig):
        backend: Literal["saw"] = "saw"

    class DrillConfig(ToolConfig):
        backend: Literal["drill"] = "drill"

    tools: Registry[str] = Registry(ToolConfig, "tools.backend")
    tools.register("saw")(lambda cfg, **deps: f"saw {deps}")
    assert tools.build(ToolConfig(), size=3) == "saw {'size': 3}"
    with pytest.raises(ModelError, match=r"tools\.backend: unknown backend 'drill'; known: saw"):
        tools.build(DrillConfig())
    with pytest.raises(ValueError, match="already registered"):
        tools.register("saw")
    with pytest.raises(ValueError, match=r"no settings class for backend 'hammer'"):
        tools.register("hammer")


# -- a backend defined here: one settings class + one registration ------------------------------


class FixedDetector:
    """Returns ``n`` fixed boxes, whatever the image."""

    def __init__(self, n: int) -> None:
        self.n = n

    def detect(self, image_bgr: np.ndarray) -> Detections:
        boxes = np.tile(np.array([[0, 0, 10, 20]], np.float32), (self.n, 1))
        return Detections(boxes, np.ones(self.n, np.float32), np.zeros(self.n, np.int32))


@pytest.fixture()
def fixed_backend():
    class FixedDetectorConfig(DetectorConfig):
        backend: Literal["fixed"] = "fixed"
        boxes: int = 1

    @DETECTORS.register("fixed")
    def build(cfg: FixedDetectorConfig) -> FixedDetector:
        return FixedDetector(cfg.boxes)

    yield FixedDetectorConfig
    DETECTORS.unregister("fixed")
    del DetectorConfig.variants["fixed"]


def test_a_backend_registered_here_is_selectable_from_a_site_config(fixed_backend):
    cfg = parse_config(site(detector={"backend": "fixed", "boxes": 3}))
    assert type(cfg.detector) is fixed_backend
    assert len(build_detector(cfg.detector).detect(np.zeros((8, 8, 3), np.uint8))) == 3
    assert cfg.model_dump()["detector"] == {"backend": "fixed", "boxes": 3}  # dumps the backend's own fields
    with pytest.raises(ConfigError, match=r": detector\.weights: Extra inputs"):
        parse_config(site(detector={"backend": "fixed", "weights": "yolo11n.pt"}))


def test_the_test_backend_is_gone_afterwards():
    assert "fixed" not in DETECTORS.names() and "fixed" not in DetectorConfig.variants
