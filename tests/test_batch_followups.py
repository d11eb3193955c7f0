"""Follow-ups of a review of the batch, each on the real thing (PostgreSQL of ``scripts/stack.sh``, SQLite files,
the CLI's ``main``, the k8s README):

1. migration 0015 runs again after a partial run that left an index on a table without rows (PostgreSQL);
2. a relative SQLite data file found only relative to the working directory is a config error, not a new store;
3. (the default ``storage.path`` stays the working directory's: documented, checked here);
4. analytics purges no gallery the reid stage keeps (``faces.enabled``); a replacement of an embedding row deleted
   behind the gallery's index stores it again;
5. the KafkaUsers of k8s/README.md may set ``segment.ms`` on their topics (DescribeConfigs, AlterConfigs);
6. ``site import`` sets a new store up (creates its SQLite history); the others' hint names what to do.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
import yaml
from psycopg.conninfo import make_conninfo

from storelens.backends.face_index import FaceGallery
from storelens.cli import main
from storelens.config import load_config, parse_config
from storelens.config.faces import GalleryConfig
from storelens.errors import ConfigError
from storelens.storage import SCHEMA_VERSION, SqlStorage
from storelens.storage.gallery import SqliteGalleryStore, open_gallery_store_to_purge
from test_cli_review_fixes import CAM, write_site
from test_review_fixes_7 import INDEXES_0015, PG_DSN, downgrade_to_0014, pg, pg_indexes
from test_review_fixes_7 import pg_schema as pg_schema  # the fixture

REPO = pathlib.Path(__file__).resolve().parents[1]


# 1 ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("left", ["valid", "invalid"])
def test_0015_runs_again_after_a_partial_run_left_an_index_on_an_empty_table(pg_schema: str, left: str) -> None:
    """customer_matches without rows, its index committed (valid: by the autocommit block of the next index's
    build; invalid: a build that failed), the version still 14, track_points with rows (its build is the long one
    that was interrupted): the next start opens the store, every index valid."""
    SqlStorage(PG_DSN, schema=pg_schema).close()
    engine = sa.create_engine("postgresql+psycopg://", poolclass=sa.pool.NullPool, creator=lambda: psycopg.connect(
        make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")))
    with engine.begin() as conn:
        downgrade_to_0014(conn)
    engine.dispose()
    with pg(pg_schema, autocommit=True) as c:
        c.execute("INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, confidence) "
                  "SELECT 'cam-1', i, i % 50, 1000 * i, 1, 2, 3, 4, 0.5 FROM generate_series(1, 500) i")
        if left == "valid":
            c.execute("CREATE INDEX customer_matches_by_time ON customer_matches (ts_ms)")
        else:  # a unique build over equal values fails and leaves the index invalid; the rows go again
            c.execute("INSERT INTO customer_matches (event_id, camera_id, track_id, seq, ts_ms, customer_id, "
                      "similarity, is_new, is_returning, visit_no) SELECT 'm' || i, 'cam-1', 1, i, 1000, 'c1', 0.9, "
                      "true, false, 1 FROM generate_series(1, 3) i")
            with pytest.raises(psycopg.errors.UniqueViolation):
                c.execute("CREATE UNIQUE INDEX CONCURRENTLY customer_matches_by_time ON customer_matches (ts_ms)")
            c.execute("DELETE FROM customer_matches")
    assert pg_indexes(pg_schema) == {"customer_matches_by_time": left == "valid"}

    SqlStorage(PG_DSN, schema=pg_schema).close()

    assert pg_indexes(pg_schema) == dict.fromkeys(INDEXES_0015, True)
    with pg(pg_schema, autocommit=True) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert c.execute("SELECT indisunique FROM pg_index WHERE indexrelid = 'customer_matches_by_time'::regclass"
                         ).fetchone() == (False,)


# 2, 3 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["storage.path", "faces.reid.sqlite_path"])
def test_a_data_file_left_in_the_working_directory_is_a_config_error(tmp_path, monkeypatch, field) -> None:
    """``WorkingDirectory=/var/lib/storelens``, ``storage: {path: storelens.db}`` in /etc/storelens/site.yaml: the
    history is /var/lib/storelens/storelens.db, which releases before this one opened; not a new empty database."""
    etc, var = tmp_path / "etc", tmp_path / "var"
    var.mkdir()
    section, key = field.rsplit(".", 1)
    doc: dict = {"store": {"id": "s"}, "cameras": [CAM]}
    node = doc
    for k in section.split("."):
        node = node.setdefault(k, {})
    node[key] = "storelens.db"
    site = write_site(etc / "site.yaml", doc)
    monkeypatch.chdir(var)
    assert load_config(site)  # neither exists: a new store, beside the site file

    SqlStorage(str(var / "storelens.db")).close()
    with pytest.raises(ConfigError) as err:
        load_config(site)
    msg = str(err.value)
    assert msg.startswith(f"config error in {site}: {field}: 'storelens.db' is relative to the site file's folder"), msg
    assert str(etc / "storelens.db") in msg and str(var / "storelens.db") in msg
    assert "move it or give an absolute path" in msg

    # moved beside the site file (or the path given absolute): loads, the file beside it
    (var / "storelens.db").rename(etc / "storelens.db")
    SqlStorage(str(var / "storelens.db")).close()  # a stale copy left behind does not matter then
    cfg = load_config(site)
    got = cfg.storage.path if field == "storage.path" else cfg.faces.reid.sqlite_path
    assert got == str(etc / "storelens.db")
    node[key] = str(var / "storelens.db")
    assert load_config(write_site(etc / "site.yaml", doc))


def test_the_check_spares_postgres_and_the_working_directory_default(tmp_path, monkeypatch) -> None:
    var = tmp_path / "var"
    var.mkdir()
    SqlStorage(str(var / "storelens.db")).close()
    monkeypatch.chdir(var)
    pg_site = write_site(tmp_path / "etc" / "pg.yaml", {"store": {"id": "s"}, "cameras": [CAM], "storage": {
        "backend": "postgres", "dsn": "postgresql://x@h/db", "path": "storelens.db"}})
    assert load_config(pg_site).storage.backend == "postgres"
    # the default (storage.path left out) is the working directory's: the site folder may be read-only
    default = load_config(write_site(tmp_path / "etc" / "site.yaml", {"store": {"id": "s"}, "cameras": [CAM]}))
    assert default.storage.path == "storelens.db" and (pathlib.Path.cwd() / default.storage.path).is_file()


# 4 ---------------------------------------------------------------------------------------------------------------

def test_no_gallery_to_purge_where_the_reid_stage_keeps_it(tmp_path) -> None:
    """analytics (and any process) given a site with ``faces.enabled`` does not purge the reid stage's gallery."""
    db = tmp_path / "h.db"
    SqliteGalleryStore(str(db) + ".gallery.db", dim=128).close()
    storage = SqlStorage(str(db))
    try:
        doc = {"store": {"id": "s"}, "cameras": [CAM], "storage": {"path": str(db)}}
        off = open_gallery_store_to_purge(parse_config({**doc, "faces": {"enabled": False}}), storage)
        assert off is not None
        off.close()
        assert open_gallery_store_to_purge(parse_config({**doc, "faces": {"enabled": True}}), storage) is None
    finally:
        storage.close()


