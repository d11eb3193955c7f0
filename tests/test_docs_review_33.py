"""Fixes of a read-only review of the docs a new user follows (issue 9), each checked against the real thing:

1. services/api/README.md's "Run locally" steps (`storelens demo --no-serve`, then the api service) use one site
   file, so one database: their commands, run as written (the demo's config as ``storelens demo`` builds it, the
   service's as ``serve_site`` loads it), resolve to the same SQLite file, also beside a ``make demo`` history;
2. scripts/browser.sh takes the browser of ``$STORELENS_CHROMIUM`` (as the browser tests do), and refuses one that
   is not an executable file;
3. README's Quick start names what ``make demo`` and ``make test`` need beyond Python and pip;
4. the dashboard's dev server proxies to the API's default port (``ApiConfig().port``);
5. ``storelens replay`` without ``--config`` takes ``$STORELENS_CONFIG`` (as README's command list says), else the
   bundled example (a clear error when its history does not exist);
6. k8s/README.md says that an admin, not a manager, saves the site through ``/v1/site`` (every PUT/DELETE there is
   admin-only).
"""
from __future__ import annotations

import json
import pathlib
import re
import shlex
import shutil
import subprocess
from typing import get_type_hints

import pytest
import yaml

from storelens.api.routes import site as site_routes
from storelens.cli import _demo_config, build_parser
from storelens.config import load_config
from storelens.config.site import ApiConfig
from test_cli_walkthrough_30 import run

REPO = pathlib.Path(__file__).parents[1]


def code_spans(text: str) -> list[str]:
    """The inline code spans of markdown ``text``, in order."""
    return re.findall(r"`([^`]+)`", text)


# 1 ---------------------------------------------------------------------------------------------------------------

def run_locally_commands() -> list[str]:
    """The commands of the api README's "Run locally" item, in order (code spans that run something)."""
    text = (REPO / "services" / "api" / "README.md").read_text()
    item = re.search(r"^- Run locally.*?(?=^- |\Z)", text, re.S | re.M)
    assert item, "services/api/README.md has no 'Run locally' item"
    return [s for s in code_spans(item.group(0)) if s.startswith(("cp ", "storelens ")) or "main.py" in s]


def storage_paths_of_the_steps(checkout: pathlib.Path) -> dict[str, pathlib.Path]:
    """Each step of "Run locally" run as written in ``checkout`` (a copy of the example site): the ``cp`` done, the
    ``storelens demo`` step's history as the demo builds its config, the service's as ``serve_site`` loads it."""
    paths: dict[str, pathlib.Path] = {}
    for cmd in run_locally_commands():
        words = shlex.split(cmd)
        if words[0] == "cp":
            shutil.copy(checkout / words[1], checkout / words[2])
        elif words[0] == "storelens":
            args = build_parser().parse_args(words[1:])
            assert args.command == "demo", cmd
            paths["demo"] = pathlib.Path(_demo_config(args).storage.path).resolve()
        else:  # VAR=value ... python services/api/main.py
            env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
            assert words[-1] == "services/api/main.py" and (checkout / words[-1]).is_file(), cmd
            # services/api/main.py: serve_site($STORELENS_CONFIG, else /etc/storelens/site.yaml) -> load_config
            paths["service"] = pathlib.Path(load_config(env.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
                                            .storage.path).resolve()
    return paths


@pytest.mark.parametrize("make_demo_history", [False, True], ids=["fresh-checkout", "after-make-demo"])
def test_the_api_readme_run_locally_steps_use_one_database(tmp_path, monkeypatch, make_demo_history) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "storelens" / "examples").mkdir(parents=True)
    (checkout / "services" / "api").mkdir(parents=True)
    shutil.copy(REPO / "storelens" / "examples" / "demo.yaml", checkout / "storelens" / "examples")
    shutil.copy(REPO / "services" / "api" / "main.py", checkout / "services" / "api")
    if make_demo_history:  # `make demo` (`storelens demo`, the bundled example) left its history here
        (checkout / "storelens-demo.db").write_bytes(b"")
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("STORELENS_CONFIG", raising=False)
    paths = storage_paths_of_the_steps(checkout)
    assert set(paths) == {"demo", "service"}, run_locally_commands()
    assert paths["demo"] == paths["service"], paths


# 2 ---------------------------------------------------------------------------------------------------------------

