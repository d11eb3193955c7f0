"""Review 32 of the alert webhooks: messages are kept in the history's ``webhook_outbox`` until delivered.

Before, a webhook that was down for more than ~15 s (5 tries, waits 1, 2, 4, 8 s) lost its messages, resolutions
included, to a log line and an in-memory list (unbounded, lost at a restart); a 429's ``Retry-After`` was ignored,
a stop dropped what was not delivered within 5 s, and no metric counted what was given up. Now: the messages wait
in the history (SQLite and PostgreSQL) across a stop and a restart and are delivered after it, in order, once; a
``Retry-After`` is honoured; what is given up (a 4xx, ``max_age_s``) is counted by reason; two senders on one
history (two analytics workers) deliver each message once, in order; the in-memory list is bounded.
"""
from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.runtime.localdeploy import free_port
from storelens.runtime.service import ServiceRuntime
from storelens.runtime.webhooks import (DEAD_LETTERS_KEPT, DELIVERY_HEADER, OutboxSender, WebhookSender, WebhookSink,
                                        close_webhooks, webhook_sinks)

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")


class Receiver:
    """A real HTTP endpoint on ``port``: answers the ``(status, headers)`` of ``script`` in turn (then 200), records
    each POST's ``time.monotonic()``, delivery id and JSON body."""

    def __init__(self, port: int, script: list[tuple[int, dict]] | None = None) -> None:
        self.script = list(script or [])
        self.got: list[tuple[float, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((time.monotonic(), self.headers[DELIVERY_HEADER], json.loads(body)))
                status, headers = outer.script.pop(0) if outer.script else (200, {})
                self.send_response(status)
                for k, v in {**headers, "Content-Length": "0"}.items():
                    self.send_header(k, v)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def ids(self) -> list[str]:
        return [d for _, d, _ in self.got]

    def wait_for(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(params=["sqlite", "postgres"])
def open_history(request, tmp_path):
    """Opens the same history store each call (a process restart): a SQLite file, or a PostgreSQL schema."""
    from storelens.storage import SqlStorage

    if request.param == "sqlite":
        yield lambda: SqlStorage(str(tmp_path / "history.db"))
        return
    psycopg = pytest.importorskip("psycopg")
    schema = f"test_webhooks_32_{uuid.uuid4().hex[:12]}"
    yield lambda: SqlStorage(PG_DSN, schema=schema)
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def site(url: str, **hook) -> object:
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                         "alerts": {"rules": [{"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 7}],
                                    "webhooks": [{"url": url, **hook}]}})


def alert(i: int, state: str = "firing") -> m.Alert:
    return m.Alert(alert_id=f"crowd:c:{i}", rule_id="crowd", kind="camera_occupancy", severity="critical",
                   camera_id="c", state=state, ts_ms=1000 + i, seq=i, fired_ts_ms=1000 + i, fired_seq=i, value=8,
                   threshold=7, message=f"c: 8 people in view (max 7), #{i}")


def test_an_endpoint_down_across_a_restart_gets_the_firing_then_the_resolve_once(open_history) -> None:
    """Nothing listens on the webhook's port while the alert fires and resolves, and the sink stops (a restart);
    the receiver starts on that port, the sink again: both messages arrive, in order, once (before: dead-lettered
    after 5 tries or at the stop, lost)."""
    port = free_port()
    cfg = site(f"http://127.0.0.1:{port}/hook", backoff_s=0.05, backoff_max_s=0.2, timeout_s=2)
    st = open_history()
    try:
        [sink] = webhook_sinks(cfg, storage=st)
        assert isinstance(sink.sender, OutboxSender)
        sink.write([alert(1), alert(1, "resolved")])
        time.sleep(0.5)  # several tries refused meanwhile (no bound asserted on them)
        assert close_webhooks([sink], 0.2) == 0  # nothing lost at the stop
        assert sink.sender.dead_letters == [] and sink.sender.delivered == 0
    finally:
        st.close()
    receiver = Receiver(port)
    st = open_history()
    try:
        assert st.webhook_outbox().count() == 2  # kept across the restart
        [sink] = webhook_sinks(cfg, storage=st)  # nothing new is written: what was left is delivered
        receiver.wait_for(2)
        assert sink.sender.flush(timeout_s=10)
        time.sleep(0.2)
        assert receiver.ids == ["crowd:c:1:firing", "crowd:c:1:resolved"]
        assert [b["delivery_id"] for _, _, b in receiver.got] == receiver.ids  # the id to de-duplicate on
        assert sink.sender.delivered == 2 and sink.sender.dead_letters == [] and st.webhook_outbox().count() == 0
        close_webhooks([sink], 1.0)
    finally:
        st.close()
        receiver.close()


@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "outbox"])
def test_retry_after_of_a_429_is_honoured(durable, tmp_path) -> None:
    """A 429 with ``Retry-After: 2``: the next try comes no earlier than ~2 s later (the backoff is 0)."""
    from storelens.storage import SqlStorage

    port = free_port()
    receiver = Receiver(port, [(429, {"Retry-After": "2"})])
    cfg = site(f"http://127.0.0.1:{port}/hook", backoff_s=0, backoff_max_s=0)
    st = SqlStorage(str(tmp_path / "h.db")) if durable else None
    try:
        [sink] = webhook_sinks(cfg, storage=st)
        assert isinstance(sink.sender, OutboxSender) == durable
        sink.write([alert(1)])
        receiver.wait_for(2, timeout_s=15)
        assert sink.sender.flush(timeout_s=10)
        assert receiver.ids == ["crowd:c:1:firing"] * 2
        assert receiver.got[1][0] - receiver.got[0][0] >= 1.9
        close_webhooks([sink], 1.0)
    finally:
        receiver.close()
        if st is not None:
            st.close()


def test_given_up_messages_are_counted_by_reason_and_the_backlog_is_exported(tmp_path) -> None:
    """A message older than ``max_age_s`` (left by a run long ago) is dropped unsent; a 4xx is given up; each is
    counted in ``storelens_webhook_dead_lettered_total{reason}``, the backlog in ``storelens_webhook_backlog``."""
    from storelens.storage import SqlStorage

    port = free_port()
    receiver = Receiver(port, [(404, {})])
    url = f"http://127.0.0.1:{port}/hook"
    cfg = site(url, max_age_s=3600)
    rt = ServiceRuntime("analytics", port=0)
    with SqlStorage(str(tmp_path / "h.db")) as st:
        import hashlib

        old_ms = int(time.time() * 1000) - 2 * 3600 * 1000
        st.webhook_outbox().add([{"url_key": hashlib.sha256(url.encode()).hexdigest(), "message_id": "old:firing",
                                  "created_ms": old_ms, "headers": "{}", "body": b"{}"}], 1000)
        [sink] = webhook_sinks(cfg, rt.metrics, storage=st)
        sink.write([alert(1)])  # answered 404
        assert sink.sender.flush(timeout_s=10)
        assert receiver.ids == ["crowd:c:1:firing"]  # the old one never sent
        sample = rt.registry.get_sample_value
        assert sample("storelens_webhook_dead_lettered_total", {"reason": "max_age"}) == 1
        assert sample("storelens_webhook_dead_lettered_total", {"reason": "rejected"}) == 1
        assert sample("storelens_webhook_backlog") == 0
        assert sink.sender.dead_lettered == {"max_age": 1, "rejected": 1}
        close_webhooks([sink], 1.0)
    receiver.close()


def test_the_in_memory_dead_letters_are_bounded() -> None:
    """Without a history store the sender keeps the newest :data:`DEAD_LETTERS_KEPT` dead letters, counts all."""
    port = free_port()
    receiver = Receiver(port, [(400, {})] * (DEAD_LETTERS_KEPT + 5))
    sender = WebhookSender()
    sink = WebhookSink(site(f"http://127.0.0.1:{port}/hook").alerts.webhooks, sender)
    try:
        sink.write([alert(i) for i in range(DEAD_LETTERS_KEPT + 5)])
        assert sender.flush(timeout_s=30)
        assert len(sender.dead_letters) == DEAD_LETTERS_KEPT and sender.dead_lettered == {
            "rejected": DEAD_LETTERS_KEPT + 5}
        assert sender.dead_letters[-1].message_id == f"crowd:c:{DEAD_LETTERS_KEPT + 4}:firing"
    finally:
        sender.close()
        receiver.close()


def test_two_workers_on_one_history_deliver_each_message_once_in_order(open_history) -> None:
    """Two analytics workers (two senders on the same history, e.g. PostgreSQL) share the outbox: each message is
    delivered by one of them, once, and in the order it was added."""
    port = free_port()
    receiver = Receiver(port)
    cfg = site(f"http://127.0.0.1:{port}/hook")
    a, b = open_history(), open_history()
    try:
        [sink_a] = webhook_sinks(cfg, storage=a)
        [sink_b] = webhook_sinks(cfg, storage=b)
        sink_a.write([alert(i) for i in range(10)])
        sink_b.write([alert(i, "resolved") for i in range(10)])
        receiver.wait_for(20)
        assert sink_a.sender.flush(timeout_s=20) and sink_b.sender.flush(timeout_s=20)
        time.sleep(0.2)
        want = [f"crowd:c:{i}:firing" for i in range(10)] + [f"crowd:c:{i}:resolved" for i in range(10)]
        assert receiver.ids == want
        assert sink_a.sender.delivered + sink_b.sender.delivered == 20
        close_webhooks([sink_a, sink_b], 1.0)
    finally:
        a.close()
        b.close()
        receiver.close()


def test_the_analytics_service_keeps_its_webhooks_in_the_history(tmp_path) -> None:
    """The Kafka analytics service's webhook sink uses the history's outbox (the embedded run's does too)."""
    import asyncio

    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.storage import SqlStorage

    loop = asyncio.new_event_loop()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = AnalyticsApp(site(f"http://127.0.0.1:{free_port()}/hook"), st, None,
                           ServiceRuntime("analytics", port=0), loop=loop)
        try:
            [sink] = [s for s in app.core.sinks if isinstance(s, WebhookSink)]
            assert isinstance(sink.sender, OutboxSender)
        finally:
            app.close()
            loop.close()
