"""Alert webhooks: a runner sink that POSTs every :class:`~storelens.contract.messages.Alert` to the
``alerts.webhooks`` of the site file.

* **Body**: ``format: json`` -> the alert's fields as JSON; ``format: slack`` -> ``{"text": ...}``
  (Slack-compatible incoming webhooks, also Mattermost / Teams connectors that take ``text``).
* **Headers**: ``X-StoreLens-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``
  (when ``secret`` is set), ``X-StoreLens-Delivery: <alert_id>:<state>`` (an idempotency key:
  a receiver may see a message twice, e.g. after a restart).
* **Delivery**: off the pipeline's thread (the sink only enqueues, it never blocks or fails
  the stage), one thread per webhook URL delivering its messages in order, so an endpoint that is
  down or slow delays only its own messages. A 2xx answer is delivered; a network error, timeout,
  an answer that is not HTTP, a redirect (3xx: never followed, a redirected POST would arrive as a
  body-less GET), 408, 429 or 5xx is retried after ``backoff_s``, doubled each time up to
  ``backoff_max_s``; after ``max_attempts`` tries (or at once on another 4xx) the message is
  dead-lettered: logged and kept in :attr:`WebhookSender.dead_letters` (``on_dead_letter`` is
  called with it), the reason last in :attr:`Delivery.errors`. Also dead-lettered: the oldest
  message of a URL that has more than ``max_queued`` waiting (``alerts.webhook_max_queued``; logged as a
  warning, counted in :attr:`WebhookSender.dropped` and ``storelens_webhook_dropped_total``), what is still
  queued at :meth:`WebhookSender.close`, and a message whose delivery failed in an unexpected way
  (logged with its traceback; the thread goes on with the next message).
* **Secrets**: a webhook URL often holds its credential in its path (a Slack, Teams or Discord incoming webhook,
  ``https://hooks.slack.com/services/T000/B000/<token>``), so logs and dead-letter reasons never show it:
  only ``scheme://host[:port]/...#<first 8 hex of the URL's SHA-256>`` (:attr:`Delivery.target`,
  :func:`~storelens.config.cameras.redact_url`). No metric is labelled with a URL, and no API answer shows one
  (``/v1/site`` has the cameras and alert rules only; the webhooks are edited in the site file).

Example (the signature a receiver checks):
    >>> sign(b"secret", b'{"a": 1}')
    'sha256=9efa14a18410a57a432fbf0ce38d4bc33339036a64e57b8c86da0bb1e122d972'
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from storelens.config.alerts import WEBHOOK_MAX_QUEUED
from storelens.config.cameras import redact_url
from storelens.contract import messages as m

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-StoreLens-Signature"
DELIVERY_HEADER = "X-StoreLens-Delivery"
_RETRY_STATUS = {408, 429}
#: Messages waiting per webhook URL before the oldest is dropped (dead-lettered): ``alerts.webhook_max_queued``.
MAX_QUEUED = WEBHOOK_MAX_QUEUED
#: Reason (last of :attr:`Delivery.errors`) of a message still queued when the sender is closed.
CLOSED_REASON = "not sent: the webhook sender was closed (shutdown) first"


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
    #: One line per failed try (or why it was given up), the dead letter's reason last (the URL redacted).
    errors: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        """The URL as logs may show it (:func:`~storelens.config.cameras.redact_url`: no path, no credentials)."""
        return redact_url(self.url)

    def scrub(self, text: str) -> str:
        """``text`` (an error message) with the URL, and its path, replaced by :attr:`target`."""
        path = urllib.parse.urlsplit(self.url).path
        text = text.replace(self.url, self.target)
        return text.replace(path, "/...") if len(path) > 1 else text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: the 3xx answer reaches :func:`_post` as an ``HTTPError``."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(d: Delivery) -> tuple[bool, bool, str]:
    """One try: (delivered, retryable, error)."""
    req = urllib.request.Request(d.url, data=d.body, method="POST",
                                 headers={"Content-Type": "application/json", **d.headers})
    try:
        with _OPENER.open(req, timeout=d.timeout_s) as resp:  # noqa: S310 (configured http(s) URL)
            resp.read()
            return True, False, ""
    except urllib.error.HTTPError as e:
        e.close()
        if 300 <= e.code < 400:
            where = e.headers.get("Location") if e.headers else None
            where = redact_url(urllib.parse.urljoin(d.url, where)) if where else "(no Location)"
            return False, True, (f"HTTP {e.code} redirect to {where} not followed "
                                 "(a redirected POST loses its body): configure the final URL")
        return False, e.code >= 500 or e.code in _RETRY_STATUS, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as e:
        return False, True, d.scrub(repr(e))  # unreachable, timed out, or an answer that is not (valid) HTTP


class WebhookSender:
    """One background thread per webhook URL delivering its queued messages in order, with retries
    (see the module docstring). ``sleep`` waits between tries (default: a wait that :meth:`close` cuts short);
    ``max_queued`` bounds the messages waiting per URL; a message dropped for it is counted in :attr:`dropped` and
    in ``metrics.webhook_dropped`` (``storelens_webhook_dropped_total``) when ``metrics`` is given."""

    def __init__(self, on_dead_letter: Callable[[Delivery], object] | None = None,
                 sleep: Callable[[float], object] | None = None, max_queued: int = MAX_QUEUED,
                 metrics: Any = None) -> None:
        self.dead_letters: list[Delivery] = []
        self.delivered = 0
        #: Messages dropped because ``max_queued`` were waiting for their URL (dead-lettered too).
        self.dropped = 0
        self.metrics = metrics
        #: Deliveries that failed in an unexpected way (a bug or an on_dead_letter that raised): logged, dead-lettered.
        self.internal_errors = 0
        self.on_dead_letter = on_dead_letter
        self.max_queued = max_queued
        self._stop = threading.Event()
        self._sleep = sleep if sleep is not None else self._stop.wait
        #: Guards everything below; notified when a message is finished (delivered or dead-lettered) or queued.
        self._cond = threading.Condition()
        self._queues: dict[str, collections.deque[Delivery]] = {}
        self._in_flight: dict[str, Delivery] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._unfinished = 0

    def submit(self, d: Delivery) -> None:
        """Queue ``d`` for its URL (never blocks): the oldest waiting is dead-lettered when ``max_queued`` wait."""
        dropped: Delivery | None = None
        with self._cond:
            if self._stop.is_set():
                dropped, d.errors = d, [*d.errors, CLOSED_REASON]
            else:
                q = self._queues.get(d.url)
                if q is None:
                    q = self._queues[d.url] = collections.deque()
                    t = threading.Thread(target=self._run, args=(d.url,), daemon=True,
                                         name=f"alert-webhook-{len(self._threads) + 1}")
                    self._threads[d.url] = t
                    t.start()
                if len(q) >= self.max_queued:
                    dropped = q.popleft()
                    dropped.errors.append(f"dropped: more than {self.max_queued} messages waiting for this webhook")
                    self._unfinished -= 1
                    self.dropped += 1
                q.append(d)
                self._unfinished += 1
                self._cond.notify_all()
        if dropped is not None:
            if dropped is not d:
                log.warning("alert webhook queue full; oldest message dropped",
                            extra={"url": dropped.target, "max_queued": self.max_queued})
                if self.metrics is not None:
                    self.metrics.webhook_dropped.inc()
            self._dead_letter(dropped)

    def _run(self, url: str) -> None:
        q = self._queues[url]
        while True:
            with self._cond:
                while not q and not self._stop.is_set():
                    self._cond.wait()
                if not q:
                    return
                d = q.popleft()
                self._in_flight[url] = d
            try:
                self._deliver(d)
            except Exception as exc:  # noqa: BLE001 (one message's failure must not stop the next ones)
                log.exception("alert webhook delivery failed unexpectedly; dead-lettered", extra={"url": d.target})
                with self._cond:
                    self.internal_errors += 1
                d.errors.append(d.scrub(f"internal error: {exc!r}"))
                self._dead_letter(d)
            finally:
                with self._cond:
                    del self._in_flight[url]
                    self._unfinished -= 1
                    self._cond.notify_all()

    def _deliver(self, d: Delivery) -> None:
        delay = d.backoff_s
        while True:
            d.attempts += 1
            ok, retry, err = _post(d)
            if ok:
                with self._cond:
                    self.delivered += 1
                return
            d.errors.append(err)
            if not retry or d.attempts >= d.max_attempts or self._stop.is_set():
                self._dead_letter(d)
                return
            log.warning("alert webhook failed; retrying", extra={"url": d.target, "error": err, "retry_in_s": delay})
            self._sleep(delay)
            if self._stop.is_set():
                d.errors.append(CLOSED_REASON)
                self._dead_letter(d)
                return
            delay = min(delay * 2, d.backoff_max_s)

    def _dead_letter(self, d: Delivery) -> None:
        """Keep, log and hand ``d`` to ``on_dead_letter`` (whose failure is logged, never raised)."""
        with self._cond:
            self.dead_letters.append(d)
        log.error("alert webhook dead-lettered",
                  extra={"url": d.target, "attempts": d.attempts, "error": d.errors[-1] if d.errors else ""})
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(d)
            except Exception:  # noqa: BLE001
                with self._cond:
                    self.internal_errors += 1
                log.exception("alert webhook on_dead_letter failed", extra={"url": d.target})

    def pending(self) -> list[Delivery]:
        """The messages not yet delivered nor dead-lettered: being sent (or waiting to retry), then queued."""
        with self._cond:
            return [*self._in_flight.values(), *(d for q in self._queues.values() for d in q)]

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued is delivered or dead-lettered (at most ``timeout_s``); False if some is not."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop now (call :meth:`flush` first to deliver what is queued): what is queued is dead-lettered unsent
        (:data:`CLOSED_REASON`), a message waiting to retry is dead-lettered, one being sent gets that try's
        answer; then wait up to ``timeout_s`` for the threads."""
        with self._cond:
            self._stop.set()
            left = [d for q in self._queues.values() for d in q]
            for q in self._queues.values():
                q.clear()
            self._unfinished -= len(left)
            self._cond.notify_all()
        for d in left:
            d.errors.append(CLOSED_REASON)
            self._dead_letter(d)
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads.values()):
            t.join(max(0.0, deadline - time.monotonic()))


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


