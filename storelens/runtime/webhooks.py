"""Alert webhooks: a runner sink that POSTs every :class:`~storelens.contract.messages.Alert` to the
``alerts.webhooks`` of the site file.

* **Body**: ``format: json`` -> the alert's fields as JSON; ``format: slack`` -> ``{"text": ...}``
  (Slack-compatible incoming webhooks, also Mattermost / Teams connectors that take ``text``).
* **Headers**: ``X-StoreLens-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``
  (when ``secret`` is set), ``X-StoreLens-Delivery: <alert_id>:<state>`` (an idempotency key:
  a receiver may see a message twice, e.g. after a crash).
* **Delivery**: off the pipeline's thread (the sink only stores or enqueues, it never blocks on an endpoint),
  one thread per webhook URL delivering its messages in order, so an endpoint that is down or slow delays only its
  own messages. A 2xx answer is delivered; a network error, timeout, an answer that is not HTTP, a redirect (3xx:
  never followed, a redirected POST would arrive as a body-less GET), 408, 429 or 5xx is retried after
  ``backoff_s``, doubled each time up to ``backoff_max_s`` (a 429 / 503 answer's ``Retry-After: <seconds>`` instead,
  at most :data:`~storelens.config.alerts.WEBHOOK_RETRY_AFTER_MAX_S`), until ``max_age_s`` (a day by default) or
  ``max_attempts`` (when set); a 4xx other than 408 / 429 is given up at once. Given up: logged, counted by reason in
  :attr:`WebhookSender.dead_lettered` and ``storelens_webhook_dead_lettered_total{reason}``, the newest
  :data:`DEAD_LETTERS_KEPT` kept in ``dead_letters`` (``on_dead_letter`` is called with it), the reason last in
  :attr:`Delivery.errors`. More than ``max_queued`` waiting for a URL (``alerts.webhook_max_queued``): the oldest
  waiting is dropped (``queue_full``; logged as a warning, counted in ``storelens_webhook_dropped_total`` too).
* **Durable, at least once** (:class:`OutboxSender`, what :func:`webhook_sinks` builds when there is a history
  store: the embedded pipeline's and the Kafka analytics service's): each message is kept in the history's
  ``webhook_outbox`` (:mod:`storelens.storage.webhook_outbox`) until it is delivered or given up, across an outage
  and a restart; a stop leaves what is not delivered there for the next start. Several processes on one history
  (analytics workers) share it: one of them at a time tries the oldest message of a URL, so each goes once and in
  order, unless a try outlives its lease (a receiver may then see a message twice, as after a crash during a try):
  receivers de-duplicate on ``X-StoreLens-Delivery`` (``delivery_id`` in the JSON body). Without a history
  store, :class:`WebhookSender` keeps the queue in memory: what it still holds at :meth:`WebhookSender.close` is
  dead-lettered (``closed``), and so is a message whose delivery failed in an unexpected way (``internal``).
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
import uuid
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from storelens.config.alerts import WEBHOOK_MAX_AGE_S, WEBHOOK_MAX_QUEUED, WEBHOOK_RETRY_AFTER_MAX_S
from storelens.config.cameras import redact_url
from storelens.contract import messages as m
from storelens.errors import StorageError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-StoreLens-Signature"
DELIVERY_HEADER = "X-StoreLens-Delivery"
_RETRY_STATUS = {408, 429}
#: Messages waiting per webhook URL before the oldest is dropped (dead-lettered): ``alerts.webhook_max_queued``.
MAX_QUEUED = WEBHOOK_MAX_QUEUED
#: Reason (last of :attr:`Delivery.errors`) of a message still queued when the sender is closed.
CLOSED_REASON = "not sent: the webhook sender was closed (shutdown) first"
#: Dead letters a sender keeps in :attr:`WebhookSender.dead_letters` (the newest; every one is logged and counted).
DEAD_LETTERS_KEPT = 100
#: Seconds between two looks at the history's ``webhook_outbox`` of a webhook with nothing due (a message this
#: process adds is taken at once; those of another process, or left by the previous run, within this).
OUTBOX_POLL_S = 2.0
#: Seconds a sender holds a message of the outbox beyond its try's ``timeout_s`` (twice: connect, answer): another
#: process takes it over after that (its holder died).
OUTBOX_LEASE_S = 30.0
#: Seconds between two expiries of the outbox messages of webhooks no longer in the site file (besides at start).
OUTBOX_EXPIRE_EVERY_S = 3600.0


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
    return json.dumps({**alert_dict(a), "delivery_id": delivery_id(a)}, sort_keys=True).encode()


def delivery_id(a: m.Alert) -> str:
    """The id a receiver de-duplicates on (``X-StoreLens-Delivery``, and ``delivery_id`` of the JSON body):
    ``<alert_id>:<state>``, the same for every try and after a restart."""
    return f"{a.alert_id}:{a.state}"


@dataclass
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]
    #: ``None``: tried until ``max_age_s``.
    max_attempts: int | None
    backoff_s: float
    backoff_max_s: float
    timeout_s: float
    attempts: int = 0
    max_age_s: float = WEBHOOK_MAX_AGE_S
    #: ``X-StoreLens-Delivery`` (:func:`delivery_id`).
    message_id: str = ""
    #: ``time.monotonic()`` when it was submitted (its age is measured from there).
    created_s: float = field(default_factory=time.monotonic)
    #: Why it was given up (a label of ``storelens_webhook_dead_lettered_total``), once it is.
    reason: str = ""
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


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header's wait in seconds (its seconds form; an HTTP date or garbage: ``None``), at most
    :data:`~storelens.config.alerts.WEBHOOK_RETRY_AFTER_MAX_S`.

    >>> [retry_after_s(v) for v in ("2", " 0 ", "99999", "Wed, 21 Oct 2015 07:28:00 GMT", None)]
    [2.0, 0.0, 3600.0, None, None]
    """
    try:
        s = float(int((value or "").strip()))
    except ValueError:
        return None
    return min(max(s, 0.0), WEBHOOK_RETRY_AFTER_MAX_S)


