"""``alerts.webhook_max_queued``: the bound of each webhook URL's queue comes from the site file (validated,
the error names the field) and reaches the sender the analytics service builds; behind an endpoint that does
not answer (a real local HTTP server that blocks), one message more than the bound drops the oldest waiting:
dead-lettered, logged and counted in the service's ``storelens_webhook_dropped_total``."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.errors import ConfigError
from storelens.runtime.service import ServiceRuntime
from storelens.runtime.webhooks import WebhookSink, webhook_sinks
from storelens.storage import SqlStorage
from test_alert_webhooks import Server


class BlockingServer(Server):
    """Holds every POST until ``release`` is set (the first message stays in flight), then answers 200."""

    def __init__(self) -> None:
        super().__init__(["hold"] * 100)

    @property
    def arrived(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def server():
    s = BlockingServer()
    yield s
    s.close()


def site(alerts: dict) -> dict:
    return {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}], "alerts": alerts}


def alert(i: int) -> m.Alert:
    return m.Alert(alert_id=f"crowd:c:{i}", rule_id="crowd", kind="camera_occupancy", severity="critical",
                   camera_id="c", state="firing", ts_ms=1000 + i, seq=i, fired_ts_ms=1000 + i, fired_seq=i, value=8,
                   threshold=7, message=f"c: 8 people in view (max 7), #{i}")


def test_the_analytics_service_drops_beyond_the_configured_bound_logged_and_counted(server, tmp_path, caplog) -> None:
    cfg = parse_config(site({"webhooks": [{"url": server.url, "timeout_s": 20, "max_attempts": 1}],
                             "webhook_max_queued": 2}))
    from storelens.runtime.analytics_app import AnalyticsApp

    rt = ServiceRuntime("analytics", port=0)
    loop = asyncio.new_event_loop()
    with SqlStorage(str(tmp_path / "h.db")) as st:
        app = AnalyticsApp(cfg, st, None, rt, loop=loop)
        try:
            [sink] = [s for s in app.core.sinks if isinstance(s, WebhookSink)]
            sender = sink.sender
            assert sender.max_queued == 2
            sink.write([alert(1)])
            deadline = time.monotonic() + 10
            while not server.arrived and time.monotonic() < deadline:  # #1 is being sent: the server holds it
                time.sleep(0.01)
            assert [a["alert_id"] for a in server.arrived] == ["crowd:c:1"]
            sink.write([alert(2), alert(3)])  # the 2 allowed to wait
            assert sender.dead_letters == [] and sender.dropped == 0
            assert rt.registry.get_sample_value("storelens_webhook_dropped_total") == 0
            with caplog.at_level(logging.WARNING, logger="storelens.runtime.webhooks"):
                sink.write([alert(4)])  # one more waiting than the bound: the oldest waiting (#2) goes
            [dropped] = sender.dead_letters
            assert json.loads(dropped.body)["alert_id"] == "crowd:c:2" and dropped.attempts == 0
            assert dropped.errors == ["dropped: more than 2 messages waiting for this webhook"]
            assert sender.dropped == 1 and rt.registry.get_sample_value("storelens_webhook_dropped_total") == 1
            assert any(r.getMessage() == "alert webhook queue full; oldest message dropped"
                       and r.levelno == logging.WARNING for r in caplog.records)
            assert [json.loads(d.body)["alert_id"] for d in sender.pending()] == ["crowd:c:1", "crowd:c:3",
                                                                                  "crowd:c:4"]
            server.release.set()  # the endpoint answers: what was kept is delivered, in order
            assert sender.flush(timeout_s=20)
            assert [a["alert_id"] for a in server.arrived] == ["crowd:c:1", "crowd:c:3", "crowd:c:4"]
            assert sender.delivered == 3 and len(sender.dead_letters) == 1
        finally:
            app.close()
            loop.close()


def test_default_bound_and_the_embedded_runs_sinks() -> None:
    """Without the field: 1,000 per URL; ``webhook_sinks`` (what the embedded run builds) takes the configured one."""
    assert parse_config(site({})).alerts.webhook_max_queued == 1000
    [sink] = webhook_sinks(parse_config(site({"webhooks": [{"url": "http://127.0.0.1:9/hook"}]})))
    assert sink.sender.max_queued == 1000
    [sink] = webhook_sinks(parse_config(site({"webhooks": [{"url": "http://127.0.0.1:9/hook"}],
                                              "webhook_max_queued": 7})))
    assert sink.sender.max_queued == 7 and sink.sender.metrics is None  # the embedded run: logged, no /metrics


@pytest.mark.parametrize("value, why", [(0, "greater than or equal to 1"), (100_001, "less than or equal to 100000"),
                                        (True, "a number, not true/false"), ("many", "valid integer")])
def test_a_bad_bound_names_the_field(value, why) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(site({"webhook_max_queued": value}))
    assert "alerts.webhook_max_queued:" in str(e.value) and why in str(e.value)


def test_the_bound_is_not_a_field_of_a_webhook() -> None:
    """One bound per sender (its queues are per URL, shared by two entries of the same URL): not per entry."""
    with pytest.raises(ConfigError, match=r"alerts\.webhooks\.0\.max_queued: Extra inputs are not permitted"):
        parse_config(site({"webhooks": [{"url": "http://127.0.0.1:9/hook", "max_queued": 5}]}))
