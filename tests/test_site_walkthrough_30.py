"""A new user's walk through the site commands (review 30), each against the real CLI (``storelens.cli.main``),
real SQLite histories and the real API:

1. ``replay`` (and ``audit``, ``export-dataset --from-db``) use the site version in force, not the site file's
   cameras: a line moved by ``site import`` is the line a replay re-derives the crossings with (the stored track
   points of a real sequence, TUD-Campus's ground truth), and the command says which version it uses;
2. ``storelens faces --config FILE`` validates the whole file as a site file (an unknown key anywhere is exit 2
   naming it) and resolves relative model paths against the file's folder, not the working directory;
3. ``site import`` refuses a site file of another store (exit 2, nothing saved) and warns, naming them, of the
   sections that differ from the running site file and that a version does not hold (an exported, edited and
   imported file would otherwise lose the edits without a word);
4. NaN and infinite coordinates of lines and zones are refused: in a site file (the field named), on the command
   line (``--line``/``--zone``, exit 2) and through the API (422, nothing saved).
"""
from __future__ import annotations

import io
import json
import math
import shutil
import sqlite3
import sys

import pytest
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import main
from storelens.config import load_config, parse_config
from storelens.contract import messages as m
from storelens.domain.mot import read_mot
from storelens.errors import ConfigError
from storelens.paths import asset
from storelens.storage import SqlStorage

CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")
CAMPUS_GT = asset("mot", "TUD-Campus", "gt", "gt.txt")
T0 = 1_767_225_600_000
FILE_LINE = {"id": "door", "a": [320, 0], "b": [320, 480]}  # the site file's: the middle of the image
VERSION_LINE = {"id": "door", "a": [100, 0], "b": [100, 480]}  # a version's: moved to the left


def site_doc(line: dict, **extra) -> dict:
    return {"store": {"id": "campus", "timezone": "Europe/Berlin"}, "faces": {"enabled": False},
            "cameras": [{"id": "campus", "source": str(CAMPUS), "start_ts_ms": T0, "lines": [line]}], **extra}


def write(path, doc: dict):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def store_ground_truth(db) -> None:
    """TUD-Campus's ground-truth boxes as the stored track points of a run (25 fps, 640x480)."""
    with SqlStorage(str(db)) as s:
        for frame, boxes in read_mot(CAMPUS_GT, evaluated_only=True).items():
            s.write_tracked_frame(m.TrackedFrame(
                camera_id="campus", seq=frame - 1, ts_ms=T0 + (frame - 1) * 40, width=640, height=480,
                source_frame=frame, tracks=[m.Track(track_id=b.track_id, confidence=1.0, bbox_xyxy=m.BoxXYXY(
                    x1=b.xyxy[0], y1=b.xyxy[1], x2=b.xyxy[2], y2=b.xyxy[3])) for b in boxes]))


def crossings_of(db) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return sorted(c.execute("SELECT line_id, track_id, direction, seq FROM crossings").fetchall())


def replayed(tmp_path, name: str, line: dict) -> list[tuple]:
    """The crossings a replay derives from the ground truth with ``line`` in the site file (no version)."""
    db = tmp_path / f"{name}.db"
    store_ground_truth(db)
    assert main(["replay", "--config", str(write(tmp_path / f"{name}.yaml", site_doc(line))), "--db", str(db),
                 "--json"]) == 0
    return crossings_of(db)


# 1 ---------------------------------------------------------------------------------------------------------------

def test_replay_derives_the_crossings_with_the_line_of_the_version_in_force(tmp_path, capsys) -> None:
    with_file_line, with_version_line = replayed(tmp_path, "file", FILE_LINE), replayed(tmp_path, "moved",
                                                                                         VERSION_LINE)
    assert with_file_line and with_version_line and with_file_line != with_version_line
    db = tmp_path / "h.db"
    store_ground_truth(db)
    site = write(tmp_path / "site.yaml", site_doc(FILE_LINE))
    assert main(["site", "import", str(write(tmp_path / "v.yaml", site_doc(VERSION_LINE))), "--config", str(site),
                 "--db", str(db)]) == 0
    capsys.readouterr()

    assert main(["replay", "--config", str(site), "--db", str(db), "--json"]) == 0

    out, err = capsys.readouterr()
    assert json.loads(out)["cameras"][0]["counts"]["CrossingEvent"] == len(with_version_line)
    assert "site version 1 in force" in err, err
    assert crossings_of(db) == with_version_line


