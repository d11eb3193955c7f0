"""What a site version stores is the site in force: a ``${VAR}`` template of the site file is put back only
where the config still holds the value it gave (``storelens demo --source X`` stores X, not the demo video's
template), and a relative path inside a template resolves against the site file's folder in every process,
whatever its working directory."""
from __future__ import annotations

import json

import pytest
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import _demo_config, build_parser
from storelens.config import load_config, parse_config, with_cameras, with_site_update
from storelens.config.site import site_document, site_version_document, written_document
from storelens.contract import messages as m
from storelens.storage import SqlStorage
from storelens.storage import site as sq

DOOR = {"id": "door", "a": [0, 900], "b": [1900, 900]}


def test_demo_source_is_what_the_site_versions_hold(tmp_path) -> None:
    """``storelens demo --source X``: X stays the camera's source through the first edit of the site."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    args = build_parser().parse_args(["demo", "--source", str(clip), "--db", str(tmp_path / "h.db"), "--no-serve"])
    config = _demo_config(args)
    assert config.cameras[0].source == str(clip)
    assert site_version_document(config)["cameras"][0]["source"] == str(clip)
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:
        app = create_app(config, storage)
        r = signed_in_client(app).put(f"/v1/site/cameras/{config.cameras[0].id}/lines/door", json=DOOR)
        assert r.status_code == 200, r.text
        version, stored = sq.latest_site(storage)
        assert version == 1 and stored["cameras"][0]["source"] == str(clip)
        assert app.state.context.config.cameras[0].source == str(clip)  # the API's site in force
    finally:
        storage.close()


PW = "rtsp://u:${SW_PW}@h/"
PORT = "${SW_PORT:-8081}"


def _cfg():
    return parse_config({"store": {"id": "s"}, "api": {"port": PORT},
                         "cameras": [{"id": "c", "source": PW}, {"id": "d", "source": "rtsp://other/"}]})


def _replace_source(cfg, source):
    return cfg.model_copy(update={"cameras": [cfg.cameras[0].model_copy(update={"source": source}), cfg.cameras[1]]})


@pytest.mark.parametrize("change, source, port", [
    ("none", PW, PORT),  # template unchanged: kept (a number too)
    ("model_copy source", "rtsp://u:new@h/", PORT),  # value changed since: the current one
    ("model_copy port", PW, 9000),
    ("model_copy source and back", PW, PORT),  # the value the template gave again: the template
    ("env changed since", PW, PORT),  # the config still holds what the template gave: no secret written
    ("with_cameras", "rtsp://u:${SW_PW}@other/", PORT),  # given as a template: kept as given
    ("with_cameras expanded", "rtsp://u:pw1@h/", PORT),  # given expanded: stays expanded
])
def test_written_document_puts_a_template_back_only_where_the_value_is_still_its_own(
        monkeypatch, change, source, port) -> None:
    monkeypatch.setenv("SW_PW", "pw1")
    cfg = _cfg()
    assert cfg.cameras[0].source == "rtsp://u:pw1@h/" and cfg.api.port == 8081
    if change == "model_copy source":
        cfg = _replace_source(cfg, "rtsp://u:new@h/")
    elif change == "model_copy port":
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"port": 9000})})
    elif change == "model_copy source and back":
        cfg = _replace_source(_replace_source(cfg, "rtsp://x/"), "rtsp://u:pw1@h/")
    elif change == "env changed since":
        monkeypatch.setenv("SW_PW", "pw2")
    elif change == "with_cameras":
        cfg = with_cameras(cfg, [{"id": "c", "source": "rtsp://u:${SW_PW}@other/"}, cfg.cameras[1]])
    elif change == "with_cameras expanded":
        cfg = with_cameras(cfg, [c.model_dump(mode="json") for c in cfg.cameras])
    doc = written_document(cfg, site_document(cfg))
    assert (doc["cameras"][0]["source"], doc["api"]["port"]) == (source, port)
    assert doc["cameras"][1]["source"] == "rtsp://other/"
    assert site_version_document(cfg)["cameras"][0]["source"] == source
    # an edit carries the rest of the site as written on: a stale template is not resurrected there either
    edited = with_cameras(cfg, site_version_document(cfg)["cameras"])
    assert edited.api.port == cfg.api.port and site_version_document(edited)["cameras"][0]["source"] == source
    assert written_document(edited, site_document(edited))["api"]["port"] == port


def test_a_relative_path_in_a_template_stays_in_the_site_files_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CAMDIR", raising=False)
    site_dir, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site_dir.mkdir()
    elsewhere.mkdir()
    site_file = site_dir / "site.yaml"
    site_file.write_text(yaml.safe_dump({"store": {"id": "s"}, "cameras": [
        {"id": "a", "source": "${CAMDIR:-videos}/a.mp4"}, {"id": "b", "source": "videos/b.mp4"}]}))
    monkeypatch.chdir(site_dir)
    config = load_config(site_file)
    want = {"a": str((site_dir / "videos" / "a.mp4").resolve()), "b": str((site_dir / "videos" / "b.mp4").resolve())}
    assert {c.id: c.source for c in config.cameras} == want
    version = site_version_document(config)
    assert [c["source"] for c in version["cameras"]] == ["${CAMDIR:-videos}/a.mp4", want["b"]]

    # the version put in force by a process whose working directory is elsewhere: still the site file's folder
    monkeypatch.chdir(elsewhere)
    moved = with_cameras(config, version["cameras"])
    assert {c.id: c.source for c in moved.cameras} == want
    assert site_version_document(moved) == version  # saved again: the template as written
    # a camera added with a relative path: the site file's folder too
    added = with_cameras(moved, [*version["cameras"], {"id": "c", "source": "${CAMDIR:-videos}/c.mp4"}])
    assert added.camera("c").source == str((site_dir / "videos" / "c.mp4").resolve())
    # another process (its own site file, another working directory) receiving the version on site-config
    update = m.SiteUpdate(store_id="s", version=1, cameras_json=json.dumps(version["cameras"]),
                          alert_rules_json=json.dumps(version["alert_rules"]))
    assert {c.id: c.source for c in with_site_update(load_config(site_file), update).cameras} == want
