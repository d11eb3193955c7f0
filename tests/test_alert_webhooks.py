"""Alert webhooks against a local HTTP server: HMAC signature, retries with backoff, dead letters,
the Slack-compatible body, answers that are not HTTP, redirects, one endpoint down while another is up,
the bounded queue, and the flush at the Kafka analytics service's shutdown."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from storelens.config import parse_config
from storelens.config.cameras import redact_url
from storelens.contract import messages as m
from storelens.runtime.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSender, WebhookSink, webhook_sinks


class Server:
    """Answers the statuses in ``script`` in turn (then 200); records every request. A 3xx points to
    ``/moved`` (a GET there answers 200, recorded in ``gets``); ``"garbage"`` answers bytes that are not
    HTTP; ``"hang"`` answers nothing until :meth:`close`; ``"hold"`` answers 200 once ``release`` is set."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.requests: list[tuple] = []
        self.arrived_s: list[float] = []  # time.monotonic() of each POST
        self.gets: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.headers, body))  # case-insensitive
                outer.arrived_s.append(time.monotonic())
                status = outer.script.pop(0) if outer.script else 200
                if status == "garbage":
                    self.wfile.write(b"this is not HTTP\r\n\r\n")
                    return
                if status == "hang":
                    outer.release.wait(30)
                    return
                if status == "hold":  # answers 200 once released
                    outer.release.wait(30)
                    status = 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", outer.url.replace("/hook", "/moved"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                outer.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    s = Server(getattr(request, "param", []))
    yield s
    s.close()


def hooks(url: str, **kw) -> list:
    rules = [{"kind": "camera_occupancy", "id": "crowd", "camera": "c", "max": 7}]  # a webhook's rules must exist
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                        "alerts": {"rules": rules, "webhooks": [{"url": url, **kw}]}})
    return list(cfg.alerts.webhooks)


ALERT = m.Alert(alert_id="crowd:c:12", rule_id="crowd", kind="camera_occupancy", severity="critical", camera_id="c",
                state="firing", ts_ms=1000, seq=12, fired_ts_ms=1000, fired_seq=12, value=8, threshold=7,
                message="c: 8 people in view (max 7)")


def sink_for(url: str, **kw) -> tuple[WebhookSink, list[float]]:
    slept: list[float] = []
    return WebhookSink(hooks(url, **kw), WebhookSender(sleep=slept.append)), slept


def flushed(sender: WebhookSender, timeout_s: float = 15.0) -> bool:
    """Whether ``sender.flush()`` returned within ``timeout_s`` (a stuck sender fails the test, not hangs it)."""
    t = threading.Thread(target=sender.flush, daemon=True)
    t.start()
    t.join(timeout_s)
    return not t.is_alive()


@pytest.mark.parametrize("server", [[500, 503]], indirect=True)
def test_signed_and_retried_with_backoff(server) -> None:
    sink, slept = sink_for(server.url, secret="s3cret", backoff_s=0.5, max_attempts=5)
    sink.write([m.TrackedFrame(camera_id="c"), ALERT])
    sink.sender.flush()
    assert len(server.requests) == 3 and slept == [0.5, 1.0]
    assert sink.sender.delivered == 1 and sink.sender.dead_letters == []
    headers, body = server.requests[-1]
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[DELIVERY_HEADER] == "crowd:c:12:firing"
    got = json.loads(body)
    assert got["alert_id"] == "crowd:c:12" and got["state"] == "firing" and got["value"] == 8 and got["zone_id"] is None
    sink.sender.close()


@pytest.mark.parametrize("server", [[500] * 10], indirect=True)
def test_dead_lettered_after_max_attempts(server) -> None:
    dead = []
    sink = WebhookSink(hooks(server.url, max_attempts=3, backoff_s=0.25, backoff_max_s=0.3),
                       WebhookSender(on_dead_letter=dead.append, sleep=lambda s: None))
    sink.write([ALERT])
    sink.sender.flush()
    assert len(server.requests) == 3 and len(dead) == 1 and dead[0].attempts == 3
    assert dead[0].errors == ["HTTP 500"] * 3 and SIGNATURE_HEADER not in server.requests[0][0]
    sink.sender.close()


