"""README "Distributed mode", "Run a store by hand": the block works as written on a machine where `make stack` ran.

Before, the block exported ``STORELENS_CONFIG=site.yaml`` (no such file) and pointed at ``k8s/base/site.yaml``, whose
endpoints need ``STORELENS_DB_HOST``, ``STORELENS_KAFKA_SECURITY_PROTOCOL``, ``STORELENS_REDIS_HOST``, ... that
``scripts/stack.sh env`` does not print: a config error. Now the block names ``storelens/examples/stack.yaml``, the
demo store on the stack's variables.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import yaml

from storelens.config.env import template_names
from storelens.runtime.localdeploy import SERVICES, free_port

REPO = pathlib.Path(__file__).resolve().parents[1]
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def _stack_env() -> dict[str, str]:
    """What ``scripts/stack.sh env`` prints, as a dict (the script only prints: no server is touched)."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "env"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    env = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    assert env, out
    return env


def _readme_block() -> list[str]:
    """The lines of the README's "Run a store by hand" bash block."""
    text = (REPO / "README.md").read_text()
    start = text.index("Run a store by hand")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, "no bash block after 'Run a store by hand'"
    return [ln.split("  #")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def _setup_lines(lines: list[str]) -> list[str]:
    """The block's lines every terminal runs first (the ones that start no service)."""
    return [ln for ln in lines if "services/" not in ln]


def _config_path(lines: list[str]) -> str:
    exports = [ln for ln in lines if ln.startswith("export STORELENS_CONFIG=")]
    assert len(exports) == 1, lines
    return exports[0].split("=", 1)[1]


def _base_env() -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(REPO))}
    if "STORELENS_ASSETS" in os.environ:  # the README's quick start: the assets beside the checkout, or there
        env["STORELENS_ASSETS"] = os.environ["STORELENS_ASSETS"]
    return env


def test_the_readme_block_names_files_that_exist_and_variables_stack_sh_prints() -> None:
    lines = _readme_block()
    stack = _stack_env()
    config = _config_path(lines)
    assert (REPO / config).is_file(), f"the README's STORELENS_CONFIG={config} does not exist"
    assert 'eval "$(scripts/stack.sh env)"' in lines, lines
    # every file the block names exists (.venv is what `make stack` / `make setup` installs)
    for line in lines:
        for word in shlex.split(line):
            for token in re.findall(r"[\w.-]+(?:/[\w.-]+)+", word):
                if not token.startswith(".venv/"):
                    assert (REPO / token).exists(), f"README block names {token}, which does not exist: {line}"
    # the six services, each once, each on its own port (none of the stack's, none the API's)
    services = [re.search(r"services/([\w-]+)/main\.py", ln) for ln in lines]
    assert sorted(m.group(1) for m in services if m) == sorted(SERVICES)
    ports = [int(p) for ln in lines for p in re.findall(r"STORELENS_HTTP_PORT=(\d+)", ln)]
    site = yaml.safe_load((REPO / config).read_text())
    stack_ports = {int(v.rsplit(":", 1)[1].split("/")[0]) for v in stack.values()}
    assert len(set(ports)) == len(ports) == len(SERVICES) - 1
    assert not set(ports) & ({site["api"]["port"]} | stack_ports)
    # every variable the site file needs without a default is printed by stack.sh env (STORELENS_ASSETS has the
    # loader's default: the shared assets beside the checkout); the endpoints come from those variables
    text = (REPO / config).read_text()
    needed = {m.group(1) for m in _TEMPLATE.finditer(text) if m.group(2) is None} - {"STORELENS_ASSETS"}
    assert needed <= set(stack), f"{config} needs {sorted(needed - set(stack))}, which stack.sh env does not print"
    for field in (site["storage"]["dsn"], site["kafka"]["bootstrap_servers"], site["live"]["redis_url"]):
        assert template_names(field) and set(template_names(field)) <= set(stack), field


