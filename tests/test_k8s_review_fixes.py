"""k8s/ as an operator runs it (review fixes): every overlay renders with the real kustomize (helpers of
tests/test_k8s.py) and the rendered manifests, read with each Deployment's own environment, must hold:

1. an api behind an Ingress believes the controller's ``X-Forwarded-For`` (``api.forwarded_allow_ips``): with
   the default 127.0.0.1 every client is the controller, so a few wrong passwords lock the real admin out (429)
   and the audit log records the proxy's address;
2. analytics runs exactly one replica, also during a rollout (``Recreate``): the store's ``@store`` row and the
   store-wide alerts need every camera on one worker;
3. Redis: analytics and the api reach it as the store's own ACL user (Secret ``storelens-redis``), each store in
   a database of its own (1-15: database 0 stays empty), and the ACL recipe of k8s/README.md, run against the
   local Redis, lets the store's services work in their database and nowhere else;
4. a service that puts a site version in force whose cameras or alert rules differ from its site file says so
   at start (the API from its database, the Kafka services from ``site-config``): editing the file changes
   nothing until ``storelens site import``;
5. an api with more than one replica shares its sign-in limiter through Redis (else each replica counts alone).
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import time
import uuid

import pytest

from storelens.config import parse_config
from storelens.config.site import site_version_document
from storelens.contract import messages as m
from test_k8s import (CHAIN, K8S_DIR, STORE_OVERLAYS, TARGETS, _id, _load_site, component, configmap_with_prefix,
                      container_env, deployments, dummy_secret, expected_services, of_kind, pod_spec, render,
                      secret_refs, site_yaml)

REDIS_SECRET = {("storelens-redis", "username"), ("storelens-redis", "password")}
#: Redis' default ``databases``: 16, of which database 0 stays empty (every connection starts there).
REDIS_DATABASES = 16


def _api_config(docs: list[dict], monkeypatch: pytest.MonkeyPatch, comp: str = "api", **env_overrides: str):
    """The Deployment ``comp`` of ``docs``, its container, and the site configuration as that container loads it
    (its own env, Secrets as :func:`dummy_secret` values, then ``env_overrides``)."""
    (dep,) = [d for d in deployments(docs) if component(d) == comp]
    (c,) = pod_spec(dep)["containers"]
    env = container_env(docs, c) | env_overrides
    with monkeypatch.context() as mp:
        return dep, c, _load_site(mp, docs, site_yaml(docs), env)


# ---------------------------------------------------------------------------------------------
# 1. The client address behind the Ingress
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [t for t in TARGETS if t.parent.name == "overlays"
                                    and "api" in expected_services(t)], ids=_id)
def test_an_api_behind_an_ingress_believes_the_forwarded_client_address(target, monkeypatch):
    docs = render(target)
    assert of_kind(docs, "Ingress"), f"{_id(target)}: an api without an Ingress in front"
    _, _, cfg = _api_config(docs, monkeypatch)
    assert "forwarded_allow_ips" in cfg.api.model_fields_set and cfg.api.forwarded_allow_ips != "127.0.0.1", \
        f"{_id(target)}: api.forwarded_allow_ips is not set: every client looks like the ingress controller"


# ---------------------------------------------------------------------------------------------
# 2. One analytics worker per store
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [t for t in TARGETS if "analytics" in expected_services(t)], ids=_id)
def test_analytics_runs_exactly_one_replica_also_during_a_rollout(target):
    (dep,) = [d for d in deployments(render(target)) if component(d) == "analytics"]
    assert dep["spec"].get("replicas", 1) == 1, "the @store row and store alerts need every camera on one worker"
    assert dep["spec"].get("strategy", {}).get("type") == "Recreate", \
        "a RollingUpdate surge runs two analytics workers, each computing partial store totals"


# ---------------------------------------------------------------------------------------------
# 3. Redis: an ACL user and a database per store
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [o for o in STORE_OVERLAYS if {"analytics", "api"} & set(expected_services(o))],
                         ids=_id)
def test_redis_is_reached_as_the_stores_acl_user(overlay, monkeypatch):
    docs = render(overlay)
    env_cm = configmap_with_prefix(docs, "storelens-env")["data"]
    assert not [k for k, v in env_cm.items() if "redis://" in v], "a Redis URL in the ConfigMap carries no password"
    for comp in {"analytics", "api"} & set(expected_services(overlay)):
        _, c, cfg = _api_config(docs, monkeypatch, comp)
        assert REDIS_SECRET <= secret_refs(c), f"{comp} does not read the Secret storelens-redis"
        user, password = dummy_secret("storelens-redis", "username"), dummy_secret("storelens-redis", "password")
        assert cfg.live.redis_url is not None and cfg.live.redis_url.startswith(f"redis://{user}:{password}@"), \
            f"{comp}: live.redis_url does not sign in as the store's ACL user ({cfg.live.redis_url})"


def _redis_db(overlay) -> int:
    return int(configmap_with_prefix(render(overlay), "storelens-env")["data"]["STORELENS_REDIS_DB"])


def test_every_store_has_a_redis_database_of_its_own_and_never_database_0():
    dbs: dict[int, str] = {}
    for overlay in STORE_OVERLAYS:
        db, store = _redis_db(overlay), re.sub(r"-(edge|cloud)$", "", overlay.name)
        assert 1 <= db < REDIS_DATABASES, f"{overlay.name}: Redis database {db} (1-15; 0 is open to every store's user)"
        assert dbs.setdefault(db, store) == store, f"{overlay.name} and {dbs[db]} share Redis database {db}"


def _readme_acl() -> tuple[str, list[str]]:
    """The store and the arguments of the ``ACL SETUSER storelens-<store> ...`` command in k8s/README.md."""
    found = re.findall(r"ACL SETUSER storelens-([a-z0-9-]+) (.+)$", (K8S_DIR / "README.md").read_text(), re.M)
    assert len(found) == 1, f"k8s/README.md shows {len(found)} per-store `ACL SETUSER storelens-<store>` commands"
    store, args = found[0]
    return store, shlex.split(args)


def _redis(db: int):
    """A client of the local Redis (the default user) on database ``db``; skips without a Redis."""
    redis = pytest.importorskip("redis")
    from storelens.runtime.localdeploy import REDIS_URL, redis_db_url

    client = redis.Redis.from_url(redis_db_url(db), socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return client


def live_state_and_limiter_work(url: str, user: str, how: str):
    """Analytics' live state and the api's sign-in limiter both work on Redis ``url`` (keys under ``user``);
    the live state, to close, and the sign-in limits' key of the name ``user`` (:meth:`Authenticator.limit_name`)."""
    from storelens.api.security import Authenticator
    from storelens.config.auth import AuthConfig
    from storelens.contract import messages as m
    from storelens.storage import SqliteStorage
    from storelens.storage.live import RedisLiveState

    live = RedisLiveState(url, prefix=user)  # analytics' live state
    assert live.ping()
    assert live.set_occupancy(m.OccupancyUpdate(camera_id="door", ts_ms=1_000, occupancy=2, total_in=3,
                                                total_out=1))
    assert live.occupancy("door").occupancy == 2
    auth = Authenticator(AuthConfig(), SqliteStorage(":memory:"), redis_url=url)  # the api's sign-in limiter
    assert auth.login(user, "not the password", client="203.0.113.7") is None
    assert not auth._limiter_breaker.down, f"the sign-in limiter could not use Redis {how}"
    return live, auth.limit_name(user)


