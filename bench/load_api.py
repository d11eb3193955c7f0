#!/usr/bin/env python
"""The API under load (issue 12 item 8): 50 concurrent clients on the dashboard's read mix.

1. **A real demo database**: the embedded pipeline runs once on a real clip (the example site
   ``storelens/examples/demo.yaml`` on ``video/people_street.mp4``, faces on, plus two alert rules so
   ``/v1/alerts`` has rows) into SQLite; the file is cached under ``/tmp/storelens-loadbench/<key>``,
   keyed by the clip's SHA-256 and the site, so later runs reuse it. For PostgreSQL the same rows are
   copied into a schema of ``$STORELENS_PG_DSN`` (also reused).
2. **The real app served by uvicorn** in a child process (``--workers N``: uvicorn worker
   processes), signed in with a viewer API key (as a dashboard or integration would).
3. **Load**: ``wrk`` (Debian package ``wrk``: C, epoll, a few % of a core for thousands of requests/s,
   so it leaves the 2 cores to the server; locust, the other choice, is Python and needs about a
   core of its own at these rates). One ``wrk -t1 -c<n>`` per route of the mix, the 50 connections
   spread over the routes, all started together for ``--duration`` seconds; each reports
   requests, errors (socket errors and non-2xx) and latency percentiles through a Lua ``done()``.
   ``--sse N`` holds N ``/v1/live`` streams open during the run (dashboards left open).
4. **The table**: per route requests, rps, p50, p95, p99, errors; the total; the CPU used by the
   server and by the load generator over the run (in % of one core; the box has ``nproc`` cores).

Mix (what the dashboard reads; the history ranges end in the past: the demo's day):
``/v1/occupancy``, ``/v1/counts`` (day, 5-minute buckets), ``/v1/zones/stats`` (day, hourly),
``/v1/queues``, ``/v1/alerts``, ``/v1/kpis`` (day), ``/v1/cameras/street/heatmap`` (JSON),
``/v1/flows``, ``/v1/demographics``, ``/v1/zones``.

    apt-get install wrk     # once
    python bench/load_api.py --backend sqlite --duration 20
    python bench/load_api.py --backend postgres --workers 2 --duration 20   # needs STORELENS_PG_DSN
    python bench/load_api.py --build-only                                   # just make the database

``--profile out.svg`` records the server under load with py-spy (``py-spy record``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CACHE = pathlib.Path(os.environ.get("STORELENS_LOADBENCH_CACHE", "/tmp/storelens-loadbench"))
DAY0 = 1_767_225_600_000  # the demo camera's start_ts_ms (2026-01-01T00:00Z)
DAY_MS = 86_400_000
#: Alert rules added to the example site so the demo run stores alerts.
ALERT_RULES = [
    {"kind": "camera_occupancy", "id": "street-crowd", "camera": "street", "max": 6, "hold_s": 0.5,
     "cooldown_s": 1},
    {"kind": "zone_occupancy", "id": "pavement-busy", "camera": "street", "zone": "right-pavement", "max": 2,
     "hold_s": 0.3, "cooldown_s": 1},
]
ADMIN_PASSWORD = "load bench admin password"


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def site_dict() -> dict:
    """The example site (``storelens/examples/demo.yaml``) with the alert rules, as a dict."""
    from storelens.config import load_config

    cfg = load_config(REPO / "storelens" / "examples" / "demo.yaml")
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["alerts"] = {**data.get("alerts", {}), "rules": ALERT_RULES}
    return data


def demo_db() -> tuple[pathlib.Path, dict]:
    """The SQLite file of one embedded pipeline run on the demo clip (cached) and the site dict."""
    from storelens.config import parse_config

    site = site_dict()
    clip = pathlib.Path(site["cameras"][0]["source"])
    demo_yaml = (REPO / "storelens" / "examples" / "demo.yaml").read_text()
    key_src = json.dumps({"clip": _sha256(clip), "site": demo_yaml, "alerts": ALERT_RULES}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    folder = CACHE / key
    db = folder / "demo.db"
    site["storage"] = {"backend": "sqlite", "path": str(db)}
    if (folder / "done").exists():
        return db, site
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    from storelens.storage import SqlStorage

    from storelens.cli import _run

    config = parse_config(site)
    print(f"building the demo database {db} (one pipeline run on {clip.name}) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with SqlStorage(str(db)) as storage:
        result = _run(config, storage=storage, show_progress=False)
    (folder / "site.json").write_text(json.dumps(site, indent=1))
    (folder / "done").write_text(f"{result.frames} frames in {time.perf_counter() - t0:.0f} s\n")
    print(f"built in {time.perf_counter() - t0:.0f} s ({result.frames} frames)", file=sys.stderr, flush=True)
    return db, site



def copy_to_postgres(db: pathlib.Path, dsn: str, schema: str) -> None:
    """Copy every table of the SQLite history ``db`` into ``schema`` of ``dsn`` (created, emptied first)."""
    import sqlalchemy as sa

    from storelens.storage import SqlStorage
    from storelens.storage.schema import metadata

    with SqlStorage(dsn, schema=schema) as pg, SqlStorage(str(db)) as lite:
        src = lite.db.engine.connect()
        dst = pg.db.engine.connect()
        try:
            names = [t.name for t in metadata.sorted_tables  # the history; not the sign-in tables
                     if sa.inspect(src).has_table(t.name)
                     and t.name not in {"schema_version", "users", "api_keys", "audit_log"}]
            tables = {t.name: t for t in metadata.sorted_tables}
            dst_meta = sa.MetaData(schema=schema)
            with dst.begin():
                for name in reversed(names):
                    dst.execute(sa.Table(name, dst_meta, autoload_with=dst).delete())
            for name in names:
                cols = [c.name for c in tables[name].columns]
                rows = [dict(r._mapping) for r in src.execute(sa.select(*[sa.column(c) for c in cols])
                                                               .select_from(sa.table(name)))]
                if rows:
                    with dst.begin():
                        dst.execute(sa.Table(name, dst_meta, autoload_with=dst).insert(), rows)
                with dst.begin():  # serial ids continue after the copied rows
                    for col in tables[name].primary_key.columns:
                        if col.autoincrement is True or (col.autoincrement == "auto" and isinstance(
                                col.type, sa.Integer) and len(tables[name].primary_key.columns) == 1):
                            seq = dst.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                              {"t": f"{schema}.{name}", "c": col.name}).scalar()
                            if seq:
                                dst.execute(sa.text(f"SELECT setval(:s, (SELECT COALESCE(MAX({col.name}), 0) + 1 "
                                                    f"FROM {schema}.{name}), false)"), {"s": seq})
        finally:
            src.close()
            dst.close()


def pg_schema(db: pathlib.Path, dsn: str) -> str:
    """The PostgreSQL schema holding a copy of ``db`` (made once, marked done by a file beside ``db``)."""
    schema = f"slload_{db.parent.name}"
    mark = db.parent / f"pg-{hashlib.sha256(dsn.encode()).hexdigest()[:8]}"
    if not mark.exists():
        print(f"copying {db} into PostgreSQL schema {schema} ...", file=sys.stderr, flush=True)
        copy_to_postgres(db, dsn, schema)
        mark.write_text(schema + "\n")
    return schema


# -- the server -------------------------------------------------------------------------------------

def _serve_child(site_path: str, port: int, workers: int) -> int:
    """Child process: serve the site's API (``api.workers`` uvicorn processes) on ``port``."""
    from storelens.api.server import serve_site

    if os.environ.get("STORELENS_LOADBENCH_BASELINE"):  # as served before the fixes: h11 parser, asyncio loop
        import uvicorn

        init = uvicorn.Config.__init__

        def baseline_init(self, *a, **kw):
            init(self, *a, **{**kw, "http": "h11", "loop": "asyncio"})

        uvicorn.Config.__init__ = baseline_init  # type: ignore[method-assign]
    os.environ["STORELENS_CONFIG"] = site_path
    return serve_site(site_path, host="127.0.0.1", port=port, workers=workers)


