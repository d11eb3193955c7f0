"""Alert webhooks against a local HTTP server: HMAC signature, retries with backoff, dead letters,
the Slack-compatible body, and the sink wired into the embedded pipeline's analytics runner."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.runtime.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSender, WebhookSink, webhook_sinks


class Server:
    """Answers the statuses in ``script`` in turn (then 200); records every request."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.requests: list[tuple] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.headers, body))  # case-insensitive
                status = outer.script.pop(0) if outer.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    s = Server(getattr(request, "param", []))
    yield s
    s.close()


def hooks(url: str, **kw) -> list:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                        "alerts": {"webhooks": [{"url": url, **kw}]}})
    return list(cfg.alerts.webhooks)


ALERT = m.Alert(alert_id="crowd:c:12", rule_id="crowd", kind="camera_occupancy", severity="critical", camera_id="c",
                state="firing", ts_ms=1000, seq=12, fired_ts_ms=1000, fired_seq=12, value=8, threshold=7,
                message="c: 8 people in view (max 7)")


def sink_for(url: str, **kw) -> tuple[WebhookSink, list[float]]:
    slept: list[float] = []
    return WebhookSink(hooks(url, **kw), WebhookSender(sleep=slept.append)), slept


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
