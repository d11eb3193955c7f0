"""Follow-ups of a review of the command line and the site config (issue 9), each run for real (``storelens.cli.main``,
real files, a real SQLite history or the test stack's PostgreSQL, the real detector on a clip of the shared assets):

1. a deep-sort site whose embedder has no ``input_wh`` (``omz-reid-openvino``, ``mobilenet-torch``) is rebuilt
   (``with_cameras``: site versions, ``site import``): the site as written out no longer says the default
   ``embedder_input_wh`` it then rejected; a non-default one is still an error;
2. ``storelens faces --config FILE`` needs no ``${VAR}`` outside the file's ``faces`` section (the k8s site without
   its database variables), and still refuses an unknown key anywhere;
3. a command over the history whose ``--config`` file differs from the site version in force (``replay``) names on
   stderr what of the file is not used;
4. a truncated video is told once on stderr whatever the log level, with the frames actually read (a skipped
   unreadable frame not counted): the reader tells its caller (``on_short``) instead of a caught log record;
5. ``site import`` compares the imported file with the site file as written: not with the ``--db`` it imports
   into, nor a copy's relative paths resolved in another folder;
6. a replay of a camera whose source is an unset ``${VAR}`` (liveness unknown) leaves its open rows open and says
   why; a template that shows the scheme (``rtsp://u:${PW}@h/``) is live;
7. ``--line``/``--zone`` coordinates are checked by the config's own point type (one rule), and the history
   commands' SQLite-file rule is one helper (behaviour kept: these pass before and after).
"""
from __future__ import annotations

import logging
import pathlib
import shutil
import struct

import pytest
import yaml

from storelens.backends.video import SHORT_VIDEO_MESSAGE, read_file_frames
from storelens.cli import parse_line, parse_zone
from storelens.config import parse_config, with_cameras
from storelens.config.faces import FacesConfig
from storelens.config.site import site_document
from storelens.errors import ConfigError
from storelens.runtime.still_faces import load_faces_config
from storelens.storage.replay import replay
from test_replay_cli_review_9 import site_doc, walk
from test_replay_gaps_30 import LAST, derived
from test_replay_cli_review_9 import T0
from test_cli_walkthrough_30 import CLIP_FRAMES, mjpeg_clip
from test_cli_walkthrough_30 import run as run_cli

REPO = pathlib.Path(__file__).parents[1]


def run(capfd, *argv: str) -> tuple[int, str, str]:
    """``storelens ARGV`` in this process with an empty stdin: (exit code, stdout, stderr, the logs' stream too)."""
    return run_cli(capfd, *argv, stdin="")


# 1 ---------------------------------------------------------------------------------------------------------------

def deepsort_site(embedder: str, **tracker) -> dict:
    return {"store": {"id": "s2"}, "cameras": [{"id": "c1", "source": "videos/x.mp4"}],
            "tracker": {"backend": "deepsort", "embedder": embedder, **tracker}}


@pytest.mark.parametrize("embedder", ["omz-reid-openvino", "mobilenet-torch", "mobilenet-openvino"])
def test_a_deepsort_site_is_rebuilt_with_new_cameras_whatever_its_embedder(embedder) -> None:
    cfg = parse_config(deepsort_site(embedder))
    moved = with_cameras(cfg, [{"id": "c", "source": "y.mp4"}])  # before: tracker.embedder_input_wh: ... has no
    assert [c.id for c in moved.cameras] == ["c"] and moved.tracker == cfg.tracker
    written = site_document(cfg)["tracker"]
    assert ("embedder_input_wh" in written) == (embedder == "mobilenet-openvino")
    # the site as an older writer said it (every key, the default crop size) loads too
    full = deepsort_site(embedder, embedder_input_wh=[64, 128])
    assert parse_config(full).tracker == cfg.tracker
    # and as `site export` writes it (defaults left out): still the deep-sort tracker (before: backend left out)
    assert parse_config(site_document(cfg, exclude_defaults=True)).tracker == cfg.tracker
    plain = parse_config(deepsort_site(embedder) | {"tracker": {"backend": "deepsort"}})
    assert parse_config(site_document(plain, exclude_defaults=True)).tracker.backend == "deepsort"


