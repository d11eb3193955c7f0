"""Alerts of one camera inside the analytics stage: the site's ``alerts:`` rules, frame by frame.

Runs after the zone analyzer and reads what it returned for the frame (``FrameView.prior``):
zone occupancy from :class:`~storelens.contract.messages.ZoneOccupancy` (published only when it
changes, so the last one is kept), loiterers from ``loiter`` / ``exit``
:class:`~storelens.contract.messages.ZoneEvent` s, queue exits (``queue_wait``: the predicted wait
of :class:`~storelens.domain.zones.QueueStats` over the rule's window, as ``/v1/queues`` computes
it: the service rate over the time the stream showed of the window, :class:`~storelens.domain.zones.StreamCoverage`
of the frames seen, so no prediction and no alert until the stream has shown 30 s of the window, or all of a
shorter one); people in view from the frame itself (stationary tracks excluded by the stage). Camera
health per frame: ``camera_frozen`` (consecutive equal ``image_digest`` s, from the ingest) and
``no_detections`` (no track at all, stationary ones included), each measured as the seconds the
run has lasted. Each rule's condition goes through a :class:`~storelens.domain.alerts.HoldAlert`
(hold time, resolve, cooldown); each transition is an :class:`~storelens.contract.messages.Alert`
(topic ``alerts``, table ``alerts``). The store-wide kinds (``store_occupancy``, ``camera_down``)
need every camera: :mod:`storelens.stages.store_alerts`.

``alert_id`` is ``{rule_id}:{camera_id}:{seq of the frame that fired}``: the same frames give the
same ids live, in a replay and after a restart from a snapshot; the resolving message reuses it.
"""
from __future__ import annotations

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.alerts import HoldAlert
from storelens.domain.calendar import StoreCalendar
from storelens.domain.zones import QueueStats, StreamCoverage, ZoneEvent
from storelens.stages.analyzers import CameraAnalyzer, FrameView

#: Kinds whose value is a duration in seconds compared with ``after_s``.
_AFTER_KINDS = ("camera_down", "camera_frozen", "no_detections")


def _threshold(rule) -> float:
    if rule.kind in ("camera_occupancy", "zone_occupancy", "store_occupancy"):
        return float(rule.max)
    if rule.kind == "queue_length":
        return float(rule.min_length)
    if rule.kind == "queue_wait":
        return float(rule.min_wait_s)
    if rule.kind in _AFTER_KINDS:
        return float(rule.after_s)
    return 0.0


def _condition(rule, value: float) -> bool:
    if rule.kind in ("camera_occupancy", "zone_occupancy", "store_occupancy"):
        return value > rule.max
    if rule.kind == "queue_length":
        return value >= rule.min_length
    if rule.kind == "queue_wait":
        return value >= rule.min_wait_s
    if rule.kind in _AFTER_KINDS:
        return value >= rule.after_s
    return value > 0  # loitering, staff_only


_WHAT = {"camera_occupancy": "{v:g} people in view", "zone_occupancy": "{v:g} people in zone {zone}",
         "queue_length": "{v:g} people queueing in {zone}", "loitering": "{v:g} people loitering in {zone}",
         "staff_only": "{v:g} people in staff-only zone {zone}", "store_occupancy": "{v:g} people in the store",
         "queue_wait": "predicted wait {v:.0f} s in queue {zone}", "camera_down": "no frame for {v:.1f} s",
         "camera_frozen": "image frozen for {v:.1f} s", "no_detections": "nobody detected for {v:.1f} s"}
_LIMIT = {"camera_occupancy": " (max {t:g})", "zone_occupancy": " (max {t:g})", "store_occupancy": " (max {t:g})",
          "queue_length": " (alert at {t:g})", "queue_wait": " (alert at {t:g} s)",
          "camera_down": " (alert at {t:g} s)",
          "camera_frozen": " (alert at {t:g} s)", "no_detections": " (alert at {t:g} s)"}


def alert_text(rule, value: float, state: str, where: str | None = None) -> str:
    """The alert's ``message``, e.g. ``entrance: 6 people in view (max 5)``; ``where``: default the rule's camera.

    Example:
        >>> from storelens.config.alerts import CameraFrozenRule
        >>> alert_text(CameraFrozenRule(kind="camera_frozen", id="f", camera="door", after_s=30), 31.5, "firing")
        'door: image frozen for 31.5 s (alert at 30 s)'
    """
    what = _WHAT[rule.kind].format(v=value, zone=getattr(rule, "zone", None))
    limit = _LIMIT.get(rule.kind, "").format(t=_threshold(rule))
    where = where if where is not None else rule.camera
    return f"{where}: {what}{limit}" + (" - resolved" if state == "resolved" else "")


