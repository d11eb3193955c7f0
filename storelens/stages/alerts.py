"""Alerts of one camera inside the analytics stage: the site's ``alerts:`` rules, frame by frame.

Runs after the zone analyzer and reads what it returned for the frame (``FrameView.prior``) and who it holds
inside its zones (:meth:`AlertAnalyzer.attach`: also the people inside before a site version added a rule):
zone occupancy (as :class:`~storelens.contract.messages.ZoneOccupancy` says; ``staff_only`` with
``exclude_staff``: less the tracks inside, the zone analyzer's open visits, that the uniform cue marked as staff,
``Track.staff_uniform``), loiterers from ``loiter`` / ``exit``
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

An open alert ends with one ``resolved`` message also when its rule goes: a site version (``/v1/site``) that
removes the rule, moves it to another camera or changes its kind or zone, or removes the camera, resolves it
(:func:`closed_alerts`, message ``... - resolved (rule removed)``). A camera's alerts left open by the previous
embedded process are taken over by the next one (:meth:`AlertAnalyzer.adopt`; a file's measured again from the
frame of the re-read that fired them): one alert per incident, resolved when the condition has ended, not left
``firing`` in the history forever.
"""
from __future__ import annotations

from storelens.config import CameraConfig, SiteConfig
from storelens.config.alerts import STORE_KINDS
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.alerts import HoldAlert
from storelens.domain.calendar import StoreCalendar
from storelens.domain.zones import MIN_QUEUE_COVERED_MS, QueueStats, StreamCoverage, ZoneEvent
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
        #: rule id -> its open alert: [alert id, seq of the firing frame, kind, zone id ("": none), severity,
        #: threshold] (what its resolving message says when the rule is gone: :func:`closed_alerts`).
        self.open: dict[str, list] = {}
        #: rule id -> [warm-up ms, until ms (``None``: from the next frame)] of an alert taken over from an earlier
        #: process (:meth:`adopt`): it does not resolve before its value is measured again; a file's (read again)
        #: also [seq, ts_ms] of the frame that fired it.
        self.adopted: dict[str, list] = {}
        #: Set by the embedded stop (:meth:`~storelens.stages.analytics.AnalyticsStage.end_streams`): its
        #: end-of-stream is no end of the file (:meth:`end`).
        self.stopping = False
        self._zone_rules = {z.id: z.rules(config.zones) for z in camera.zones}
        #: zone id -> people inside (the zone analyzer's, :meth:`attach`; without: the last ZoneOccupancy seen).
        self.zone_occupancy: dict[str, int] = {}
        #: zone id -> track ids loitering there now.
        self.loiterers: dict[str, list[int]] = {}
        #: queue_wait: rule id -> window (ms) of its service rate (two rules of a zone may have two windows).
        self.queue_window_ms = {r.id: round((r.window_s or config.zones.queue_window_s) * 1000)
                                for r in self.rules if r.kind == "queue_wait"}
        #: queue_wait: zone id -> the longest window of its rules; the exits [ts_ms, dwell_ms, how] inside it.
        self.queue_keep_ms: dict[str, int] = {}
        for r in self.rules:
            if r.kind == "queue_wait":
                self.queue_keep_ms[r.zone] = max(self.queue_keep_ms.get(r.zone, 0), self.queue_window_ms[r.id])
        self.queue_exits: dict[str, list[list]] = {z: [] for z in self.queue_keep_ms}
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
        #: ``staff_only`` with ``exclude_staff``: its zones; the track ids inside one of them (an open visit of the
        #: zone analyzer, :meth:`attach`) that the uniform cue marked as staff, forgotten at their exit (the mark is
        #: on every frame of a staff track: a track is remembered only while a visit holds it unseen).
        self.staff_zones = {r.zone for r in self.rules if r.kind == "staff_only" and r.exclude_staff}
        self.staff: dict[int, None] = {}
        #: The camera's zone analyzer (:meth:`attach`): who is inside its zones.
        self._zones: CameraAnalyzer | None = None

    def attach(self, analyzers: dict[str, CameraAnalyzer]) -> None:
        """The camera's zone analyzer, whose open visits are who is inside a ``staff_only`` zone: also the people
        inside before this analyzer existed (a rule or ``exclude_staff`` a site version added) or before its saved
        state knew them (a state saved before it kept them)."""
        self._zones = analyzers.get("zones")


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

    def _queue_wait_s(self, rule, now_ms: int) -> float:
        zone, window = rule.zone, self.queue_window_ms[rule.id]
        kept = [e for e in self.queue_exits[zone] if e[0] > now_ms - self.queue_keep_ms[zone]]
        self.queue_exits[zone] = kept
        events = [ZoneEvent("", self.camera_id, zone, 0, "exit", ts, 0, dwell, how)
                  for ts, dwell, how in kept if ts > now_ms - window]
        q = QueueStats.compute(events, zone, now_ms, window, self.zone_occupancy.get(zone, 0),
                               self.coverage.covered_ms(now_ms, window))
        return 0.0 if q.predicted_wait_ms is None else q.predicted_wait_ms / 1000  # nobody served: no prediction

    def _value(self, rule, view: FrameView, inside: dict[str, list[int]]) -> float:
        kind = rule.kind
        if kind == "camera_occupancy":
            return float(len(view.track_ids))
        if kind == "loitering":
            return float(len(self.loiterers.get(rule.zone, ())))
        if kind == "queue_wait":
            return self._queue_wait_s(rule, view.ts_ms)
        if kind == "camera_frozen":
            return 0.0 if self.digest_since_ms is None else (view.ts_ms - self.digest_since_ms) / 1000
        if kind == "no_detections":
            since = self.empty_open_since_ms if rule.when_open else self.empty_since_ms
            return 0.0 if since is None else (view.ts_ms - since) / 1000
        people = self.zone_occupancy.get(rule.zone, 0)
        if kind == "staff_only" and rule.exclude_staff:
            people -= sum(1 for t in inside.get(rule.zone, ()) if t in self.staff)
        return float(max(people, 0))

    def _run_broken(self, rule, start_ms: int) -> bool:
        """Whether the run a ``camera_frozen`` / ``no_detections`` value measures (the same image, nobody in view)
        began after ``start_ms`` or has ended (a changed image, a detection), so its value is known below
        ``after_s`` without waiting ``after_s``: an alert taken over (:meth:`adopt`) then resolves after its hold."""
        if rule.kind == "camera_frozen":
            since = self.digest_since_ms
        elif rule.kind == "no_detections":
            since = self.empty_open_since_ms if rule.when_open else self.empty_since_ms
        else:
            return False
        return since is None or since > start_ms

    def update(self, view: FrameView) -> list:
        self._read_prior(view.prior)
        tracker = getattr(self._zones, "tracker", None)
        # zone id -> the track ids with an open visit (the zone analyzer's): also the people inside before this
        # analyzer was built (a rule a version added) or before its saved state knew them
        inside = tracker.inside() if tracker is not None else {}
        if tracker is not None:
            self.zone_occupancy = {z: len(ids) for z, ids in inside.items()}
        if self.staff_zones:  # the staff inside a staff_only zone; those outside (or gone) are not kept
            now = {t for z in self.staff_zones for t in inside.get(z, ())}
            self.staff = {t: None for t in self.staff if t in now}
            self.staff.update((int(t.track_id), None) for t in view.tracks if t.staff_uniform and t.track_id in now)
        self._health(view)
        if self.queue_window_ms:
            self.coverage.add(view.ts_ms)
            self.coverage.forget(view.ts_ms - max(self.queue_window_ms.values()))
        out = []
        for rule in self.rules:
            value = self._value(rule, view, inside)
            hold = self.holds[rule.id]
            condition = _condition(rule, value)
            warm = self.adopted.get(rule.id)
            if warm is not None:  # taken over from an earlier process: not resolved before measured again
                if len(warm) > 2:  # a file read again: until the re-read reaches the time that fired it (not its
                    measured = view.ts_ms >= warm[3]  # seq: another target_fps reaches a seq at another time)
                else:  # or, a frozen image or an empty view, once a changed image or a detection broke the run
                    warm[1] = view.ts_ms + warm[0] if warm[1] is None else warm[1]
                    measured = view.ts_ms >= warm[1] or self._run_broken(rule, warm[1] - warm[0])
                if measured or rule.id not in self.open:
                    del self.adopted[rule.id]
                else:
                    condition = True
            change = hold.update(view.ts_ms, condition)
            if change is None:
                continue
            if change == "fire":
                self.open[rule.id] = [f"{rule.id}:{self.camera_id}:{view.seq}", view.seq, rule.kind,
                                      getattr(rule, "zone", None) or "", rule.severity, _threshold(rule)]
            alert_id, fired_seq = (self.open.pop(rule.id) if change == "resolve" else self.open[rule.id])[:2]
            state = "firing" if change == "fire" else "resolved"
            out.append(m.Alert(alert_id=alert_id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                               camera_id=self.camera_id, zone_id=getattr(rule, "zone", None) or "", state=state,
                               ts_ms=view.ts_ms, seq=view.seq,
                               fired_ts_ms=view.ts_ms if hold.fired_ms is None else hold.fired_ms,
                               fired_seq=fired_seq, value=value,
                               threshold=_threshold(rule), message=alert_text(rule, value, state)))
        return out

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        # A finite source ended (or the embedded run stopped): keep what is known (zone exits) but leave open
        # alerts open (nobody knows whether the condition still holds); the next embedded run takes them over
        # (adopt) and resolves them when the condition has ended. An alert taken over from a file whose re-read
        # ended before the frame that fired it (another file now, or a live camera's) is resolved: no frame of
        # this stream will ever measure it (an embedded stop, :attr:`stopping`, leaves it to the next run).
        self._read_prior(prior)
        out = []
        for rule in [] if self.stopping else self.rules:
            warm = self.adopted.get(rule.id)
            if warm is None or len(warm) <= 2 or rule.id not in self.open:
                continue
            del self.adopted[rule.id]
            alert_id, fired_seq = self.open.pop(rule.id)[:2]
            hold = self.holds[rule.id]
            ts = ts_ms if hold.fired_ms is None else max(ts_ms, hold.fired_ms)
            hold.firing, hold.since_ms, hold.resolved_ms = False, None, ts
            out.append(m.Alert(alert_id=alert_id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                               camera_id=self.camera_id, zone_id=getattr(rule, "zone", None) or "",
                               state="resolved", ts_ms=ts, seq=max(seq, fired_seq),
                               fired_ts_ms=ts if hold.fired_ms is None else hold.fired_ms, fired_seq=fired_seq,
                               value=0.0, threshold=_threshold(rule),
                               message=f"{self.camera_id}: alert of rule {rule.id} - resolved (not in the stream "
                                       "read again)"))
        return out

    def adopt(self, alert: dict, replay: bool = False) -> bool:
        """Take over an alert an earlier process left open (a row of the ``alerts`` table, ``state`` firing) when
        its rule is still this camera's with the same kind and zone: it resolves (under its id) once the
        condition has been false for ``hold_s``, counted from when the rule's value is measured again
        (:meth:`warm_up_ms` after the first frame; a frozen image or an empty view as soon as a changed image or a
        detection says the run is over), and no second alert fires meanwhile. The row may be one a person resolved
        while the condition went on (its ``cleared_ts_ms`` unset): it stays one incident. ``False`` when not
        taken (the rule gone or changed, or another alert of the rule taken already).

        ``replay``: the camera is a file, read again from its start: the value is measured again from the time
        that fired the alert (its ``fired_ts_ms``; not its seq, which another ``target_fps`` reaches at another
        time of the file), so the same file with the
        same rule gives the same alert under the same id (not resolved on the frames before, then fired again
        under that id), and a changed rule, file or a live camera's alert resolves when the re-read says so (at its
        end, if it never gets there: :meth:`end`)."""
        rule = next((r for r in self.rules if r.id == alert["rule_id"]), None)
        if rule is None or _orphan_reason(rule, self.camera_id, [alert["alert_id"], 0, alert["kind"],
                                                                  alert["zone_id"] or ""]) or rule.id in self.open:
            return False
        self.open[rule.id] = [alert["alert_id"], int(alert["fired_seq"]), rule.kind, getattr(rule, "zone", None) or "",
                              rule.severity, _threshold(rule)]
        hold = self.holds[rule.id]
        self.holds[rule.id] = HoldAlert(hold.hold_ms, hold.cooldown_ms, firing=True,
                                        fired_ms=int(alert["fired_ts_ms"]))
        self.adopted[rule.id] = ([0, None, int(alert["fired_seq"]), int(alert["fired_ts_ms"])] if replay
                                 else [self.warm_up_ms(rule), None])
        return True

    def warm_up_ms(self, rule) -> int:
        """How long a new process takes to measure ``rule``'s value again (its memory starts empty): a zone's
        people are inside after ``enter_after_ms``, loiterers after ``loiter_after_s`` more, a queue's wait is
        predicted once the stream showed :data:`~storelens.domain.zones.MIN_QUEUE_COVERED_MS` of its window, a
        frozen image or an empty view is seen after ``after_s``."""
        zone = self._zone_rules.get(getattr(rule, "zone", None) or "")
        enter = zone.enter_after_ms if zone is not None else 0
        if rule.kind in ("zone_occupancy", "queue_length", "staff_only"):
            return enter
        if rule.kind == "loitering":
            return enter + round((zone.loiter_after_s if zone is not None else 0) * 1000)
        if rule.kind == "queue_wait":
            return enter + min(self.queue_window_ms[rule.id], MIN_QUEUE_COVERED_MS)
        if rule.kind in _AFTER_KINDS:
            return round(rule.after_s * 1000)
        return 0

    def state(self) -> dict:
        return {"holds": {k: h.state() for k, h in self.holds.items()}, "open": dict(self.open),
                "adopted": {k: list(v) for k, v in self.adopted.items()},
                "zone_occupancy": dict(self.zone_occupancy),
                "loiterers": {k: list(v) for k, v in self.loiterers.items()},
                "queue_exits": {k: [list(e) for e in v] for k, v in self.queue_exits.items()},
                "coverage": [list(r) for r in self.coverage.runs],
                "digest": [self.digest, self.digest_since_ms], "empty": [self.empty_since_ms, self.empty_open_since_ms],
                **({"staff": list(self.staff)} if self.staff_zones else {})}

    def load_state(self, state: dict) -> None:
        rules = {r.id: r for r in self.rules}
        open_ = state.get("open", {})
        # a rule whose kind or zone changed starts afresh (its open alert is resolved: closed_alerts)
        changed = {k for k, v in open_.items() if k in rules and _orphan_reason(rules[k], self.camera_id, v)}
        for k, h in state.get("holds", {}).items():
            if k in self.holds and k not in changed:  # the rule's hold and cooldown are the config's
                cfg = self.holds[k]
                self.holds[k] = HoldAlert.from_state({**h, "hold_ms": cfg.hold_ms, "cooldown_ms": cfg.cooldown_ms})
        self.open = {k: [v[0], int(v[1]), *v[2:]] if len(v) > 2 else
                     [v[0], int(v[1]), rules[k].kind, getattr(rules[k], "zone", None) or "", rules[k].severity,
                      _threshold(rules[k])]
                     for k, v in open_.items() if k in rules and k not in changed}
        self.adopted = {k: [int(v[0]), None if v[1] is None else int(v[1]), *(int(x) for x in v[2:4])]
                        for k, v in state.get("adopted", {}).items() if k in self.open}
        self.zone_occupancy = {k: int(v) for k, v in state.get("zone_occupancy", {}).items()}
        self.loiterers = {k: [int(t) for t in v] for k, v in state.get("loiterers", {}).items()}
        saved = state.get("queue_exits", {})
        self.queue_exits = {z: [[int(e[0]), int(e[1]), str(e[2])] for e in saved.get(z, [])]
                            for z in self.queue_keep_ms}
        self.coverage = StreamCoverage(self.coverage.max_gap_ms, state.get("coverage", ()))
        self.digest, self.digest_since_ms = state.get("digest", ["", None])
        self.empty_since_ms, self.empty_open_since_ms = state.get("empty", [None, None])
        self.staff = dict.fromkeys(int(t) for t in state.get("staff", [])) if self.staff_zones else {}


