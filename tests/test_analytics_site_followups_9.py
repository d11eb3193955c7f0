"""The Kafka analytics service around a site version (follow-ups of a review; each test fails on the code before):

1. a frame of a camera the version removed, still in flight (consumer lag), is skipped as a duplicate (it was
   dead-lettered as a processing error once the version had deleted the camera's table entry);
2. a version that removes a camera while a frame of it is being written (the version is a timer) does not crash
   the agent: the frame's offset is recorded, no state is saved;
3. a version that comes while the tables are not ready (faust recovery) saves the cameras' states once they are,
   not into the changelog the recovery is reading (which then put the state of before the version back);
4. the tombstone of a removed camera keeps its input offset (the partition's ``_input/<p>`` marker): a restart
   resumes after its last frame, not before (an "input gap", a re-read);
5. every message of a store-wide alert goes with one key (the store id), fired by a frame or resolved by a version
   (they went to different partitions of ``alerts``: a consumer could see the resolution first);
6. a resolution that does not know its rule (a state saved by an older version, the rule gone since) keeps the
   stored row's kind, camera, severity and threshold (they were overwritten with empty values).

The service's :class:`AnalyticsApp` runs in this process on the stack's broker (no worker: the tables count as
recovered, partition 0 of ``tracks`` as assigned, each frame handled in a faust event as the agent does).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref

import pytest
from faust.events import Event
from faust.streams import _current_event
from faust.types import TP
from faust.types.tuples import Message

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.analytics_app import INPUT_KEY, AnalyticsApp, changelog_topic
from storelens.runtime.kafka import read_to_end
from storelens.runtime.service import ServiceRuntime
from storelens.stages.analytics import AnalyticsStage
from storelens.storage import SqlStorage
from storelens.storage import alerts as aq
from test_alerts import IN, kafka_site, tframe, two_cameras, walk

T0 = 1_767_225_600_000
FULL = {"kind": "store_occupancy", "id": "full", "max": 1}
CROWD = {"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 5}


class Service:
    """An :class:`AnalyticsApp` on the test broker, driven by hand."""

    def __init__(self, cfg, tmp_path, name: str = "h.db") -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.storage = SqlStorage(str(tmp_path / name))
        self.app = AnalyticsApp(cfg, self.storage, None, ServiceRuntime("analytics", port=0), loop=self.loop)
        self.app._tables_ready = True  # no worker here: the table is "recovered"
        self.app._assigned = lambda: {0}  # and partition 0 of tracks (the only one) assigned to it
        self.loop.run_until_complete(self.app.app.maybe_start_producer())  # as the worker has it
        self.tracks = self.app.topic_names[topics.TRACKS]
        self.offset = 0
        self.version = 0

    def frame(self, tf: m.TrackedFrame) -> int:
        """Handle ``tf`` as the agent does (in a faust event of ``tracks`` partition 0); returns its offset."""
        offset, self.offset = self.offset, self.offset + 1
        key, value = topics.camera_key(tf.camera_id), m.encode(tf)
        message = Message(self.tracks, 0, offset, time.time(), 0, {}, key, value, None)
        event = Event(self.app.app, key, value, {}, message)

        async def go() -> None:
            token = _current_event.set(weakref.ref(event))
            try:
                await self.app.handle(key, value, self.tracks, m.type_headers(tf), source=(TP(self.tracks, 0), offset))
            finally:
                _current_event.reset(token)

        self.loop.run_until_complete(go())
        return offset

    def version_coro(self, rules: list[dict], cameras: list[str]):
        """The handling of a site version (``rules``, ``cameras`` kept), as :meth:`AnalyticsApp._site_versions`."""
        self.version += 1
        cams = [c.model_dump(mode="json") for c in self.cfg.cameras if c.id in cameras]
        update = m.SiteUpdate(version=self.version, ts_ms=T0, actor="test", store_id=self.cfg.store.id,
                              cameras_json=json.dumps(cams), alert_rules_json=json.dumps(rules))
        site = self.app.topic_names[topics.SITE_CONFIG]
        return self.app.handle(self.cfg.store.id.encode(), m.encode(update), site, m.type_headers(update),
                               source=(TP(site, 0), self.version - 1))

    def site_version(self, rules: list[dict], cameras: list[str]) -> None:
        self.loop.run_until_complete(self.version_coro(rules, cameras))

    def read(self, base_or_topic: str) -> list[tuple[bytes, bytes, int]]:
        self.loop.run_until_complete(self.app.app.producer.flush())
        return read_to_end(self.cfg.kafka, self.app.topic_names.get(base_or_topic, base_or_topic), 0, "check", 30)

    def changelog(self) -> list[tuple[bytes, bytes, int]]:
        return self.read(changelog_topic(self.cfg.kafka))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.app.app.producer.stop())
        finally:
            self.app.close()
            self.loop.close()
            self.storage.close()


@pytest.fixture
def service(tmp_path):
    made: list[Service] = []

    def make(rules: list[dict], name: str = "h.db", cfg=None) -> Service:
        s = Service(cfg or kafka_site(two_cameras(rules), "t-site9"), tmp_path, name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _walk_in(s: Service) -> dict[str, int]:
    """c and d each walk someone in (the store holds 2 > 1: ``full`` fires); the offsets of their last frames."""
    last = {}
    for tf in sorted(walk("c", 1, IN, 0, T0) + walk("d", 2, IN, 0, T0 + 50), key=lambda f: f.ts_ms):
        last[tf.camera_id] = s.frame(tf)
    return last


def _alerts_sent(s: Service) -> list[tuple[bytes, m.Alert]]:
    return [(k, m.decode(m.Alert, v)) for k, v, _ in s.read(topics.ALERTS)]


def _duplicates(s: Service) -> float:
    return s.app.metrics.duplicates.labels(s.tracks)._value.get()


# -- 1. a frame of a removed camera still in flight ----------------------------------------------------------------

def test_a_frame_of_a_camera_the_version_removed_is_skipped_as_a_duplicate(service) -> None:
    s = service([CROWD])
    _walk_in(s)
    s.site_version([CROWD], ["c"])  # d removed (its table entry deleted)
    assert topics.camera_key("d") not in s.app.table.data
    before = _duplicates(s)
    offset = s.frame(tframe("d", 4, T0 + 5000, [(2, 320, 360)]))  # in flight when the version came
    assert _duplicates(s) == before + 1
    assert s.read(topics.DEAD_LETTER) == []
    assert s.app.metrics.errors.labels("process")._value.get() == 0
    assert s.app.table.data[f"{INPUT_KEY}/0".encode()][INPUT_KEY]["next_offset"] == offset + 1
    # c goes on as before
    s.frame(tframe("c", 4, T0 + 5100, [(1, 320, 360)]))
    assert s.app.table.data[topics.camera_key("c")]["last_seq"] == 4


# -- 2. a version removes the camera while its frame is written -----------------------------------------------------

class VersionMidFrame:
    """A sink that, while the frame of camera ``d`` is being written, has the service take a site version that
    removes ``d`` (on the event loop, as the version timer would)."""

    name = "version-mid-frame"

    def __init__(self, s: Service) -> None:
        self.s, self.armed, self.applied = s, False, threading.Event()

    def write(self, records) -> None:
        if self.armed and any(isinstance(r, m.TrackedFrame) and r.camera_id == "d" for r in records):
            self.armed = False
            asyncio.run_coroutine_threadsafe(self.s.version_coro([], ["c"]), self.s.loop).result(30)
            self.applied.set()


def test_a_version_that_removes_the_camera_while_its_frame_is_written(service) -> None:
    s = service([])  # no alert to resolve: the version writes nothing to the sinks
    sink = VersionMidFrame(s)
    s.app.core.sinks.append(sink)
    s.app.core.sink_ok[sink.name] = True
    _walk_in(s)
    assert topics.camera_key("d") in s.app.table.data
    sink.armed = True
    offset = s.frame(tframe("d", 4, T0 + 5000, [(2, 320, 360)]))  # no exception (the agent would restart)
    assert sink.applied.is_set() and "d" not in s.app.stage.cameras
    assert topics.camera_key("d") not in s.app.table.data  # not saved again after the version deleted it
    assert s.app.table.data[f"{INPUT_KEY}/0".encode()][INPUT_KEY]["next_offset"] == offset + 1  # its input marked
    last = {k: v for k, v, _ in s.changelog()}
    assert last[topics.camera_key("d")] == b""  # the tombstone (read as b"") is the last word on d
    assert json.loads(last[f"{INPUT_KEY}/0".encode()])[INPUT_KEY]["next_offset"] == offset + 1


# -- 3. a version while the tables are not ready --------------------------------------------------------------------

def test_a_version_during_recovery_is_saved_once_the_tables_are_ready(service) -> None:
    s = service([FULL, CROWD])
    _walk_in(s)
    logged = len(s.changelog())
    c_before = s.app.table.data[topics.camera_key("c")]
    assert c_before["store"]["open"]  # full is open in c's saved state
    s.app._tables_ready = False  # a recovery (rebalance) is under way
    s.site_version([CROWD], ["c"])  # full removed (resolved), d removed
    assert [(a.alert_id.split(":")[0], a.state) for _, a in _alerts_sent(s)] == [("full", "firing"),
                                                                                ("full", "resolved")]
    assert len(s.changelog()) == logged  # nothing written to the changelog the recovery reads
    assert s.app._site_pending == {"d"}
    s.app._tables_ready = True
    s.loop.run_until_complete(s.app.tick_at(int(time.time() * 1000)))  # the tables are ready: the next tick
    last = {k: v for k, v, _ in s.changelog()[logged:]}
    assert last[topics.camera_key("d")] == b""  # a tombstone
    saved = json.loads(last[topics.camera_key("c")])
    assert saved["store"].get("open", {}) == {} and saved[INPUT_KEY] == c_before[INPUT_KEY]
    assert s.app._site_pending is None


# -- 4. a removed camera's input offset over a restart --------------------------------------------------------------

def _recovered(s: Service) -> dict:
    """The table as faust's recovery rebuilds it from the changelog (the last value of each key; a tombstone,
    read as b"", deletes)."""
    table: dict = {}
    for k, v, _ in s.changelog():
        if not v:
            table.pop(k, None)
        else:
            table[k] = json.loads(v)
    return table


def test_a_restart_after_a_removed_camera_resumes_after_its_last_frame(service) -> None:
    s = service([CROWD])
    last = _walk_in(s)
    assert last["d"] > last["c"]  # d sent last on the shared partition
    s.site_version([CROWD], ["c"])  # d removed: its entry (and its input record) tombstoned
    restarted = service([CROWD], "h2.db", cfg=s.cfg)  # the next process: the table from the changelog
    restarted.app.table.data.update(_recovered(s))
    assert topics.camera_key("d") not in restarted.app.table.data
    # the offset committed for the partition is after d's last frame: no gap to re-read from there
    assert restarted.app._resume_offset(0) == last["d"] + 1


# -- 5. one key for a store-wide alert ------------------------------------------------------------------------------

def test_a_store_wide_alert_fired_by_a_frame_and_resolved_by_a_version_has_one_key(service) -> None:
    s = service([FULL])
    _walk_in(s)
    s.site_version([], ["c", "d"])  # full removed: resolved by the version
    full = [(k, a.state) for k, a in _alerts_sent(s) if a.rule_id == "full"]
    assert full == [(b"shop", "firing"), (b"shop", "resolved")]  # the store id: one partition, in order


# -- 6. a resolution that does not know its rule keeps the row's kind and camera ------------------------------------

def test_a_resolution_from_an_old_state_keeps_the_rows_kind_and_camera(history_store) -> None:
    down = {"kind": "camera_down", "id": "down", "camera": "d", "after_s": 2, "severity": "critical"}
    cfg = parse_config(two_cameras([down], source_d="rtsp://cam-d.local/stream"))
    stage = AnalyticsStage(cfg)
    out = stage.handle(topics.TRACKS, tframe("d", 0, T0)).records
    for i in range(1, 8):
        out += stage.handle(topics.TRACKS, tframe("c", i, T0 + i * 500)).records
    [fired] = [a for a in out if isinstance(a, m.Alert)]
    history_store.write_records([fired])
    # the state an older version saved: open entries [alert id, fired seq] only; the rule is gone since
    state = stage.camera_state("c")
    state["store"]["open"] = {k: v[:2] for k, v in state["store"]["open"].items()}
    later = AnalyticsStage(parse_config(two_cameras([], source_d="rtsp://cam-d.local/stream")))
    later.load_camera_state("c", state)
    [resolved] = [a for a in later.handle(topics.TRACKS, tframe("c", 8, T0 + 4500)).records if isinstance(a, m.Alert)]
    assert (resolved.alert_id, resolved.state, resolved.kind, resolved.camera_id) == (fired.alert_id, "resolved",
                                                                                      "", "")
    history_store.write_records([resolved])
    row = aq.get_alert(history_store, fired.alert_id)
    assert (row["state"], row["kind"], row["camera_id"], row["severity"], row["threshold"]) == (
        "resolved", "camera_down", "d", "critical", fired.threshold)
    assert row["cleared_ts_ms"] == resolved.ts_ms
    assert [a["alert_id"] for a in aq.list_alerts(history_store, "resolved", camera_id="d")[0]] == [fired.alert_id]
    # with no row yet, such a resolution is written as it is
    history_store.write_records([m.Alert(alert_id="x:shop:1", rule_id="x", kind="", camera_id="", severity="warning",
                                         state="resolved", ts_ms=T0, fired_ts_ms=T0)])
    assert (aq.get_alert(history_store, "x:shop:1")["kind"], aq.get_alert(history_store, "x:shop:1")["camera_id"]) \
        == ("", "")