def test_a_replaced_embedding_whose_row_was_purged_elsewhere_is_stored_again(tmp_path) -> None:
    path = tmp_path / "g.db"
    dim = 8
    eye = np.eye(dim, dtype=np.float32)
    gallery = FaceGallery(GalleryConfig(dim=dim), store=SqliteGalleryStore(path, dim=dim))
    gallery.add("a", eye[0], 1_000)          # old
    gallery.add("a", eye[1], 1_000_000)      # recent: the customer stays
    other = SqliteGalleryStore(path, dim=dim)  # another process's retention purge
    try:
        assert other.purge_older_than(5_000).embeddings == 1
        gallery.add("a", eye[0], 2_000_000)  # a near-duplicate of the purged row: a replacement
        assert sorted(ts for _, cid, ts, _ in other.embeddings()) == [1_000_000, 2_000_000]
        gallery.add("a", eye[0], 3_000_000)  # the row id in the index is the new row's
        assert sorted(ts for _, cid, ts, _ in other.embeddings()) == [1_000_000, 3_000_000]
    finally:
        other.close()
        gallery.store.close()


# 5 ---------------------------------------------------------------------------------------------------------------

def test_the_documented_kafka_users_may_bound_segment_ms() -> None:
    """Every topic ACL of a KafkaUser in k8s/README.md that lets it create topics (services call ensure_topics,
    which bounds segment.ms of existing ones) has DescribeConfigs and AlterConfigs; KafkaTopic examples set it."""
    text = (REPO / "k8s" / "README.md").read_text()
    docs = [d for b in re.findall(r"```yaml\n(.*?)```", text, re.S) for d in yaml.safe_load_all(b)]
    users = [d for d in docs if isinstance(d, dict) and d.get("kind") == "KafkaUser"]
    assert len(users) >= 2  # a store's and the chain's
    for user in users:
        creating = [a for a in user["spec"]["authorization"]["acls"]
                    if a["resource"]["type"] == "topic" and "Create" in a["operations"]]
        assert creating, user["metadata"]["name"]
        for acl in creating:
            assert {"DescribeConfigs", "AlterConfigs"} <= set(acl["operations"]), (user["metadata"]["name"], acl)
    from storelens.contract.topics import TOPICS, segment_ms

    spec = {s.name: s for s in TOPICS}
    # (an example with spec.topicName is faust's own leader topic: not one of TOPICS, broker defaults)
    for topic in (d for d in docs if isinstance(d, dict) and d.get("kind") == "KafkaTopic"
                  and "topicName" not in d["spec"]):
        base = topic["metadata"]["name"].split(".", 1)[1]
        assert topic["spec"]["config"]["segment.ms"] == segment_ms(spec[base].retention_ms)


# 6 ---------------------------------------------------------------------------------------------------------------

def test_site_import_sets_a_new_store_up(tmp_path, capsys) -> None:
    site = write_site(tmp_path / "site.yaml", {"store": {"id": "s"}, "cameras": [CAM]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: {id: s}\ncameras: [{id: door}]\n")
    db = tmp_path / "new" / "h.db"
    assert main(["site", "import", str(bad), "--config", str(site), "--db", str(db)]) == 2
    assert not db.exists()  # the file is checked before a store is made
    capsys.readouterr()

    assert main(["site", "import", str(site), "--config", str(site), "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert f"note: creating a new history database at {db}" in captured.err
    assert "site version 1" in captured.out
    with SqlStorage(str(db)) as s:
        from storelens.storage import site as sq

        assert sq.latest_site(s)[0] == 1


def test_the_hint_for_a_missing_history_says_what_creates_one(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    site = write_site(tmp_path / "site.yaml", {"store": {"id": "s"}, "cameras": [CAM]})
    assert main(["users", "list", "--config", str(site)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no history database at storelens.db (storage.path); "
                          "give an existing one with --db, or run the pipeline first"), err
    assert "`site import`" in err and "`users create-admin`" in err
    assert not (tmp_path / "storelens.db").exists()
