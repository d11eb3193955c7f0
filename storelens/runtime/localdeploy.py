"""Run one store's six services locally, each its own process (tests and benchmarks).

A :class:`LocalDeployment` writes a site configuration into a private
namespace (Kafka topic prefix and consumer groups, a PostgreSQL schema, a
Redis database, one per pytest-xdist worker) so runs never see each other's data, starts the services
from ``services/*/main.py`` and offers readiness, metrics and fault helpers.
Needs the servers of ``scripts/stack.sh up``.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
REDIS_URL = os.environ.get("STORELENS_REDIS_URL", "redis://127.0.0.1:16379/0")
SERVICES = ("api", "analytics", "attributes", "reid", "detect-track", "ingest")


#: Ports handed out by :func:`free_port`: a block of ``_PORT_BLOCK`` per pytest-xdist worker from ``_PORT_BASE``.
_PORT_BASE, _PORT_BLOCK = 20000, 1000
_next_port: list[int] = []


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (net.ipv4.ip_local_port_range)."""
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind (TIME_WAIT is no obstacle)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for a server a test starts later.

    Taken below the kernel's ephemeral range, in a block of its own per pytest-xdist worker: a port from the
    ephemeral range (bind to port 0) can be taken by any outgoing connection (a Kafka client's) between this call
    and the server's bind, and two workers' port-0 answers may meet. Falls back to port 0 where the ephemeral range
    starts too low for the blocks.

    >>> 1024 < free_port() < 65536
    True
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    low = _PORT_BASE + (index % 8) * _PORT_BLOCK
    if low + _PORT_BLOCK > _ephemeral_low():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    if not _next_port:
        _next_port.append(os.getpid() % _PORT_BLOCK)  # two runs one after the other start apart
    for _ in range(_PORT_BLOCK):
        port = low + _next_port[0] % _PORT_BLOCK
        _next_port[0] += 1
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {low}-{low + _PORT_BLOCK - 1}")


def default_redis_db() -> int:
    """The Redis database of a deployment: 9, plus the pytest-xdist worker's number (``gw1``: 10), since a
    deployment empties its database when it starts and two workers' deployments may run at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    db = 9 + (int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0)
    if db > 15:
        raise ValueError(f"pytest-xdist worker {worker} has no Redis database of its own (9-15): use at most 7 workers")
    return db


def redis_db_url(db: int) -> str:
    """The local stack's Redis URL for database ``db``."""
    return REDIS_URL.rsplit("/", 1)[0] + f"/{db}"


def distributed_config(site: dict, uid: str, dsn: str, redis_db: int, partitions: int = 2) -> dict:
    """``site`` (a site config dict) wired to the local stack in namespace ``uid``."""
    return {**site,
            "storage": {"backend": "postgres", "dsn": dsn},
            "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": f"{uid}.", "group_prefix": uid,
                      "partitions": partitions},
            "live": {"redis_url": redis_db_url(redis_db)}}


