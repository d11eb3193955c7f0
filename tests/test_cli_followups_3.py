"""Follow-ups of the command line's front door, each run as a user runs it (the CLI as a subprocess of this
worktree, real video, a real SQLite history; real PostgreSQL and Kafka for 5):

1. ``count --line -50,...``: a value starting with a negative coordinate is the option's value, not an option;
2. a bad ``heatmap --cell`` names the allowed range in one short line (it listed all 511 values);
3. the commands that never open a camera (``site export|import``, ``users``, ``replay``) do not need the cameras'
   ``${VAR}``s set; the version keeps the template; ``audit`` (which opens them) still fails naming the variable;
4. ``demo``'s pipeline process logs at the parent's ``--log-level``, not ``$STORELENS_LOG_LEVEL``'s;
5. ``site import`` publishes the new version on ``site-config`` in the distributed mode (PostgreSQL history),
   as an edit through the API does; with a SQLite history (embedded) nothing is published.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest
import yaml

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.runtime.localdeploy import KAFKA, PG_DSN
from storelens.storage import SqlStorage
from storelens.storage import site as sq
from test_runtime_readiness import _delete_topics, needs_kafka

WORKTREE = pathlib.Path(__file__).resolve().parents[1]
VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 640x480, 25 fps, 71 frames
PASSWORD = "correct horse battery"


def run_cli(*args: str, env: dict | None = None, unset: tuple[str, ...] = (), stdin: str | None = None,
            cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m storelens.cli ARGS`` with this worktree's ``storelens``; ``unset``: variables taken away."""
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full.update({"PYTHONPATH": str(WORKTREE), **(env or {})})
    return subprocess.run([sys.executable, "-m", "storelens.cli", *args], capture_output=True, text=True,
                          timeout=300, env=full, input=stdin, cwd=cwd)


# 1 ---------------------------------------------------------------------------------------------------------------

def test_count_takes_a_line_whose_first_coordinate_is_negative() -> None:
    res = run_cli("count", str(VIDEO), "--line", "-100,-100,740,580", "--line", "door=0,240,640,240", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [ln["id"] for ln in doc["lines"]] == ["line-1", "door"] and doc["frames"] == 71


def test_a_negative_zone_value_reaches_the_zone_check() -> None:
    res = run_cli("zones", str(VIDEO), "--zone", "-1,0,5,0")  # the zone's own error, not "expected one argument"
    assert res.returncode == 2
    assert res.stderr.strip() == ("error: bad --zone '-1,0,5,0': expected an even count of at least 6 numbers "
                                  "(3+ vertices)")


# 2 ---------------------------------------------------------------------------------------------------------------

def test_a_bad_heatmap_cell_names_the_range_in_one_short_line(tmp_path: pathlib.Path) -> None:
    for bad in ("1", "513", "abc"):
        res = run_cli("heatmap", str(VIDEO), "--out", str(tmp_path / "h.png"), "--cell", bad)
        assert res.returncode == 2
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("storelens heatmap: error: argument --cell: ") and "2 to 512" in last, res.stderr
        assert len(res.stderr) < 400 and "3, 4" not in res.stderr, res.stderr
    help_ = run_cli("heatmap", "--help")
    assert help_.returncode == 0 and "2 to 512" in help_.stdout and "3, 4" not in help_.stdout
    # an allowed size passes argparse: the next error is the missing video's
    res = run_cli("heatmap", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "h.png"), "--cell", "8")
    assert res.returncode == 2 and "video not found" in res.stderr and "--cell" not in res.stderr, res.stderr


# 3 ---------------------------------------------------------------------------------------------------------------

