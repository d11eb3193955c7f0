"""Fixes of a new-user walkthrough of the command line, each run for real (``storelens.cli.main``, real files, a real
SQLite history, the real detector and face models on clips made from the shared assets):

1. ``users create ""`` (an unset shell variable) is refused: it no longer falls to the admin's default name
   (which demoted the admin and reset its password); ``delete`` and an explicit ``create-admin ""`` too;
2. the one-video commands (``count``, ``heatmap``) with ``--config`` of a site with faces on leave the site's
   customer gallery alone (a gallery in memory; no file made at ``<storage.path>.gallery.db``);
3. ``count --json`` with faces on prints one JSON document (the faces summary inside it);
4. a truncated video is told: a ``warning:`` line with the frames read of those announced (exit 0), while a file
   with no readable frame still exits 2;
5. outputs that cannot be written fail up front, naming the option (``site export --out``, ``audit --out``,
   ``export-dataset --out``), and a POS CSV that is not UTF-8 names its line;
6. a failed ``users create-admin`` (short password) or ``staff enroll`` (no face) leaves no new database behind,
   and the ``users`` commands (which sign no session) do not warn about the JWT key.
"""
from __future__ import annotations

import io
import json
import logging
import pathlib
import sys

import cv2
import numpy as np
import pytest
import yaml

from storelens.backends.face_video import write_visit_video
from storelens.backends.video import read_file_frames
from storelens.cli import main
from storelens.paths import asset
from storelens.storage import SqlStorage
from storelens.storage.auth import list_users

VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")
PASSWORD = "correct horse battery"
CLIP_FRAMES = 16


def mjpeg_clip(clip: pathlib.Path) -> pathlib.Path:
    """``clip``: the first :data:`CLIP_FRAMES` frames of TUD-Campus as an MJPEG AVI of 320x240 at 25 fps (each
    frame one ``00dc`` chunk: easy to damage or cut)."""
    cap = cv2.VideoCapture(str(VIDEO))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    for _ in range(CLIP_FRAMES):
        ok, img = cap.read()
        assert ok
        writer.write(cv2.resize(img, (320, 240)))
    writer.release()
    cap.release()
    return clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A 16-frame MJPEG AVI of TUD-Campus (320x240), its first half (the index and the second half cut off),
    a copy cut just after its header (no frame), and a clip of a face (obama) for the faces runs."""
    tmp = tmp_path_factory.mktemp("clips")
    clip = mjpeg_clip(tmp / "clip.avi")
    data = clip.read_bytes()
    (tmp / "half.avi").write_bytes(data[:len(data) // 2])
    (tmp / "no_frame.avi").write_bytes(data[:data.index(b"movi") + 4])
    face = write_visit_video([asset("faces", "identities", "obama", "obama.jpg")], tmp / "face.avi",
                             size_wh=(640, 360), hold_frames=8, gap_frames=2)
    return {"clip": clip, "half": tmp / "half.avi", "no_frame": tmp / "no_frame.avi", "face": face}


def run(capfd, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """``storelens ARGV`` in this process: (exit code, stdout, stderr); the logs' stream too (capfd)."""
    old = sys.stdin
    sys.stdin = io.StringIO(stdin) if stdin is not None else old
    try:
        code = main(list(argv))
    finally:
        sys.stdin = old
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture
def admin_db(tmp_path, capfd, monkeypatch) -> pathlib.Path:
    """A new history with the admin ``admin`` (``users create-admin``, password from the environment)."""
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
    db = tmp_path / "store.db"
    code, out, err = run(capfd, "users", "create-admin", "--db", str(db))
    assert code == 0, err
    monkeypatch.delenv("STORELENS_ADMIN_PASSWORD")
    return db


def users(db: pathlib.Path) -> dict[str, str]:
    s = SqlStorage(str(db))
    try:
        return {u["username"]: u["role"] for u in list_users(s)}
    finally:
        s.close()


# 1 -- an empty user name is refused, never the admin's --------------------------------------------------------