@pytest.mark.parametrize("embedder", ["omz-reid-openvino", "mobilenet-torch"])
def test_a_non_default_embedder_key_the_embedder_has_not_is_still_an_error(embedder) -> None:
    with pytest.raises(ConfigError, match=rf"tracker\.embedder_input_wh: embedder '{embedder}' has no 'input_wh'"):
        parse_config(deepsort_site(embedder, embedder_input_wh=[96, 192]))


def test_storelens_site_import_of_a_deepsort_site_with_the_omz_embedder(tmp_path, capfd) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(deepsort_site("omz-reid-openvino") | {"storage": {"path": "hist.db"}}))
    code, out, err = run(capfd, "site", "import", str(site), "--config", str(site))
    assert code == 0, err
    assert "site version 1" in out
    exported = tmp_path / "exported.yaml"
    code, _, err = run(capfd, "site", "export", "--config", str(site), "--out", str(exported))
    assert code == 0, err
    assert parse_config(yaml.safe_load(exported.read_text())).tracker.embedder == "omz-reid-openvino"


# 2 ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def no_deployment_env(monkeypatch) -> None:
    """The k8s site's variables unset (but STORELENS_ASSETS): a laptop with a copy of the ConfigMap."""
    import os

    for name in list(os.environ):
        if name.startswith(("STORELENS_DB_", "STORELENS_KAFKA_", "STORELENS_REDIS_", "STORELENS_CAMERA_")):
            monkeypatch.delenv(name)


def test_faces_config_of_the_k8s_site_needs_no_database_variable(no_deployment_env) -> None:
    cfg = load_faces_config(REPO / "k8s" / "base" / "site.yaml")  # before: storage.dsn: STORELENS_DB_HOST not set
    assert isinstance(cfg, FacesConfig)
    site = yaml.safe_load((REPO / "k8s" / "base" / "site.yaml").read_text())
    assert cfg == FacesConfig.model_validate(site.get("faces") or {})


@pytest.mark.parametrize("doc, error", [
    ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
    ({"storage": {"backend": "postgres", "dsn": "postgresql://${STORELENS_DB_HOST}/x", "bogus": 1}},
     "storage.bogus: Extra inputs are not permitted"),
    ({"faces": {"quality": {"bogus": 1}}}, "faces.quality.bogus: Extra inputs are not permitted"),
    ({"faces": {"detector": {"weights": "${K3_UNSET_FACE_WEIGHTS}"}}},
     "faces.detector.weights: environment variable K3_UNSET_FACE_WEIGHTS is not set"),
    ({"faces": {"quality": {"min_size_px": "big"}}}, "faces.quality.min_size_px"),
], ids=["top-level", "storage", "faces", "faces-variable", "faces-value"])
def test_faces_config_still_refuses_an_unknown_key_anywhere_and_a_bad_faces_section(
        tmp_path, no_deployment_env, doc, error) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=error):
        load_faces_config(site)


def test_faces_config_paths_are_relative_to_the_file_and_unset_variables_elsewhere_stay(
        tmp_path, no_deployment_env) -> None:
    site = tmp_path / "conf" / "site.yaml"
    site.parent.mkdir()
    site.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "${STORELENS_KAFKA_BOOTSTRAP}"},
                                    "faces": {"detector": {"weights": "models/yunet.onnx"}}}))
    assert load_faces_config(site).detector.weights == str(site.parent / "models" / "yunet.onnx")


# 3 ---------------------------------------------------------------------------------------------------------------

def line_site(y: float) -> dict:
    return {"store": {"id": "s1"}, "storage": {"backend": "sqlite", "path": "hist.db"},
            "cameras": [{"id": "c1", "source": "videos/x.mp4",
                         "lines": [{"id": "d", "a": [0, y], "b": [100, y]}]}]}


