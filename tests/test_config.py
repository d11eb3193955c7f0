"""storelens.config: loading site YAML, readable ConfigErrors naming the bad field, env and path expansion."""
from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from storelens.config import (
    ByteReidTrackerConfig,
    CountingConfig,
    DeepSortTrackerConfig,
    SiteConfig,
    UltralyticsDetectorConfig,
    load_config,
    parse_config,
    with_cameras,
)
from storelens.errors import ConfigError, StoreLensError
from storelens.paths import assets_dir

BASE: dict = {
    "store": {"id": "store-1", "name": "Main St", "timezone": "Europe/Berlin"},
    "cameras": [
        {
            "id": "cam-1",
            "source": "rtsp://10.0.0.5/stream1",
            "target_fps": 5,
            "lines": [{"id": "door", "a": [0, 300], "b": [640, 300]}],
            "zones": [{"id": "till", "polygon": [[0, 0], [100, 0], [100, 100]]}],
        },
        {"id": "cam-2", "source": "0", "lines": [{"id": "door", "a": [10, 10], "b": [10, 400]}]},
    ],
    "counting": {"hysteresis_px": 8, "reacquire_radius_px": 40, "reacquire_window_ms": 1500, "window_s": 300},
    "storage": {"path": "/var/lib/storelens/site.db"},
    "api": {"host": "0.0.0.0", "port": 9000},
}


def write(tmp_path: pathlib.Path, doc: object, name: str = "site.yaml") -> pathlib.Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return p


def mutated(fn) -> dict:
    doc = copy.deepcopy(BASE)
    fn(doc)
    return doc


# ---------------------------------------------------------------------------------------------
# Valid files
# ---------------------------------------------------------------------------------------------


