"""``live.redis_url`` is checked when the site is read (:class:`storelens.config.site.LiveConfig`).

``k8s/base/site.yaml`` builds the URL from the Secret ``storelens-redis``; a password with a character a URL
reserves (``/``, ``#``, ``?``) made analytics' live state and the api's sign-in limiter fail at start with an
uncaught ``ValueError: Port could not be cast to integer value as 'ab'`` (the start of the password in the pod
log), or connect to the wrong host. Now it is a :class:`ConfigError` naming ``live.redis_url`` that never shows
the password; a percent-encoded password works against the real Redis.
"""
from __future__ import annotations

import urllib.parse
import uuid

import pytest
import yaml

from storelens.config import parse_config
from storelens.errors import ConfigError
from test_k8s import K8S_DIR
from test_k8s_review_fixes import _redis, live_state_and_limiter_work  # the local Redis; the two clients

SITE = {"store": {"id": "live-url"}, "cameras": [{"id": "door", "source": "door.mp4"}]}
DB = 7  # below the databases 9-15 the local deployments empty (storelens.runtime.localdeploy)


def _site(monkeypatch, user: str, password: str, host: str = "127.0.0.1", port: int = 16379) -> dict:
    """:data:`SITE` with the ``live`` section of ``k8s/base/site.yaml`` and its Secret's values in the env."""
    for name, value in {"STORELENS_REDIS_USERNAME": user, "STORELENS_REDIS_PASSWORD": password,
                        "STORELENS_REDIS_HOST": host, "STORELENS_REDIS_PORT": str(port),
                        "STORELENS_REDIS_DB": str(DB)}.items():
        monkeypatch.setenv(name, value)
    live = yaml.safe_load((K8S_DIR / "base" / "site.yaml").read_text())["live"]
    assert "${STORELENS_REDIS_PASSWORD" in live["redis_url"]
    return {**SITE, "live": live}


@pytest.mark.parametrize("password", ["ab/cd", "s3cr#et", "s3cr?et", "63/79@evil", "12#x"])
def test_a_password_that_is_not_url_safe_is_a_config_error_without_the_password(monkeypatch, password) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_site(monkeypatch, "storelens-x", password), origin="site.yaml")
    msg = str(err.value)
    assert msg.startswith("config error in site.yaml: live.redis_url: not a valid URL"), msg
    assert "percent-encode" in msg, msg
    assert password not in msg and password.split("/")[0].split("#")[0].split("?")[0] not in msg, msg
    assert "storelens-x" not in msg and "16379" not in msg, f"the message shows the URL: {msg}"


@pytest.mark.parametrize("url", ["http://127.0.0.1:16379/0", "redis://127.0.0.1:16379/zero",
                                 "redis://127.0.0.1:port/0"])
def test_other_urls_redis_cannot_use_are_config_errors(url) -> None:
    with pytest.raises(ConfigError, match=r"live\.redis_url: not a valid URL"):
        parse_config({**SITE, "live": {"redis_url": url}})


def test_a_percent_encoded_password_signs_in_to_the_real_redis(monkeypatch) -> None:

    admin = _redis(DB)
    user, password = f"sltest-f6-{uuid.uuid4().hex[:8]}", f"ab/cd#e?f@{uuid.uuid4().hex}"
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "+@all", "-@admin",
                          "-@dangerous")
    kw = admin.connection_pool.connection_kwargs
    live = None
    try:
        cfg = parse_config(_site(monkeypatch, user, urllib.parse.quote(password, safe=""), kw["host"], kw["port"]))
        url = cfg.live.redis_url
        live, _ = live_state_and_limiter_work(url, user, "with the encoded password")
        assert admin.exists(f"{user}:camera:door")
    finally:
        if live is not None:
            live.close()
        admin.execute_command("ACL", "DELUSER", user)
        for key in list(admin.scan_iter(match=f"*{user}*")):
            admin.delete(key)
        admin.close()