@pytest.mark.parametrize("server", [[404]], indirect=True)
def test_client_error_is_not_retried(server) -> None:
    sink, slept = sink_for(server.url)
    sink.write([ALERT])
    sink.sender.flush()
    assert len(server.requests) == 1 and slept == [] and len(sink.sender.dead_letters) == 1
    sink.sender.close()


def test_unreachable_is_retried_then_dead_lettered() -> None:
    sink, slept = sink_for("http://127.0.0.1:9/hook", max_attempts=2, backoff_s=0, timeout_s=1)
    sink.write([ALERT])
    sink.sender.flush()
    assert len(sink.sender.dead_letters) == 1 and len(slept) == 1
    sink.sender.close()


def test_slack_format_and_rule_filter(server) -> None:
    sink, _ = sink_for(server.url, format="slack", rules=["crowd"])
    other = m.Alert(alert_id="q:c:1", rule_id="queue", state="firing", severity="info", message="x")
    resolved = m.Alert(); resolved.CopyFrom(ALERT); resolved.state = "resolved"
    sink.write([ALERT, other, resolved])
    sink.sender.flush()
    texts = [json.loads(b)["text"] for _, b in server.requests]
    assert texts == ["[CRITICAL] c: 8 people in view (max 7) (rule crowd, alert crowd:c:12)",
                     "[RESOLVED] c: 8 people in view (max 7) (rule crowd, alert crowd:c:12)"]
    sink.sender.close()


def test_config_and_wiring() -> None:
    with pytest.raises(Exception, match="alerts.webhooks.0.url"):
        hooks("ftp://x")
    assert webhook_sinks(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})) == []


@pytest.mark.parametrize("server", [["garbage"]], indirect=True)
def test_an_answer_that_is_not_http_is_retried_and_later_alerts_still_go_out(server) -> None:
    """A broken endpoint answering garbage costs one try, not the webhook thread: the alert is retried
    and delivered, the next alert too, and flush() returns."""
    sink, slept = sink_for(server.url, backoff_s=0.25)
    sink.write([ALERT])
    assert flushed(sink.sender)
    sink.write([ALERT])
    assert flushed(sink.sender)
    assert len(server.requests) == 3 and sink.sender.delivered == 2 and slept == [0.25]
    assert sink.sender.dead_letters == []
    sink.sender.close()


@pytest.mark.parametrize("server", [[404]], indirect=True)
def test_a_failing_dead_letter_handler_does_not_stop_later_alerts(server) -> None:
    """An exception in ``on_dead_letter`` is logged and counted; the next alert is still delivered."""
    def broken(d) -> None:
        raise RuntimeError("dead-letter store down")

    sink = WebhookSink(hooks(server.url), WebhookSender(on_dead_letter=broken, sleep=lambda s: None))
    sink.write([ALERT])
    sink.write([ALERT])
    assert flushed(sink.sender)
    assert len(server.requests) == 2 and sink.sender.delivered == 1 and len(sink.sender.dead_letters) == 1
    assert sink.sender.internal_errors == 1
    sink.sender.close()


@pytest.mark.parametrize("server", [[302] * 3], indirect=True)
def test_redirect_is_not_followed_and_not_counted_as_delivered(server) -> None:
    """A 302 would turn the POST into a body-less GET: it is a failed try naming the status and the Location."""
    sink, slept = sink_for(server.url, max_attempts=3, backoff_s=0)
    sink.write([ALERT])
    assert flushed(sink.sender)
    assert server.gets == [] and len(server.requests) == 3 and sink.sender.delivered == 0
    [dead] = sink.sender.dead_letters
    moved = redact_url(server.url.replace("/hook", "/moved"))  # a webhook URL's path may be its secret
    assert dead.attempts == 3 and all(e.startswith(f"HTTP 302 redirect to {moved} ") for e in dead.errors)
    sink.sender.close()


def test_a_hanging_endpoint_does_not_delay_another_webhook() -> None:
    """Each webhook URL has its own thread: while one endpoint hangs until its timeout, another gets the
    alert at once."""
    dead, healthy = Server(["hang"] * 5), Server([])
    try:
        cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}], "alerts": {"webhooks": [
            {"url": dead.url, "timeout_s": 3, "max_attempts": 1}, {"url": healthy.url}]}})
        sink = WebhookSink(cfg.alerts.webhooks, WebhookSender(sleep=lambda s: None))
        written_s = time.monotonic()
        sink.write([ALERT])
        assert flushed(sink.sender)
        assert len(healthy.arrived_s) == 1 and healthy.arrived_s[0] - written_s < 1.5  # not after the 3 s timeout
        assert sink.sender.delivered == 1 and len(sink.sender.dead_letters) == 1
        sink.sender.close()
    finally:
        dead.close()
        healthy.close()