def test_the_readme_acl_user_works_in_its_database_and_nowhere_else(monkeypatch):
    """The README's ACL command, run against the local Redis for a throwaway user, lets the store's analytics
    (live state) and api (sign-in limiter) work with the URL the store's site.yaml builds, and keeps that user
    out of every other database (SELECT, MOVE, COPY ... DB, SWAPDB, FLUSHALL)."""
    import redis


    store, args = _readme_acl()
    (overlay,) = [o for o in STORE_OVERLAYS if o.name in (f"store-{store}", f"store-{store}-cloud")]
    readme_db = _redis_db(overlay)
    assert f"+select|{readme_db}" in args, f"the README's ACL command is not for {overlay.name}'s database {readme_db}"
    assert any(a.startswith(">$") for a in args), "the password comes from a variable"

    db, other = 7, 8  # below the databases 9-15 the local deployments empty (storelens.runtime.localdeploy)
    admin = _redis(db)
    user, password = f"sltest-h6-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    acl = [f">{password}" if a.startswith(">$") else f"+select|{db}" if a == f"+select|{readme_db}" else a
           for a in args]
    admin.execute_command("ACL", "SETUSER", user, *acl)
    kw = admin.connection_pool.connection_kwargs
    live = mine = None
    try:
        _, _, cfg = _api_config(render(overlay), monkeypatch, STORELENS_REDIS_HOST=kw["host"],
                                STORELENS_REDIS_PORT=str(kw["port"]), STORELENS_REDIS_DB=str(db),
                                STORELENS_REDIS_USERNAME=user, STORELENS_REDIS_PASSWORD=password)
        url = cfg.live.redis_url
        assert url == f"redis://{user}:{password}@{kw['host']}:{kw['port']}/{db}"
        live, limited = live_state_and_limiter_work(url, user, "as the store's user")
        keys = {k.decode() for k in admin.scan_iter(match=f"*{user}*")}
        limits = {k.decode() for k in admin.scan_iter(match=f"*{limited}*")}  # the name as the limits key it
        assert f"{user}:camera:door" in keys and any(k.startswith("LIMITS") for k in limits), (keys, limits)

        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(url.rsplit("/", 1)[0] + f"/{other}").ping()
        mine = redis.Redis.from_url(url)
        for command in (("SELECT", other), ("MOVE", f"{user}:camera:door", other),
                        ("COPY", f"{user}:camera:door", f"{user}:copy", "DB", other), ("SWAPDB", db, other),
                        ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                mine.execute_command(*command)
        assert admin.exists(f"{user}:camera:door")
    finally:
        for client in (live, mine):
            if client is not None:
                client.close()
        admin.execute_command("ACL", "DELUSER", user)
        for key in list(admin.scan_iter(match=f"*{user}*")):
            admin.delete(key)
        admin.close()


# ---------------------------------------------------------------------------------------------
# 4. A site version in force over the site file
# ---------------------------------------------------------------------------------------------

SITE = {"store": {"id": "h6-store"},
        "cameras": [{"id": "door", "source": "rtsp://${H6_CAM_USER:-u}:${H6_CAM_PW:-p}@10.0.0.5/stream1",
                     "lines": [{"id": "in", "a": [0, 5], "b": [9, 5]}]}]}


def _moved(cfg) -> dict:
    """The file's site as a version in which the camera's URL is another one (a manager's edit)."""
    doc = site_version_document(cfg)
    doc["cameras"][0]["source"] = "rtsp://${H6_CAM_USER:-u}:${H6_CAM_PW:-p}@10.0.0.9/stream1"
    return doc


def test_the_api_warns_at_start_when_a_version_overrides_the_site_files_cameras(tmp_path, caplog):
    from storelens.api.app import create_app
    from storelens.storage import SqliteStorage
    from storelens.storage import site as sq

    cfg = parse_config(SITE)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    try:
        assert sq.save_site(storage, 0, site_version_document(cfg), "cli", 1_000) == 1  # `site import` of the file
        with caplog.at_level(logging.WARNING, logger="storelens.api.app"):
            create_app(cfg, storage)
        assert not [r for r in caplog.records if "site file" in r.getMessage()], "the version is the file: no warning"

        assert sq.save_site(storage, 1, _moved(cfg), "ana", 2_000) == 2  # a manager moved the camera
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="storelens.api.app"):
            app = create_app(cfg, storage)
        assert app.state.context.config.cameras[0].source.endswith("@10.0.0.9/stream1")  # the version is in force
        (rec,) = [r for r in caplog.records if "site file" in r.getMessage()]
        assert rec.levelno == logging.WARNING
        assert "cameras" in rec.getMessage() and "site version 2" in rec.getMessage()
        assert "storelens site import" in rec.getMessage()
        assert "alert rules" not in rec.getMessage()
    finally:
        storage.close()