def test_load_valid_config(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert isinstance(cfg, SiteConfig)
    assert cfg.store.id == "store-1" and cfg.store.timezone == "Europe/Berlin"
    assert [c.id for c in cfg.cameras] == ["cam-1", "cam-2"]
    cam = cfg.camera("cam-1")
    assert cam.source == "rtsp://10.0.0.5/stream1"  # URLs are left alone
    assert cam.target_fps == 5.0
    assert cam.lines[0].a == (0.0, 300.0) and cam.lines[0].b == (640.0, 300.0)
    assert cam.zones[0].polygon == [(0.0, 0.0), (100.0, 0.0), (100.0, 100.0)]
    assert cfg.camera("cam-2").source == "0"  # webcam index is left alone
    assert cfg.counting == CountingConfig(hysteresis_px=8, reacquire_radius_px=40, reacquire_window_ms=1500,
                                          window_s=300)
    assert cfg.api.port == 9000
    with pytest.raises(KeyError):
        cfg.camera("nope")


def test_minimal_config_uses_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://x/y"}]}))
    assert cfg.counting == CountingConfig()
    assert cfg.cameras[0].lines == [] and cfg.cameras[0].target_fps is None


def test_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    with pytest.raises(Exception):
        cfg.counting.hysteresis_px = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Errors name the bad field
# ---------------------------------------------------------------------------------------------


def _cam0(doc):
    return doc["cameras"][0]


def _line0(doc):
    return doc["cameras"][0]["lines"][0]


ERROR_CASES = [
    pytest.param(lambda d: d.update(bogus=1), "bogus", "Extra inputs are not permitted", id="unknown_top_level_key"),
    pytest.param(lambda d: _cam0(d).update(fps=5), "cameras.0.fps", "Extra inputs", id="unknown_camera_key"),
    pytest.param(lambda d: _line0(d).update(colour="red"), "cameras.0.lines.0.colour", "Extra inputs",
                 id="unknown_line_key"),
    pytest.param(lambda d: d["counting"].update(hysteresis=3), "counting.hysteresis", "Extra inputs",
                 id="unknown_counting_key"),
    pytest.param(lambda d: d["store"].update(id_=1), "store.id_", "Extra inputs", id="unknown_store_key"),
    pytest.param(lambda d: _line0(d).update(b=[0, 300]), "cameras.0.lines.0", "same point", id="degenerate_line"),
    pytest.param(lambda d: d["cameras"][1]["lines"][0].update(b=[10.0, 10]), "cameras.1.lines.0", "same point",
                 id="degenerate_line_second_camera"),
    pytest.param(lambda d: _line0(d).update(a=[0, 300, 1]), "cameras.0.lines.0.a", "two numbers",
                 id="line_point_three_numbers"),
    pytest.param(lambda d: _line0(d).update(a=5), "cameras.0.lines.0.a", "two numbers", id="line_point_scalar"),
    pytest.param(lambda d: _line0(d).update(b=["x", 300]), "cameras.0.lines.0.b.0", "number",
                 id="line_point_not_a_number"),
    pytest.param(lambda d: _cam0(d)["lines"].append({"id": "door", "a": [0, 1], "b": [1, 1]}), "cameras.0",
                 "duplicate line id(s) ['door']", id="duplicate_line_ids"),
    pytest.param(lambda d: _cam0(d).update(target_fps=0), "cameras.0.target_fps", "greater than 0", id="fps_zero"),
    pytest.param(lambda d: d["cameras"][1].update(target_fps=-2.5), "cameras.1.target_fps", "greater than 0",
                 id="fps_negative"),
    pytest.param(lambda d: _cam0(d).update(target_fps="fast"), "cameras.0.target_fps", "number", id="fps_not_number"),
    pytest.param(lambda d: d["counting"].update(hysteresis_px=-1), "counting.hysteresis_px",
                 "greater than or equal to 0", id="negative_hysteresis"),
    pytest.param(lambda d: d["counting"].update(window_s=0), "counting.window_s", "greater than or equal to 1",
                 id="zero_window"),
    pytest.param(lambda d: d.pop("store"), "store", "Field required", id="missing_store"),
    pytest.param(lambda d: d.update(cameras=[]), "cameras", "at least 1", id="no_cameras"),
    pytest.param(lambda d: _cam0(d).update(id="cam 1"), "cameras.0.id", "pattern", id="bad_camera_id_chars"),
    pytest.param(lambda d: _cam0(d)["zones"][0].update(polygon=[[0, 0], [1, 1]]), "cameras.0.zones.0.polygon",
                 "at least 3", id="zone_with_two_points"),
    pytest.param(lambda d: d["api"].update(port=70000), "api.port", "less than or equal to 65535", id="bad_port"),
]


@pytest.mark.parametrize("mutate, path, reason", ERROR_CASES)
def test_validation_error_names_field(tmp_path, mutate, path, reason):
    p = write(tmp_path, mutated(mutate))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert msg.startswith(f"config error in {p}")
    assert f": {path}: " in msg and "\n" not in msg, msg
    assert reason in msg, msg


def test_duplicate_camera_ids(tmp_path):
    p = write(tmp_path, mutated(lambda d: d["cameras"][1].update(id="cam-1")))
    with pytest.raises(ConfigError, match=r"duplicate camera id\(s\) \['cam-1'\]") as exc:
        load_config(p)
    assert str(p) in str(exc.value)


def test_duplicate_camera_ids_names_cameras_field(tmp_path):
    p = write(tmp_path, mutated(lambda d: d["cameras"][1].update(id="cam-1")))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert ": cameras: " in str(exc.value)


def test_several_errors_reported_together(tmp_path):
    p = write(tmp_path, mutated(lambda d: (d.update(bogus=1), _cam0(d).update(target_fps=0))))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "; bogus: Extra inputs" in str(exc.value) and ": cameras.0.target_fps: " in str(exc.value)


def test_config_error_is_a_storelens_error_without_pydantic_chain(tmp_path):
    p = write(tmp_path, mutated(lambda d: d.update(bogus=1)))
    with pytest.raises(StoreLensError) as exc:
        load_config(p)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


# ---------------------------------------------------------------------------------------------
# File-level errors
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as exc:
        load_config(p)
    assert str(p) in str(exc.value)


def test_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("cameras: [\n", id="unclosed_bracket"),
        pytest.param("store:\n  id: s\n bad_indent: 1\n", id="bad_indentation"),
        pytest.param("store: {id: s\ncameras: []\n", id="unclosed_brace"),
        pytest.param("a: b: c\n", id="nested_mapping_on_one_line"),
    ],
)
def test_invalid_yaml(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match="not valid YAML") as exc:
        load_config(p)
    assert str(exc.value).startswith(f"config error in {p}")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty_file"),
        pytest.param("# only a comment\n", id="only_comment"),
        pytest.param("- store\n- cameras\n", id="list"),
        pytest.param("42\n", id="number"),
        pytest.param("just a string\n", id="string"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match="expected a mapping at the top level") as exc:
        load_config(p)
    assert str(p) in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Environment variables
# ---------------------------------------------------------------------------------------------