@pytest.mark.parametrize("argv, named", [
    (["users", "create", "", "--role", "viewer"], "users create: ''"),
    (["users", "create", "bad name", "--role", "viewer"], "users create: 'bad name'"),
    (["users", "delete", ""], "users delete: ''"),
    (["users", "create-admin", ""], "users create-admin: ''"),  # given, though empty: not the default name
])
def test_users_empty_or_bad_name_is_refused_and_the_admin_stays(capfd, admin_db, argv, named):
    code, out, err = run(capfd, *argv, "--db", str(admin_db), stdin="another password\n")
    assert code == 2, (out, err)
    assert f"error: {named} is not a user name" in err
    assert users(admin_db) == {"admin": "admin"}
    code, out, _ = run(capfd, "users", "list", "--db", str(admin_db))
    assert code == 0 and out.split() == ["admin", "admin"]


def test_users_create_with_a_name_still_works(capfd, admin_db):
    code, out, err = run(capfd, "users", "create", "till.3", "--role", "viewer", "--db", str(admin_db),
                         stdin="viewer password\n")
    assert code == 0, err
    assert "created viewer 'till.3'" in out
    assert users(admin_db) == {"admin": "admin", "till.3": "viewer"}


# 2 + 3 -- one-video commands with a faces-on site: no gallery file, JSON stays JSON ----------------------------


@pytest.fixture(scope="module")
def faces_site(clips, tmp_path_factory) -> dict[str, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("site")
    db = tmp / "prod.db"
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"store": {"id": "s"}, "cameras": [{"id": "door", "source": str(clips["face"])}],
                                    "faces": {"enabled": True}, "storage": {"path": str(db)}}))
    return {"site": site, "db": db, "gallery": tmp / "prod.db.gallery.db"}


@pytest.fixture(scope="module")
def faces_count(clips, faces_site) -> dict:
    """``count --json --config <faces-on site>`` on the face clip (run once for the tests below)."""
    capture = io.StringIO()
    old = sys.stdout
    sys.stdout = capture
    try:
        code = main(["count", str(clips["face"]), "--line", "320,0,320,360", "--json",
                     "--config", str(faces_site["site"])])
    finally:
        sys.stdout = old
    return {"code": code, "stdout": capture.getvalue()}


@pytest.mark.slow
def test_count_with_faces_on_leaves_the_sites_gallery_alone(faces_count, faces_site):
    assert faces_count["code"] == 0
    assert json.loads(faces_count["stdout"])["faces"]["reid_new"] >= 1  # a face was matched: in memory
    assert not faces_site["gallery"].exists()
    assert not faces_site["db"].exists()  # nor a history


@pytest.mark.slow
def test_count_json_with_faces_on_is_one_json_document(faces_count):
    doc = json.loads(faces_count["stdout"])  # was: the JSON line, then the "faces: ..." text line
    assert doc["frames"] > 0 and [x["id"] for x in doc["lines"]] == ["line-1"]
    assert doc["faces"]["attributes_faces"] >= 1


@pytest.mark.slow
def test_heatmap_with_faces_on_leaves_the_sites_gallery_alone(capfd, clips, faces_site, tmp_path):
    code, out, err = run(capfd, "heatmap", str(clips["face"]), "--out", str(tmp_path / "hm.png"),
                         "--config", str(faces_site["site"]))
    assert code == 0, err
    assert (tmp_path / "hm.png").exists()
    assert not faces_site["gallery"].exists()


# 4 -- a truncated video is told ------------------------------------------------------------------------------


@pytest.mark.slow
def test_count_on_a_truncated_video_warns_with_frames_read(capfd, clips):
    code, out, err = run(capfd, "count", str(clips["half"]), "--line", "160,0,160,240", "--json")
    assert code == 0, err
    frames = json.loads(out)["frames"]
    assert 0 < frames < CLIP_FRAMES
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert warning == [f"warning: {clips['half']}: only {frames} of its {CLIP_FRAMES} frames were read (the file "
                       f"is truncated or damaged): the results cover those frames"]


def test_a_truncated_video_is_logged_as_a_warning_with_its_counts(clips, caplog):
    with caplog.at_level(logging.WARNING, logger="storelens.backends.video"):
        frames = list(read_file_frames(str(clips["half"])))
    assert [(r.levelno, r.frames, r.frame_count) for r in caplog.records
            if r.msg == "video ended before its frame count"] == [(logging.WARNING, len(frames), CLIP_FRAMES)]


