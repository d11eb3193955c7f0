"""A site version keeps the ``${VAR}`` templates of its camera sources: what is stored (table
``site_versions``) and published (``site-config``) is the site as written, never the camera password of
the API process's environment; each process expands the templates with its own environment when it puts
the version in force, a variable it lacks failing fast with the field and the variable named."""
from __future__ import annotations

import argparse
import json

import pytest
import sqlalchemy as sa
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.cli import cmd_site
from storelens.config import parse_config, with_site_update
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError
from storelens.runtime.bus import InProcessBus
from storelens.storage import SqlStorage
from storelens.storage import site as sq

from test_site_editing import CAMERA, SITE, X320  # the site editing tests' site (a real clip) and line

API_SECRET = "api-env-S3cret"  # CAM_PASSWORD in the API process
STAGE_SECRET = "stage-env-0ther"  # CAM_PASSWORD in a stage's process
BACK = "rtsp://admin:${CAM_PASSWORD}@10.0.0.5/stream"
SIDE = "rtsp://op:${CAM_PASSWORD}@10.0.0.9:554/live?channel=2&password=${CAM_PASSWORD}"
TEMPLATED = {**SITE, "cameras": [SITE["cameras"][0], {"id": "back", "source": BACK}]}


def _stored_rows(db) -> list[str]:
    """Every row of every table of the SQLite file, as text (read with SQLAlchemy, not through StoreLens)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as c:
            return [f"{t.name}: {tuple(row)}" for t in meta.sorted_tables for row in c.execute(sa.select(t))]
    finally:
        engine.dispose()


def _site_version_rows(db) -> list[dict]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT version, site_json FROM site_versions ORDER BY version")).all()
    finally:
        engine.dispose()
    return [{"version": v, **json.loads(doc)} for v, doc in rows]


def _sources(site: dict) -> dict[str, str]:
    return {c["id"]: c["source"] for c in site["cameras"]}


def test_site_versions_store_and_publish_templates_and_each_process_expands_its_own(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", API_SECRET)
    db = tmp_path / "h.db"
    storage = SqlStorage(str(db))
    bus = InProcessBus()
    published = bus.subscribe(topics.SITE_CONFIG)
    config = parse_config(TEMPLATED)
    assert config.camera("back").source == f"rtsp://admin:{API_SECRET}@10.0.0.5/stream"  # the API's own value
    try:
        app = create_app(config, storage, on_site_change=lambda u: bus.publish(
            topics.SITE_CONFIG, u.store_id.encode(), m.encode(u)))
        client = signed_in_client(app)
        answers = []
        # an edit of another camera, based on the site file (version 0): "back" is saved as written
        answers.append(client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=X320))
        # a camera added with templates in its URL, then edited (merged into the version in force)
        answers.append(client.put("/v1/site/cameras/side", json={"id": "side", "source": SIDE, "target_fps": 5}))
        answers.append(client.put("/v1/site/cameras/side/lines/door", json={"id": "door", "a": [0, 9], "b": [9, 9]}))
        # another API replica over the same database: it puts the stored version in force, then edits it
        other = signed_in_client(create_app(parse_config(TEMPLATED), storage, on_site_change=lambda u: bus.publish(
            topics.SITE_CONFIG, u.store_id.encode(), m.encode(u))))
        answers.append(other.put("/v1/site/cameras/back/zones/all", json={
            "id": "all", "polygon": [[0, 0], [640, 0], [640, 480]]}))
        answers.append(other.delete(f"/v1/site/cameras/{CAMERA}/lines/x200"))
        assert [r.status_code for r in answers] == [200] * 5, [r.text for r in answers]
        assert [r.json()["version"] for r in answers] == [1, 2, 3, 4, 5]
        app.state.context.refresh_site()  # the first replica's periodic look for newer versions (SITE_CHECK_S)
        # the API's answers stay redacted
        site = client.get("/v1/site").json()
        assert site["version"] == 5 and _sources(site)["side"] == "rtsp://10.0.0.9:554/live?channel=2&password=***"
        for r in [*answers, client.get("/v1/site")]:
            assert API_SECRET not in r.text
    finally:
        storage.close()

    # nothing stored holds the API's password: every table's rows, read directly
    rows = _stored_rows(db)
    assert any(r.startswith("site_versions:") for r in rows)
    assert [r for r in rows if API_SECRET in r] == []
    # each version holds the site as written, templates unexpanded, with the edits merged in
    versions = _site_version_rows(db)
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5]
    assert [_sources(v)["back"] for v in versions] == [BACK] * 5
    assert [_sources(v).get("side") for v in versions] == [None, SIDE, SIDE, SIDE, SIDE]
    newest = {c["id"]: c for c in versions[-1]["cameras"]}
    assert [ln["id"] for ln in newest[CAMERA]["lines"]] == ["x320"]
    assert [ln["id"] for ln in newest["side"]["lines"]] == ["door"] and newest["side"]["target_fps"] == 5.0
    assert [z["id"] for z in newest["back"]["zones"]] == ["all"]
    # while the API put the templates in force with its own environment
    in_force = app.state.context.config
    assert in_force.camera("side").source == SIDE.replace("${CAM_PASSWORD}", API_SECRET)
    assert in_force.camera("back").source == f"rtsp://admin:{API_SECRET}@10.0.0.5/stream"

    # the published messages: one per version, none with the password, the templates as written
    messages = []
    while (msg := published.poll(0)) is not None:
        messages.append(msg.value)
    assert len(messages) == 5 and not [v for v in messages if API_SECRET.encode() in v]
    update = m.decode(m.SiteUpdate, messages[-1])
    assert update.version == 5 and BACK in update.cameras_json and json.dumps(SIDE) in update.cameras_json

    # a stage in a process with another CAM_PASSWORD: the message and the stored version give its own value
    monkeypatch.setenv("CAM_PASSWORD", STAGE_SECRET)
    stage_site = parse_config(TEMPLATED)
    storage = SqlStorage(str(db))
    try:
        stored = storage.site_update("tud")
    finally:
        storage.close()
    for version in (update, stored):
        cams = with_site_update(stage_site, version)
        assert cams.camera("back").source == f"rtsp://admin:{STAGE_SECRET}@10.0.0.5/stream"
        assert cams.camera("side").source == SIDE.replace("${CAM_PASSWORD}", STAGE_SECRET)
    # a process without the variable fails fast, naming the field and the variable
    monkeypatch.delenv("CAM_PASSWORD")
    with pytest.raises(ConfigError, match=r"site version 5: cameras\.1\.source: .*CAM_PASSWORD"):
        with_site_update(stage_site, update)


def test_a_variable_the_api_process_lacks_is_a_422_naming_the_field_and_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", API_SECRET)
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:
        client = signed_in_client(create_app(parse_config(TEMPLATED), storage))
        r = client.put("/v1/site/cameras/gone", json={"id": "gone", "source": "rtsp://u:${NOT_SET_PW}@h/"})
        assert r.status_code == 422, r.text
        assert "cameras.2.source" in r.text and "NOT_SET_PW" in r.text, r.text
        assert sq.latest_version(storage) == 0  # nothing saved
    finally:
        storage.close()


def test_versions_stored_expanded_before_still_load(tmp_path, monkeypatch) -> None:
    """A version saved before templates were kept (the password in the row) is still put in force as it is."""
    monkeypatch.setenv("CAM_PASSWORD", API_SECRET)
    storage = SqlStorage(str(tmp_path / "h.db"))
    try:
        config = parse_config(TEMPLATED)
        old = {"cameras": [c.model_dump(mode="json") for c in config.cameras]}  # expanded, as saved before
        assert sq.save_site(storage, 0, old, "admin", 1) == 1
        client = signed_in_client(create_app(config, storage))
        assert client.get("/v1/site").json()["version"] == 1
        assert client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=X320).json()["version"] == 2
        monkeypatch.setenv("CAM_PASSWORD", STAGE_SECRET)
        cams = with_site_update(parse_config(TEMPLATED), storage.site_update("tud"))
        assert cams.camera("back").source == f"rtsp://admin:{API_SECRET}@10.0.0.5/stream"  # what the row says
    finally:
        storage.close()


def test_cli_import_stores_and_export_writes_templates(tmp_path, monkeypatch) -> None:
    """``storelens site import`` saves a file's cameras as written and ``export`` writes them back so."""
    monkeypatch.setenv("CAM_PASSWORD", API_SECRET)
    db, site_file, edited = tmp_path / "h.db", tmp_path / "site.yaml", tmp_path / "edited.yaml"
    site_file.write_text(yaml.safe_dump(TEMPLATED))
    edited.write_text(yaml.safe_dump({**TEMPLATED, "cameras": [*TEMPLATED["cameras"], {"id": "side", "source": SIDE}]}))
    out = tmp_path / "export.yaml"
    SqlStorage(str(db)).close()  # the store's history (`site` refuses a database that does not exist)

    def run(*argv: str) -> int:
        from storelens.cli import build_parser

        args: argparse.Namespace = build_parser().parse_args(
            ["site", *argv, "--config", str(site_file), "--db", str(db)])
        assert args.func is cmd_site
        return args.func(args)

    assert run("import", str(edited)) == 0
    assert run("export", "--out", str(out)) == 0
    assert [r for r in _stored_rows(db) if API_SECRET in r] == []
    assert _sources(_site_version_rows(db)[-1]) == {CAMERA: SITE["cameras"][0]["source"], "back": BACK, "side": SIDE}
    exported = yaml.safe_load(out.read_text())
    assert API_SECRET not in out.read_text() and _sources(exported)["side"] == SIDE