def close_webhooks(sinks: Sequence[WebhookSink], timeout_s: float) -> int:
    """At a shutdown: give the sinks' senders up to ``timeout_s`` in all to deliver what is queued or waiting to
    retry, then close them (:meth:`WebhookSender.close`: what is left is dead-lettered, logged); how many messages
    were left undelivered (logged as an error). A try under way still gets its answer (its ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    left = 0
    for sink in sinks:
        sender = sink.sender
        if not sender.flush(timeout_s=max(0.0, deadline - time.monotonic())):
            pending = sender.pending()
            left += len(pending)
            log.error("alert webhooks left undelivered at shutdown: dead-lettered",
                      extra={"undelivered": len(pending), "urls": sorted({d.target for d in pending}),
                             "wait_s": timeout_s})
        sender.close(timeout_s=max(1.0, deadline - time.monotonic()))
    return left


def webhook_sinks(config, metrics: Any = None) -> list[WebhookSink]:
    """``[WebhookSink]`` when the site has alert webhooks, else ``[]``: its sender bounds each URL's queue at
    ``alerts.webhook_max_queued`` and counts what it drops in ``metrics`` (a
    :class:`~storelens.runtime.service.ServiceMetrics`, optional)."""
    if not config.alerts.webhooks:
        return []
    return [WebhookSink(config.alerts.webhooks,
                        WebhookSender(max_queued=config.alerts.webhook_max_queued, metrics=metrics))]