def test_replay_names_what_of_its_config_file_differs_from_the_version_in_force(tmp_path, capfd) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(line_site(10)))
    code, _, err = run(capfd, "site", "import", str(site), "--config", str(site))  # version 1: y=10
    assert code == 0, err
    site.write_text(yaml.safe_dump(line_site(50)))  # the file moved the line, not imported
    code, _, err = run(capfd, "replay", "--config", str(site))
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1, err
    assert "camera 'c1': line 'd'" in warning[0] and "site version 1" in warning[0], warning
    assert "storelens site import" in warning[0]
    site.write_text(yaml.safe_dump(line_site(10)))  # the same as the version: only the note
    code, _, err = run(capfd, "replay", "--config", str(site))
    assert code == 0 and "note: site version 1 in force" in err and "warning:" not in err, err


# 4 ---------------------------------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def damaged_clip(tmp_path_factory) -> tuple[pathlib.Path, int]:
    """A 16-frame MJPEG AVI of TUD-Campus (320x240) whose 5th frame is blanked (unreadable, skipped) and whose
    end is cut off after its 11th frame; and the number of frames a reader gets from it."""
    tmp = tmp_path_factory.mktemp("damaged")
    data = bytearray(mjpeg_clip(tmp / "clip.avi").read_bytes())
    chunks, i = [], data.index(b"movi")
    while (i := data.find(b"00dc", i)) >= 0 and len(chunks) < CLIP_FRAMES:
        chunks.append(i)
        i += 4
    size = struct.unpack("<I", data[chunks[4] + 4:chunks[4] + 8])[0]
    data[chunks[4] + 8:chunks[4] + 8 + size] = bytes(size)  # frame 5: no JPEG left
    damaged = tmp / "damaged.avi"
    damaged.write_bytes(bytes(data[:chunks[11] + 100]))  # cut inside frame 12
    read = sum(1 for _ in read_file_frames(str(damaged)))
    assert 0 < read < 11  # the blank frame is not among them
    return damaged, read


def test_the_reader_tells_its_caller_the_frames_it_read_of_a_short_file(damaged_clip, caplog) -> None:
    path, read = damaged_clip
    told: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger="storelens.backends.video"):
        frames = list(read_file_frames(str(path), on_short=lambda n, count: told.append((n, count))))
    assert told == [(len(frames), CLIP_FRAMES)] and len(frames) == read  # before: the blank frame counted too
    assert SHORT_VIDEO_MESSAGE not in caplog.text  # told, not logged
    with caplog.at_level(logging.INFO, logger="storelens.backends.video"):
        list(read_file_frames(str(path)))  # no one to tell: logged
    [record] = [r for r in caplog.records if r.msg == SHORT_VIDEO_MESSAGE]
    assert record.levelno == logging.WARNING and record.frames == read


@pytest.mark.parametrize("level", ["ERROR", "WARNING", "INFO"])
def test_a_short_video_is_told_once_on_stderr_whatever_the_log_level(damaged_clip, capfd, level) -> None:
    path, read = damaged_clip
    code, out, err = run(capfd, "--log-level", level, "count", str(path), "--line", "0,120,320,120", "--json")
    assert code == 0, err
    told = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert told == [f"warning: {path}: only {read} of its {CLIP_FRAMES} frames were read (the file is truncated or "
                    "damaged): the results cover those frames"], err
    assert SHORT_VIDEO_MESSAGE not in err  # not also as a log line


# 5 ---------------------------------------------------------------------------------------------------------------

def store_site() -> dict:
    return {"store": {"id": "s1"}, "storage": {"backend": "sqlite", "path": "hist.db"},
            "faces": {"detector": {"weights": "models/yunet.onnx"}},  # a relative path besides storage's
            "cameras": [{"id": "c1", "source": "videos/x.mp4",
                         "lines": [{"id": "d", "a": [0, 10], "b": [100, 10]}]}]}


