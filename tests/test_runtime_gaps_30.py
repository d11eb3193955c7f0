"""Three small gaps of the runtime and the CLI (each test fails on the code before):

1. the Kafka analytics service (faust) checks each output against its topic's limit as the one runner does
   (:func:`~storelens.runtime.runner.fit_output`, shared): an output over it (a topic made elsewhere with a lower
   ``max.message.bytes``, read from the broker at the start) is a dead letter ``too_large``, counted, and the
   frame's other outputs go on. Before, the app sent it as it was, the broker refused it and the frame failed;
2. the circuit breaker's probe thread that cannot be started (``RuntimeError`` from ``Thread.start``: thread limit,
   interpreter shutdown) is counted in ``storelens_errors_total{reason="breaker_probe_not_started"}`` (the API's
   ``/metrics``), not only logged, and the breaker stays usable: the next probe after the cool-down starts;
3. every CLI command declares where it is defined whether it opens the site's cameras (``opens_cameras``, so their
   ``${VAR}``s must be set); the commands read it from there (was: a hand-written ``open_cameras=False`` in each
   command's code, which a new command could forget).

Real components: the stack's Kafka (1), the API app over a private SQLite history and a Redis URL nothing answers
(2), the CLI's real parser and in-process runs over a real SQLite history (3).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import sys
import threading
import time
import uuid
import weakref
from typing import Any

import pytest
import yaml
from faust.events import Event
from faust.streams import _current_event
from faust.types import TP
from faust.types.tuples import Message
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from storelens.api import create_app
from storelens.api.metrics import Metrics
from storelens.api.testing import api_key_for
from storelens.cli import build_parser
from storelens.cli import main as cli_main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime import kafka
from storelens.runtime.analytics_app import build_app, ensure_app_topics
from storelens.runtime.localdeploy import free_port
from storelens.runtime.policy import Breaker
from storelens.runtime.service import ServiceRuntime
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage.live import RedisLiveState
from test_alerts import IN, two_cameras, walk
from test_runtime_readiness import _delete_topics

T0 = 1_767_225_600_000


# -- 1. the analytics service: an output over its topic's limit --------------------------------------------------

@pytest.fixture
def small_crossings_site():
    """A site on the stack's broker under a topic prefix of its own, whose ``crossings`` topic was made elsewhere
    with ``max.message.bytes`` 64 (no crossing fits it); its topics are deleted afterwards."""
    run = f"t-gaps30-{uuid.uuid4().hex[:8]}"
    raw = two_cameras([])
    raw["kafka"] = {"bootstrap_servers": os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
                    "topic_prefix": f"{run}.", "group_prefix": run, "partitions": 1}
    cfg = parse_config(raw)
    if not kafka.BrokerProbe(cfg.kafka)(5.0):
        pytest.fail(f"no Kafka at {cfg.kafka.bootstrap_servers}: `make test` starts it (scripts/stack.sh up)")
    try:
        kafka.ensure_topics(cfg.kafka, [dataclasses.replace(topics.spec(topics.CROSSINGS), max_message_bytes=64)])
        ensure_app_topics(cfg)  # the others as declared
        yield cfg
    finally:
        _delete_topics(cfg.kafka)


def _handle(app, loop, tf: m.TrackedFrame, offset: int) -> None:
    """``tf`` handled as the agent does: in a faust event of ``tracks`` partition 0."""
    tracks = app.topic_names[topics.TRACKS]
    key, value = topics.camera_key(tf.camera_id), m.encode(tf)
    event = Event(app.app, key, value, {}, Message(tracks, 0, offset, time.time(), 0, {}, key, value, None))

    async def go() -> None:
        token = _current_event.set(weakref.ref(event))
        try:
            await app.handle(key, value, tracks, m.type_headers(tf), source=(TP(tracks, 0), offset))
        finally:
            _current_event.reset(token)

    loop.run_until_complete(go())


def test_the_analytics_service_dead_letters_an_output_over_its_topic_limit(small_crossings_site, tmp_path) -> None:
    cfg = small_crossings_site
    loop = asyncio.new_event_loop()
    rt = ServiceRuntime("analytics", port=0)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = build_app(cfg, st, None, rt, loop=loop).storelens  # the service's wiring: limits read from the broker
        try:
            app._tables_ready = True  # no worker here: the table is "recovered"
            app._assigned = lambda: {0}  # and partition 0 of tracks assigned to it
            loop.run_until_complete(app.app.maybe_start_producer())
            frames = walk("c", 1, IN, 0, T0)  # one crossing "in" of line door
            for offset, tf in enumerate(frames):
                _handle(app, loop, tf, offset)  # before: the broker refused the crossing and the frame raised
            loop.run_until_complete(app.app.producer.flush())

            def read(base: str) -> list[tuple[bytes, bytes, int]]:
                return kafka.read_to_end(cfg.kafka, app.topic_names[base], 0, "check", 30)

            crossings_topic = app.topic_names[topics.CROSSINGS]
            assert read(topics.CROSSINGS) == []
            (dl,) = [m.decode(m.DeadLetter, v) for _, v, _ in read(topics.DEAD_LETTER)]
            crossing = m.decode(m.LineCrossing, dl.payload)  # whole: far below the kept 64 KiB
            assert (crossing.camera_id, crossing.line_id, crossing.track_id) == ("c", "door", 1)
            assert dl.reason.startswith(f"too_large: a LineCrossing for {crossings_topic} of ")
            assert "over the topic's limit of 64 bytes" in dl.reason and dl.key == b"c"
            assert dl.source_topic == crossings_topic and dl.service == app.stage.name
            # counted as every runner counts it; the frame's other outputs went on, and so did the frames after
            assert rt.metrics.errors.labels("too_large")._value.get() == 1
            assert rt.metrics.dead_letters.labels(crossings_topic)._value.get() == 1
            assert app.core.errors == {"too_large": 1} and app.core.dead_letters == 1
            occupancy = [m.decode(m.OccupancyUpdate, v) for _, v, _ in read(topics.OCCUPANCY)]
            assert occupancy and occupancy[-1].occupancy == 1
            assert app.stage.last_seq["c"] == frames[-1].seq
            assert app.limits[topics.CROSSINGS] == 64  # the broker's (declared: 1 MiB)
            assert [c.event_id for c in st.crossings("c", 0, 2**62)] == [crossing.event_id]  # history: sinks first
        finally:
            loop.run_until_complete(app.app.producer.stop())
            app.close()
            loop.close()


# -- 2. the circuit breaker's probe thread that cannot start ----------------------------------------------------

PROBE_NOT_STARTED = "breaker_probe_not_started"  # the reason label (storelens.runtime.policy.PROBE_NOT_STARTED)


class NoThread(threading.Thread):
    """A thread that cannot start while :attr:`refused` (as at the process' thread limit or shutdown) says why."""

    refused: str | None = None

    def start(self) -> None:
        if NoThread.refused is not None:
            raise RuntimeError(NoThread.refused)
        super().start()


@pytest.fixture
def no_thread():
    yield NoThread
    NoThread.refused = None


def _errors(metrics: Metrics) -> dict[str, float]:
    """``storelens_errors_total`` of the API's ``/metrics`` exposition, by reason."""
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith('storelens_errors_total{reason="'):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def _wait(cond, deadline_s: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())


@pytest.mark.parametrize("why", ["can't start new thread", "can't create new thread at interpreter shutdown"])
def test_a_probe_thread_that_cannot_start_is_counted_and_the_breaker_probes_again(no_thread, why) -> None:
    now, metrics, asked = [0.0], Metrics(), []
    b = Breaker(5.0, first_retry_s=1.0, probe=lambda: asked.append(now[0]) or True, clock=lambda: now[0],
                name="live state (Redis)", thread_factory=no_thread, count_error=metrics.count_error)
    assert b.allow() and b.failed()  # a call failed: down for 1 s
    now[0] = 1.0
    no_thread.refused = why
    assert b.allow() is False  # the probe cannot start: the caller skips the backend, never an exception
    assert _errors(metrics) == {PROBE_NOT_STARTED: 1.0}  # before: only logged
    assert b.down and b.cooldown_s == 2.0 and not b.allow()  # a failed probe: the next after a longer cool-down
    now[0] = 3.0
    assert b.allow() is False and _errors(metrics) == {PROBE_NOT_STARTED: 2.0}  # still none: counted again
    no_thread.refused = None
    now[0] = 10.0  # threads again: the next probe starts and finds the backend, which is used again
    assert b.allow() is False and _wait(lambda: not b.down)
    assert b.allow() and asked == [10.0] and _errors(metrics) == {PROBE_NOT_STARTED: 2.0}


def test_the_apis_live_state_counts_a_probe_that_cannot_start_in_its_metrics(no_thread, tmp_path) -> None:
    """The API as it runs: its live state's breaker counts into the app's ``/metrics``; the API keeps answering
    from the history meanwhile."""
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: every call is refused at once
    cfg = parse_config({"store": {"id": "s1"}, "api": {"cache_ttl_s": 0},
                        "cameras": [{"id": "cam-1", "source": "/tmp/cam-1.mp4"}],
                        "storage": {"path": str(tmp_path / "h.db")}})
    storage = SqliteStorage(str(tmp_path / "h.db"))
    storage.write_batch(occupancy_updates=[m.OccupancyUpdate(camera_id="cam-1", ts_ms=T0, occupancy=3, total_in=3)])
    live = RedisLiveState(dead, timeout_s=0.5, retry_s=5.0, first_retry_s=0.05, thread_factory=no_thread)
    try:
        app = create_app(cfg, storage, live)
        no_thread.refused = "can't start new thread"
        with TestClient(app) as client:
            client.headers["Authorization"] = f"Bearer {api_key_for(app)}"

            def counted() -> float:
                assert client.get("/v1/occupancy/cam-1").json()["occupancy"] == 3  # from the history
                text = client.get("/metrics").text
                return next((float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                             if ln.startswith(f'storelens_errors_total{{reason="{PROBE_NOT_STARTED}"}} ')), 0.0)

            assert _wait(lambda: counted() >= 1.0)  # after the first cool-down (50 ms) the probe cannot start
    finally:
        live.close()
        storage.close()


# -- 3. the CLI: whether a command opens the cameras is declared with it ---------------------------------------

VAR = "H4X_CAM_PASSWORD"
UNSET = f"environment variable {VAR} is not set"
MISSING = "missing.mp4"  # a SOURCE that does not exist: the command ends at opening it, after reading the site

#: Every command of the real parser: whether it opens the site's cameras (so their ``${VAR}``s must be set), and
#: a run of it with ``--config SITE`` (``{site}``, ``{tmp}``) and its exit code without the variable (``None``: not
#: run here, it loads face models: its declaration is checked).
COMMANDS: dict[tuple[str, ...], tuple[bool, list[str] | None, int]] = {
    ("demo",): (True, ["demo", "--no-serve"], 2),
    ("count",): (False, ["count", MISSING, "--line", "0,0,9,9"], 2),
    ("zones",): (False, ["zones", MISSING, "--zone", "0,0,9,0,9,9"], 2),
    ("replay",): (False, ["replay", "--json"], 0),
    ("track",): (False, ["track", MISSING, "--mot-out", "{tmp}/mot.txt"], 2),
    ("heatmap",): (False, ["heatmap", MISSING, "--out", "{tmp}/h.png"], 2),
    ("faces",): (False, None, 0),
    ("staff", "enroll"): (False, None, 0),
    ("staff", "list"): (False, ["staff", "list"], 0),
    ("staff", "remove"): (False, ["staff", "remove", "nobody"], 2),
    ("site", "export"): (False, ["site", "export"], 0),
    ("site", "import"): (False, ["site", "import", "{site}"], 0),
    ("users", "create-admin"): (False, ["users", "create-admin"], 0),
    ("users", "create"): (False, ["users", "create", "bob", "--role", "viewer"], 0),
    ("users", "delete"): (False, ["users", "delete", "nobody"], 2),
    ("users", "list"): (False, ["users", "list"], 0),
    ("users", "api-key"): (False, ["users", "api-key", "till 3", "--role", "viewer"], 0),
    ("export-dataset",): (True, ["export-dataset", "--from-db", "--out", "{tmp}/ds"], 2),
    ("audit",): (True, ["audit", "--out", "{tmp}/clips"], 2),
    ("kpis", "publish"): (False, ["kpis", "publish", "--json"], 0),
    ("pos", "import"): (False, ["pos", "import", "{tmp}/sales.csv"], 0),
    ("db", "upgrade"): (False, ["db", "upgrade"], 0),  # test_db_upgrade_31
    ("db", "current"): (False, ["db", "current"], 0),
    ("db", "wait"): (False, ["db", "wait"], 0),  # at head: returns at once (test_merged_review_31a)
}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    return {k: v for a in subs for name, p in a.choices.items() for k, v in _leaves(p, (*path, name)).items()}


def test_every_command_declares_whether_it_opens_the_cameras() -> None:
    leaves = _leaves(build_parser())
    assert set(leaves) == set(COMMANDS)  # a new command: add it to the table
    declared = {words: leaf.get_default("opens_cameras") for words, leaf in leaves.items()}
    assert declared == {words: opens for words, (opens, _, _) in COMMANDS.items()}  # before: None, undeclared


def test_a_command_made_without_its_declaration_is_refused() -> None:
    from storelens.cli import command, commands

    with pytest.raises(TypeError, match="opens_cameras"):
        command(argparse.ArgumentParser(), lambda args: 0)  # type: ignore[call-arg]
    assert commands(build_parser()).keys() == _leaves(build_parser()).keys()  # what build_parser checks


@pytest.mark.parametrize("words", [w for w, (_, argv, _) in COMMANDS.items() if argv is not None],
                         ids=" ".join)
def test_each_command_needs_the_cameras_variables_as_it_declares(words, tmp_path, monkeypatch, capsys) -> None:
    opens, argv, code = COMMANDS[words]
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "s"}, "storage": {"path": "h.db"},
        "cameras": [{"id": "door", "source": f"rtsp://admin:${{{VAR}}}@127.0.0.1/live",
                     "lines": [{"id": "in", "a": [0, 240], "b": [640, 240]}]}]}))
    SqliteStorage(str(tmp_path / "h.db")).close()  # an existing history
    (tmp_path / "sales.csv").write_text("transaction_id,register_id,time,amount,items\nt1,r1,1767225600000,12.50,2\n")
    monkeypatch.delenv(VAR, raising=False)
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", "a long enough password")  # users create-admin
    monkeypatch.setattr(sys, "stdin", io.StringIO("another long password\n"))  # users create
    monkeypatch.chdir(tmp_path)  # MISSING
    rc = cli_main([a.format(site=site, tmp=tmp_path) for a in argv] + ["--config", str(site)])
    err = capsys.readouterr().err
    assert (UNSET in err) is opens, err  # the command reads the cameras' variables only when it declares so
    assert rc == code, err
