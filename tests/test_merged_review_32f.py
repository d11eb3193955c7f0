"""Review 32f of the durable alert webhook outbox (``webhook_outbox``, :class:`OutboxSender`), on real stores and
real HTTP endpoints: a stale sender never deletes a newer message; a rotated secret signs the messages waiting; a
stale claim respects the backoff another worker set (PostgreSQL); messages of removed webhooks expire even without
webhooks; a broken row is dead-lettered once (``internal``); an idle poll takes no write lock; export-dataset
POSTs nothing."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time
import uuid

import pytest

from storelens.config import parse_config
from storelens.runtime.localdeploy import free_port
from storelens.runtime.service import ServiceRuntime
from storelens.runtime.webhooks import (DELIVERY_HEADER, SIGNATURE_HEADER, close_webhooks,
                                        webhook_sinks)
from storelens.storage import SqlStorage
from tests.test_webhooks_review_32 import PG_DSN, alert, site


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _row(url: str, message_id: str, created_ms: int, headers: str = "{}", body: bytes = b"{}") -> dict:
    return {"url_key": _key(url), "message_id": message_id, "created_ms": created_ms, "headers": headers,
            "body": body}


class Receiver:
    """A real HTTP endpoint: 200 when the POST's signature is the HMAC of ``secret`` (or without ``secret``), 401
    otherwise; records ``(delivery id, accepted)``."""

    def __init__(self, port: int, secret: str | None = None) -> None:
        self.got: list[tuple[str, bool]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = None if secret is None else "sha256=" + hmac.new(secret.encode(), body,
                                                                        hashlib.sha256).hexdigest()
                ok = want is None or self.headers.get(SIGNATURE_HEADER) == want
                outer.got.append((self.headers[DELIVERY_HEADER], ok))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(params=["sqlite", "postgres"])
def history(request, tmp_path):
    """A fresh history store: a SQLite file, or a PostgreSQL schema of the stack's server; ``open()`` opens
    another store object (another connection) on it."""
    if request.param == "sqlite":
        opener = lambda: SqlStorage(str(tmp_path / "history.db"))  # noqa: E731
    else:
        psycopg = pytest.importorskip("psycopg")
        schema = f"test_webhooks_32f_{uuid.uuid4().hex[:12]}"
        opener = lambda: SqlStorage(PG_DSN, schema=schema)  # noqa: E731
    opened: list = []

    def open_():
        opened.append(opener())
        return opened[-1]

    yield open_
    for st in opened:
        st.close()
    if request.param == "postgres":
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- 1: a stale sender cannot delete a newer message -------------------------------------------------------------
def test_a_stale_sender_does_not_delete_the_next_message(history) -> None:
    box = history().webhook_outbox()
    url = "http://127.0.0.1:1/hook"
    box.add([_row(url, "a:firing", 1)], 100)
    state, a_row = box.claim(_key(url), "A", now_ms=10, lease_ms=100)
    assert state == "claimed"
    state, b_row = box.claim(_key(url), "B", now_ms=500, lease_ms=100)  # A's lease ran out: B takes over
    assert state == "claimed" and b_row.id == a_row.id
    assert not box.delete(a_row.id, "A", a_row.message_id)  # B holds it now: A cannot remove it
    assert box.delete(b_row.id, "B", b_row.message_id)  # B delivered it
    box.add([_row(url, "b:firing", 600)], 100)  # the next alert (SQLite reused the largest deleted id)
    assert not box.delete(a_row.id, "A", a_row.message_id)  # A's POST answers 2xx late
    assert [r.message_id for r in box.waiting([_key(url)])] == ["b:firing"]
    [new] = box.waiting([_key(url)])
    assert new.id != a_row.id  # ids are never reused


# -- 2: a rotated secret signs the messages waiting -----------------------------------------------------------------
def test_a_message_queued_before_a_secret_rotation_is_delivered_signed_with_the_new_secret(tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    with SqlStorage(str(tmp_path / "h.db")) as st:
        [sink] = webhook_sinks(site(url, secret="old-secret"), storage=st)
        sink.sender.close(timeout_s=1)  # stopped before anything is sent (nothing listens yet)
        sink.write([alert(1)])
        assert st.webhook_outbox().count() == 1
        receiver = Receiver(port, secret="new-secret")
        try:
            [sink] = webhook_sinks(site(url, secret="new-secret"), storage=st)  # restart with the rotated secret
            assert sink.sender.flush(timeout_s=20)
            assert receiver.got == [("crowd:c:1:firing", True)]
            assert sink.sender.delivered == 1 and sink.sender.dead_lettered == {}
            close_webhooks([sink], 1.0)
        finally:
            receiver.close()


# -- 3: a stale claim respects the next try another worker set (PostgreSQL, READ COMMITTED) -------------------------
def test_a_stale_head_is_not_claimed_after_another_worker_set_its_next_try(history) -> None:
    one, two = history().webhook_outbox(), history().webhook_outbox()  # two connections
    url = "http://127.0.0.1:1/hook"
    now = int(time.time() * 1000)
    one.add([_row(url, "a:firing", now - 10)], 100)
    stale = one.head(_key(url))  # worker 1 reads the head: due, free
    assert stale.next_ms <= now and stale.owner is None
    state, row = two.claim(_key(url), "W2", now, 60_000)  # worker 2 tries it, fails, backs off one minute
    assert state == "claimed"
    two.retry(row.id, "W2", now + 60_000, 1, "HTTP 503", row.message_id)
    state, when = one.take(stale, "W1", now, 60_000)  # worker 1's conditional update, with its stale head
    assert (state, when) == ("wait", now + 60_000)
    [left] = one.waiting([_key(url)])
    assert (left.owner, left.attempts, left.next_ms) == (None, 1, now + 60_000)


# -- 4: messages of removed webhooks expire, even without webhooks --------------------------------------------------
def test_messages_of_a_removed_webhook_expire_without_webhooks(tmp_path, caplog) -> None:
    rt = ServiceRuntime("analytics", port=0)
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
    two_days_ago = int(time.time() * 1000) - 2 * 86_400_000
    with SqlStorage(str(tmp_path / "h.db")) as st:
        box = st.webhook_outbox()
        box.add([_row("http://gone.example/hook", "old:firing", two_days_ago),
                 _row("http://gone.example/hook", "new:firing", int(time.time() * 1000))], 100)
        with caplog.at_level("WARNING", logger="storelens.runtime.webhooks"):
            assert webhook_sinks(cfg, rt.metrics, storage=st) == []
        assert [r.message_id for r in box.waiting([_key("http://gone.example/hook")])] == ["new:firing"]
        assert rt.registry.get_sample_value("storelens_webhook_dead_lettered_total", {"reason": "max_age"}) == 1
        assert any(getattr(r, "waiting", None) == 1 for r in caplog.records)  # the one still waiting is reported


# -- 5: an unexpected error during a try dead-letters the row once ---------------------------------------------------
def test_a_broken_row_is_dead_lettered_internal_once(tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    receiver = Receiver(port)
    rt = ServiceRuntime("analytics", port=0)
    try:
        with SqlStorage(str(tmp_path / "h.db")) as st:
            st.webhook_outbox().add([_row(url, "bad:firing", int(time.time() * 1000), headers="{not json"),
                                     _row(url, "good:firing", int(time.time() * 1000),
                                          headers=f'{{"{DELIVERY_HEADER}": "good:firing"}}')], 100)
            [sink] = webhook_sinks(site(url), rt.metrics, storage=st)
            assert sink.sender.flush(timeout_s=20)
            assert sink.sender.dead_lettered == {"internal": 1}
            assert [d.message_id for d in sink.sender.dead_letters] == ["bad:firing"]
            assert receiver.got == [("good:firing", True)]
            assert rt.registry.get_sample_value("storelens_webhook_dead_lettered_total", {"reason": "internal"}) == 1
            assert rt.registry.get_sample_value("storelens_errors_total", {"reason": "webhook_internal"}) == 1
            close_webhooks([sink], 1.0)
    finally:
        receiver.close()


# -- 6: an idle poll takes no write lock -----------------------------------------------------------------------------
def test_an_idle_poll_opens_no_write_transaction(tmp_path) -> None:
    with SqlStorage(str(tmp_path / "h.db")) as st:
        box = st.webhook_outbox()
        url = "http://127.0.0.1:1/hook"
        gen = st.write_generation
        assert box.claim(_key(url), "A", now_ms=10, lease_ms=100) == ("empty", None)
        assert st.write_generation == gen
        box.add([_row(url, "a:firing", 1000)], 100)  # not due before 1000
        gen = st.write_generation
        assert box.claim(_key(url), "A", now_ms=10, lease_ms=100) == ("wait", 1000)
        assert st.write_generation == gen
        assert box.claim(_key(url), "A", now_ms=1000, lease_ms=100)[0] == "claimed"
        gen = st.write_generation
        assert box.claim(_key(url), "B", now_ms=1050, lease_ms=100) == ("wait", 1100)  # held by A
        assert st.write_generation == gen


# -- 7: export-dataset POSTs no alerts -------------------------------------------------------------------------------
def test_export_dataset_posts_no_alerts(tmp_path) -> None:
    from storelens.paths import asset
    from storelens.storage.dataset import export_video

    port = free_port()
    receiver = Receiver(port)
    cfg = parse_config({
        "store": {"id": "s"}, "faces": {"enabled": False},
        "cameras": [{"id": "cam", "source": str(asset("mot", "TUD-Campus", "TUD-Campus.mp4")), "lines": []}],
        "alerts": {"rules": [{"kind": "camera_occupancy", "id": "anyone", "camera": "cam", "max": 0}],
                   "webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]}})
    try:
        r = export_video(cfg, tmp_path / "out", every_n=35, min_length=5)
        assert r.images > 0
        assert receiver.got == []
    finally:
        receiver.close()
