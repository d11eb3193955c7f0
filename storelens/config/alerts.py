"""The ``alerts:`` section of the site file: ``rules`` (one list entry each, chosen by ``kind``),
``webhooks`` (where alerts are delivered) and ``webhook_max_queued`` (how many wait per webhook URL).

Every rule has an ``id`` (unique), a ``severity`` and a ``cooldown_s`` (after an alert of the
rule resolves, the rule does not fire again for that long). The kinds:

* ``camera_occupancy`` {camera, max, hold_s}: more than ``max`` people in the camera's view
  (stationary tracks such as mannequins excluded) for ``hold_s``;
* ``zone_occupancy`` {camera, zone, max, hold_s}: more than ``max`` people inside the zone;
* ``queue_length`` {camera, zone, min_length, hold_s}: at least ``min_length`` people in a zone
  (normally a ``queue`` zone);
* ``loitering`` {camera, zone, hold_s}: someone loitering in the zone (the zone's
  ``loiter_after_s`` decides who loiters);
* ``staff_only`` {camera, zone, hold_s, exclude_staff}: anybody inside the zone; ``exclude_staff`` (default on):
  but the tracks the uniform cue (``staff.uniform``) marked as staff;
* ``store_occupancy`` {max, hold_s} (no camera): the store's occupancy (ins minus outs over
  ``store.entrance_lines`` when set, else over every line, clamped at 0 for the store, as ``/v1/occupancy``)
  above ``max``;
* ``queue_wait`` {camera, zone, min_wait_s, window_s, hold_s}: the wait predicted for someone
  joining the ``queue`` zone now (Little's law over ``window_s``, default ``zones.queue_window_s``, or
  the part of it the stream showed; see :class:`~storelens.domain.zones.QueueStats`) at least ``min_wait_s``;
* ``camera_down`` {camera, after_s}: no frame from the camera for ``after_s`` (measured on the
  store clock: the other cameras' frames, and the runner's tick for live sources);
* ``camera_frozen`` {camera, after_s}: frames arrive but the image has not changed for ``after_s``
  (the ingest's image digest, see :func:`storelens.backends.video.image_digest`);
* ``no_detections`` {camera, after_s, when_open}: frames arrive but nobody has been detected for
  ``after_s``; ``when_open``: only within ``store.opening_hours``.

A condition must hold continuously for ``hold_s`` before the alert fires, and be false for
``hold_s`` before it resolves (see :mod:`storelens.domain.alerts`). That cameras and zones
exist (and that a ``queue_wait`` zone is a ``queue`` zone) is checked by
:class:`~storelens.config.site.SiteConfig`.

Example:
    >>> AlertsConfig.model_validate({"rules": [{"kind": "camera_occupancy", "id": "crowd", "camera": "c",
    ...                                         "max": 5}]}).rules[0].hold_s
    0.0
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, field_validator

from storelens.config.base import EnvStr, OptionalEnvStr, Strict

RuleId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
Severity = Literal["info", "warning", "critical"]


def _not_bool(v: object) -> object:
    """``true``/``false`` is no number (pydantic's lax mode would take it as 1/0)."""
    if isinstance(v, bool):
        raise ValueError("a number, not true/false")
    return v


#: Numbers of the rules, refusing booleans (the API takes rules as JSON, where ``false`` is no count).
NoBool = BeforeValidator(_not_bool)
Seconds = Annotated[float, Field(ge=0, le=86_400), NoBool]


class _BaseRule(Strict):
    id: RuleId
    severity: Severity = "warning"
    #: After an alert of this rule resolves, no new one fires for this long.
    cooldown_s: Seconds = 60.0
    #: The condition must hold (and then be false) this long before the alert fires (resolves).
    hold_s: Seconds = 0.0


class _Rule(_BaseRule):
    camera: Annotated[str, Field(min_length=1)]


class _ZoneRule(_Rule):
    #: The zone the rule watches.
    zone: Annotated[str, Field(min_length=1)]


class CameraOccupancyRule(_Rule):
    kind: Literal["camera_occupancy"]
    #: Fires when more than this many people are in view.
    max: Annotated[int, Field(ge=0), NoBool]
    #: No zone: the whole view.
    zone: None = None


class ZoneOccupancyRule(_ZoneRule):
    kind: Literal["zone_occupancy"]
    max: Annotated[int, Field(ge=0), NoBool]


class QueueLengthRule(_ZoneRule):
    kind: Literal["queue_length"]
    #: Fires when at least this many people are in the zone.
    min_length: Annotated[int, Field(ge=1), NoBool]


class LoiteringRule(_ZoneRule):
    kind: Literal["loitering"]


class StaffOnlyRule(_ZoneRule):
    kind: Literal["staff_only"]
    #: Not counting the people the uniform cue (``staff.uniform``: ``Track.staff_uniform``) marked as staff. The face
    #: cue (decided later, by the reid stage) and the zone cue (entering this very zone) do not count here.
    exclude_staff: Annotated[bool, Field(strict=True)] = True  # JSON true/false only


class StoreOccupancyRule(_BaseRule):
    kind: Literal["store_occupancy"]
    #: Fires when more than this many people are in the store.
    max: Annotated[int, Field(ge=0), NoBool]
    #: Store-wide: no camera, no zone.
    camera: None = None
    zone: None = None


class QueueWaitRule(_ZoneRule):
    kind: Literal["queue_wait"]
    #: Fires when the predicted wait of someone joining now is at least this long.
    min_wait_s: Annotated[float, Field(gt=0, le=86_400), NoBool]
    #: Window of the service rate (``None``: the site's ``zones.queue_window_s``).
    window_s: Annotated[float, Field(gt=0, le=86_400), NoBool] | None = None


class _HealthRule(_Rule):
    #: How long the camera must have been down / frozen / without detections.
    after_s: Annotated[float, Field(gt=0, le=86_400), NoBool]
    zone: None = None


class CameraDownRule(_HealthRule):
    kind: Literal["camera_down"]


class CameraFrozenRule(_HealthRule):
    kind: Literal["camera_frozen"]


class NoDetectionsRule(_HealthRule):
    kind: Literal["no_detections"]
    #: Only while the store is open (``store.opening_hours``; none: always open).
    when_open: Annotated[bool, Field(strict=True)] = False  # JSON true/false only


AlertRule = Annotated[Union[CameraOccupancyRule, ZoneOccupancyRule, QueueLengthRule, LoiteringRule, StaffOnlyRule,
                            StoreOccupancyRule, QueueWaitRule, CameraDownRule, CameraFrozenRule, NoDetectionsRule],
                      Field(discriminator="kind")]
ALERT_KINDS = ("camera_occupancy", "zone_occupancy", "queue_length", "loitering", "staff_only", "store_occupancy",
               "queue_wait", "camera_down", "camera_frozen", "no_detections")
#: Kinds evaluated by the analytics stage's store-level step (they need every camera), not per camera.
STORE_KINDS = ("store_occupancy", "camera_down")


#: Default of ``alerts.webhooks[].max_age_s``: a day.
WEBHOOK_MAX_AGE_S = 86_400.0
#: Longest wait a ``Retry-After`` answer sets before the next try of a webhook message.
WEBHOOK_RETRY_AFTER_MAX_S = 3600.0


class WebhookConfig(Strict):
    """Where alerts are POSTed (see :mod:`storelens.runtime.webhooks`)."""

    url: Annotated[EnvStr, Field(pattern=r"^https?://")]
    #: HMAC-SHA256 key of the ``X-StoreLens-Signature`` header (``${VAR}`` to keep it out of the file).
    secret: OptionalEnvStr = None
    #: ``json`` (the alert's fields) or ``slack`` (``{"text": ...}``, for Slack-compatible incoming webhooks).
    format: Literal["json", "slack"] = "json"
    #: Only these rule ids (``None``: every rule).
    rules: list[str] | None = None
    #: Tries per alert message before it is dead-lettered (``None``, the default: tried until ``max_age_s``).
    max_attempts: Annotated[int, Field(ge=1, le=100_000)] | None = None
    #: Wait before the second try; doubled after each failure, at most ``backoff_max_s`` (a 429 / 503 answer's
    #: ``Retry-After: <seconds>`` replaces it, at most :data:`WEBHOOK_RETRY_AFTER_MAX_S`).
    backoff_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    backoff_max_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: A message not delivered this long after the alert was sent to the webhook is dropped: dead-lettered,
    #: logged and counted in ``storelens_webhook_dead_lettered_total{reason="max_age"}``. Until then it waits
    #: in the history's ``webhook_outbox``, across restarts.
    max_age_s: Annotated[float, Field(gt=0, le=30 * 86_400), NoBool] = WEBHOOK_MAX_AGE_S


#: Default of ``alerts.webhook_max_queued``.
WEBHOOK_MAX_QUEUED = 1000


class AlertsConfig(Strict):
    """The ``alerts:`` section: ``rules`` (ids unique), ``webhooks`` and ``webhook_max_queued``."""

    rules: list[AlertRule] = []
    webhooks: list[WebhookConfig] = []
    #: Messages waiting per webhook URL (the one being sent or waiting to retry not counted) behind an endpoint
    #: that is down or slow. One more and the oldest waiting is dropped: dead-lettered, logged as a warning and
    #: counted in ``storelens_webhook_dropped_total`` (the analytics service's metrics); the newest are kept.
    webhook_max_queued: Annotated[int, Field(ge=1, le=100_000), NoBool] = WEBHOOK_MAX_QUEUED

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list) -> list:
        ids = [r.id for r in rules]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate alert rule id(s) {dup}")
        return rules

    def for_camera(self, camera_id: str) -> list:
        """The per-camera rules of ``camera_id`` (store-level kinds, :data:`STORE_KINDS`, excluded)."""
        return [r for r in self.rules if r.camera == camera_id and r.kind not in STORE_KINDS]

    def store_rules(self) -> list:
        """The rules of the store-level step (:data:`STORE_KINDS`)."""
        return [r for r in self.rules if r.kind in STORE_KINDS]
