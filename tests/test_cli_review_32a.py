"""Review of the CLI and config loading (issue 9 follow-ups, batch 32a).

1. ``export-dataset SOURCE --config`` on a site with ``faces.enabled`` (the bundled example) exports: the run has no
   faces stage, and neither reads nor writes the site's gallery;
2. a PostgreSQL URL whose password is not percent-encoded is refused without showing it (libpq would read it as
   host/port/database and its errors show them); ``sslpassword`` is masked; a percent-encoded password connects;
3. a site file or an ``audit --answers`` CSV that is not UTF-8 is an error naming the file and the line;
4. ``--db`` puts the face gallery beside it, not at the site's ``faces.reid.sqlite_path`` (its customers);
5. ``$STORELENS_CONFIG`` is the site of every command without ``--config``; ``db current`` exits 1 when the
   database is newer than this release.

Real SQLite files and the test stack's PostgreSQL; the embedded pipeline on 20 frames of a clip of the assets.
"""
from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import urllib.parse

import pytest
import yaml

from storelens.cli import EXAMPLE_CONFIG, _demo_config, _history_config, build_parser, main
from storelens.config import load_config, parse_config
from storelens.errors import ConfigError, StorageError
from storelens.paths import asset
from storelens.stages.faces import gallery_sqlite_path
from storelens.storage import dialects, redact_dsn
from storelens.storage.history import SqlStorage
from storelens.storage.migrations import revisions

CLIP = asset("mot", "TUD-Campus", "TUD-Campus.mp4")


def short_clip(tmp_path: pathlib.Path, frames: int = 20) -> pathlib.Path:
    """The first ``frames`` frames of the TUD-Campus clip (real footage, a fast run)."""
    import cv2

    cap = cv2.VideoCapture(str(CLIP))
    path = tmp_path / "short.mp4"
    writer = None
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS) or 25,
                                     (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def write_site(tmp_path: pathlib.Path, **sections) -> pathlib.Path:
    doc = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "unused.mp4"}], **sections}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# 1 -- export-dataset SOURCE --config with faces.enabled ------------------------------------------------------------

def test_export_dataset_of_a_clip_with_a_faces_site_exports_and_leaves_its_gallery(tmp_path, capsys):
    doc = yaml.safe_load(EXAMPLE_CONFIG.read_text())  # the bundled example: faces.enabled
    assert doc["faces"]["enabled"] is True
    doc["storage"] = {"path": str(tmp_path / "h.db")}
    doc["faces"]["reid"]["sqlite_path"] = str(tmp_path / "customers.db")
    site = tmp_path / "demo.yaml"
    site.write_text(yaml.safe_dump(doc))
    out = tmp_path / "ds"
    rc = main(["export-dataset", str(short_clip(tmp_path)), "--out", str(out), "--config", str(site), "--every", "5",
               "--min-length", "3", "--no-face-detector", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["images"] == len(list(out.glob("images/*/*.jpg"))) > 0
    assert not (tmp_path / "customers.db").exists() and not (tmp_path / "h.db").exists()


# 2 -- storage.dsn: an unencoded password ----------------------------------------------------------------------------

SECRET_DSNS = [
    "postgresql://u:SEC/RET@h:5432/db",
    "postgresql://u:SEC@RET@h/db",
    "postgresql://u:SEC?RET@h/db",
    "postgresql://u:SEC#RET@h/db",
    "postgres://u:SEC%RET@h/db",
    "postgresql+psycopg://u:SEC/RET@h/db",
]


@pytest.mark.parametrize("dsn", SECRET_DSNS)
def test_a_dsn_with_an_unencoded_password_is_refused_without_showing_it(dsn, tmp_path, monkeypatch):
    site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
            "storage": {"backend": "postgres", "dsn": dsn}}
    with pytest.raises(ConfigError, match="storage.dsn: .*percent-encoded") as err:
        parse_config(site)
    assert "SEC" not in str(err.value) and "RET" not in str(err.value)
    # checked after ${VAR} expansion, from a file too
    monkeypatch.setenv("REVIEW32A_DB_PASSWORD", dsn.split("//u:", 1)[1].rsplit("@h", 1)[0])
    path = write_site(tmp_path, storage={"backend": "postgres",
                                         "dsn": dsn.split("//")[0] + "//u:${REVIEW32A_DB_PASSWORD}@h/db"})
    with pytest.raises(ConfigError, match="percent-encoded") as err:
        load_config(path)
    assert "SEC" not in str(err.value) and "RET" not in str(err.value)
    # a store opened on it directly: the same refusal, naming only the host
    with pytest.raises(StorageError, match=r"\(postgresql://h\)|\(postgres://h\)|\(postgresql\+psycopg://h\)") as err:
        SqlStorage(dsn)
    assert "SEC" not in str(err.value) and "RET" not in str(err.value)


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://u:p@h/db?sslpassword=K", "user=u password=*** dbname=db host=h sslpassword=***"),
    ("host=h password=P sslpassword=K", "password=*** host=h sslpassword=***"),
    ("postgresql://u:SEC/RET@db:5432/x", "postgresql://db"),
    ("postgresql://u:SEC?RET@[::1]:5432/x", "postgresql://[::1]"),
    ("postgresql://u:SECRET@h:5432/x?bogus=1", "postgresql://h"),  # libpq refuses it: scheme and host only
    ("postgresql://u:p%2Fq@h/db", "user=u password=*** dbname=db host=h"),
])
def test_redact_dsn_masks_every_password(dsn, shown):
    assert redact_dsn(dsn) == shown