def store_calendar(config: SiteConfig) -> StoreCalendar:
    """The store's calendar (time zone, opening hours) for ``when_open`` rules."""
    return StoreCalendar(config.store.timezone, config.store.opening_minutes())


class OpenHours:
    """Whether the store is open at a time, with the day's sessions cached (frames come in time order).

    Example:
        >>> h = OpenHours(StoreCalendar("UTC", {0: (9 * 60, 17 * 60)}))  # Mondays 09:00-17:00
        >>> [h.is_open(t) for t in (1767571200000 + 8 * 3600_000, 1767571200000 + 10 * 3600_000)]  # Mon 5 Jan 2026
        [False, True]
    """

    def __init__(self, calendar: StoreCalendar) -> None:
        self.calendar = calendar
        self._range = (0, -1)
        self._sessions: list[tuple[int, int]] = []

    def is_open(self, ts_ms: int) -> bool:
        if self.calendar.opening_hours is None:
            return True
        lo, hi = self._range
        if not lo <= ts_ms < hi:
            lo, hi = ts_ms - 3_600_000, ts_ms + 6 * 3_600_000
            self._range = (lo, hi)
            self._sessions = [(s, e) for _, s, e in self.calendar.business_days(lo - 86_400_000, hi + 86_400_000)]
        return any(s <= ts_ms < e for s, e in self._sessions)