def test_the_kafka_services_warn_at_start_when_a_version_overrides_the_site_files_cameras(caplog):
    """What ingest, detect-track, attributes, reid and analytics call at start (``site_tail``) over real Kafka."""
    from test_runtime_readiness import _delete_topics, _kafka_up

    if not _kafka_up():
        pytest.skip("no Kafka (scripts/stack.sh up)")
    from storelens.runtime.kafka import ensure_topics
    from storelens.runtime.localdeploy import KAFKA
    from storelens.runtime.workers import SiteConfigPublisher, site_tail

    prefix = f"sltest-h6-{uuid.uuid4().hex[:10]}."
    cfg = parse_config({**SITE, "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": prefix,
                                          "group_prefix": prefix[:-1], "partitions": 1, "replication_factor": 1}})
    try:
        ensure_topics(cfg.kafka)
        publisher = SiteConfigPublisher(cfg)
        moved = _moved(cfg)
        publisher(m.SiteUpdate(version=4, ts_ms=int(time.time() * 1000), actor="ana", store_id=cfg.store.id,
                               cameras_json=json.dumps(moved["cameras"]), alert_rules_json=json.dumps([])))
        publisher.close()
        with caplog.at_level(logging.WARNING, logger="storelens.runtime.workers"):
            tail, newest = site_tail(cfg)
        tail.close()
        assert newest is not None and newest.version == 4
        (rec,) = [r for r in caplog.records if "site file" in r.getMessage()]
        assert "site version 4" in rec.getMessage() and "storelens site import" in rec.getMessage()
    finally:
        _delete_topics(cfg.kafka)


# ---------------------------------------------------------------------------------------------
# 5. The sign-in limiter of several api replicas
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [t for t in TARGETS if t.parent.name == "overlays"
                                    and "api" in expected_services(t)], ids=_id)
def test_several_api_replicas_share_the_sign_in_limiter(target, monkeypatch):
    dep, _, cfg = _api_config(render(target), monkeypatch)
    if dep["spec"].get("replicas", 1) > 1:
        assert cfg.live.redis_url, f"{_id(target)}: {dep['spec']['replicas']} api replicas without Redis each " \
                                   "count sign-in attempts alone"
    if target == CHAIN:
        assert dep["spec"].get("replicas", 1) == 1 and cfg.live.redis_url is None  # k8s/README.md, "Chain roll-up"
