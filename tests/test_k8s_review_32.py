"""Review 32 of the k8s deployment: a database restored under running pods, stale docs, node size at the KEDA ceiling.

1. A service whose process finds the schema one revision behind (PostgreSQL restored from a backup taken before
   the last upgrade; a container restart does not run the initContainers again) waits, and counts as started:
   ``/startupz`` 200, so the kubelet's startup probe does not kill it into CrashLoopBackOff; ``/readyz`` names the
   schema revision; ``/healthz`` (the liveness, fed by the wait) stays up. The real services
   (``services/analytics/main.py``, ``services/reid/main.py``) on the stack's PostgreSQL. k8s/README.md says
   what to do after a restore (``storelens db upgrade`` in the api container, or a new api pod).
2. No doc says that the services create or migrate their tables (only the api's db-upgrade initContainer does).
3. Each overlay's CPU/memory requests at its KEDA ceiling (and the rollout surge) fit the node k8s/README.md
   states for it (ReadWriteOnce model volume: all its pods on one node).
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

import storelens.storage.migrations as migrations
from storelens.config import parse_config
from storelens.runtime import service
from storelens.runtime.localdeploy import free_port
from storelens.runtime.service import ServiceRuntime
from storelens.storage.gallery import SqlGalleryStore
from storelens.storage.history import SqlStorage
from test_db_upgrade_31 import HEAD, HEAD_ID, REPO, dsn, probe_json, schema, site  # noqa: F401  (schema: a fixture)
from test_k8s import (BASE, K8S_DIR, OVERLAYS, TARGETS, _id, cpu_cores, deployments, mem_bytes,
                      of_kind, pod_spec, render)

README = K8S_DIR / "README.md"


# 1 -- a schema behind under running pods: the restarted service waits, started ------------------------------------

def migrate_one_revision_behind(target: str, dim: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The history and gallery tables of ``target`` at their head revision but one, migrated for real (what a
    backup taken before the last upgrade restores)."""
    real = migrations.revisions
    with monkeypatch.context() as mp:
        mp.setattr(migrations, "revisions", lambda chain: real(chain)[:-1])
        SqlStorage(target, upgrade=True).close()
        SqlGalleryStore(target, dim=dim, upgrade=True).close()
    for chain, store in (("history", SqlStorage), ("gallery", SqlGalleryStore)):
        with pytest.raises(migrations.SchemaBehind, match=f"at revision {HEAD[chain] - 1} "):
            store(target, upgrade=False)


probe = probe_json  # (port, path) -> (status, JSON body)