@pytest.mark.parametrize("server", [["hang"]], indirect=True)
def test_queue_is_bounded_oldest_dropped_to_dead_letters(server) -> None:
    """With ``max_queued`` messages waiting behind a stuck endpoint, a new one pushes out the oldest waiting,
    which is dead-lettered with the reason; the one being sent is not touched."""
    sender = WebhookSender(sleep=lambda s: None, max_queued=2)
    sink = WebhookSink(hooks(server.url, timeout_s=10, max_attempts=1), sender)
    alerts = []
    for i in range(4):
        a = m.Alert(); a.CopyFrom(ALERT); a.alert_id = f"crowd:c:{i}"
        alerts.append(a)
    sink.write(alerts[:1])
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:  # the first one is being sent (hangs)
        time.sleep(0.01)
    sink.write(alerts[1:])
    [dropped] = sender.dead_letters
    assert json.loads(dropped.body)["alert_id"] == "crowd:c:1" and dropped.attempts == 0
    assert dropped.errors == ["dropped: more than 2 messages waiting for this webhook"]
    assert [json.loads(d.body)["alert_id"] for d in sender.pending()] == ["crowd:c:0", "crowd:c:2", "crowd:c:3"]
    server.release.set()
    assert flushed(sender)
    sender.close()


@pytest.mark.parametrize("server", [[503]], indirect=True)
def test_kafka_analytics_service_close_delivers_a_retrying_alert(server, tmp_path) -> None:
    """At SIGTERM the analytics service's ``close()`` waits for an alert waiting to retry (its input offset is
    already committed) instead of dropping it (no broker needed: the app is only built, not started)."""
    import asyncio

    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.service import ServiceRuntime
    from storelens.storage import SqlStorage

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                        "alerts": {"webhooks": [{"url": server.url, "backoff_s": 1.5}]}})
    loop = asyncio.new_event_loop()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = AnalyticsApp(cfg, st, None, ServiceRuntime("analytics", port=0), loop=loop)
        [sink] = [s for s in app.core.sinks if isinstance(s, WebhookSink)]
        sink.write([ALERT])
        try:
            deadline = time.monotonic() + 5
            while not server.requests and time.monotonic() < deadline:  # the first try got its 503
                time.sleep(0.01)
        finally:
            app.close()
            loop.close()
    assert len(server.requests) == 2 and sink.sender.delivered == 1 and sink.sender.dead_letters == []


@pytest.mark.parametrize("server", [["hang"]], indirect=True)
def test_kafka_analytics_service_close_keeps_what_it_cannot_deliver(server, tmp_path, monkeypatch) -> None:
    """An endpoint that does not answer holds the shutdown only for ``webhook_close_s`` (then 1 s for the threads):
    the alerts not delivered stay in the history's ``webhook_outbox`` for the next start (before: dead-lettered,
    lost), the try under way included."""
    import asyncio

    from storelens.runtime import analytics_app
    from storelens.runtime.service import ServiceRuntime
    from storelens.storage import SqlStorage

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                        "alerts": {"webhooks": [{"url": server.url, "timeout_s": 10, "max_attempts": 1}]}})
    loop = asyncio.new_event_loop()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = analytics_app.AnalyticsApp(cfg, st, None, ServiceRuntime("analytics", port=0), loop=loop,
                                         settings=analytics_app.AnalyticsSettings(webhook_close_s=0.5))  # shortened
        [sink] = [s for s in app.core.sinks if isinstance(s, WebhookSink)]
        sink.write([ALERT, ALERT])
        started_s = time.monotonic()
        try:
            app.close()
        finally:
            loop.close()
    assert time.monotonic() - started_s < 4
    assert sink.sender.dead_letters == [] and sink.sender.delivered == 0
    server.release.set()  # the endpoint hangs up without an answer
    with SqlStorage(str(tmp_path / "h.db")) as st:
        assert st.webhook_outbox().count() == 2
