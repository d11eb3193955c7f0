"""Fixes of a review of the command line and the site config loader, each run for real (``storelens.cli.main`` or
the CLI as a subprocess, real files, a real SQLite history):

1. ``site export`` shows the alert rules in force (the newest version's), ``site import`` saves them;
2. ``track --mot-out`` / ``heatmap --out`` that cannot be written fail before the run, naming the flag;
3. a relative ``SOURCE`` is the working directory's, not the ``--config`` file's folder's;
4. every relative path of a site file (``storage.path``, gallery, weights) is relative to the file's folder;
5. the commands on an existing history refuse a SQLite file that does not exist (``users create-admin``,
   the documented first step, creates it);
6. ``--config`` on ``count`` keeps no entrance lines or alert rules naming the file's cameras;
7. a port in TIME-WAIT is free for the demo; a bad host does not say ``pass --port``;
8. a bad log level is one error line; 9. a key given twice in a YAML mapping is an error; 10. ``--port 70000``.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import _check_port_free, main
from storelens.config import load_config
from storelens.errors import ConfigError
from storelens.paths import asset
from storelens.storage import SqlStorage
from storelens.storage import site as sq
from storelens.storage.auth import list_users

WORKTREE = pathlib.Path(__file__).resolve().parents[1]
VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")
LINE = "door=0,240,640,240"
CAM = {"id": "door", "source": str(VIDEO), "lines": [{"id": "in", "a": [0, 240], "b": [640, 240]}],
       "zones": [{"id": "floor", "polygon": [[0, 0], [640, 0], [640, 480], [0, 480]]}]}
CROWD = {"id": "crowd", "kind": "camera_occupancy", "camera": "door", "max": 5, "severity": "warning"}
PASSWORD = "correct horse battery"


def run_cli(*args: str, cwd: pathlib.Path | None = None, env: dict | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a subprocess with this worktree's ``storelens``."""
    full_env = {**os.environ, "PYTHONPATH": str(WORKTREE), **(env or {})}
    return subprocess.run([sys.executable, "-m", "storelens.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=full_env, input=stdin)


def write_site(path: pathlib.Path, doc: dict) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def new_db(path: pathlib.Path) -> pathlib.Path:
    SqlStorage(str(path)).close()
    return path


# 1 ---------------------------------------------------------------------------------------------------------------

def test_site_export_shows_the_rules_in_force_and_import_saves_the_files_rules(tmp_path, capsys) -> None:
    site = write_site(tmp_path / "site.yaml", {"store": {"id": "s"}, "cameras": [CAM], "alerts": {"rules": [CROWD]}})
    db = new_db(tmp_path / "h.db")
    storage = SqlStorage(str(db))
    try:  # an admin raises the rule's max through the API: version 1 holds cameras and rules
        client = signed_in_client(create_app(load_config(site), storage))
        r = client.put("/v1/site/alerts/rules/crowd", json={**CROWD, "max": 9})
        assert r.status_code == 200, r.text
    finally:
        storage.close()

    out = tmp_path / "export.yaml"
    assert main(["site", "export", "--config", str(site), "--db", str(db), "--out", str(out)]) == 0
    exported = yaml.safe_load(out.read_text())
    assert [(r["id"], r["max"]) for r in exported["alerts"]["rules"]] == [("crowd", 9)]  # the file says 5

    # a file with another rule (and the old one gone) imported: the version holds the file's rules
    edited = {**exported, "alerts": {"rules": [{**CROWD, "id": "packed", "max": 3}]}}
    assert main(["site", "import", str(write_site(tmp_path / "edited.yaml", edited)), "--config", str(site),
                 "--db", str(db)]) == 0
    assert "site version 2" in capsys.readouterr().out
    storage = SqlStorage(str(db))
    try:
        version, doc = sq.latest_site(storage)
        assert version == 2 and [(r["id"], r["max"]) for r in doc["alert_rules"]] == [("packed", 3)]
        # the API started on the site file puts the imported rules in force
        got = signed_in_client(create_app(load_config(site), storage)).get("/v1/site").json()
        assert [(r["id"], r["max"]) for r in got["alert_rules"]] == [("packed", 3)]
    finally:
        storage.close()


# 2 ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, flag, make", [
    ("track", "--mot-out", lambda d: d),                                   # a folder
    ("track", "--mot-out", lambda d: d / "site.yaml" / "x.txt"),           # below a file
    ("heatmap", "--out", lambda d: d / "site.yaml" / "x.png"),
    ("heatmap", "--json", lambda d: d),
])
def test_an_output_that_cannot_be_written_fails_before_the_run(tmp_path, capsys, command, flag, make) -> None:
    (tmp_path / "site.yaml").write_text("store: {id: s}\n")
    bad = str(make(tmp_path))
    args = [command, str(VIDEO), flag, bad]
    if command == "heatmap" and flag != "--out":
        args += ["--out", str(tmp_path / "ok.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {bad}: cannot write this file"), err
    assert not (tmp_path / "ok.png").exists()  # nothing left behind by the check


def test_the_output_check_keeps_an_existing_file(tmp_path) -> None:
    from storelens.cli import writable_output

    old = tmp_path / "old.txt"
    old.write_text("keep me")
    assert writable_output(str(old), "--mot-out") == old and old.read_text() == "keep me"


# 3 and 6 ---------------------------------------------------------------------------------------------------------

def test_a_relative_source_is_the_working_directorys(tmp_path) -> None:
    (tmp_path / "clip.mp4").symlink_to(VIDEO)
    site = write_site(tmp_path / "configs" / "site.yaml", {"store": {"id": "s"}})
    r = run_cli("count", "clip.mp4", "--line", LINE, "--config", str(site.relative_to(tmp_path)), "--json",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 71


def test_config_of_a_store_with_entrance_lines_and_camera_rules_counts_a_clip(tmp_path, capsys) -> None:
    site = write_site(tmp_path / "prod.yaml", {
        "store": {"id": "s", "entrance_lines": ["door/in"]}, "cameras": [CAM],
        "alerts": {"rules": [CROWD, {**CROWD, "id": "full-floor", "kind": "zone_occupancy", "zone": "floor"},
                             {"id": "store-full", "kind": "store_occupancy", "max": 1}],
                   "webhooks": [{"url": "http://127.0.0.1:9/never"}]}})
    load_config(site)  # a valid site file
    assert main(["count", str(VIDEO), "--line", LINE, "--config", str(site), "--json"]) == 0, \
        capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["frames"] == 71


# 4 ---------------------------------------------------------------------------------------------------------------

def test_every_relative_path_of_a_site_file_is_relative_to_its_folder(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "store"
    site = write_site(folder / "site.yaml", {
        "store": {"id": "s"}, "cameras": [CAM], "storage": {"path": "data/history.db"},
        "tracker": {"reid_weights": "models/reid.xml"},
        "faces": {"reid": {"sqlite_path": "data/gallery.db"}, "emotion": {"weights": "models/emotion.h5"},
                  "age_gender": {"model_dir": "models/age"}}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(site)
    here = folder.resolve()
    assert cfg.storage.path == str(here / "data" / "history.db")
    assert cfg.faces.reid.sqlite_path == str(here / "data" / "gallery.db")
    assert cfg.tracker.reid_weights == str(here / "models" / "reid.xml")
    assert cfg.faces.emotion.weights == str(here / "models" / "emotion.h5")
    assert cfg.faces.age_gender.model_dir == str(here / "models" / "age")
    # a SQLite URI and an absolute path are left as they are
    cfg = load_config(write_site(folder / "mem.yaml", {"store": {"id": "s"}, "cameras": [CAM],
                                                         "storage": {"path": "file::memory:?cache=shared"}}))
    assert cfg.storage.path == "file::memory:?cache=shared"


def test_users_list_from_another_directory_reads_the_sites_database(tmp_path) -> None:
    folder = tmp_path / "store"
    site = write_site(folder / "site.yaml", {"store": {"id": "s"}, "cameras": [CAM],
                                             "storage": {"path": "history.db"}})
    r = run_cli("users", "create-admin", "boss", "--config", str(site), cwd=folder,
                env={"STORELENS_ADMIN_PASSWORD": PASSWORD})
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("users", "list", "--config", str(site), cwd=elsewhere)
    assert r.returncode == 0 and r.stdout.split() == ["boss", "admin"], (r.stdout, r.stderr)
    assert not (elsewhere / "history.db").exists()


def test_the_bundled_example_keeps_its_database_in_the_working_directory(tmp_path) -> None:
    r = run_cli("users", "create-admin", "ana", cwd=tmp_path, env={"STORELENS_ADMIN_PASSWORD": PASSWORD})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "storelens-demo.db").is_file()
    assert not (WORKTREE / "storelens" / "examples" / "storelens-demo.db").exists()
    r = run_cli("users", "list", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["ana", "admin"], (r.stdout, r.stderr)


# 5 ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["replay", "--config", "{site}"], ["site", "export"], ["users", "list"],
    ["users", "create", "ana", "--role", "viewer"], ["users", "api-key", "till 3", "--role", "manager"],
    ["staff", "list"], ["kpis", "publish", "--json"], ["audit", "--out", "{tmp}/clips"],
    ["export-dataset", "--from-db", "--config", "{site}", "--out", "{tmp}/ds"],
], ids=lambda a: " ".join(a[:2]))
def test_a_missing_history_database_is_refused(tmp_path, capsys, monkeypatch, args) -> None:
    site = write_site(tmp_path / "site.yaml", {"store": {"id": "s"}, "cameras": [CAM]})
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
    typo = tmp_path / "sub" / "histroy.db"
    argv = [a.format(site=site, tmp=tmp_path) for a in args] + ["--db", str(typo)]
    if "--config" not in argv:
        argv += ["--config", str(site)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no history database at {typo} (--db); give an existing one with --db"), err
    assert not typo.exists() and not typo.parent.exists()


def test_create_admin_sets_a_new_store_up(tmp_path) -> None:
    db = tmp_path / "new" / "h.db"
    r = run_cli("users", "create-admin", "--db", str(db), stdin=PASSWORD + "\n", env={"STORELENS_ADMIN_PASSWORD": ""})
    assert r.returncode == 0 and "created admin 'admin'" in r.stdout, r.stderr
    assert f"creating a new history database at {db}" in r.stderr
    with SqlStorage(str(db)) as s:
        assert [u["username"] for u in list_users(s)] == ["admin"]


# 7 ---------------------------------------------------------------------------------------------------------------

def test_a_port_in_time_wait_is_free_for_the_demo() -> None:
    with socket.socket() as listener:  # a demo's API that stopped a moment ago (uvicorn sets SO_REUSEADDR)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the server's side closes first: its connection on the port waits in TIME-WAIT
        client.recv(1)
        client.close()
    out = subprocess.run(["ss", "-tan", "state", "time-wait", f"( sport = :{port} )"], capture_output=True,
                         text=True).stdout
    assert f":{port}" in out, out  # the port really is held by a connection in TIME-WAIT
    _check_port_free("127.0.0.1", port)  # uvicorn would bind it (SO_REUSEADDR)


def test_a_host_that_cannot_be_bound_does_not_suggest_another_port(capsys) -> None:
    assert main(["demo", "--host", "203.0.113.7", "--port", "8099"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot serve the API on 203.0.113.7:8099: ") and "pass --port" not in err, err
    assert err.endswith("check --host (or api.host)")
    with pytest.raises(ConfigError, match="pass --port"):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            _check_port_free("127.0.0.1", taken.getsockname()[1])


# 8 ---------------------------------------------------------------------------------------------------------------

def test_a_bad_log_level_is_one_error_line(tmp_path) -> None:
    r = run_cli("--log-level", "verbose", "users", "list", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "argument --log-level: invalid choice" in r.stderr
    # $STORELENS_LOG_LEVEL (the services' ConfigMap) as the services take it: a JSON error line, the CLI's WARNING
    r = run_cli("users", "list", "--db", str(tmp_path / "none.db"), cwd=tmp_path,
                env={"STORELENS_LOG_LEVEL": "verbose"})
    said, last = r.stderr.strip().splitlines()
    assert json.loads(said)["msg"].startswith("$STORELENS_LOG_LEVEL='verbose' is not a log level: logging at WARNING")
    assert r.returncode == 2 and "no history database" in last  # the command's own error
    r = run_cli("--log-level", "debug", "users", "list", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert r.returncode == 2 and "no history database" in r.stderr  # a level in any case is taken


# 9 ---------------------------------------------------------------------------------------------------------------

def test_a_key_given_twice_is_an_error_naming_it(tmp_path, capsys) -> None:
    p = tmp_path / "site.yaml"
    p.write_text("store: {id: s}\ncameras:\n  - {id: a, source: a.mp4}\ncounting: {window_s: 60}\n"
                 "cameras:\n  - {id: b, source: b.mp4}\n")
    with pytest.raises(ConfigError, match=r"site\.yaml: not valid YAML at line 5, column 1: duplicate key "
                                          r"'cameras' \(first at line 2\)"):
        load_config(p)
    p.write_text("store: {id: s, name: x, name: y}\ncameras: [{id: a, source: a.mp4}]\n")
    assert main(["count", str(VIDEO), "--line", LINE, "--config", str(p)]) == 2
    assert "duplicate key 'name'" in capsys.readouterr().err
    # a merge key may hold a key the mapping then sets itself
    p.write_text("x-cam: &cam {id: a, source: a.mp4, target_fps: 5}\nstore: {id: s}\n"
                 "cameras:\n  - <<: *cam\n    target_fps: 10\n")
    from storelens.config.site import read_yaml

    assert read_yaml(p)["cameras"][0] == {"id": "a", "source": "a.mp4", "target_fps": 10}


# 10 --------------------------------------------------------------------------------------------------------------

def test_demo_port_out_of_range_is_a_config_error(capsys) -> None:
    assert main(["demo", "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port 70000: Input should be less than or equal to 65535"