def _orphan_reason(rule, camera_id: str, entry: list) -> str | None:
    """Why an open alert of ``camera_id`` (an :attr:`AlertAnalyzer.open` entry) no longer belongs to ``rule`` (the
    rule of its id in force; ``None``: none), or ``None`` when it does. An entry saved before the kind and zone
    were kept (two items) belongs to a rule of the camera."""
    if rule is None:
        return "rule removed"
    if rule.camera != camera_id or rule.kind in STORE_KINDS:
        return "rule changed"
    if len(entry) > 3 and (entry[2], entry[3]) != (rule.kind, getattr(rule, "zone", None) or ""):
        return "rule changed"
    return None


def closed_alerts(config: SiteConfig, camera_id: str, state: dict, ts_ms: int, seq: int,
                  reason: str | None = None) -> list[m.Alert]:
    """The ``resolved`` messages of the open alerts in a camera's alert state (:meth:`AlertAnalyzer.state`) whose
    rule ``config`` no longer has for the camera (removed, moved to another camera, another kind or zone: the
    reason is in the message), at ``ts_ms`` / ``seq``; with ``reason`` (e.g. ``camera removed``) every open alert
    of the state, for that reason."""
    rules = {r.id: r for r in config.alerts.rules}
    holds = state.get("holds", {})
    out = []
    for rule_id, entry in state.get("open", {}).items():
        why = reason or _orphan_reason(rules.get(rule_id), camera_id, entry)
        if why is None:
            continue
        if len(entry) > 5:
            kind, zone, severity, threshold = entry[2], entry[3], entry[4], float(entry[5])
        else:  # saved before the kind was kept: the rule's now, if any
            rule = rules.get(rule_id)
            kind, zone, severity, threshold = (rule.kind, getattr(rule, "zone", None) or "", rule.severity,
                                               _threshold(rule)) if rule is not None else ("", "", "warning", 0.0)
        fired_ms = (holds.get(rule_id) or {}).get("fired_ms")
        # never before the firing (a camera without a frame in this process has no time of its own)
        ts = ts_ms if fired_ms is None else max(ts_ms, int(fired_ms))
        out.append(m.Alert(alert_id=entry[0], rule_id=rule_id, kind=kind, severity=severity, camera_id=camera_id,
                           zone_id=zone, state="resolved", ts_ms=ts, seq=max(seq, int(entry[1])),
                           fired_ts_ms=ts if fired_ms is None else int(fired_ms), fired_seq=int(entry[1]),
                           value=0.0, threshold=threshold,
                           message=f"{camera_id}: alert of rule {rule_id} - resolved ({why})"))
    return out


def alert_analyzer(config: SiteConfig, camera: CameraConfig) -> AlertAnalyzer | None:
    """The camera's alert analyzer, or ``None`` when no per-camera rule watches it."""
    if not config.alerts.for_camera(camera.id):
        return None
    return AlertAnalyzer(config, camera)
