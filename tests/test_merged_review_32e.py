"""Review 32e of the merged batch:

1. deleting or demoting a user revokes, transitively, the API keys its keys created;
2. ``export-dataset --overwrite`` interrupted keeps the previous export, or says the new one is in place;
3. a live source stopped (Ctrl-C / SIGTERM) is the normal end of track / heatmap / count / zones;
4. a failing audit purge does not skip the round's personal-data purge;
5. the chain HQ (no analytics service) purges its audit log;
6. a request with X-Forwarded-For from a peer not believed is warned about, once per peer, and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import sqlite3
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from test_cli_review_32b import history  # noqa: F401 (a fixture: TUD-Campus through the pipeline into SQLite)
from test_k8s import _chain
from test_privacy import DAY, NOW, PG_DSN, person_rows, pg_schema  # noqa: F401 (a fixture)

from storelens.api import create_app
from storelens.api.testing import served_app
from storelens.cli import _interrupted_note, _stopped, main, single_source_config
from storelens.config import KafkaConfig, parse_config
from storelens.domain import dataset as ds
from storelens.paths import asset
from storelens.runtime.embedded import PipelineResult
from storelens.runtime.retention import RetentionPurge
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage import auth as store
from storelens.storage.dataset import PARTIAL_PREFIX

SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}
PASSWORD = "a long enough password"
KAFKA = os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
VIDEO = asset("mot", "TUD-Campus", "TUD-Campus.mp4")


@pytest.fixture
def app(tmp_path):
    return create_app(parse_config(SITE), SqliteStorage(str(tmp_path / "h.db")))


def _session(app, username: str) -> TestClient:
    token = TestClient(app).post("/v1/auth/login", data={"username": username, "password": PASSWORD})
    return TestClient(app, headers={"Authorization": f"Bearer {token.json()['access_token']}"})


def _key_client(app, key: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


# -- 1. keys created by keys go with their creator's user ----------------------------------------------------------

@pytest.mark.parametrize("change", ["delete", "demote"])
def test_keys_created_by_a_users_keys_are_revoked_with_it(app, change: str) -> None:
    auth = app.state.context.auth
    auth.create_user("alice", PASSWORD, "admin")
    auth.create_user("bert", PASSWORD, "admin")
    k1 = _session(app, "alice").post("/v1/api-keys", json={"name": "k1", "role": "admin"}).json()["key"]
    k2 = _key_client(app, k1).post("/v1/api-keys", json={"name": "k2", "role": "admin"}).json()["key"]
    k3 = _key_client(app, k2).post("/v1/api-keys", json={"name": "k3", "role": "viewer"}).json()["key"]
    assert all(_key_client(app, k).get("/v1/auth/me").status_code == 200 for k in (k1, k2, k3))
    bert = _session(app, "bert")
    if change == "delete":
        assert bert.delete("/v1/users/alice").status_code == 204
    else:
        assert bert.post("/v1/users", json={"username": "alice", "password": PASSWORD, "role": "viewer"}
                         ).status_code == 200
    status = {name: _key_client(app, k).get("/v1/auth/me").status_code
              for name, k in (("k1", k1), ("k2", k2), ("k3", k3))}
    # a viewer key made by a key of a now viewer user keeps no more than the user may: it stays
    assert status == {"k1": 401, "k2": 401, "k3": 401 if change == "delete" else 200}
    revoked = [e for e in bert.get("/v1/audit", params={"limit": 1000}).json()["entries"]
               if e["action"] == "api-keys.revoke"]
    assert {e["actor"] for e in revoked} == {"bert"}
    assert len(revoked) == (3 if change == "delete" else 2)


# -- 2. export-dataset --overwrite stopped ------------------------------------------------------------------------

def _export(site, out, fraction: str) -> int:
    return main(["export-dataset", "--from-db", "--config", str(site), "--out", str(out), "--every", "5",
                 "--min-length", "5", "--no-face-detector", "--val-fraction", fraction, "--overwrite"])


def _tree(out) -> dict[str, bytes | None]:
    return {str(p.relative_to(out)): (p.read_bytes() if p.is_file() else None) for p in sorted(out.rglob("*"))}


def test_an_overwrite_stopped_during_the_swap_keeps_the_previous_export(history, tmp_path, capsys,  # noqa: F811
                                                                        monkeypatch):
    out = tmp_path / "set"
    assert _export(history, out, "0.2") == 0
    before = _tree(out)
    assert "dataset.yaml" in before and "images" in before
    real_replace, moves_out = os.replace, []

    def replace(src, dst):  # a Ctrl-C between the renames of the new set into OUT
        if pathlib.Path(src).parent.name.startswith(PARTIAL_PREFIX):
            moves_out.append(src)
            if len(moves_out) == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    capsys.readouterr()
    assert _export(history, out, "0.6") == 130
    assert "nothing exported" in capsys.readouterr().err
    assert _tree(out) == before  # the previous export, whole; no partial folder left


def test_an_overwrite_stopped_while_deleting_the_previous_export_says_the_new_one_is_in_place(
        history, tmp_path, capsys, monkeypatch):  # noqa: F811
    out = tmp_path / "set"
    assert _export(history, out, "0.2") == 0
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):  # a Ctrl-C while the previous export is deleted
        if (pathlib.Path(path) / ".replaced").exists() or pathlib.Path(path).name == ".replaced":
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    capsys.readouterr()
    assert _export(history, out, "0.6") == 130
    err = capsys.readouterr().err
    assert "nothing exported" not in err and "export is complete" in err, err
    val = {p.stem for p in out.glob("images/val/*.jpg")}
    assert len(val) == len([i for i in range(15) if ds.split_of(i, 15, 0.6) == "val"])  # the new set
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert _export(history, out, "0.6") == 0  # the next --overwrite removes what was left
    assert not [p for p in out.iterdir() if p.name.startswith(PARTIAL_PREFIX)]


# -- 3. a stopped live source ends normally ---------------------------------------------------------------------

@pytest.mark.parametrize(("source", "code", "said"), [
    ("rtsp://cam.local/1", 0, "stopped: "),
    ("http://127.0.0.1:9/stream.mjpg", 0, "stopped: "),
    ("0", 0, "stopped: "),
    (str(VIDEO), 130, "interrupted: results cover 3 of "),
])
def test_a_stop_is_the_normal_end_of_a_live_source_only(source: str, code: int, said: str, capsys) -> None:
    config = single_source_config(source, [], None)
    result = PipelineResult(frames=3, interrupted=True)
    rc = _stopped(_interrupted_note(config, result))
    assert rc == code and capsys.readouterr().err.startswith(said)
    # what decides between the named file (None) and the partial one (a note): the one place track/heatmap ask
    assert (_interrupted_note(config, result) is None) == (code == 0)
    assert _interrupted_note(config, PipelineResult(frames=3)) is None  # a run to its end


# -- 4. a failing audit purge does not hold up the personal-data purge -------------------------------------------

def test_a_failing_audit_purge_does_not_skip_the_history_purge(tmp_path) -> None:
    db = tmp_path / "h.db"
    app = create_app(parse_config({**SITE, "privacy": {"retention": {"clock": "wall", "audit_log_days": 30}}}),
                     SqliteStorage(str(db)))
    storage, metrics = app.state.context.storage, app.state.context.metrics
    storage.write_records(person_rows(1, NOW - 400 * DAY))  # past every kind's period but crossings'
    storage.write_records(person_rows(2, NOW - DAY))
    with contextlib.closing(sqlite3.connect(db)) as con:  # the audit log's table gone: its purge fails
        con.execute("DROP TABLE audit_log")
        con.commit()
    purge = RetentionPurge(storage, app.state.context.config, wall_ms=lambda: NOW)
    deleted = purge.run(metrics)
    assert "audit_log" not in deleted
    assert deleted["frames"] == deleted["track_points"] == deleted["customer_matches"] == 1
    assert storage.newest_frame_ms() == NOW - DAY and purge.runs == 1
    assert metrics.errors.labels("purge_audit_log")._value.get() == 1


# -- 5. the chain HQ purges its audit log --------------------------------------------------------------------------

def test_the_chain_rollup_service_purges_the_chain_audit_log(monkeypatch, pg_schema) -> None:  # noqa: F811
    """The chain overlay (k8s/overlays/chain: an API on PostgreSQL + chain-rollup, no analytics service): the
    chain-rollup worker built from its site.yaml has a chore that keeps the audit log to its days."""
    from storelens.runtime.service import ServiceRuntime
    from storelens.runtime.workers import chain_rollup_worker
    from storelens.stages.registry import build_stage

    _, _, cfg, _ = _chain(monkeypatch, "chain-rollup")
    assert cfg.chain is not None and cfg.privacy.retention.audit_log_days is not None
    # the stack's broker (no SASL) in place of the chain's; nothing else of the chain's config changed
    cfg = cfg.model_copy(update={"kafka": KafkaConfig(bootstrap_servers=KAFKA, topic_prefix=f"r32e-{pg_schema}.")})
    with SqlStorage(PG_DSN, schema=pg_schema) as storage:
        now = int(time.time() * 1000)
        store.audit(storage, now - 400 * DAY, "ana", "users.create", "old")
        store.audit(storage, now - DAY, "ana", "users.create", "new")
        rt = ServiceRuntime("chain-rollup", port=0)
        worker = chain_rollup_worker(cfg, rt, build_stage("chain-rollup", cfg), storage)
        try:
            (chore,) = [c for c in worker.core.chores if c.due()]
            assert chore.run(rt.metrics) == {"audit_log": 1}
        finally:
            worker.transport.close()
        assert [r["target"] for r in store.list_audit(storage)[0]] == ["new"]
        assert rt.metrics.purged.labels("audit_log")._value.get() == 1


# -- 6. X-Forwarded-For from a peer not believed -----------------------------------------------------------------

@pytest.mark.parametrize(("allow", "warned"), [("10.0.0.0/8", True), ("127.0.0.1", False)])
def test_a_forwarded_for_from_a_peer_not_believed_is_warned_once_and_counted(tmp_path, caplog, allow: str,
                                                                             warned: bool) -> None:
    app = create_app(parse_config({**SITE, "api": {"forwarded_allow_ips": allow}}),
                     SqliteStorage(str(tmp_path / "h.db")))
    errors = app.state.context.metrics.errors.labels("forwarded_for_not_trusted")
    with caplog.at_level(logging.WARNING, logger="storelens.api.app"), served_app(app) as (url, _):
        assert httpx.get(f"{url}/healthz").status_code == 200  # no header: nothing to say
        for _ in range(2):
            assert httpx.get(f"{url}/healthz", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200
    said = [r for r in caplog.records if "api.forwarded_allow_ips" in r.getMessage() and "127.0.0.1" in
            r.getMessage() and "X-Forwarded-For" in r.getMessage()]
    assert len(said) == (1 if warned else 0)
    assert errors._value.get() == (2 if warned else 0)