def test_unknown_env_var_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    p = write(tmp_path, mutated(lambda d: _cam0(d).update(source="${NOPE}/video.mp4")))
    with pytest.raises(ConfigError, match=r"NOPE") as exc:
        load_config(p)
    assert "${NOPE}" in str(exc.value)


def test_unknown_env_var_error_names_file_and_field(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    p = write(tmp_path, mutated(lambda d: _cam0(d).update(source="${NOPE}/video.mp4")))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(p) in str(exc.value) and "cameras.0.source" in str(exc.value)


def test_env_var_default_and_set_value(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    monkeypatch.setenv("CAM_HOST", "10.1.2.3")
    doc = mutated(lambda d: (_cam0(d).update(source="rtsp://${CAM_HOST}/s1"),
                             d["cameras"][1].update(source="rtsp://${NOPE:-fallback.local}/s2")))
    cfg = load_config(write(tmp_path, doc))
    assert cfg.cameras[0].source == "rtsp://10.1.2.3/s1"
    assert cfg.cameras[1].source == "rtsp://fallback.local/s2"


def test_storelens_assets_from_environment(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    monkeypatch.setenv("STORELENS_ASSETS", str(assets))
    doc = mutated(lambda d: (d.update(detector={"weights": "${STORELENS_ASSETS}/models/person.onnx"}),
                             _cam0(d).update(source="${STORELENS_ASSETS}/videos/door.mp4")))
    cfg = load_config(write(tmp_path / "site", doc))
    assert cfg.detector.weights == f"{assets}/models/person.onnx"
    assert cfg.cameras[0].source == str(assets / "videos" / "door.mp4")


def test_storelens_assets_defaults_to_shared_assets_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("STORELENS_ASSETS", raising=False)
    doc = mutated(lambda d: d.update(detector={"weights": "${STORELENS_ASSETS}/models/person.onnx"}))
    cfg = load_config(write(tmp_path, doc))
    assert cfg.detector.weights == f"{assets_dir()}/models/person.onnx"


def test_default_detector_weights_are_expanded(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    monkeypatch.setenv("STORELENS_ASSETS", str(assets))
    cfg = load_config(write(tmp_path, BASE))
    assert "${" not in cfg.detector.weights
    assert cfg.detector.weights.startswith(str(assets))


def test_env_values_are_not_expanded_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIRD", "${NOPE}")
    monkeypatch.delenv("NOPE", raising=False)
    cfg = load_config(write(tmp_path, mutated(lambda d: _cam0(d).update(source="rtsp://h/${WEIRD}"))))
    assert cfg.cameras[0].source == "rtsp://h/${NOPE}"


# ---------------------------------------------------------------------------------------------
# Relative paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expected",
    [
        pytest.param("videos/door.mp4", "{site}/videos/door.mp4", id="relative"),
        pytest.param("./door.mp4", "{site}/door.mp4", id="dot_relative"),
        pytest.param("../shared/door.mp4", "{root}/shared/door.mp4", id="parent_relative"),
        pytest.param("/data/door.mp4", "/data/door.mp4", id="absolute_unchanged"),
        pytest.param("rtsp://cam.local/1", "rtsp://cam.local/1", id="rtsp_url_unchanged"),
        pytest.param("https://example.com/v.mp4", "https://example.com/v.mp4", id="http_url_unchanged"),
        pytest.param("2", "2", id="webcam_index_unchanged"),
    ],
)
def test_relative_source_resolved_against_config_folder(tmp_path, monkeypatch, source, expected):
    site = tmp_path / "configs" / "site-a"
    cfg_path = write(site, mutated(lambda d: _cam0(d).update(source=source)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resolution must not depend on the working directory
    cfg = load_config(cfg_path)
    assert cfg.cameras[0].source == expected.format(site=site.resolve(), root=(tmp_path / "configs").resolve())


def test_relative_config_path_argument(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write(site, mutated(lambda d: _cam0(d).update(source="door.mp4")))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("site/site.yaml")
    assert cfg.cameras[0].source == str((site / "door.mp4").resolve())


def test_relative_weights_resolved_when_the_file_exists(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "local.onnx").write_bytes(b"onnx")
    cfg = load_config(write(tmp_path, mutated(lambda d: d.update(detector={"weights": "models/local.onnx"}))))
    assert cfg.detector.weights == str((tmp_path / "models" / "local.onnx").resolve())


def test_weights_model_name_left_alone(tmp_path):
    cfg = load_config(write(tmp_path, mutated(lambda d: d.update(detector={"weights": "yolo11n.pt"}))))
    assert cfg.detector.weights == "yolo11n.pt"


def test_parse_config_without_base_uses_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(mutated(lambda d: _cam0(d).update(source="door.mp4")))
    assert cfg.cameras[0].source == str((tmp_path / "door.mp4").resolve())


def test_parse_config_does_not_mutate_its_input():
    doc = mutated(lambda d: _cam0(d).update(source="door.mp4"))
    before = copy.deepcopy(doc)
    parse_config(doc, base=pathlib.Path("/srv/site"))
    assert doc == before


# ---------------------------------------------------------------------------------------------
# The tracker (bytereid by default) and the detector confidence it needs
# ---------------------------------------------------------------------------------------------

# (tracker section, detector section, tracker class, detector.confidence); {}: the section is left out
TRACKER_CONFIDENCE_CASES = [
    pytest.param({}, {}, ByteReidTrackerConfig, 0.1, id="default-is-bytereid-down-to-track_low_thresh"),
    pytest.param({"backend": "bytereid"}, {"imgsz": 320}, ByteReidTrackerConfig, 0.1, id="bytereid-named"),
    pytest.param({"track_low_thresh": 0.2}, {}, ByteReidTrackerConfig, 0.2, id="bytereid-own-low-thresh"),
    pytest.param({"backend": "deepsort"}, {}, DeepSortTrackerConfig, 0.35, id="deepsort-keeps-0.35"),
    pytest.param({}, {"confidence": 0.5}, ByteReidTrackerConfig, 0.5, id="bytereid-explicit-above-low-kept"),
    pytest.param({}, {"confidence": 0.35}, ByteReidTrackerConfig, 0.35, id="bytereid-explicit-0.35-kept"),
    pytest.param({}, {"confidence": 0.05}, ByteReidTrackerConfig, 0.05, id="bytereid-explicit-below-low-kept"),
    pytest.param({"backend": "deepsort"}, {"confidence": 0.2}, DeepSortTrackerConfig, 0.2, id="deepsort-explicit"),
]


@pytest.mark.parametrize("tracker, detector, tracker_cls, confidence", TRACKER_CONFIDENCE_CASES)
def test_detector_confidence_follows_the_tracker(tmp_path, tracker, detector, tracker_cls, confidence):
    doc = mutated(lambda d: d.update({k: v for k, v in (("tracker", tracker), ("detector", detector)) if v}))
    cfg = load_config(write(tmp_path, doc))
    assert type(cfg.tracker) is tracker_cls
    assert cfg.detector.confidence == confidence
    # the site editing path (cameras replaced, the whole config validated again) keeps it
    assert with_cameras(cfg, cfg.cameras[:1]).detector.confidence == confidence


def test_detector_object_given_to_the_site_is_not_changed():
    det = UltralyticsDetectorConfig(imgsz=320)
    cfg = SiteConfig(store={"id": "s"}, cameras=[{"id": "c", "source": "rtsp://x/y"}], detector=det)
    assert (cfg.detector.confidence, cfg.detector.imgsz) == (0.1, 320)
    assert det.confidence == 0.35 and "confidence" not in det.model_fields_set


def test_deep_sort_keys_need_backend_deepsort(tmp_path):
    p = write(tmp_path, mutated(lambda d: d.update(tracker={"max_age": 8})))
    with pytest.raises(ConfigError, match=r"tracker\.max_age: Extra inputs are not permitted"):
        load_config(p)
    cfg = load_config(write(tmp_path, mutated(lambda d: d.update(tracker={"backend": "deepsort", "max_age": 8}))))
    assert (cfg.tracker.max_age, cfg.detector.confidence) == (8, 0.35)


@pytest.mark.parametrize("module", ["storelens.config.base", "storelens.config.site"])
def test_config_doctests(module: str) -> None:
    """The config modules' examples (the backend registry, a setting that follows another unless set)."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_followed_setting_stays_unset_and_a_set_one_is_kept() -> None:
    from storelens.config import SiteConfig

    site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
            "faces": {"age_gender": {"child_below_years": 10}}}
    cfg = SiteConfig.model_validate(site)
    agg = cfg.faces.aggregation
    assert agg.child_below_years == 10 and "child_below_years" not in agg.model_fields_set
    again = SiteConfig.model_validate(cfg.model_dump(exclude_unset=True))  # follows again after a round trip
    assert again.faces.aggregation.child_below_years == 10
    site["faces"]["aggregation"] = {"child_below_years": 8}
    assert SiteConfig.model_validate(site).faces.aggregation.child_below_years == 8