class LocalDeployment:
    """One store's six services, each its own process, on a private topic/schema namespace."""

    def __init__(self, tmp: pathlib.Path, site: dict, redis_db: int | None = None) -> None:
        import psycopg
        import redis

        redis_db = default_redis_db() if redis_db is None else redis_db
        self.site = site
        self.uid = "e2e" + uuid.uuid4().hex[:8]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.uid}"')
        redis.Redis.from_url(redis_db_url(redis_db)).flushdb()
        dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}options=-csearch_path%3D{self.uid}"
        self.dsn, self.redis_db = dsn, redis_db
        self.tmp = tmp
        self.config_path = self.write_config(site)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {name: free_port() for name in (*SERVICES, "chain-rollup")}
        self.api_port = free_port()
        #: The first admin of the API service (created from the environment when it starts).
        self.admin = ("admin", "e2e-" + uuid.uuid4().hex)
        self.jwt_secret = uuid.uuid4().hex + uuid.uuid4().hex
        self._api: httpx.Client | None = None
        self.dead_topic = f"{self.uid}.dead-letter"
        self.frames_topic = f"{self.uid}.frames"

    def write_config(self, site: dict, suffix: str = "") -> pathlib.Path:
        """Write ``site`` wired to this deployment's namespace; return the file (e.g. a variant for one service)."""
        path = self.tmp / f"{self.uid}{suffix}.yaml"
        path.write_text(yaml.safe_dump(distributed_config(site, self.uid, self.dsn, self.redis_db)))
        return path

    def start(self, name: str, config_path: pathlib.Path | None = None) -> None:
        """Start service ``name`` (with the deployment's config, or ``config_path`` from :meth:`write_config`)."""
        config = config_path or self.config_path
        env = {**os.environ, "STORELENS_CONFIG": str(config), "STORELENS_HTTP_PORT": str(self.ports[name]),
               "STORELENS_HTTP_HOST": "127.0.0.1", "STORELENS_API_HOST": "127.0.0.1",
               "STORELENS_API_PORT": str(self.api_port), "PYTHONUNBUFFERED": "1", "STORELENS_LOG_LEVEL": "INFO",
               "STORELENS_ADMIN_USERNAME": self.admin[0], "STORELENS_ADMIN_PASSWORD": self.admin[1],
               "STORELENS_JWT_SECRET": self.jwt_secret}  # sessions survive an API restart
        log = open(self.tmp / f"{self.uid}-{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, str(REPO / "services" / name / "main.py")],
                                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)

    def url(self, name: str, path: str) -> str:
        port = self.api_port if name == "api" else self.ports[name]
        return f"http://127.0.0.1:{port}{path}"

    @property
    def api(self) -> httpx.Client:
        """A client of the API service signed in as the deployment's admin (after the API is ready)."""
        if self._api is None:
            client = httpx.Client(base_url=self.url("api", ""), timeout=30)
            r = client.post("/v1/auth/login", data={"username": self.admin[0], "password": self.admin[1]})
            r.raise_for_status()
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            self._api = client
        return self._api

    def wait_ready(self, name: str, timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            try:
                if httpx.get(self.url(name, "/readyz"), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{name} not ready after {timeout_s} s:\n{self.log(name)}")

    def log(self, name: str, tail: int = 4000) -> str:
        p = self.tmp / f"{self.uid}-{name}.log"
        return p.read_text(errors="replace")[-tail:] if p.exists() else ""

    def metric_value(self, name: str, metric: str, **labels: str) -> float:
        """Sum of ``metric`` over the series of service ``name`` that carry ``labels``."""
        text = httpx.get(self.url(name, "/metrics"), timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not (line.startswith(metric + "{") or line.startswith(metric + " ")):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def metric(self, name: str, metric: str, topic_suffix: str) -> float:
        text = httpx.get(self.url(name, "/metrics"), timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(metric + "{") and f'topic="{self.uid}.{topic_suffix}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_metric(self, name: str, metric: str, topic_suffix: str, at_least: float, timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if self.metric(name, metric, topic_suffix) >= at_least:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} {metric}[{topic_suffix}] < {at_least} after {timeout_s} s:\n{self.log(name)}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        proc = self.procs[name]
        proc.send_signal(sig)
        return proc.wait(timeout=timeout_s)

    def start_all(self) -> None:
        for name in SERVICES[:-1]:
            self.start(name)
        for name in SERVICES[:-1]:
            self.wait_ready(name)
        self.start("ingest")
        self.wait_ready("ingest")

    def wait_done(self, camera: str, last_ts_ms: int, timeout_s: float = 300) -> dict:
        """Until analytics has seen ``camera``'s last frame and its counts stop changing; return /v1/counts."""
        deadline = time.time() + timeout_s
        last = None
        while time.time() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            occ = self.api.get(f"/v1/occupancy/{camera}").json()
            if occ.get("last_seen_ts_ms") == last_ts_ms:
                counts = self.api.get("/v1/counts", params={"camera_id": camera}).json()
                # compare the counts only: without crossings the default range follows the clock
                if last is not None and (counts["buckets"], counts["totals"]) == (last["buckets"], last["totals"]):
                    return counts
                last = counts
            time.sleep(1.0)
        raise AssertionError(f"pipeline did not finish: analytics log:\n{self.log('analytics')}\n"
                             f"detect-track log:\n{self.log('detect-track')}")

    def shutdown(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{name} did not stop on SIGTERM")
            assert rc == 0, f"{name} exited {rc} on SIGTERM:\n{self.log(name)}"