LOAD = """
import json, os, storelens
from storelens.config import load_config
c = load_config(os.environ["STORELENS_CONFIG"])
print(json.dumps({"module": storelens.__file__, "backend": c.storage.backend, "dsn": c.storage.dsn,
                  "kafka": c.kafka.bootstrap_servers, "topic_prefix": c.kafka.topic_prefix,
                  "redis": c.live.redis_url, "sources": [cam.source for cam in c.cameras]}))
"""


@pytest.mark.parametrize("setup", ["as the README says", "without the eval line (the file's defaults)"])
def test_the_site_file_loads_as_the_readme_says_and_points_at_the_stack(setup: str) -> None:
    lines = _setup_lines(_readme_block())
    if setup.startswith("without"):
        lines = [ln for ln in lines if not ln.startswith("eval ")]
    script = "\n".join([*lines, f"exec {shlex.quote(sys.executable)} -c {shlex.quote(LOAD)}"])
    run = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, cwd=REPO, env=_base_env())
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    stack = _stack_env()
    assert pathlib.Path(got["module"]).resolve().is_relative_to(REPO)
    assert got["backend"] == "postgres"
    assert got["dsn"] == stack["STORELENS_PG_DSN"]
    assert got["kafka"] == stack["STORELENS_KAFKA_BOOTSTRAP"]
    assert got["redis"] == stack["STORELENS_REDIS_URL"]
    assert got["topic_prefix"]  # its own topics on the shared broker
    for source in got["sources"]:  # the demo's shared video
        assert pathlib.Path(source).is_file(), source


def test_the_api_service_starts_on_the_stack_with_the_readme_config(tmp_path: pathlib.Path) -> None:
    """The README's api line (its first admin too), on a fresh PostgreSQL schema and a free port."""
    import psycopg

    lines = _readme_block()
    stack = _stack_env()
    api_line = next(ln for ln in lines if "services/api/main.py" in ln)
    assignments = dict(w.split("=", 1) for w in shlex.split(api_line) if re.match(r"^[A-Z_]+=", w))
    schema = "byhand" + uuid.uuid4().hex[:10]
    with psycopg.connect(stack["STORELENS_PG_DSN"], autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    port = free_port()
    env = {**_base_env(), **stack, **assignments, "STORELENS_CONFIG": str(REPO / _config_path(lines)),
           "STORELENS_PG_DSN": f"{stack['STORELENS_PG_DSN']}?options=-csearch_path%3D{schema}",
           "STORELENS_API_PORT": str(port), "PYTHONPATH": str(REPO)}  # this checkout's storelens
    log = tmp_path / "api.log"
    proc = subprocess.Popen([sys.executable, str(REPO / "services" / "api" / "main.py")], cwd=REPO, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"api exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /healthz:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        r = httpx.post(f"{base}/v1/auth/login", timeout=30,
                       data={"username": "admin", "password": assignments["STORELENS_ADMIN_PASSWORD"]})
        assert r.status_code == 200, r.text
        with psycopg.connect(stack["STORELENS_PG_DSN"], autocommit=True) as conn:
            users = conn.execute(f'SELECT username FROM "{schema}".users').fetchall()
        assert users == [("admin",)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        with psycopg.connect(stack["STORELENS_PG_DSN"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_stack_site_is_the_demo_store_on_the_stack() -> None:
    """``stack.yaml`` is ``demo.yaml`` but for where it keeps and passes data (so the two do not drift apart)."""
    demo = yaml.safe_load((REPO / "storelens" / "examples" / "demo.yaml").read_text())
    stack = yaml.safe_load((REPO / _config_path(_readme_block())).read_text())
    wiring = {"storage", "kafka", "live"}
    assert {k: v for k, v in stack.items() if k not in wiring} == {k: v for k, v in demo.items() if k not in wiring}
    assert stack["storage"]["backend"] == "postgres" and "live" in stack and "kafka" in stack
