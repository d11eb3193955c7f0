"""Typed site configuration (the ``config`` layer: imports only ``storelens.errors`` and ``storelens.paths``).

* :mod:`storelens.config.env` -- ``${VAR}`` expansion;
* :mod:`storelens.config.base` -- strict models and :class:`BackendConfig`, one settings class per backend;
* :mod:`storelens.config.site` -- the site file (:class:`SiteConfig`, :func:`load_config`; zones: :class:`ZoneConfig`, :class:`ZonesConfig`);
* :mod:`storelens.config.detectors` / :mod:`~storelens.config.trackers` -- ``detector`` and ``tracker``;
* :mod:`storelens.config.faces` -- the ``faces`` section.
"""
from storelens.config.base import BackendConfig
from storelens.config.detectors import (
    DetectorConfig,
    OpenVINODetectorConfig,
    UltralyticsDetectorConfig,
    YoloDetectorConfig,
)
from storelens.config.env import expand_env
from storelens.config.faces import (
    DlibEmbedderConfig,
    EmbedderConfig,
    FaceDetectorConfig,
    FacenetEmbedderConfig,
    MtcnnFaceDetectorConfig,
    YuNetFaceDetectorConfig,
)
from storelens.config.site import (
    AnchorName,
    ApiConfig,
    CameraConfig,
    CountingConfig,
    CropsConfig,
    IngestConfig,
    KafkaConfig,
    LineConfig,
    LiveConfig,
    Point,
    SiteConfig,
    StorageConfig,
    StoreConfig,
    ZoneConfig,
    ZoneKind,
    ZoneRules,
    ZonesConfig,
    entrance_lines_of,
    format_validation_error,
    journey_links_of,
    journeys_of,
    load_config,
    parse_config,
    with_cameras,
    with_site_update,
    polygon_problem,
    yaml_error,
)
from storelens.config.trackers import (
    AppearanceEmbedderConfig,
    DeepSortTrackerConfig,
    MobileNetOpenVinoEmbedderConfig,
    MobileNetTorchEmbedderConfig,
    TrackerConfig,
)
from storelens.config.tracker_bytereid import ByteReidTrackerConfig, OmzReidEmbedderConfig

__all__ = [
    "AnchorName", "ApiConfig", "AppearanceEmbedderConfig", "BackendConfig", "ByteReidTrackerConfig", "CameraConfig", "CountingConfig",
    "CropsConfig", "DeepSortTrackerConfig", "DetectorConfig", "DlibEmbedderConfig", "EmbedderConfig", "FaceDetectorConfig",
    "FacenetEmbedderConfig", "IngestConfig",
    "KafkaConfig", "LineConfig", "LiveConfig", "MobileNetOpenVinoEmbedderConfig", "OmzReidEmbedderConfig",
    "MobileNetTorchEmbedderConfig", "MtcnnFaceDetectorConfig", "Point", "SiteConfig", "StorageConfig",
    "OpenVINODetectorConfig", "StoreConfig", "TrackerConfig", "UltralyticsDetectorConfig", "YoloDetectorConfig",
    "YuNetFaceDetectorConfig", "ZoneConfig",
    "ZoneKind", "ZoneRules", "ZonesConfig", "entrance_lines_of", "expand_env", "format_validation_error",
    "journey_links_of", "journeys_of", "load_config",
    "parse_config", "polygon_problem", "with_cameras", "with_site_update", "yaml_error",
]
