"""Alert webhooks: a runner sink that POSTs every :class:`~storelens.contract.messages.Alert` to the
``alerts.webhooks`` of the site file.

* **Body**: ``format: json`` -> the alert's fields as JSON; ``format: slack`` -> ``{"text": ...}``
  (Slack-compatible incoming webhooks, also Mattermost / Teams connectors that take ``text``).
* **Headers**: ``X-StoreLens-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``
  (when ``secret`` is set), ``X-StoreLens-Delivery: <alert_id>:<state>`` (an idempotency key:
  a receiver may see a message twice, e.g. after a restart).
* **Delivery**: off the pipeline's thread (the sink only enqueues, it never blocks or fails
  the stage). A 2xx answer is delivered; a network error, timeout, 408, 429 or 5xx is retried
  after ``backoff_s``, doubled each time up to ``backoff_max_s``; after ``max_attempts`` tries
  (or at once on another 4xx) the message is dead-lettered: logged and kept in
  :attr:`WebhookSender.dead_letters` (``on_dead_letter`` is called with it).

Example (the signature a receiver checks):
    >>> sign(b"secret", b'{"a": 1}')
    'sha256=9efa14a18410a57a432fbf0ce38d4bc33339036a64e57b8c86da0bb1e122d972'
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from storelens.contract import messages as m

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-StoreLens-Signature"
DELIVERY_HEADER = "X-StoreLens-Delivery"
_RETRY_STATUS = {408, 429}


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def alert_dict(a: m.Alert) -> dict[str, Any]:
    return {"alert_id": a.alert_id, "rule_id": a.rule_id, "kind": a.kind, "severity": a.severity,
            "camera_id": a.camera_id, "zone_id": a.zone_id or None, "state": a.state, "ts_ms": a.ts_ms,
            "seq": a.seq, "fired_ts_ms": a.fired_ts_ms, "fired_seq": a.fired_seq, "value": a.value,
            "threshold": a.threshold, "message": a.message}


def payload(a: m.Alert, fmt: str) -> bytes:
    if fmt == "slack":
        mark = "RESOLVED" if a.state == "resolved" else a.severity.upper()
        return json.dumps({"text": f"[{mark}] {a.message} (rule {a.rule_id}, alert {a.alert_id})"}).encode()
    return json.dumps(alert_dict(a), sort_keys=True).encode()


@dataclass
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    max_attempts: int
    backoff_s: float
    backoff_max_s: float
    timeout_s: float
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def _post(d: Delivery) -> tuple[bool, bool, str]:
    """One try: (delivered, retryable, error)."""
    req = urllib.request.Request(d.url, data=d.body, method="POST",
                                 headers={"Content-Type": "application/json", **d.headers})
    try:
        with urllib.request.urlopen(req, timeout=d.timeout_s) as resp:  # noqa: S310 (configured http(s) URL)
            resp.read()
            return True, False, ""
    except urllib.error.HTTPError as e:
        return False, e.code >= 500 or e.code in _RETRY_STATUS, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return False, True, repr(e)


class WebhookSender:
    """One background thread delivering queued messages in order, with retries (see the module docstring)."""

    def __init__(self, on_dead_letter: Callable[[Delivery], object] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.queue: queue.Queue[Delivery | None] = queue.Queue()
        self.dead_letters: list[Delivery] = []
        self.delivered = 0
        self.on_dead_letter = on_dead_letter
        self._sleep = sleep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-webhooks", daemon=True)
        self._thread.start()

    def submit(self, d: Delivery) -> None:
        self.queue.put(d)

    def _run(self) -> None:
        while True:
            d = self.queue.get()
            try:
                if d is None:
                    return
                self._deliver(d)
            finally:
                self.queue.task_done()

    def _deliver(self, d: Delivery) -> None:
        delay = d.backoff_s
        while True:
            d.attempts += 1
            ok, retry, err = _post(d)
            if ok:
                self.delivered += 1
                return
            d.errors.append(err)
            if not retry or d.attempts >= d.max_attempts or self._stop.is_set():
                self.dead_letters.append(d)
                log.error("alert webhook dead-lettered", extra={"url": d.url, "attempts": d.attempts, "error": err})
                if self.on_dead_letter is not None:
                    self.on_dead_letter(d)
                return
            log.warning("alert webhook failed; retrying", extra={"url": d.url, "error": err, "retry_in_s": delay})
            self._sleep(delay)
            delay = min(delay * 2, d.backoff_max_s)

    def flush(self) -> None:
        """Wait until everything queued is delivered or dead-lettered."""
        self.queue.join()

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.queue.put(None)
        self._thread.join(timeout_s)


class WebhookSink:
    """Runner sink: enqueues every Alert record for every matching webhook; never raises."""

    name = "webhooks"

    def __init__(self, webhooks: Sequence[Any], sender: WebhookSender | None = None) -> None:
        self.webhooks = list(webhooks)
        self.sender = sender or WebhookSender()

    def write(self, records: Sequence[Any]) -> None:
        for a in records:
            if not isinstance(a, m.Alert):
                continue
            for w in self.webhooks:
                if w.rules is not None and a.rule_id not in w.rules:
                    continue
                body = payload(a, w.format)
                headers = {DELIVERY_HEADER: f"{a.alert_id}:{a.state}"}
                if w.secret:
                    headers[SIGNATURE_HEADER] = sign(w.secret.encode(), body)
                self.sender.submit(Delivery(w.url, body, headers, w.max_attempts, w.backoff_s, w.backoff_max_s,
                                            w.timeout_s))


def webhook_sinks(config) -> list[WebhookSink]:
    """``[WebhookSink]`` when the site has alert webhooks, else ``[]``."""
    return [WebhookSink(config.alerts.webhooks)] if config.alerts.webhooks else []