class Server:
    """The API of ``site`` (a dict) served by uvicorn in a child process; ``with Server(...) as base_url``."""

    def __init__(self, site: dict, workers: int = 1, env: dict | None = None) -> None:
        from storelens.runtime.localdeploy import free_port

        self.site, self.workers, self.port = site, workers, free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="slload-")

    def __enter__(self) -> str:
        import httpx

        path = pathlib.Path(self._tmp.name) / "site.json"
        path.write_text(json.dumps(self.site))
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-child", str(path), "--port", str(self.port),
                                      "--workers", str(self.workers)], env=self.env, start_new_session=True)
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API server did not answer /healthz within 120 s")

    def pids(self) -> list[int]:
        """The server process and its descendants (uvicorn workers)."""
        assert self.proc is not None
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                kids = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                kids = []
            todo += [int(k) for k in kids]
        return out

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the server's processes."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._tmp.cleanup()


# -- the load ---------------------------------------------------------------------------------------

def read_mix(camera_id: str = "street") -> list[tuple[str, str]]:
    """``(label, path?query)`` of the dashboard's reads over the demo's day."""
    day = f"start_ms={DAY0}&end_ms={DAY0 + DAY_MS}"
    return [
        ("occupancy", "/v1/occupancy"),
        ("counts day/5min", f"/v1/counts?camera_id={camera_id}&{day}&bucket_s=300"),
        ("zones/stats day/1h", f"/v1/zones/stats?camera_id={camera_id}&{day}&bucket_s=3600"),
        ("zones", "/v1/zones"),
        ("queues", "/v1/queues"),
        ("alerts", "/v1/alerts?limit=50"),
        ("kpis day/hour", f"/v1/kpis?{day}&period=hour"),
        ("heatmap json day", f"/v1/cameras/{camera_id}/heatmap?{day}&format=json"),
        ("flows day", f"/v1/flows?{day}"),
        ("demographics day", f"/v1/demographics?{day}"),
    ]


WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.stderr:write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p95":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def _sse_holder(base: str, token: str, stop: threading.Event, got: list) -> None:
    import httpx

    try:
        with httpx.Client(timeout=httpx.Timeout(30, read=None)) as c, c.stream(
                "GET", f"{base}/v1/live", headers={"Authorization": f"Bearer {token}"}) as r:
            got.append(r.status_code)
            for _ in r.iter_lines():
                if stop.is_set():
                    break
    except Exception as exc:  # noqa: BLE001  (reported, never fatal)
        got.append(repr(exc))


def drive(base: str, token: str, clients: int, duration_s: int, sse: int = 0,
          profile: str | None = None, server: Server | None = None) -> dict:
    """50 (``clients``) wrk connections over :func:`read_mix` for ``duration_s``; per-route results."""
    import resource

    mix = read_mix()
    per = [clients // len(mix) + (1 if i < clients % len(mix) else 0) for i in range(len(mix))]
    lua = pathlib.Path(tempfile.mkstemp(suffix=".lua", prefix="slload-")[1])
    lua.write_text(WRK_LUA)
    stop, sse_got = threading.Event(), []
    holders = [threading.Thread(target=_sse_holder, args=(base, token, stop, sse_got), daemon=True)
               for _ in range(sse)]
    for h in holders:
        h.start()
    cmds = [["wrk", "-t1", f"-c{n}", f"-d{duration_s}s", "--timeout", "10s", "-H", f"Authorization: Bearer {token}",
             "-s", str(lua), base + path] for (_, path), n in zip(mix, per) if n]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu0 = server.cpu_s() if server is not None else 0.0
    t0 = time.perf_counter()
    spy = None
    if profile and server is not None:
        spy = subprocess.Popen(["py-spy", "record", "-o", profile, "-d", str(max(1, duration_s - 2)), "-r", "50",
                                "--nonblocking", "--gil", "-s", "-p", str(server.proc.pid)]
                               + (["--format", "raw"] if not profile.endswith(".svg") else []),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    server_cpu = (server.cpu_s() - server_cpu0) if server is not None else 0.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if spy is not None:
        spy.wait()
    stop.set()
    lua.unlink()
    gen_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rows = []
    for (label, path), n, (out, err), p in zip(mix, per, outs, procs):
        line = next((x for x in err.splitlines() if x.startswith("WRKJSON ")), None)
        if p.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed on {path}: {err[-500:]} {out[-500:]}")
        r = json.loads(line[len("WRKJSON "):])
        errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        rows.append({"route": label, "path": path, "clients": n, "requests": r["requests"],
                     "rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50"] / 1000,
                     "p95_ms": r["p95"] / 1000, "p99_ms": r["p99"] / 1000, "errors": errors})
    return {"rows": rows, "wall_s": wall, "server_cpu_pct": 100 * server_cpu / wall,
            "generator_cpu_pct": 100 * gen_cpu / wall, "sse": sse_got, "cmd": " ".join(cmds[0][:-1]).replace(token, "<token>")}


def total_row(rows: list[dict]) -> dict:
    """All routes together: requests, rps, and the largest per-route percentiles (a conservative total)."""
    return {"route": "all", "requests": sum(r["requests"] for r in rows), "rps": sum(r["rps"] for r in rows),
            "p50_ms": max(r["p50_ms"] for r in rows), "p95_ms": max(r["p95_ms"] for r in rows),
            "p99_ms": max(r["p99_ms"] for r in rows), "errors": sum(r["errors"] for r in rows)}


def sign_in(base: str) -> str:
    import httpx

    r = httpx.post(f"{base}/v1/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


def print_table(title: str, res: dict) -> None:
    print(f"\n### {title}")
    print(f"server CPU {res['server_cpu_pct']:.0f}% of one core, load generator (wrk) CPU "
          f"{res['generator_cpu_pct']:.0f}% of one core, {os.cpu_count()} cores; wall {res['wall_s']:.1f} s"
          + (f"; /v1/live streams held: {res['sse']}" if res["sse"] else ""))
    print("| route | clients | requests | rps | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in [*res["rows"], total_row(res["rows"])]:
        print(f"| {r['route']} | {r.get('clients', sum(x['clients'] for x in res['rows']))} | {r['requests']} | "
              f"{r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    sys.stdout.flush()


def summarize(paths: list[str]) -> None:
    """One line per ``--json`` result file: the whole mix's rps, p50/p95 over routes, errors, CPU."""
    import statistics

    print("| backend | server | run | requests | rps | p50 ms (median route) | p95 ms (median route) | "
          "p95 ms (worst route) | p99 ms (worst route) | errors | server CPU | wrk CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        data = json.loads(pathlib.Path(path).read_text())
        label = "before (no cache, h11, asyncio), 1 worker" if "--baseline" in data["cmd"] \
            else f"after, {data['workers']} worker(s)"
        for i, res in enumerate(data["results"], 1):
            rows = res["rows"]
            print(f"| {data['backend']} | {label} | {pathlib.Path(path).stem.rsplit('_', 1)[-1]}.{i} | "
                  f"{sum(r['requests'] for r in rows)} | {sum(r['rps'] for r in rows):.0f} | "
                  f"{statistics.median(r['p50_ms'] for r in rows):.1f} | "
                  f"{statistics.median(r['p95_ms'] for r in rows):.1f} | {max(r['p95_ms'] for r in rows):.1f} | "
                  f"{max(r['p99_ms'] for r in rows):.1f} | {sum(r['errors'] for r in rows)} | "
                  f"{res['server_cpu_pct']:.0f}% | {res['generator_cpu_pct']:.0f}% |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (api.workers)")
    ap.add_argument("--baseline", action="store_true",
                    help="serve as before the fixes: no response cache (api.cache_ttl_s: 0), h11, asyncio loop, "
                    "5 ms GIL switch interval")
    ap.add_argument("--cache-ttl", type=float, help="api.cache_ttl_s (default the config's, 1 s)")
    ap.add_argument("--switch-interval", type=float,
                    help="the server's GIL switch interval in s (default storelens.api.server's)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=int, default=20, help="seconds of load per run")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of load before the measured run")
    ap.add_argument("--sse", type=int, default=5, help="/v1/live streams held open during the run")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", help="py-spy flame graph (SVG) of the server during the (last) run")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--build-only", action="store_true", help="only build (or find) the demo database")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="summarize --json result files and exit")
    ap.add_argument("--serve-child", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_child:
        return _serve_child(args.serve_child, args.port, args.workers)
    if args.summarize:
        summarize(args.summarize)
        return 0
    if shutil.which("wrk") is None and not args.build_only:
        print("error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    db, site = demo_db()
    if args.build_only:
        print(db)
        return 0
    if args.backend == "postgres":
        dsn = os.environ.get("STORELENS_PG_DSN")
        if not dsn:
            print("error: --backend postgres needs STORELENS_PG_DSN (eval \"$(scripts/stack.sh env)\")",
                  file=sys.stderr)
            return 2
        schema = pg_schema(db, dsn)
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        from storelens.storage.dialects import _libpq

        params = conninfo_to_dict(_libpq(dsn))
        params["options"] = f"-c search_path={schema}"
        site["storage"] = {"backend": "postgres", "dsn": make_conninfo(**params)}
    site["faces"] = {**site.get("faces", {}), "enabled": False}  # no gallery needed for the read mix
    site["api"] = {**site.get("api", {}), "workers": args.workers}
    if args.baseline or args.cache_ttl is not None:
        site["api"]["cache_ttl_s"] = 0.0 if args.baseline else args.cache_ttl
    env = {**({"STORELENS_LOADBENCH_BASELINE": "1", "STORELENS_API_SWITCH_INTERVAL_S": "0.005"}
              if args.baseline else {}),
           **({"STORELENS_API_SWITCH_INTERVAL_S": str(args.switch_interval)} if args.switch_interval else {}),
           "STORELENS_ADMIN_PASSWORD": ADMIN_PASSWORD, "STORELENS_JWT_SECRET": "load-bench-" + "x" * 40,
           "STORELENS_LOG_LEVEL": "WARNING"}
    cmd = "python bench/load_api.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    server = Server(site, workers=args.workers, env=env)
    with server as base:
        token = sign_in(base)
        if args.warmup:
            drive(base, token, args.clients, args.warmup)
        for i in range(args.repeat):
            res = drive(base, token, args.clients, args.duration, sse=args.sse,
                        profile=args.profile if i == args.repeat - 1 else None, server=server)
            results.append(res)
            print_table(f"{args.backend}, {'baseline, ' if args.baseline else ''}{args.workers} worker(s), {args.clients} clients, {args.duration} s "
                        f"(run {i + 1}/{args.repeat}): `{cmd}`", res)
    print(f"\nwrk per route: `{results[0]['cmd']} <url>`")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"cmd": cmd, "backend": args.backend, "workers": args.workers,
                                                       "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