def test_a_percent_encoded_password_connects_to_postgresql():
    plain = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
    url = urllib.parse.urlsplit(plain)
    if url.password is None:
        pytest.skip("the stack's DSN has no password in its URL")
    password = urllib.parse.unquote(url.password)
    encoded = "".join(f"%{b:02X}" for b in password.encode())  # every character: libpq must decode them all
    user = urllib.parse.quote(urllib.parse.unquote(url.username or ""), safe="")
    dsn = url._replace(netloc=f"{user}:{encoded}@{url.hostname}:{url.port or 5432}").geturl()
    config = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                           "storage": {"backend": "postgres", "dsn": dsn}})
    db = dialects.open_database(config.storage.dsn)
    try:
        try:
            conn = db.engine.connect()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no PostgreSQL at {db.where}: {exc}")
        with conn:
            assert conn.exec_driver_sql("SELECT current_user").scalar() == urllib.parse.unquote(url.username)
    finally:
        db.engine.dispose()
    assert encoded not in db.where and "password=***" in db.where


# 3 -- files that are not UTF-8 ----------------------------------------------------------------------------------

def test_a_site_file_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("store:\n  id: s\n  name: Café Müller\ncameras: []\n".encode("latin-1"))
    assert main(["db", "current", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not UTF-8 (line 3)" in err and "unexpected" not in err, err


def test_audit_answers_that_are_not_utf8_name_the_file(tmp_path, capsys):
    site = write_site(tmp_path, storage={"path": str(tmp_path / "h.db")})
    assert main(["db", "upgrade", "--create", "--config", str(site)]) == 0
    answers = tmp_path / "answers.csv"
    answers.write_bytes("clip_id,people_in,people_out,note\nc1,1,0,caf\xe9\n".encode("latin-1"))
    capsys.readouterr()
    rc = main(["audit", "--config", str(site), "--out", str(tmp_path / "out"), "--answers", str(answers)])
    err = capsys.readouterr().err
    assert rc == 2 and str(answers) in err and "not UTF-8 (line 2)" in err, err


# 4 -- --db: the gallery beside it ----------------------------------------------------------------------------------

def _faces_site(tmp_path: pathlib.Path) -> pathlib.Path:
    return write_site(tmp_path, storage={"path": str(tmp_path / "store.db")},
                      faces={"enabled": True, "reid": {"sqlite_path": str(tmp_path / "customers.db")}})


@pytest.mark.parametrize("argv, build", [
    (["demo", "--no-serve"], _demo_config),
    (["users", "list"], lambda args: _history_config(args, create=True)),
])
def test_db_flag_puts_the_gallery_beside_it(argv, build, tmp_path):
    site, scratch = _faces_site(tmp_path), str(tmp_path / "scratch.db")
    args = build_parser().parse_args([*argv, "--config", str(site), "--db", scratch])
    config = build(args)
    assert config.storage.path == scratch and gallery_sqlite_path(config) == scratch + ".gallery.db"


def test_db_upgrade_with_db_leaves_the_sites_gallery(tmp_path, capsys):
    site, scratch = _faces_site(tmp_path), tmp_path / "scratch.db"
    assert main(["db", "upgrade", "--create", "--config", str(site), "--db", str(scratch)]) == 0
    out = capsys.readouterr().out
    assert f"{scratch}.gallery.db" in out and "customers.db" not in out, out
    assert pathlib.Path(f"{scratch}.gallery.db").exists() and not (tmp_path / "customers.db").exists()


# 5 -- $STORELENS_CONFIG; db current of a newer database -----------------------------------------------------------

def test_storelens_config_is_the_site_of_the_users_commands(tmp_path, monkeypatch, capsys):
    site = write_site(tmp_path, storage={"path": str(tmp_path / "pod.db")})
    monkeypatch.chdir(tmp_path)  # the bundled example's storelens-demo.db would be here
    monkeypatch.setenv("STORELENS_CONFIG", str(site))
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", "a long enough password 32a")
    assert main(["users", "create-admin", "boss"]) == 0
    assert (tmp_path / "pod.db").exists() and not (tmp_path / "storelens-demo.db").exists()
    capsys.readouterr()
    assert main(["users", "list"]) == 0
    assert capsys.readouterr().out.split() == ["boss", "admin"]
    other = tmp_path / "other"
    other.mkdir()
    explicit = write_site(other, storage={"path": str(other / "o.db")})
    assert main(["users", "list", "--config", str(explicit)]) == 2  # --config wins: o.db does not exist
    assert "o.db" in capsys.readouterr().err
    monkeypatch.setenv("STORELENS_CONFIG", str(tmp_path / "missing.yaml"))
    assert main(["users", "list"]) == 2
    assert "missing.yaml ($STORELENS_CONFIG)" in capsys.readouterr().err


def test_db_current_exits_1_when_the_database_is_newer(tmp_path, capsys):
    db = tmp_path / "h.db"
    assert main(["db", "upgrade", "--create", "--db", str(db), "--config", str(write_site(tmp_path))]) == 0
    assert main(["db", "current", "--db", str(db), "--config", str(tmp_path / "site.yaml")]) == 0
    with sqlite3.connect(db) as c:
        c.execute("UPDATE schema_version SET version = ?", (len(revisions("history")) + 3,))
    c.close()
    capsys.readouterr()
    assert main(["db", "current", "--db", str(db), "--config", str(tmp_path / "site.yaml")]) == 1
    assert "NEWER than this StoreLens" in capsys.readouterr().out