def _post(d: Delivery) -> tuple[bool, bool, str, float | None]:
    """One try: (delivered, retryable, error, the wait a 429 / 503 answer's ``Retry-After`` asks for)."""
    req = urllib.request.Request(d.url, data=d.body, method="POST",
                                 headers={"Content-Type": "application/json", **d.headers})
    try:
        with _OPENER.open(req, timeout=d.timeout_s) as resp:  # noqa: S310 (configured http(s) URL)
            resp.read()
            return True, False, "", None
    except urllib.error.HTTPError as e:
        e.close()
        if 300 <= e.code < 400:
            where = e.headers.get("Location") if e.headers else None
            where = redact_url(urllib.parse.urljoin(d.url, where)) if where else "(no Location)"
            return False, True, (f"HTTP {e.code} redirect to {where} not followed "
                                 "(a redirected POST loses its body): configure the final URL"), None
        wait = retry_after_s(e.headers.get("Retry-After")) if e.code in (429, 503) and e.headers else None
        return False, e.code >= 500 or e.code in _RETRY_STATUS, f"HTTP {e.code}", wait
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as e:
        return False, True, d.scrub(repr(e)), None  # unreachable, timed out, or an answer that is not (valid) HTTP


class WebhookSender:
    """One background thread per webhook URL delivering its queued messages in order, with retries
    (see the module docstring). ``sleep`` waits between tries (default: a wait that :meth:`close` cuts short);
    ``max_queued`` bounds the messages waiting per URL; a message dropped for it is counted in :attr:`dropped` and
    in ``metrics.webhook_dropped`` (``storelens_webhook_dropped_total``) when ``metrics`` is given.

    In memory only: what it holds is lost with the process. :func:`webhook_sinks` uses it when there is no history
    store; with one, :class:`OutboxSender` keeps the messages in the history until delivered."""

    #: Undelivered messages are lost at :meth:`close` (not so :class:`OutboxSender`'s).
    durable = False

    def __init__(self, on_dead_letter: Callable[[Delivery], object] | None = None,
                 sleep: Callable[[float], object] | None = None, max_queued: int = MAX_QUEUED,
                 metrics: Any = None) -> None:
        #: The newest :data:`DEAD_LETTERS_KEPT` dead letters (each one is logged and counted in
        #: :attr:`dead_lettered` and ``storelens_webhook_dead_lettered_total``).
        self.dead_letters: list[Delivery] = []
        #: Messages given up, by reason (``rejected``, ``max_attempts``, ``max_age``, ``queue_full``, ``closed``,
        #: ``internal``).
        self.dead_lettered: dict[str, int] = {}
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
                dropped, d.errors, d.reason = d, [*d.errors, CLOSED_REASON], "closed"
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
                    dropped.reason = "queue_full"
                    self._unfinished -= 1
                    self.dropped += 1
                q.append(d)
                self._unfinished += 1
                self._cond.notify_all()
            self._backlog()
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
                d.reason = "internal"
                self._dead_letter(d)
            finally:
                with self._cond:
                    del self._in_flight[url]
                    self._unfinished -= 1
                    self._cond.notify_all()
                self._backlog()

    def _deliver(self, d: Delivery) -> None:
        delay = d.backoff_s
        while True:
            d.attempts += 1
            ok, retry, err, asked = _post(d)
            if ok:
                with self._cond:
                    self.delivered += 1
                return
            d.errors.append(err)
            d.reason = give_up(d.attempts, d.max_attempts, retry, time.monotonic() - d.created_s, d.max_age_s)
            if d.reason or self._stop.is_set():
                d.reason = d.reason or "closed"
                self._dead_letter(d)
                return
            wait = delay if asked is None else asked
            log.warning("alert webhook failed; retrying", extra={"url": d.target, "error": err, "retry_in_s": wait})
            self._sleep(wait)
            if self._stop.is_set():
                d.errors.append(CLOSED_REASON)
                d.reason = "closed"
                self._dead_letter(d)
                return
            delay = min(delay * 2, d.backoff_max_s)

    def _backlog(self) -> None:
        if self.metrics is not None and hasattr(self.metrics, "webhook_backlog"):
            self.metrics.webhook_backlog.set(self._unfinished)

    def _dead_letter(self, d: Delivery) -> None:
        """Keep (the newest :data:`DEAD_LETTERS_KEPT`), log, count and hand ``d`` to ``on_dead_letter`` (whose
        failure is logged, never raised)."""
        reason = d.reason or "rejected"
        with self._cond:
            self.dead_letters.append(d)
            del self.dead_letters[:-DEAD_LETTERS_KEPT]
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1
        if self.metrics is not None and hasattr(self.metrics, "webhook_dead_lettered"):
            self.metrics.webhook_dead_lettered.labels(reason).inc()
        log.error("alert webhook dead-lettered",
                  extra={"url": d.target, "attempts": d.attempts, "reason": reason, "delivery": d.message_id,
                         "error": d.errors[-1] if d.errors else ""})
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
            d.reason = "closed"
            self._dead_letter(d)
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads.values()):
            t.join(max(0.0, deadline - time.monotonic()))