@pytest.mark.slow
def test_count_on_a_whole_video_has_no_warning(capfd, clips):
    code, out, err = run(capfd, "count", str(clips["clip"]), "--line", "160,0,160,240", "--json")
    assert code == 0, err
    assert json.loads(out)["frames"] == CLIP_FRAMES
    assert "warning" not in err


def test_count_on_a_video_with_no_readable_frame_exits_2(capfd, clips):
    code, out, err = run(capfd, "count", str(clips["no_frame"]), "--line", "160,0,160,240", "--json")
    assert code == 2 and out == ""
    assert "error: " in err and "warning:" not in err


# 5 -- outputs checked up front, a CSV that is not UTF-8 -------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["site", "export", "--out", "{missing}/x.yaml"], "--out {missing}/x.yaml: output folder does not exist"),
    (["site", "export", "--out", "{tmp}"], "--out {tmp}: cannot write this file"),
    (["audit", "--out", "{file}"], "--out {file}: not a folder ({file} is a file)"),
    (["audit", "--out", "{file}/clips"], "--out {file}/clips: not a folder ({file} is a file)"),
    (["audit", "--out", "/proc/nope"], "--out /proc/nope: cannot write files there"),
    (["export-dataset", "--from-db", "--out", "{file}"], "--out {file}: not a folder ({file} is a file)"),
    (["export-dataset", "{video}", "--out", "{file}"], "--out {file}: not a folder ({file} is a file)"),
])
def test_unwritable_outputs_fail_up_front_naming_the_option(capfd, admin_db, tmp_path, argv, message):
    names = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "file": str(tmp_path / "a_file"),
             "video": str(VIDEO)}
    (tmp_path / "a_file").write_text("kept\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capfd, *[a.format(**names) for a in argv], "--db", str(admin_db))
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: " + message.format(**names)), err
    assert "unexpected" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made, the file kept
    assert (tmp_path / "a_file").read_text() == "kept\n"


def test_pos_import_of_a_latin1_csv_names_the_line(capfd, admin_db, tmp_path):
    csv = tmp_path / "sales.csv"
    csv.write_bytes("transaction_id,register_id,time,amount,items\n"
                    "t1,r1,2026-01-01T10:00:00+01:00,12.50,2\n"
                    "t2,r1,2026-01-01T10:05:00+01:00,3.00,1 caf\u00e9\n".encode("latin-1"))
    code, out, err = run(capfd, "pos", "import", str(csv), "--db", str(admin_db))
    assert code == 2, err
    assert f"error: {csv}: not UTF-8 (line 3)" in err


# 6 -- a failed set-up leaves no database; no JWT warning from `users` ---------------------------------------------


def test_create_admin_with_a_short_password_leaves_no_database(capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", "short")
    db = tmp_path / "new.db"
    code, out, err = run(capfd, "users", "create-admin", "--db", str(db))
    assert code == 2 and "error: password: at least" in err
    assert list(tmp_path.iterdir()) == []
    code, out, err = run(capfd, "users", "list", "--db", str(db))  # the typo guard still holds
    assert code == 2 and "no history database" in err


@pytest.mark.slow
def test_staff_enroll_without_a_face_leaves_no_database(capfd, tmp_path):
    grey = tmp_path / "wall.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    db = tmp_path / "new.db"
    code, out, err = run(capfd, "staff", "enroll", "--id", "s1", "--name", "Sam", "--consent-by", "manager",
                         str(grey), "--db", str(db))
    assert code == 2 and "no face found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wall.png"]


class Records(logging.Handler):
    """The records of one logger (``main`` sets the root's handlers up anew: caplog's would go)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_users_commands_do_not_warn_about_the_jwt_key(capfd, admin_db, monkeypatch):
    monkeypatch.delenv("STORELENS_JWT_SECRET", raising=False)
    logger, seen = logging.getLogger("storelens.api.security"), Records()
    logger.addHandler(seen)
    try:
        for argv in (["users", "list"], ["users", "api-key", "till 3", "--role", "viewer"]):
            code, out, err = run(capfd, *argv, "--db", str(admin_db))
            assert code == 0, err
            assert "JWT" not in err
    finally:
        logger.removeHandler(seen)
    assert [r.getMessage() for r in seen.records if "JWT" in r.getMessage()] == []
