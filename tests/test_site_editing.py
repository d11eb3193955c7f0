"""Site editing without restarts (issue 12 item 4): /v1/site validated and versioned; the running
pipeline applies a moved line mid-run; re-deriving history; the YAML import/export."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")
CAMERA = "stadtmitte"
SITE = {
    "store": {"id": "tud"},
    "cameras": [{"id": CAMERA, "source": str(VIDEO), "lines": [{"id": "x200", "a": [200, 0], "b": [200, 480]}],
                 "zones": [{"id": "left", "polygon": [[0, 0], [320, 0], [320, 480], [0, 480]]}]},
                {"id": "back", "source": "rtsp://cam:secret@10.0.0.7:554/stream"}],
}
X320 = {"id": "x320", "a": [320, 0], "b": [320, 480]}


@pytest.fixture
def api(tmp_path):
    storage = SqlStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    yield signed_in_client(app), app, storage
    storage.close()


def test_edits_are_validated_versioned_and_audited(api) -> None:
    client, app, storage = api
    site = client.get("/v1/site").json()
    assert site["version"] == 0 and [c["id"] for c in site["cameras"]] == [CAMERA, "back"]
    assert site["cameras"][1]["source"] == "rtsp://10.0.0.7:554/stream"  # no credentials in answers
    r = client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=X320)
    assert r.status_code == 200 and r.json()["version"] == 1
    assert [ln["id"] for ln in r.json()["camera"]["lines"]] == ["x200", "x320"]
    moved = {**X320, "a": [330, 0], "b": [330, 480]}
    assert client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=moved, params={"base_version": 0}
                      ).status_code == 409  # based on an old version
    assert client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=moved, params={"base_version": 1}
                      ).json()["version"] == 2
    # validated like the YAML, 422 naming the field
    bad = client.put(f"/v1/site/cameras/{CAMERA}/lines/x9", json={"id": "x9", "a": [1], "b": [5, 5]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "a"]
    assert client.put(f"/v1/site/cameras/{CAMERA}/lines/x9", json={**X320, "id": "x8"}).status_code == 422
    dup = client.put("/v1/site/cameras/back/zones/z", json={"id": "z", "polygon": [[0, 0], [1, 0]]})
    assert dup.status_code == 422 and "polygon" in dup.text
    assert client.delete(f"/v1/site/cameras/{CAMERA}/lines/nope").status_code == 404
    assert client.delete("/v1/site/cameras/nope").status_code == 404
    assert client.put("/v1/site/cameras/side", json={"id": "side", "source": "/tmp/side.mp4"}).json()["version"] == 3
    assert client.get("/v1/cameras/side/crossings", params={"start_ms": 0}).status_code == 200  # in force at once
    assert client.delete("/v1/site/cameras/side").json()["camera"] is None
    assert client.get("/v1/site").json()["version"] == 4
    # another API replica over the same database sees the newest version
    other = signed_in_client(create_app(parse_config(SITE), storage))
    lines = other.get("/v1/site").json()["cameras"][0]["lines"]
    assert [(ln["id"], ln["a"]) for ln in lines] == [("x200", [200.0, 0.0]), ("x320", [330.0, 0.0])]
    # who moved which line
    audit = client.get("/v1/audit", params={"action": "PUT /v1/site/cameras/{camera_id}/lines/{line_id}"}).json()
    assert {(e["target"], e["detail"]["status"]) for e in audit["entries"]} >= {
        (f"/v1/site/cameras/{CAMERA}/lines/x320", 200), (f"/v1/site/cameras/{CAMERA}/lines/x320", 409)}
    assert signed_in_client(app, role="manager").put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=X320
                                                     ).status_code == 403


def test_stage_applies_a_site_version_keeping_unchanged_lines() -> None:
    cfg = parse_config(SITE)
    stage = AnalyticsStage(cfg)
    box = lambda x: m.BoxXYXY(x1=x - 10, y1=100, x2=x + 10, y2=300)  # noqa: E731
    frame = lambda seq, x: m.TrackedFrame(camera_id=CAMERA, seq=seq, ts_ms=seq * 40,  # noqa: E731
                                          tracks=[m.Track(track_id=1, bbox_xyxy=box(x))])
    stage.handle("tracks", frame(0, 150))
    stage.handle("tracks", frame(1, 250))  # crosses x200
    assert stage.line_counts(CAMERA)["x200"]["in"] + stage.line_counts(CAMERA)["x200"]["out"] == 1
    cams = [c.model_dump(mode="json") for c in cfg.cameras]
    cams[0]["lines"].append(X320)
    import json

    update = m.SiteUpdate(version=1, store_id="tud", cameras_json=json.dumps(cams))
    assert stage.handle("site-config", update).info["applied"] is True
    assert stage.handle("site-config", update).info["applied"] is False  # redelivered: already in force
    stage.handle("tracks", frame(2, 290))  # a new line starts afresh: the person's side is seen first
    out = stage.handle("tracks", frame(3, 350))  # then crosses it
    assert [c.line_id for c in out.records if hasattr(c, "line_id") and hasattr(c, "direction")] == ["x320"]
    counts = stage.line_counts(CAMERA)
    assert sum(counts["x200"].values()) == 1 and sum(counts["x320"].values()) == 1  # x200 kept its count
    bad = m.SiteUpdate(version=2, store_id="tud", cameras_json=json.dumps([{"id": "c"}]))
    with pytest.raises(Exception, match="source"):
        stage.apply_site(bad)


def test_running_pipeline_applies_a_moved_line_without_restart(tmp_path) -> None:
    """A line added through the API while the embedded pipeline runs counts from then on; re-deriving
    its history afterwards equals a run that had the line from the start."""
    storage = SqlStorage(str(tmp_path / "h.db"))
    cfg = parse_config({**SITE, "cameras": SITE["cameras"][:1]})
    client = signed_in_client(create_app(cfg, storage))
    edited: dict = {}

    def on_frame(camera_id: str) -> None:
        edited.setdefault("frames", 0)
        edited["frames"] += 1
        if edited["frames"] == 40:
            edited["answer"] = client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=X320).json()

    pipeline = EmbeddedPipeline(cfg, storage=storage, on_frame_done=on_frame)
    pipeline.run()
    assert edited["answer"]["version"] == 1
    assert pipeline.analytics.site_version == 1 and [ln.id for ln in pipeline.analytics.config.cameras[0].lines] == [
        "x200", "x320"]
    live = [c for c in storage.crossings(CAMERA, 0, 2**53 - 1) if c.line_id == "x320"]
    assert live, "the line added mid-run counted nobody"
    # re-derive the camera's history with the new line: the line now counts from the first frame
    r = client.put(f"/v1/site/cameras/{CAMERA}/lines/x320", json=X320, params={"rederive": "true"})
    assert r.status_code == 200 and r.json()["rederived"]["CrossingEvent"] > 0, r.text
    full = [c for c in storage.crossings(CAMERA, 0, 2**53 - 1) if c.line_id == "x320"]
    assert len(full) >= len(live) and min(c.ts_ms for c in full) <= min(c.ts_ms for c in live)
    storage.close()


def test_site_export_and_import_round_trip(tmp_path) -> None:
    db, site_file = tmp_path / "h.db", tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE))
    run = lambda *a, stdin=None: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "storelens.cli", "site", *a, "--config", str(site_file), "--db", str(db)],
        capture_output=True, text=True, timeout=120, input=stdin)
    edited = yaml.safe_load(site_file.read_text())
    edited["cameras"][0]["lines"].append(X320)
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(edited))
    r = run("import", str(tmp_path / "edited.yaml"))
    assert r.returncode == 0 and "version 1" in r.stdout, r.stderr
    out = run("export")
    assert out.returncode == 0, out.stderr
    exported = yaml.safe_load(out.stdout)
    assert [ln["id"] for ln in exported["cameras"][0]["lines"]] == ["x200", "x320"]
    assert exported["cameras"][1]["source"] == SITE["cameras"][1]["source"]  # the export keeps credentials
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**edited, "cameras": [{"id": "c"}]}))
    r = run("import", str(bad))
    assert r.returncode == 2 and "cameras.0.source" in r.stderr