def give_up(attempts: int, max_attempts: int | None, retryable: bool, age_s: float, max_age_s: float) -> str:
    """Why a message that failed its try number ``attempts`` is given up (``""``: tried again).

    >>> give_up(1, None, False, 0, 60), give_up(3, 3, True, 0, 60), give_up(9, None, True, 61, 60)
    ('rejected', 'max_attempts', 'max_age')
    >>> give_up(9, None, True, 1, 60)
    ''

    """
    if not retryable:
        return "rejected"
    if max_attempts is not None and attempts >= max_attempts:
        return "max_attempts"
    return "max_age" if age_s >= max_age_s else ""


class OutboxSender:
    """Delivers the alert webhook messages kept in the history store's ``webhook_outbox`` (``outbox``: the store's
    :meth:`~storelens.storage.history.SqlStorage.webhook_outbox`) until they are delivered or too old: they survive
    an endpoint that is down for hours, a stop and a restart, and every process on the same history (the analytics
    service's workers, an embedded run after another) delivers them, each message once and in order per webhook
    (the outbox lends the oldest message of a webhook to one sender at a time:
    :meth:`~storelens.storage.webhook_outbox.WebhookOutbox.claim`), unless a try outlives its lease
    (``2 * timeout_s +`` :data:`OUTBOX_LEASE_S`: at least once, receivers de-duplicate on ``X-StoreLens-Delivery``).

    One thread per webhook URL of ``webhooks`` (started here: what a previous run left is delivered now), which
    takes the oldest message whose next try is due, POSTs it, deletes it once delivered (or given up: a 4xx other
    than 408 / 429, ``max_attempts`` tries when set, ``max_age_s`` since it was added: logged, counted in
    :attr:`dead_lettered` and ``storelens_webhook_dead_lettered_total{reason}``) or sets its next try (the
    backoff of the webhook, doubled per try up to ``backoff_max_s``, or a 429 / 503 answer's ``Retry-After``). A
    webhook's messages beyond ``max_queued`` waiting are dropped, oldest first (``queue_full``). :meth:`close`
    leaves what is not delivered in the outbox for the next start."""

    durable = True

    def __init__(self, outbox: Any, webhooks: Sequence[Any], max_queued: int = MAX_QUEUED, metrics: Any = None,
                 on_dead_letter: Callable[[Delivery], object] | None = None, poll_s: float = OUTBOX_POLL_S) -> None:
        self.outbox, self.max_queued, self.metrics, self.on_dead_letter = outbox, max_queued, metrics, on_dead_letter
        self.poll_s = poll_s
        #: This sender's name on the messages it holds (a fresh one per process).
        self.owner = uuid.uuid4().hex
        self.hooks: dict[str, Any] = {}
        for w in webhooks:  # a URL listed twice (other rules or format): one thread, the first one's settings
            self.hooks.setdefault(_url_key(w.url), w)
        self.delivered = 0
        self.dropped = 0
        self.internal_errors = 0
        self.dead_letters: list[Delivery] = []
        self.dead_lettered: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._wake = {k: threading.Event() for k in self.hooks}
        self._busy: set[str] = set()
        self._next_expiry = 0.0
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True, name=f"alert-webhook-{i + 1}")
                         for i, k in enumerate(self.hooks)]
        self._expire_unknown()
        for t in self._threads:
            t.start()

    # -- adding --------------------------------------------------------------------------------------------------
    def submit(self, d: Delivery) -> None:
        self.submit_all([d])

    def submit_all(self, deliveries: Sequence[Delivery]) -> None:
        """Store the messages in the outbox (one transaction; raises when the store fails: the runner retries the
        sink) and wake their webhooks' threads."""
        if not deliveries:
            return
        now = _now_ms()
        rows = [{"url_key": _url_key(d.url), "message_id": d.message_id, "created_ms": now,
                 "headers": json.dumps({k: v for k, v in d.headers.items() if k != SIGNATURE_HEADER}, sort_keys=True),
                 "body": bytes(d.body)} for d in deliveries]  # unsigned: signed at each try with the current secret
        dropped = self.outbox.add(rows, self.max_queued)
        for r in dropped:
            self.dropped += 1
            hook = self.hooks.get(r.url_key)
            log.warning("alert webhook queue full; oldest message dropped",
                        extra={"url": redact_url(hook.url) if hook else r.url_key[:8], "max_queued": self.max_queued})
            if self.metrics is not None:
                self.metrics.webhook_dropped.inc()
            self._given_up(r, hook, "queue_full",
                           f"dropped: more than {self.max_queued} messages waiting for this webhook")
        for key in {r["url_key"] for r in rows}:
            if key in self._wake:
                self._wake[key].set()

    # -- delivering -------------------------------------------------------------------------------------------------
    def _run(self, key: str) -> None:
        hook, wake = self.hooks[key], self._wake[key]
        lease_ms = int((2 * hook.timeout_s + OUTBOX_LEASE_S) * 1000)
        expires = key == next(iter(self.hooks))  # one thread expires the messages of removed webhooks
        while not self._stop.is_set() and not getattr(self.outbox, "closed", False):
            wait_s = self.poll_s
            if expires and time.monotonic() >= self._next_expiry:
                self._expire_unknown()
            try:
                now = _now_ms()
                state, row = self.outbox.claim(key, self.owner, now, lease_ms)
                if state == "claimed":
                    with self._lock:
                        self._busy.add(key)
                    try:
                        self._try(hook, row)
                    except Exception as exc:  # noqa: BLE001
                        if _storage_error(exc):
                            raise
                        self._internal(hook, row, exc)  # a bug or a broken row: never retried in a loop
                    finally:
                        with self._lock:
                            self._busy.discard(key)
                    self._backlog()
                    continue
                if state == "wait":
                    wait_s = min(self.poll_s, max(0.0, (row - now) / 1000))
            except Exception:  # noqa: BLE001 (the history store is down: look again later; the message stays)
                if getattr(self.outbox, "closed", False):  # the store was closed under a try: its lease runs out
                    log.info("alert webhook outbox closed during a try; the message stays for the next start",
                             extra={"url": redact_url(hook.url)})
                    return
                with self._lock:
                    self.internal_errors += 1
                self._error("webhook_outbox")
                log.warning("alert webhook outbox: delivery failed; trying again", exc_info=True,
                            extra={"url": redact_url(hook.url)})
            wake.wait(wait_s)
            wake.clear()

    def _try(self, hook: Any, row: Any) -> None:
        """One try of the claimed ``row``: delete it (delivered, given up) or set its next try. Signed with the
        webhook's current ``secret`` (a rotated secret applies to the messages already waiting). Deletes and
        retries only while this sender still holds the row (its lease may have run out during the POST)."""
        now = _now_ms()
        headers = {k: v for k, v in json.loads(row.headers).items() if k != SIGNATURE_HEADER}
        if hook.secret:
            headers[SIGNATURE_HEADER] = sign(hook.secret.encode(), bytes(row.body))
        d = Delivery(hook.url, bytes(row.body), headers, hook.max_attempts, hook.backoff_s,
                     hook.backoff_max_s, hook.timeout_s, attempts=row.attempts, max_age_s=hook.max_age_s,
                     message_id=row.message_id)
        age_s = (now - row.created_ms) / 1000
        if age_s >= hook.max_age_s:
            if self.outbox.delete(row.id, self.owner, row.message_id):
                self._given_up(row, hook, "max_age", row.last_error or "not delivered within max_age_s", d)
            return
        if self._stop.is_set():
            return  # close() releases it
        d.attempts += 1
        ok, retry, err, asked = _post(d)
        if ok:
            self.outbox.delete(row.id, self.owner, row.message_id)
            with self._lock:
                self.delivered += 1
            return
        reason = give_up(d.attempts, hook.max_attempts, retry, age_s, hook.max_age_s)
        if reason:
            if self.outbox.delete(row.id, self.owner, row.message_id):
                self._given_up(row, hook, reason, err, d)
            return
        wait = asked if asked is not None else min(hook.backoff_s * 2 ** (d.attempts - 1), hook.backoff_max_s)
        log.warning("alert webhook failed; retrying", extra={"url": d.target, "error": err, "retry_in_s": wait,
                                                              "attempts": d.attempts, "delivery": d.message_id})
        self.outbox.retry(row.id, self.owner, _now_ms() + int(wait * 1000), d.attempts, err, row.message_id)

    def _internal(self, hook: Any, row: Any, exc: BaseException) -> None:
        """A try failed for a reason other than the store (a broken row, a bug): dead-letter it (``internal``)."""
        with self._lock:
            self.internal_errors += 1
        self._error("webhook_internal")
        log.error("alert webhook: unexpected error during a try; message dead-lettered", exc_info=exc,
                  extra={"url": redact_url(hook.url), "delivery": row.message_id})
        if self.outbox.delete(row.id, self.owner, row.message_id):
            self._given_up(row, hook, "internal", f"internal error: {exc!r}")

    def _given_up(self, row: Any, hook: Any, reason: str, error: str, d: Delivery | None = None) -> None:
        if d is None:
            d = Delivery(hook.url if hook else "", bytes(getattr(row, "body", b"")), {},
                         hook.max_attempts if hook else None, 0, 0, 1, attempts=getattr(row, "attempts", 0),
                         message_id=row.message_id)
        d.errors.append(error)
        d.reason = reason
        with self._lock:
            self.dead_letters.append(d)
            del self.dead_letters[:-DEAD_LETTERS_KEPT]
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.webhook_dead_lettered.labels(reason).inc()
        log.error("alert webhook dead-lettered", extra={
            "url": d.target if hook else row.url_key[:8], "attempts": d.attempts, "reason": reason,
            "delivery": d.message_id, "error": error})
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(d)
            except Exception:  # noqa: BLE001
                with self._lock:
                    self.internal_errors += 1
                log.exception("alert webhook on_dead_letter failed", extra={"url": d.target})

    def _expire_unknown(self) -> None:
        """Drop the messages of webhooks no longer in the site file once older than the longest ``max_age_s`` (at
        start, then every :data:`OUTBOX_EXPIRE_EVERY_S`)."""
        self._next_expiry = time.monotonic() + OUTBOX_EXPIRE_EVERY_S
        for r in expire_removed_webhooks(self.outbox, list(self.hooks.values()), self.metrics):
            self._given_up(r, None, "max_age", "its webhook is no longer configured")

    def _error(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(reason).inc()

    def _backlog(self) -> int:
        n = self.outbox.count(list(self.hooks))
        if self.metrics is not None:
            self.metrics.webhook_backlog.set(n)
        return n

    # -- stopping --------------------------------------------------------------------------------------------------
    def pending(self, limit: int = 1000) -> list[Delivery]:
        """The messages of these webhooks waiting in the outbox (any process's), oldest first (at most ``limit``)."""
        rows = self.outbox.waiting(list(self.hooks), limit)
        return [Delivery(self.hooks[r.url_key].url, bytes(r.body), json.loads(r.headers),
                         self.hooks[r.url_key].max_attempts, self.hooks[r.url_key].backoff_s,
                         self.hooks[r.url_key].backoff_max_s, self.hooks[r.url_key].timeout_s, attempts=r.attempts,
                         max_age_s=self.hooks[r.url_key].max_age_s, message_id=r.message_id) for r in rows]

    def undelivered(self) -> int:
        """Messages of this sender's webhooks waiting in the outbox (any process's)."""
        try:
            return self._backlog()
        except Exception:  # noqa: BLE001
            return -1

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the outbox has no message of these webhooks (at most ``timeout_s``); False if it has."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for w in self._wake.values():
            w.set()
        while True:
            if self.undelivered() == 0:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(min(0.1, left) if left is not None else 0.1)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop: a try under way gets its answer (its ``timeout_s``), then the threads end and the messages this
        sender held are released; what is not delivered stays in the outbox for the next start."""
        self._stop.set()
        for w in self._wake.values():
            w.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            self.outbox.release(self.owner)
        except Exception:  # noqa: BLE001 (its lease runs out instead)
            log.warning("alert webhook outbox: could not release the messages held", exc_info=True)


def expire_removed_webhooks(outbox: Any, webhooks: Sequence[Any], metrics: Any = None) -> list[Any]:
    """Delete the outbox messages of webhooks not in ``webhooks`` (removed from the site file, or their URL
    changed: nobody delivers them) once older than the longest ``max_age_s`` (:data:`WEBHOOK_MAX_AGE_S` without
    webhooks); returns them (the caller dead-letters them). Warns with the count of such messages still waiting.
    A store failure is logged and counted (``webhook_outbox``): tried again later."""
    keys = sorted({_url_key(w.url) for w in webhooks})
    longest = max([w.max_age_s for w in webhooks] or [WEBHOOK_MAX_AGE_S])
    try:
        expired = outbox.expire_unknown(keys, _now_ms() - int(longest * 1000))
        left = outbox.count_unknown(keys)
    except Exception:  # noqa: BLE001 (the store is down: next time)
        if metrics is not None:
            metrics.errors.labels("webhook_outbox").inc()
        log.warning("alert webhook outbox: could not expire the messages of removed webhooks", exc_info=True)
        return []
    if left:
        log.warning("alert webhook outbox: messages waiting for webhooks no longer configured; dropped once older "
                    "than max_age_s", extra={"waiting": left, "max_age_s": longest})
    return expired


def _storage_error(exc: BaseException) -> bool:
    """``exc`` comes from the history store (an outage: the message stays and is tried again)."""
    return isinstance(exc, StorageError) or type(exc).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "psycopg")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _url_key(url: str) -> str:
    """A webhook's key in the outbox (:func:`storelens.storage.webhook_outbox.url_key`): the SHA-256 of its URL."""
    return hashlib.sha256(url.encode()).hexdigest()


class WebhookSink:
    """Runner sink: hands every Alert record to its sender for every matching webhook. An in-memory
    :class:`WebhookSender` never raises; an :class:`OutboxSender` raises when the history store fails (the runner
    retries the sink, as it does the history's)."""

    name = "webhooks"

    def __init__(self, webhooks: Sequence[Any], sender: WebhookSender | OutboxSender | None = None) -> None:
        self.webhooks = list(webhooks)
        self.sender = sender or WebhookSender()

    def write(self, records: Sequence[Any]) -> None:
        batch: list[Delivery] = []
        for a in records:
            if not isinstance(a, m.Alert):
                continue
            for w in self.webhooks:
                if w.rules is not None and a.rule_id not in w.rules:
                    continue
                body = payload(a, w.format)
                headers = {DELIVERY_HEADER: delivery_id(a)}
                if w.secret:
                    headers[SIGNATURE_HEADER] = sign(w.secret.encode(), body)
                batch.append(Delivery(w.url, body, headers, w.max_attempts, w.backoff_s, w.backoff_max_s,
                                      w.timeout_s, max_age_s=w.max_age_s, message_id=delivery_id(a)))
        if isinstance(self.sender, OutboxSender):
            self.sender.submit_all(batch)
        else:
            for d in batch:
                self.sender.submit(d)


def close_webhooks(sinks: Sequence[WebhookSink], timeout_s: float) -> int:
    """At a shutdown: give the sinks' senders up to ``timeout_s`` in all to deliver what is queued or waiting to
    retry, then close them; how many messages were lost (logged as an error): an in-memory
    :class:`WebhookSender` dead-letters what is left (:meth:`WebhookSender.close`), an :class:`OutboxSender` leaves
    it in the history's outbox for the next start (logged as a warning, not lost). A try under way still gets its
    answer (its ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    left = 0
    for sink in sinks:
        sender = sink.sender
        if not sender.flush(timeout_s=max(0.0, deadline - time.monotonic())):
            if isinstance(sender, OutboxSender):
                log.warning("alert webhooks not delivered yet at shutdown: kept in the history's webhook_outbox, "
                            "delivered after the next start", extra={"undelivered": sender.undelivered(),
                                                                     "wait_s": timeout_s})
            else:
                pending = sender.pending()
                left += len(pending)
                log.error("alert webhooks left undelivered at shutdown: dead-lettered",
                          extra={"undelivered": len(pending), "urls": sorted({d.target for d in pending}),
                                 "wait_s": timeout_s})
        sender.close(timeout_s=max(1.0, deadline - time.monotonic()))
    return left


def webhook_sinks(config, metrics: Any = None, storage: Any = None) -> list[WebhookSink]:
    """``[WebhookSink]`` when the site has alert webhooks, else ``[]``. With a history ``storage`` that keeps an
    outbox (``webhook_outbox()``): an :class:`OutboxSender`, the messages kept there until delivered (its threads
    start now: what a previous run left is delivered); without: an in-memory :class:`WebhookSender`. Either bounds
    each URL's waiting messages at ``alerts.webhook_max_queued`` and counts in ``metrics`` (a
    :class:`~storelens.runtime.service.ServiceMetrics`, optional) what it drops or gives up."""
    outbox = getattr(storage, "webhook_outbox", None) if storage is not None else None
    if not config.alerts.webhooks:
        if outbox is not None:  # messages of webhooks removed since: nobody delivers them
            for r in expire_removed_webhooks(outbox(), [], metrics):
                if metrics is not None:
                    metrics.webhook_dead_lettered.labels("max_age").inc()
                log.error("alert webhook dead-lettered", extra={"url": r.url_key[:8], "reason": "max_age",
                                                                "delivery": r.message_id,
                                                                "error": "its webhook is no longer configured"})
        return []
    if outbox is not None:
        sender: WebhookSender | OutboxSender = OutboxSender(outbox(), config.alerts.webhooks,
                                                           max_queued=config.alerts.webhook_max_queued,
                                                           metrics=metrics)
    else:
        sender = WebhookSender(max_queued=config.alerts.webhook_max_queued, metrics=metrics)
    return [WebhookSink(config.alerts.webhooks, sender)]