@pytest.mark.parametrize("service, chain", [("analytics", "history"), ("reid", "gallery")])
def test_a_service_restarted_on_a_schema_behind_waits_started_and_names_the_revision(
        service, chain, schema, tmp_path, monkeypatch):  # noqa: F811
    store = {"backend": "postgres", "dsn": dsn(schema), "migrate": "wait"}
    cfg_path = site(tmp_path, store)  # faces.enabled: reid opens the gallery (analytics leaves it to reid)
    config = parse_config(yaml.safe_load(cfg_path.read_text()), open_cameras=False)
    migrate_one_revision_behind(store["dsn"], config.faces.gallery.dim, monkeypatch)
    port = free_port()
    env = {**os.environ, "STORELENS_CONFIG": str(cfg_path), "STORELENS_HTTP_PORT": str(port),
           "STORELENS_HTTP_HOST": "127.0.0.1", "CAM_URL": "rtsp://127.0.0.1:9/never-opened",
           "STORELENS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "services" / service / "main.py")], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        readyz: dict = {}
        for _ in range(1200):  # until it serves and waits (its first look at the tables), or it exits
            code, readyz = probe(port, "/readyz")
            if code == 503 and "schema" in readyz.get("details", {}) or proc.poll() is not None:
                break
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        assert proc.poll() is None, proc.communicate()
        detail = readyz["details"]["schema"]
        assert f"{chain} schema of" in detail and f"at revision {HEAD[chain] - 1} " in detail, readyz
        assert f"waiting for revision {HEAD[chain]} ({HEAD_ID[chain]})" in detail, readyz
        assert "storelens db upgrade" in detail, readyz
        assert readyz["status"] == "not ready" and readyz["checks"]["schema"] is False, readyz
        startupz = probe(port, "/startupz")
        assert startupz == (200, {"service": service, "status": "waiting", "waiting": ["schema"]}), startupz
        assert probe(port, "/healthz")[0] == 200
        # it waits, it does not migrate (the runbook's `storelens db upgrade` does)
        with pytest.raises(migrations.SchemaBehind):
            SqlStorage(store["dsn"], upgrade=False) if chain == "history" else \
                SqlGalleryStore(store["dsn"], dim=config.faces.gallery.dim, upgrade=False)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # SIGTERM while waiting: exit 0, nothing to stop yet


def test_a_wait_counts_as_started_and_the_rest_of_the_start_gets_start_s():
    """The states of one process: starting (503), waiting (started: 200; /healthz on the wait's beats), the rest
    of its start after the wait (the startup probe passed: /healthz gives it ``start_s`` from the wait's end, not
    ``stall_s``), running (``stall_s`` from the last beat). stall_s=0 and start_s of an hour: no clock involved."""
    rt = ServiceRuntime("analytics", port=0, stall_s=0.0, start_s=3600.0)
    seen = [(rt.startup(), rt.health()[0])]
    service.waiting("schema", "history schema at revision 17, waiting for revision 18")
    try:
        seen.append((rt.startup(), rt.readiness()[1]["details"]))
    finally:
        service.done_waiting("schema")
    seen.append((rt.startup(), rt.health()[0]))
    rt.beat()
    seen.append((rt.startup(), rt.health()[0]))
    assert seen == [
        ((False, {"status": "starting"}), True),
        ((True, {"status": "waiting", "waiting": ["schema"]}),
         {"schema": "history schema at revision 17, waiting for revision 18"}),
        ((False, {"status": "starting"}), True),  # the startup probe passed during the wait: start_s applies
        ((True, {"status": "started"}), False),  # running: stall_s (0 here) from the last beat
    ]


def test_readme_says_how_to_migrate_after_a_database_restore():
    """The runbook's command names the api Deployment and its main container as rendered, and that container
    finds the site file and the database credentials (the db-upgrade initContainer's)."""
    text = README.read_text()
    section = text.split("## Upgrades and migrations", 1)[1].split("\n## ", 1)[0]
    assert "After any\nrestore" in section, section
    cmd = re.search(r"kubectl -n \$NS exec deploy/(\S+) -c (\S+) -- storelens db upgrade\n", section)
    assert cmd, section
    assert f"kubectl -n $NS rollout restart deploy/{cmd[1]}\n" in section
    assert "a db upgrade of another release ran in between" not in " ".join(section.split())  # made it NEWER
    for target in (BASE, K8S_DIR / "overlays" / "chain"):
        (api,) = [d for d in deployments(render(target)) if d["metadata"]["name"] == cmd[1]]
        (main,) = [c for c in pod_spec(api)["containers"] if c["name"] == cmd[2]]
        (init,) = [c for c in pod_spec(api)["initContainers"] if c["name"] == "db-upgrade"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["STORELENS_CONFIG"] == init["command"][-1]  # `db upgrade` without --config reads it
        assert [e for e in init["env"] if e.get("valueFrom")] == [e for e in main["env"] if e["name"] in {
            "STORELENS_DB_USERNAME", "STORELENS_DB_PASSWORD"}]


# 2 -- no doc says that the services create or migrate their tables -------------------------------------------------

@pytest.mark.parametrize("path, stale", [
    ("k8s/README.md", "(the services create their tables)"),
    ("services/chain-rollup/main.py", "migrated on open"),
    ("k8s/overlays/chain/rollup.yaml", "the chain database migrated"),
])
def test_no_doc_says_the_services_migrate_their_tables(path, stale):
    text = " ".join((REPO / path).read_text().split())  # across line breaks
    assert stale not in text, f"{path}: {stale!r} (storage.migrate: wait: only the api's db-upgrade migrates)"


# 3 -- the node each overlay needs at its KEDA ceiling ----------------------------------------------------------------

ROW = re.compile(r"^\s*\| `([\w-]+)`[^|]*\| ([\d.]+) CPU, ([\d.]+) GiB \| ([^|]+) \|\s*$", re.M)
NODE = re.compile(r"^(\d+) cores, (\d+) GiB$")
#: what the kubelet and the system keep of a node (its allocatable part is the rest), as the README says
RESERVED_CPU, RESERVED_GIB = 0.25, 1.0


def pod_requests(dep: dict) -> tuple[float, float]:
    """The pod's effective requests (CPU cores, GiB): its containers' sum, or its largest initContainer's."""
    def req(c: dict, key: str, unit) -> float:
        return unit(c.get("resources", {}).get("requests", {}).get(key, 0))

    spec = pod_spec(dep)
    cpu = max([sum(req(c, "cpu", cpu_cores) for c in spec["containers"]),
               *(req(c, "cpu", cpu_cores) for c in spec.get("initContainers", []))])
    mem = max([sum(req(c, "memory", mem_bytes) for c in spec["containers"]),
               *(req(c, "memory", mem_bytes) for c in spec.get("initContainers", []))])
    return cpu, mem / 2**30


def peak_pods(dep: dict, ceiling: int | None) -> int:
    """Pods of ``dep`` at once: at the KEDA ceiling (its ScaledObject's maxReplicaCount) plus a rollout's surge."""
    replicas = max(dep["spec"].get("replicas", 1), ceiling or 0)
    strategy = dep["spec"].get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return replicas
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    return replicas + (math.ceil(replicas * int(surge[:-1]) / 100) if isinstance(surge, str) else int(surge))


def peak_requests(docs: list[dict]) -> tuple[float, float]:
    ceilings = {s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"]
                for s in of_kind(docs, "ScaledObject")}
    cpu = mem = 0.0
    for dep in deployments(docs):
        n = peak_pods(dep, ceilings.get(dep["metadata"]["name"]))
        c, m = pod_requests(dep)
        cpu, mem = cpu + n * c, mem + n * m
    return cpu, mem


def one_node_volume(docs: list[dict]) -> bool:
    """A ReadWriteOnce volume some pod mounts: every pod mounting it runs on one node."""
    rwo = {p["metadata"]["name"] for p in of_kind(docs, "PersistentVolumeClaim")
           if "ReadWriteOnce" in p["spec"]["accessModes"]}
    return any(v.get("persistentVolumeClaim", {}).get("claimName") in rwo
               for dep in deployments(docs) for v in pod_spec(dep).get("volumes", []))


def readme_nodes() -> dict[str, tuple[float, float, str]]:
    return {m[1]: (float(m[2]), float(m[3]), m[4].strip()) for m in ROW.finditer(README.read_text())}


def test_the_readme_states_the_node_of_every_overlay():
    assert set(readme_nodes()) == {t.name for t in TARGETS}, readme_nodes()
    assert "store-berlin-01" in {t.name for t in OVERLAYS}


@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_requests_at_the_keda_ceiling_fit_the_node_the_readme_states(target):
    cpu, gib = peak_requests(render(target))
    stated_cpu, stated_gib, node = readme_nodes()[target.name]
    assert math.isclose(cpu, stated_cpu, abs_tol=0.05) and math.isclose(gib, stated_gib, abs_tol=0.05), \
        f"{target.name}: requests at the ceiling are {cpu:.2f} CPU, {gib:.2f} GiB; the README says " \
        f"{stated_cpu} CPU, {stated_gib} GiB"
    size = NODE.match(node)
    if size is None:  # "any node": nothing forces its pods onto one node
        assert node.startswith("any node") and not one_node_volume(render(target)), (target.name, node)
        return
    cores, node_gib = int(size[1]), int(size[2])
    assert cpu <= cores - RESERVED_CPU, f"{target.name}: {cpu:.2f} CPU of requests on a {cores}-core node"
    assert gib <= node_gib - RESERVED_GIB, f"{target.name}: {gib:.2f} GiB of requests on a {node_gib} GiB node"