def browser_sh(tmp_path: pathlib.Path, chromium: str) -> subprocess.CompletedProcess:
    """scripts/browser.sh with ``STORELENS_CHROMIUM=chromium`` and a PATH of ``head`` alone (no apt-get, no sudo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "head").exists():
        (bin_dir / "head").symlink_to(shutil.which("head"))
    return subprocess.run(["/bin/bash", str(REPO / "scripts" / "browser.sh")], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "STORELENS_CHROMIUM": chromium}, timeout=60)


def test_browser_sh_takes_the_chromium_of_storelens_chromium(tmp_path) -> None:
    stub = tmp_path / "my-chromium"
    stub.write_text("#!/bin/sh\necho 'Chromium 999.0 stub-of-test-33'\n")
    stub.chmod(0o755)
    res = browser_sh(tmp_path, str(stub))
    assert res.returncode == 0, res.stderr
    assert "stub-of-test-33" in res.stdout, res.stdout  # before: /usr/bin/chromium's version, or exit 2


@pytest.mark.parametrize("make_file", [False, True], ids=["missing", "not-executable"])
def test_browser_sh_refuses_a_storelens_chromium_that_is_not_an_executable(tmp_path, make_file) -> None:
    chromium = tmp_path / "no-chromium"
    if make_file:
        chromium.write_text("#!/bin/sh\n")
    res = browser_sh(tmp_path, str(chromium))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"STORELENS_CHROMIUM={chromium} is not an executable file" in res.stderr, res.stderr


# 3 ---------------------------------------------------------------------------------------------------------------

def quick_start() -> str:
    text = (REPO / "README.md").read_text()
    part = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
    assert part, "README.md has no Quick start"
    return part.group(1)


def test_the_quick_start_names_what_make_demo_and_make_test_need() -> None:
    text = quick_start()
    assert "no servers" not in text and "only other requirements" not in text
    items = {m.group(1): m.group(2) for m in re.finditer(r"^- `make (demo|test)`:(.*?)(?=^- |^\n|\Z)", text,
                                                          re.S | re.M)}
    assert set(items) == {"demo", "test"}, text
    for what in ("Node.js", "npm", "Python 3.10"):
        assert what in items["demo"], (what, items["demo"])
    for what in ("PostgreSQL", "Redis", "Java 17", "Maven", "Chromium", "STORELENS_CHROMIUM"):
        assert what in items["test"], (what, items["test"])


# 4 ---------------------------------------------------------------------------------------------------------------

def test_the_dashboard_dev_proxy_goes_to_the_api_default_port() -> None:
    text = (REPO / "dashboard" / "vite.config.ts").read_text()
    targets = re.findall(r'"/v1":\s*"http://127\.0\.0\.1:(\d+)"', text)
    assert targets == [str(ApiConfig().port)], text
    assert "storelens serve" not in text  # no such command
    readme = (REPO / "README.md").read_text()
    dev = re.search(r"npm run dev`.*?port (\d+)", readme, re.S)
    assert dev and dev.group(1) == str(ApiConfig().port)


# 5 ---------------------------------------------------------------------------------------------------------------

def test_replay_without_config_takes_storelens_config(tmp_path, capfd, monkeypatch) -> None:
    site = tmp_path / "conf" / "site.yaml"
    site.parent.mkdir()
    site.write_text(yaml.safe_dump({"store": {"id": "s33"}, "storage": {"backend": "sqlite", "path": "hist.db"},
                                    "cameras": [{"id": "cam-33", "source": "videos/x.mp4"}]}))
    code, _, err = run(capfd, "site", "import", str(site), "--config", str(site))  # the history: version 1
    assert code == 0, err
    monkeypatch.setenv("STORELENS_CONFIG", str(site))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capfd, "replay", "--json")  # before: exit 2, "--config is required"
    assert code == 0, err
    assert [c["camera_id"] for c in json.loads(out)["cameras"]] == ["cam-33"], out


@pytest.mark.parametrize("history", [False, True], ids=["no history", "the example's history"])
def test_replay_without_config_nor_storelens_config_refuses_naming_both(tmp_path, capfd, monkeypatch,
                                                                         history) -> None:
    """Never the bundled example's lines over a history (merged review 33a, 4): refused, whether or not the
    example's history (storelens-demo.db in the working directory) exists, which is left as it was."""
    monkeypatch.delenv("STORELENS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    if history:
        (tmp_path / "storelens-demo.db").write_bytes(b"")
    code, _, err = run(capfd, "replay")
    assert code == 2
    assert "give --config FILE or set $STORELENS_CONFIG" in err, err
    assert (tmp_path / "storelens-demo.db").exists() == history
    if history:
        assert (tmp_path / "storelens-demo.db").read_bytes() == b""  # not opened: no schema written


# 6 ---------------------------------------------------------------------------------------------------------------

def test_only_an_admin_changes_the_site_and_the_k8s_readme_says_so() -> None:
    changes = [r for r in site_routes.router.routes if {"PUT", "DELETE", "POST", "PATCH"} & set(r.methods)]
    assert changes
    for route in changes:  # the premise: every change of /v1/site needs the admin role
        assert get_type_hints(route.endpoint, include_extras=True).get("principal") == site_routes.Admin, route.path
    text = " ".join((REPO / "k8s" / "README.md").read_text().split())  # one line: sentences across line breaks
    assert not re.search(r"\bmanagers?'? (has ever )?(saved|saves|edits?|edited|changed)", text), \
        re.findall(r"[^.]*\bmanagers?'? [^.]*", text)
    assert "managers' edits" not in text
    assert "Once an admin saved the site through `/v1/site`" in text