def test_replay_checks_camera_against_the_version_in_force(tmp_path, capsys) -> None:
    """A camera the version added can be replayed by name; the file's camera the version removed cannot."""
    db = tmp_path / "h.db"
    store_ground_truth(db)
    site = write(tmp_path / "site.yaml", site_doc(FILE_LINE))
    renamed = site_doc(VERSION_LINE)
    renamed["cameras"][0]["id"] = "entrance"
    assert main(["site", "import", str(write(tmp_path / "v.yaml", renamed)), "--config", str(site),
                 "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["replay", "--config", str(site), "--db", str(db), "--camera", "campus"]) == 2
    assert "unknown camera(s) ['campus']" in capsys.readouterr().err
    assert main(["replay", "--config", str(site), "--db", str(db), "--camera", "entrance", "--json"]) == 0


def moved_video_history(tmp_path):
    """A history of the ground truth whose site file points its camera at a file that is gone, and whose site version
    1 (imported) points it back at the video: (the database, the site file)."""
    db = tmp_path / "h.db"
    store_ground_truth(db)
    gone = site_doc(FILE_LINE)
    gone["cameras"][0]["source"] = str(tmp_path / "moved-away.mp4")
    site = write(tmp_path / "site.yaml", gone)
    assert main(["site", "import", str(write(tmp_path / "v.yaml", site_doc(FILE_LINE))), "--config", str(site),
                 "--db", str(db)]) == 0
    return db, site


def test_export_dataset_from_db_reads_the_video_of_the_version_in_force(tmp_path, capsys) -> None:
    """The site file's camera points at a file that is gone; the version in force re-pointed it to the video."""
    db, site = moved_video_history(tmp_path)
    capsys.readouterr()

    code = main(["export-dataset", "--from-db", "--out", str(tmp_path / "ds"), "--config", str(site), "--db",
                 str(db), "--every", "10", "--no-face-detector", "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["images"] > 0 and "site version 1 in force" in err


def test_audit_cuts_its_clips_from_the_video_of_the_version_in_force(tmp_path, capsys, monkeypatch) -> None:
    db, site = moved_video_history(tmp_path)
    assert main(["replay", "--config", str(site), "--db", str(db)]) == 0  # the crossings to sample from
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("1 0\n" * 5))

    code = main(["audit", "--out", str(tmp_path / "clips"), "--config", str(site), "--db", str(db), "--clips", "2",
                 "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out[out.index('{"audit_id"'):])  # after the prompts (the answers come from stdin)
    assert doc["n_clips"] == 2 and "site version 1 in force" in err
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 2


# 2 ---------------------------------------------------------------------------------------------------------------

FACE_IMAGE = asset("faces", "identities", "obama", "obama.jpg")


def test_faces_finds_models_relative_to_the_config_file_from_another_folder(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "cfg" / "models").mkdir(parents=True)
    shutil.copy(asset("models", "face_detection_yunet_2026may.onnx"), tmp_path / "cfg" / "models" / "yunet.onnx")
    write(tmp_path / "cfg" / "site.yaml", {"faces": {"detector": {"weights": "models/yunet.onnx"}}})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    code = main(["faces", str(FACE_IMAGE), "--config", "../cfg/site.yaml", "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(json.loads(out)["images"][0]["faces"]) == 1


@pytest.mark.parametrize("doc, field", [
    ({"detector": {"bogus": 1}, "faces": {"enabled": True}}, "detector.bogus"),
    ({"faces": {"detector": {"bogus": 1}}}, "faces.detector.bogus"),
    ({"faces": {}, "countng": {}}, "countng"),
    ({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "bogus": 1}]}, "cameras.0.bogus"),
], ids=["top-level detector", "faces.detector", "misspelt section", "camera"])
def test_faces_refuses_an_unknown_key_anywhere_in_the_file(tmp_path, capsys, doc, field) -> None:
    site = write(tmp_path / "site.yaml", doc)

    assert main(["faces", str(FACE_IMAGE), "--config", str(site)]) == 2

    err = capsys.readouterr().err
    assert f"{field}: Extra inputs are not permitted" in err, err


# 3 ---------------------------------------------------------------------------------------------------------------

def site_versions(db) -> list[int]:
    with sqlite3.connect(db) as c:
        return [v for (v,) in c.execute("SELECT version FROM site_versions ORDER BY version")]


def test_site_import_refuses_a_site_file_of_another_store(tmp_path, capsys) -> None:
    db = tmp_path / "h.db"
    store_ground_truth(db)
    site = write(tmp_path / "site.yaml", site_doc(FILE_LINE))
    other = site_doc(VERSION_LINE)
    other["store"] = {"id": "some-other-store", "timezone": "Asia/Tokyo"}

    assert main(["site", "import", str(write(tmp_path / "other.yaml", other)), "--config", str(site),
                 "--db", str(db)]) == 2

    err = capsys.readouterr().err
    assert "store 'some-other-store', not of 'campus'" in err, err
    assert site_versions(db) == []
    assert main(["site", "import", str(tmp_path / "other.yaml"), "--config", str(site), "--db",
                 str(tmp_path / "new.db")]) == 2
    assert not (tmp_path / "new.db").exists()  # no history made for it either


@pytest.mark.parametrize("edit, named", [
    ({}, []),
    ({"counting": {"hysteresis_px": 40}}, ["counting"]),
    ({"privacy": {"k_min": 1}, "store": {"id": "campus", "timezone": "UTC"}}, ["store.timezone", "privacy"]),
    ({"alerts": {"webhooks": [{"url": "https://example.com/hook"}]}}, ["alerts.webhooks"]),
], ids=["unchanged", "counting", "timezone and privacy", "webhooks"])
def test_site_import_names_the_edited_sections_it_does_not_import(tmp_path, capsys, edit, named) -> None:
    """Exported, edited, imported: the cameras become the version; what else was edited is named, not dropped
    without a word."""
    db = tmp_path / "h.db"
    store_ground_truth(db)
    site = write(tmp_path / "site.yaml", site_doc(FILE_LINE))
    exported = tmp_path / "exported.yaml"
    assert main(["site", "export", "--config", str(site), "--db", str(db), "--out", str(exported)]) == 0
    doc = yaml.safe_load(exported.read_text())
    doc["cameras"][0]["lines"] = [VERSION_LINE]
    write(exported, {**doc, **edit})
    capsys.readouterr()

    assert main(["site", "import", str(exported), "--config", str(site), "--db", str(db)]) == 0

    err = capsys.readouterr().err
    assert site_versions(db) == [1]
    assert load_config(exported).cameras[0].lines[0].a == (100.0, 0.0)
    if named:
        assert f"warning: {', '.join(named)} of {exported} differ from the site file's ({site})" in err, err
        assert "are not imported" in err and "edit the site file and restart" in err
    else:
        assert "warning" not in err, err


# 4 ---------------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


@pytest.mark.parametrize("camera, field", [
    ({"lines": [{"id": "l", "a": [NAN, 0], "b": [10, 10]}]}, "cameras.0.lines.0.a.0"),
    ({"lines": [{"id": "l", "a": [0, 0], "b": [10, INF]}]}, "cameras.0.lines.0.b.1"),
    ({"lines": [{"id": "l", "a": ["nan", 0], "b": [10, 10]}]}, "cameras.0.lines.0.a.0"),
    ({"zones": [{"id": "z", "polygon": [[0, 0], [-INF, 0], [100, 100]]}]}, "cameras.0.zones.0.polygon.1.0"),
    ({"zones": [{"id": "z", "polygon": [[0, 0], [100, 0], [100, NAN], [0, 100]]}]}, "cameras.0.zones.0.polygon.2.1"),
    ({"zones": [{"id": "q", "kind": "queue", "polygon": SQUARE, "service_edge": [[100, 0], [NAN, 100]]}]},
     "cameras.0.zones.0.service_edge"),
    ({"floor": {"points": [[[NAN, 0], [0, 0]], [[1, 0], [1, 0]], [[1, 1], [1, 1]], [[0, 1], [0, 1]]]}},
     "cameras.0.floor.points.0.0.0"),
], ids=["line a nan", "line b inf", "line a 'nan'", "polygon -inf", "polygon nan", "service edge", "floor point"])
def test_a_site_file_with_a_non_finite_coordinate_is_refused_naming_it(tmp_path, camera, field) -> None:
    doc = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", **camera}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    assert field in str(exc.value) and "finite number" in str(exc.value), exc.value
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(doc))  # YAML's own spelling: .nan, .inf, -.inf
    assert "nan" in site.read_text() or "inf" in site.read_text()
    with pytest.raises(ConfigError, match="finite number"):
        load_config(site)


@pytest.mark.parametrize("argv", [
    ["count", str(CAMPUS), "--line", "nan,0,10,10"],
    ["count", str(CAMPUS), "--line", "door=0,0,inf,10"],
    ["count", str(CAMPUS), "--line=-inf,0,10,10"],
    ["zones", str(CAMPUS), "--zone", "0,0,100,0,100,NaN"],
    ["zones", str(CAMPUS), "--zone", "z=0,0,infinity,0,100,100"],
], ids=["line nan", "line inf", "line -inf", "zone NaN", "zone infinity"])
def test_the_command_line_refuses_a_non_finite_coordinate(capsys, argv) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: bad {argv[2].split('=')[0]}") and "finite numbers" in err, err


@pytest.mark.parametrize("path, body, loc", [
    ("lines/door", '{"id": "door", "a": [NaN, 0], "b": [640, 300]}', ["body", "a", 0]),
    ("lines/door", '{"id": "door", "a": [0, 300], "b": [Infinity, 300]}', ["body", "b", 0]),
    ("zones/z", '{"id": "z", "polygon": [[0, 0], [100, 0], [-Infinity, 100]]}', ["body", "polygon", 2, 0]),
], ids=["line NaN", "line Infinity", "zone -Infinity"])
def test_the_api_refuses_a_non_finite_coordinate(tmp_path, path, body, loc) -> None:
    config = parse_config(site_doc({"id": "door", "a": [0, 300], "b": [640, 300]}))
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:
        client = signed_in_client(create_app(config, storage))
        r = client.put(f"/v1/site/cameras/campus/{path}", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == loc and error["msg"] == "Input should be a finite number", error
        assert site_versions(tmp_path / "h.db") == []  # nothing saved
        site = client.get("/v1/site").json()
        line = site["cameras"][0]["lines"][0]
        assert all(math.isfinite(v) for v in (*line["a"], *line["b"]))
    finally:
        storage.close()