def test_site_import_compares_the_file_with_the_site_file_as_written(tmp_path, capfd) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    a.mkdir()
    c.mkdir()
    site = a / "site.yaml"
    site.write_text(yaml.safe_dump(store_site()))
    # the site file itself into another database (--db): before, "storage of ... differ"
    code, _, err = run(capfd, "site", "import", str(site), "--config", str(site), "--db", str(tmp_path / "other.db"))
    assert code == 0 and "differ" not in err, err
    # an unchanged copy in another folder (its hist.db and models/ resolve there): before, "storage, faces differ"
    shutil.copy(site, c / "edited.yaml")
    code, _, err = run(capfd, "site", "import", str(c / "edited.yaml"), "--config", str(site))
    assert code == 0 and "differ" not in err, err
    # what does differ is still said
    edited = store_site() | {"counting": {"hysteresis_px": 40}}
    (c / "edited.yaml").write_text(yaml.safe_dump(edited))
    code, _, err = run(capfd, "site", "import", str(c / "edited.yaml"), "--config", str(site))
    assert code == 0, err
    assert "warning: counting of" in err and "differ from the site file's" in err, err


# 6 ---------------------------------------------------------------------------------------------------------------

def templated_camera(source: str):
    doc = site_doc()
    doc["cameras"][0]["source"] = source
    return parse_config(doc | {"groups": {"window_ms": 5_000}}, open_cameras=False)  # as the history commands read


def test_a_replay_leaves_open_a_camera_whose_unset_source_variable_hides_whether_it_is_live(
        history_store, monkeypatch, caplog) -> None:
    monkeypatch.delenv("K3_UNSET_URL", raising=False)
    cfg = templated_camera("${K3_UNSET_URL}")
    assert cfg.cameras[0].source.endswith("${K3_UNSET_URL}")  # left as written (resolved as a relative path)
    walk(history_store, 1, T0, 0)
    with caplog.at_level(logging.WARNING, logger="storelens.storage.replay"):
        [res] = replay(cfg, history_store, now_ms=LAST + 2 * 3_600_000)
    assert res.stopped_at_ms is None
    assert "K3_UNSET_URL" in (res.note or "") and "is not set" in res.note and "stays open" in res.note, res.note
    assert "K3_UNSET_URL" in caplog.text  # before: silently taken for a file camera
    rows = derived(history_store)
    assert [r for r in rows["zone_events"] if r[5] == "exit"] == [] and rows["track_summaries"] == []


def test_a_replay_takes_a_template_that_shows_its_scheme_for_a_live_camera(history_store, monkeypatch) -> None:
    monkeypatch.delenv("K3_UNSET_PW", raising=False)
    cfg = templated_camera("rtsp://u:${K3_UNSET_PW}@cam/1")
    walk(history_store, 1, T0, 0)
    [res] = replay(cfg, history_store, now_ms=LAST + 2 * 3_600_000)
    assert res.stopped_at_ms == LAST and res.note is None


# 7 ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ok", [
    ("0,1,2,3", True), ("d=-5,1e3,2,3", True), ("nan,0,1,1", False), ("0,0,inf,1", False), ("0,0,1,-Infinity", False),
])
def test_line_coordinates_follow_the_config_point_rule(text, ok) -> None:
    if ok:
        line = parse_line(text, 1)
        parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "lines": [line]}]})
    else:
        with pytest.raises(ConfigError, match=r"bad --line .*finite numbers"):
            parse_line(text, 1)


@pytest.mark.parametrize("text, error", [
    ("0,0,100,0,100,100", None), ("0,0,100,0,100,NaN", "finite numbers"), ("0,0,100,0,100", "even count"),
])
def test_zone_coordinates_follow_the_config_point_rule(text, error) -> None:
    if error is None:
        zone = parse_zone(text, 1)
        parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "zones": [zone]}]})
    else:
        with pytest.raises(ConfigError, match=error):
            parse_zone(text, 1)


@pytest.mark.parametrize("db, code, note", [
    ("missing.db", 2, None), (":memory:", 0, None),
])
def test_the_history_commands_sqlite_file_rule(tmp_path, capfd, monkeypatch, db, code, note) -> None:
    monkeypatch.chdir(tmp_path)
    got, out, err = run(capfd, "users", "list", "--db", db)
    assert got == code, err
    if code == 2:
        assert "no history database at missing.db (--db)" in err and not (tmp_path / "missing.db").exists()
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(line_site(10)))
    got, _, err = run(capfd, "site", "import", str(site), "--config", str(site), "--db", str(tmp_path / "new.db"))
    assert got == 0 and f"note: creating a new history database at {tmp_path / 'new.db'}" in err, err