class AlertAnalyzer(CameraAnalyzer):
    """The alert rules of one camera (see the module docstring)."""

    name = "alerts"
    topics = {m.Alert: topics.ALERTS}

    def __init__(self, config: SiteConfig, camera: CameraConfig) -> None:
        self.camera_id = camera.id
        self.rules = config.alerts.for_camera(camera.id)
        self.holds = {r.id: HoldAlert(round(r.hold_s * 1000), round(r.cooldown_s * 1000)) for r in self.rules}
        #: rule id -> (alert id, seq of the firing frame) of its open alert.
        self.open: dict[str, list] = {}
        #: zone id -> people inside (last ZoneOccupancy seen).
        self.zone_occupancy: dict[str, int] = {}
        #: zone id -> track ids loitering there now.
        self.loiterers: dict[str, list[int]] = {}
        #: queue_wait: zone id -> window (ms) of the service rate; exits [ts_ms, dwell_ms, how] inside it.
        self.queue_window_ms = {r.zone: round((r.window_s or config.zones.queue_window_s) * 1000)
                                for r in self.rules if r.kind == "queue_wait"}
        self.queue_exits: dict[str, list[list]] = {z: [] for z in self.queue_window_ms}
        #: queue_wait: the time the stream showed (the runs of frames the rate is over)
        self.coverage = StreamCoverage.for_zones(camera.zones, config.zones)
        #: camera_frozen: hex digest of the last image and the time of the first frame that showed it.
        self.digest: str = ""
        self.digest_since_ms: int | None = None
        #: no_detections: time of the first frame of the current run without anybody (None: somebody now).
        self.empty_since_ms: int | None = None
        #: no_detections with when_open: the first open frame of the current empty run.
        self.empty_open_since_ms: int | None = None
        self.hours = OpenHours(store_calendar(config)) if any(
            getattr(r, "when_open", False) for r in self.rules) else None

    def _read_prior(self, prior: list) -> None:
        for r in prior:
            if isinstance(r, m.ZoneOccupancy):
                self.zone_occupancy = {k: int(v) for k, v in r.occupancy.items()}
            elif isinstance(r, m.ZoneEvent):
                ids = self.loiterers.setdefault(r.zone_id, [])
                if r.kind == m.ZONE_EVENT_LOITER and r.track_id not in ids:
                    ids.append(int(r.track_id))
                elif r.kind == m.ZONE_EVENT_EXIT and r.track_id in ids:
                    ids.remove(r.track_id)
                if r.kind == m.ZONE_EVENT_EXIT and r.zone_id in self.queue_exits:
                    self.queue_exits[r.zone_id].append([int(r.ts_ms), int(r.dwell_ms) if r.HasField("dwell_ms")
                                                        else 0, r.how or "other"])

    def _health(self, view: FrameView) -> None:
        """Update the frozen-image and no-detection runs with this frame."""
        digest = view.image_digest.hex()
        if not digest or digest != self.digest:
            self.digest, self.digest_since_ms = digest, view.ts_ms if digest else None
        if view.detected:
            self.empty_since_ms = self.empty_open_since_ms = None
        else:
            if self.empty_since_ms is None:
                self.empty_since_ms = view.ts_ms
            if self.hours is not None:
                if not self.hours.is_open(view.ts_ms):
                    self.empty_open_since_ms = None  # closed: an empty view is normal; the run restarts at opening
                elif self.empty_open_since_ms is None:
                    self.empty_open_since_ms = view.ts_ms

    def _queue_wait_s(self, zone: str, now_ms: int) -> float:
        window = self.queue_window_ms[zone]
        exits = [e for e in self.queue_exits[zone] if e[0] > now_ms - window]
        self.queue_exits[zone] = exits
        events = [ZoneEvent("", self.camera_id, zone, 0, "exit", ts, 0, dwell, how) for ts, dwell, how in exits]
        q = QueueStats.compute(events, zone, now_ms, window, self.zone_occupancy.get(zone, 0),
                               self.coverage.covered_ms(now_ms, window))
        return 0.0 if q.predicted_wait_ms is None else q.predicted_wait_ms / 1000  # nobody served: no prediction

    def _value(self, rule, view: FrameView) -> float:
        kind = rule.kind
        if kind == "camera_occupancy":
            return float(len(view.track_ids))
        if kind == "loitering":
            return float(len(self.loiterers.get(rule.zone, ())))
        if kind == "queue_wait":
            return self._queue_wait_s(rule.zone, view.ts_ms)
        if kind == "camera_frozen":
            return 0.0 if self.digest_since_ms is None else (view.ts_ms - self.digest_since_ms) / 1000
        if kind == "no_detections":
            since = self.empty_open_since_ms if rule.when_open else self.empty_since_ms
            return 0.0 if since is None else (view.ts_ms - since) / 1000
        return float(self.zone_occupancy.get(rule.zone, 0))

    def update(self, view: FrameView) -> list:
        self._read_prior(view.prior)
        self._health(view)
        if self.queue_window_ms:
            self.coverage.add(view.ts_ms)
            self.coverage.forget(view.ts_ms - max(self.queue_window_ms.values()))
        out = []
        for rule in self.rules:
            value = self._value(rule, view)
            hold = self.holds[rule.id]
            change = hold.update(view.ts_ms, _condition(rule, value))
            if change is None:
                continue
            if change == "fire":
                self.open[rule.id] = [f"{rule.id}:{self.camera_id}:{view.seq}", view.seq]
            alert_id, fired_seq = self.open.pop(rule.id) if change == "resolve" else self.open[rule.id]
            state = "firing" if change == "fire" else "resolved"
            out.append(m.Alert(alert_id=alert_id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                               camera_id=self.camera_id, zone_id=getattr(rule, "zone", None) or "", state=state,
                               ts_ms=view.ts_ms, seq=view.seq,
                               fired_ts_ms=view.ts_ms if hold.fired_ms is None else hold.fired_ms,
                               fired_seq=fired_seq, value=value,
                               threshold=_threshold(rule), message=alert_text(rule, value, state)))
        return out

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        # A finite source ended: keep what is known (zone exits) but leave open alerts open
        # (nobody knows whether the condition still holds).
        self._read_prior(prior)
        return []

    def state(self) -> dict:
        return {"holds": {k: h.state() for k, h in self.holds.items()}, "open": dict(self.open),
                "zone_occupancy": dict(self.zone_occupancy),
                "loiterers": {k: list(v) for k, v in self.loiterers.items()},
                "queue_exits": {k: [list(e) for e in v] for k, v in self.queue_exits.items()},
                "coverage": [list(r) for r in self.coverage.runs],
                "digest": [self.digest, self.digest_since_ms], "empty": [self.empty_since_ms, self.empty_open_since_ms]}

    def load_state(self, state: dict) -> None:
        for k, h in state.get("holds", {}).items():
            if k in self.holds:  # the rule's hold and cooldown are the config's, not the snapshot's
                cfg = self.holds[k]
                self.holds[k] = HoldAlert.from_state({**h, "hold_ms": cfg.hold_ms, "cooldown_ms": cfg.cooldown_ms})
        self.open = {k: [v[0], int(v[1])] for k, v in state.get("open", {}).items() if k in self.holds}
        self.zone_occupancy = {k: int(v) for k, v in state.get("zone_occupancy", {}).items()}
        self.loiterers = {k: [int(t) for t in v] for k, v in state.get("loiterers", {}).items()}
        saved = state.get("queue_exits", {})
        self.queue_exits = {z: [[int(e[0]), int(e[1]), str(e[2])] for e in saved.get(z, [])]
                            for z in self.queue_window_ms}
        self.coverage = StreamCoverage(self.coverage.max_gap_ms, state.get("coverage", ()))
        self.digest, self.digest_since_ms = state.get("digest", ["", None])
        self.empty_since_ms, self.empty_open_since_ms = state.get("empty", [None, None])


def alert_analyzer(config: SiteConfig, camera: CameraConfig) -> AlertAnalyzer | None:
    """The camera's alert analyzer, or ``None`` when no per-camera rule watches it."""
    if not config.alerts.for_camera(camera.id):
        return None
    return AlertAnalyzer(config, camera)
