"""Follow-ups of a read-only review of the merged batch 33, each failing on the code before:

1. privacy clock ``auto``: a file camera added through a saved site version (``PUT /v1/site``, ``storelens site
   import``) beside the site file's live camera keeps its history by its own clock, not the wall clock;
2. a site version saved but not delivered to the pipeline (503): the body carries the saved version;
3. existing compacted topics (``ingest-state``) are brought to their spec's segment.ms / min.cleanable.dirty.ratio.

The other findings' tests are the adjusted ones of the files they were in: ``storelens replay`` without ``--config``
nor ``$STORELENS_CONFIG`` refuses (tests/test_docs_review_33.py), a drain write failing at the stop skips the stage's
end of streams (tests/test_embedded_stop_review_33.py).

Real components: SQLite files, the Kafka broker of ``scripts/stack.sh``.
"""
from __future__ import annotations

import pathlib

import pytest

DAY_MS = 86_400_000
WALL_MS = 1_796_083_200_000  # 2026-12-01


# -- 1. the purge clock follows the cameras of the saved site version -----------------------------------------------

def _points(camera_id: str, ts_ms: int, seq: int):
    from storelens.contract import messages as m

    return m.TrackedFrame(camera_id=camera_id, seq=seq, ts_ms=ts_ms, width=640, height=480, tracks=[
        m.Track(track_id=seq, bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=5, y2=9), confidence=0.9)])


def test_a_file_camera_added_by_a_site_version_is_purged_by_its_own_clock(tmp_path: pathlib.Path) -> None:
    """Site file: one RTSP camera (the wall clock). A saved version adds a file camera whose frames are 60 days
    behind the wall clock: its track points and frames (kept 30 days) stay (before: purged by the wall clock)."""
    import sqlalchemy as sa

    from storelens.config import parse_config
    from storelens.runtime.retention import RetentionPurge
    from storelens.storage import SqlStorage
    from storelens.storage.site import save_site

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "rtsp://cam/1"}],
                        "privacy": {"retention": {"days": {"track_points": 30, "frames": 30}}}})
    with SqlStorage(str(tmp_path / "h.db")) as store:
        cams = [{"id": "door", "source": "rtsp://cam/1"}, {"id": "clip", "source": "clip.mp4"}]
        assert save_site(store, 0, {"cameras": cams}, actor="ana", ts_ms=WALL_MS) == 1
        store.write_batch(tracked_frames=[_points("clip", WALL_MS - 60 * DAY_MS, 1),
                                          _points("door", WALL_MS - 60 * DAY_MS, 2)])
        purge = RetentionPurge(store, cfg, wall_ms=lambda: WALL_MS)
        deleted = purge.run()
        assert (deleted["track_points"], deleted["frames"]) == (1, 1)  # the live camera's only
        for table in ("track_points", "frames"):
            assert [r[0] for r in store._rows(sa.text(f"SELECT camera_id FROM {table}"))] == ["clip"]
        assert (purge.site_version, purge.own_clock) == (1, ["clip"])


# -- 2. the 503 of a saved but undelivered site edit carries the saved version --------------------------------------

def _refuse(update) -> None:
    raise ConnectionError("the broker did not take the site version")


@pytest.mark.parametrize("edit, camera", [
    (("put", "/v1/site/cameras/cam-1/lines/door", {"id": "door", "a": [0, 100], "b": [640, 100]}), "cam-1"),
    (("put", "/v1/site/alerts/rules/crowd", {"id": "crowd", "kind": "camera_occupancy", "camera": "cam-1",
                                             "max": 5}), None),
], ids=["line", "alert-rule"])
def test_the_503_of_an_undelivered_edit_carries_the_saved_version(tmp_path: pathlib.Path, edit, camera) -> None:
    """The dashboard takes it as saved (no second Save with the old base version: a 409 and a duplicate)."""
    from storelens.api.app import create_app
    from storelens.api.testing import signed_in_client
    from storelens.config import parse_config
    from storelens.storage import SqlStorage

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "cam-1", "source": "clip.mp4"}]})
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        client = signed_in_client(create_app(cfg, storage, on_site_change=_refuse))
        method, path, body = edit
        r = client.request(method.upper(), path, json=body)
        assert r.status_code == 503, r.text
        out = r.json()
        assert out["detail"] == "site version 1 saved, not yet delivered to the pipeline; it will be retried"
        assert out["version"] == 1
        assert (out.get("camera") or {}).get("id") == camera
        if camera:
            assert [ln["id"] for ln in out["camera"]["lines"]] == ["door"]
        assert client.get("/v1/site").json()["version"] == 1


# -- 3. an existing compacted topic is brought to its spec's segment.ms and dirty ratio -----------------------------

def _topic_configs(cfg, name: str, settled) -> dict[str, str]:
    """``name``'s settings once ``settled(conf)``, or as they are after ~10 s (a broker describes a topic's new
    settings shortly after AlterConfigs answered)."""
    import time

    from storelens.runtime.kafka import BrokerError, KafkaAdmin

    admin = KafkaAdmin(cfg)
    conf: dict[str, str] = {}
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                conf = {k: c.value for k, c in admin.topic_configs([name])[name].items()}
            except BrokerError:
                conf = {}
            if (conf and settled(conf)) or time.monotonic() > deadline:
                return conf
            time.sleep(0.2)
    finally:
        admin.close()


def test_an_existing_ingest_state_gets_its_segment_ms_and_dirty_ratio() -> None:
    """``ingest-state`` as an earlier release created it (compacted, the broker's 7 days and 0.5): the start's
    ensure_topics lowers them to 3600000 and 0.1 (before: only the analytics changelog got them)."""
    import uuid

    from storelens.config import parse_config
    from storelens.contract import topics
    from storelens.runtime.kafka import KafkaAdmin, NewTopic, ensure_topics
    from storelens.runtime.localdeploy import KAFKA
    from test_runtime_readiness import _delete_topics, _kafka_up

    if not _kafka_up():
        pytest.skip(f"no Kafka at {KAFKA} (scripts/stack.sh up)")
    prefix = f"sltest-m33a-{uuid.uuid4().hex[:10]}."
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "clip.mp4"}],
                        "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": prefix, "group_prefix": prefix[:-1],
                                  "partitions": 1, "replication_factor": 1}}).kafka
    name = topics.topic_name(topics.INGEST_STATE, prefix)
    admin = KafkaAdmin(cfg)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        before = _topic_configs(cfg, name, lambda c: c.get("cleanup.policy") == "compact")
        assert (int(before["segment.ms"]), float(before["min.cleanable.dirty.ratio"])) == (604_800_000, 0.5)
        assert ensure_topics(cfg, [topics.spec(topics.INGEST_STATE)]) == []  # nothing created
        conf = _topic_configs(cfg, name, lambda c: c["segment.ms"] == "3600000")
        assert (conf["segment.ms"], float(conf["min.cleanable.dirty.ratio"])) == ("3600000", 0.1)
        assert conf["cleanup.policy"] == "compact"  # its other settings kept
    finally:
        admin.close()
        _delete_topics(cfg)