def test_commands_that_open_no_camera_do_not_need_the_cameras_variables(tmp_path: pathlib.Path) -> None:
    src = "rtsp://admin:${H4_CAM1_PASSWORD}@10.0.0.5/live"
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "s"}, "storage": {"path": "h.db"},
        "cameras": [{"id": "door", "source": src, "lines": [{"id": "in", "a": [0, 240], "b": [640, 240]}]},
                    {"id": "till", "source": "${H4_TILL_URL}"}]}))
    unset = ("H4_CAM1_PASSWORD", "H4_TILL_URL")

    res = run_cli("users", "create-admin", "--config", str(site), unset=unset, stdin=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    res = run_cli("site", "import", str(site), "--config", str(site), unset=unset)
    assert res.returncode == 0 and "site version 1" in res.stdout, res.stderr
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:  # the version keeps the templates as written
        version, saved = sq.latest_site(storage)
    finally:
        storage.close()
    assert version == 1 and [c["source"] for c in saved["cameras"]] == [src, "${H4_TILL_URL}"]
    res = run_cli("site", "export", "--config", str(site), unset=unset)
    assert res.returncode == 0, res.stderr
    assert [c["source"] for c in yaml.safe_load(res.stdout)["cameras"]] == [src, "${H4_TILL_URL}"]
    res = run_cli("replay", "--config", str(site), "--json", unset=unset)  # stored track points only
    assert res.returncode == 0, res.stderr
    res = run_cli("users", "list", "--config", str(site), unset=unset)
    assert res.returncode == 0 and res.stdout.startswith("admin\tadmin"), res.stderr

    # audit cuts clips from the cameras' video: it still needs the variable, and names it
    res = run_cli("audit", "--config", str(site), "--out", str(tmp_path / "clips"), unset=unset)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: config error in {site}: cameras.0.source: environment variable "
                                  "H4_CAM1_PASSWORD is not set (used as ${H4_CAM1_PASSWORD})")


# 4 ---------------------------------------------------------------------------------------------------------------

def test_demo_pipeline_logs_at_the_parents_log_level(tmp_path: pathlib.Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "s"}, "storage": {"path": "h.db"},
        "cameras": [{"id": "door", "source": str(VIDEO), "target_fps": 2,
                     "lines": [{"id": "in", "a": [0, 240], "b": [640, 240]}]}]}))
    res = run_cli("--log-level", "INFO", "demo", "--no-serve", "--config", str(site),
                  env={"STORELENS_LOG_LEVEL": "ERROR"})
    assert res.returncode == 0, res.stderr
    logs = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    # ingest runs in the pipeline process only
    assert {"level": "info", "logger": "storelens.runtime.ingest", "msg": "camera started"} in [
        {k: r.get(k) for k in ("level", "logger", "msg")} for r in logs], res.stderr


# 5 ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def pg_schema():
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    schema = f"test_cli_followups_3_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as c:
            c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_DSN}: {exc}")
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@needs_kafka
def test_site_import_publishes_the_version_in_the_distributed_mode_only(tmp_path: pathlib.Path,
                                                                        pg_schema: str) -> None:
    from psycopg.conninfo import make_conninfo

    from storelens.runtime.kafka import KafkaAdmin
    from storelens.runtime.workers import site_tail

    prefix = f"sltest-h4-{uuid.uuid4().hex[:10]}."
    cams = [{"id": "door", "source": "${H4_CAM_URL:-/dev/null}", "lines": [{"id": "in", "a": [0, 5], "b": [9, 5]}]}]
    kafka = {"bootstrap_servers": KAFKA, "topic_prefix": prefix, "group_prefix": prefix, "partitions": 1}
    embedded = {"store": {"id": "s"}, "cameras": cams, "kafka": kafka, "storage": {"path": str(tmp_path / "h.db")}}
    distributed = {**embedded, "storage": {"backend": "postgres",
                                           "dsn": make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")}}
    config = parse_config(distributed)
    admin = KafkaAdmin(config.kafka)
    try:
        (tmp_path / "embedded.yaml").write_text(json.dumps(embedded))
        res = run_cli("site", "import", str(tmp_path / "embedded.yaml"), "--config", str(tmp_path / "embedded.yaml"))
        assert res.returncode == 0 and "published" not in res.stdout, res.stderr
        assert not [t for t in admin.list_topics().topics if t.startswith(prefix)]  # SQLite: nothing on Kafka

        (tmp_path / "site.yaml").write_text(json.dumps(distributed))
        res = run_cli("site", "import", str(tmp_path / "site.yaml"), "--config", str(tmp_path / "site.yaml"))
        assert res.returncode == 0, res.stderr
        tail, newest = site_tail(config)  # what the services read at their start and then tail
        tail.close()
        assert isinstance(newest, m.SiteUpdate) and (newest.version, newest.actor) == (1, "cli")
        assert [c["source"] for c in json.loads(newest.cameras_json)] == ["${H4_CAM_URL:-/dev/null}"]
        assert f"site version 1 (1 cameras, 0 alert rules) (published to {prefix}site-config)" in res.stdout
    finally:
        _delete_topics(config.kafka)
        admin.close()
