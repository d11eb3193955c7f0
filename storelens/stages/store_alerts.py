"""The store-level alert step of the analytics stage: rules that need every camera.

* ``store_occupancy``: the store's occupancy (ins minus outs over ``store.entrance_lines`` when
  set, else over every line, clamped at 0 for the store, as ``/v1/occupancy``) above ``max``;
* ``camera_down``: no frame from the camera for ``after_s``.

The per-camera analyzers (:mod:`storelens.stages.alerts`) see one camera's frames; this step is
owned by :class:`~storelens.stages.analytics.AnalyticsStage` itself and runs after every frame of
any camera, so it reads every camera's latest occupancy and frame time. The embedded mode and the
Kafka analytics service both run that stage, so both evaluate these rules the same way (on Kafka
all cameras must be handled by one analytics worker, the default single replica).

**The store clock.** Time is the frames' own (``ts_ms``): the clock is the latest frame time of
any camera, so a replay of the same frames gives the same alerts and ids. A camera is down when
the clock has moved ``after_s`` past its last frame (a camera that never sent one: past the
clock's first value). When no camera sends anything, frames cannot move the clock: the runner's
:meth:`StoreAlerts.tick` (about once a second, wall time) then advances it by the wall time
elapsed since the last tick that saw frames, for sites with a live source (a file is not late
when detection is slow). A camera whose finite source ended is not down; a live camera never ends (when
the embedded run stops, a live camera that is down stays down: its alert is not resolved).

``alert_id``: ``store_occupancy``: ``{rule}:{store id}:{clock at the firing}``, ``-{n}`` added for the n-th incident
of the rule fired at the same clock (n >= 2: ``cooldown_s: 0``, the clock held by a camera's frames lagging another's;
the count is saved with the state, so a replay or a restart gives the same ids); ``camera_down``:
``{rule}:{camera}:{seq of its last frame}``, or ``{rule}:{camera}:start-{clock's first value}`` for a camera
with no frame seen (the outage is known from then on): a restart that keeps the state (the analytics
service) and fires it again gives the same id; a process that starts without it (the embedded mode)
gives a new outage a new id, so it never falls on an earlier outage's resolved row (nor on the
webhook delivery key a receiver already took).

An open alert ends with one ``resolved`` message also when its rule goes (as the per-camera ones:
:func:`~storelens.stages.alerts.closed_alerts`): a site version that removes the rule, gives it another kind or
moves a ``camera_down`` to another camera resolves it (:meth:`StoreAlerts.close`, message ``... - resolved (rule
removed)``), and so does the next frame after a snapshot saved before such a version was loaded. The next embedded
process takes over an alert the previous one left open (:meth:`StoreAlerts.adopt`).

Example (camera ``b`` silent while ``a`` goes on):
    >>> from storelens.config import parse_config
    >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "a", "source": "a.mp4"},
    ...     {"id": "b", "source": "b.mp4"}], "alerts": {"rules": [
    ...     {"kind": "camera_down", "id": "down", "camera": "b", "after_s": 2}]}})
    >>> st = StoreAlerts(cfg, lambda: 0)
    >>> _ = st.on_frame("b", 0, 0)
    >>> [(a.state, a.ts_ms, a.alert_id) for t in range(0, 4000, 500) for a in st.on_frame("a", t // 500, t)]
    [('firing', 2000, 'down:b:0')]
"""
from __future__ import annotations

from typing import Callable

from storelens.backends.video import is_live
from storelens.config import SiteConfig
from storelens.config.alerts import STORE_KINDS
from storelens.contract import messages as m
from storelens.domain.alerts import HoldAlert
from storelens.stages.alerts import _condition, _threshold, alert_text


class StoreAlerts:
    """``store_occupancy`` and ``camera_down`` rules over every camera (see the module docstring).

    Args:
        config: the site (its ``alerts.rules`` of :data:`~storelens.config.alerts.STORE_KINDS`).
        store_occupancy: the store's occupancy now (the analytics stage's counters).
    """

    def __init__(self, config: SiteConfig, store_occupancy: Callable[[], int]) -> None:
        self.store_id = config.store.id
        self.rules = config.alerts.store_rules()
        #: Every rule of the site by id (a rule id of a store-wide alert may now name a per-camera rule).
        self.all_rules = {r.id: r for r in config.alerts.rules}
        self.store_occupancy = store_occupancy
        self.holds = {r.id: HoldAlert(round(r.hold_s * 1000), round(r.cooldown_s * 1000)) for r in self.rules}
        #: Ticks advance the clock only for sites with a live source.
        self.live = any(is_live(c.source) for c in config.cameras)
        #: Cameras with a live source: their stream never ends (see :meth:`on_end`).
        self.live_cameras = {c.id for c in config.cameras if is_live(c.source)}
        self.all_cameras = {c.id for c in config.cameras}
        self.clock_ms: int | None = None
        self.started_ms: int | None = None
        self.last_ts: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.ended: set[str] = set()
        #: rule id -> its open alert: [alert id, fired seq, kind, camera ("": store_occupancy), severity, threshold]
        #: (what its resolving message says when the rule is gone).
        self.open: dict[str, list] = {}
        #: rule id -> [warm-up ms, until clock ms (``None``: from the next evaluation)] of an alert taken over from an
        #: earlier process (:meth:`adopt`): not resolved before its value is measured again; a third item, its firing
        #: time, when its files are read again (``replay``): measured again once the clock reaches it.
        self.adopted: dict[str, list] = {}
        #: The embedded run stops (:meth:`~storelens.stages.analytics.AnalyticsStage.end_streams`): the streams' ends
        #: are not the files' ends (an alert taken over from files, not measured yet, stays open for the next run).
        self.stopping = False
        #: The open alerts of a loaded snapshot whose rule is no longer in force: rule id -> [entry, fired ms, why],
        #: resolved at the next frame (:meth:`on_frame`).
        self.closing: dict[str, list] = {}
        #: Ids of the alerts resolved here because their rule went (:attr:`closing`, :meth:`close`): another
        #: camera's snapshot that still has one open does not resolve it again (in memory; a state saved since
        #: has it no more).
        self.closed_ids: set[str] = set()
        #: Seq of the last frame seen (any camera): the ``seq`` of store-wide alerts made by a tick.
        self.seq = 0
        #: How many times an alert fired or resolved here (saved: of two snapshots at the same clock,
        #: the one with more changes is the newer, :meth:`load_state`; the analytics service saves the state after a
        #: tick that changed it).
        self.changes = 0
        #: ``store_occupancy``: rule id -> [clock of its last firing, how many fired at that clock] (its ids).
        self.fired_at: dict[str, list[int]] = {}
        # wall-time anchor of the ticks (not persisted: wall time means nothing after a restart)
        self._anchor: tuple[int, int] | None = None
        self._frames_since_tick = 0

    def _advance(self, ts_ms: int) -> None:
        if self.clock_ms is None:
            self.clock_ms = self.started_ms = ts_ms
        self.clock_ms = max(self.clock_ms, ts_ms)

    def on_frame(self, camera_id: str, seq: int, ts_ms: int) -> list[m.Alert]:
        """A frame of ``camera_id`` was processed (occupancy updated): the transitions it causes."""
        self._advance(ts_ms)
        self.last_ts[camera_id] = max(ts_ms, self.last_ts.get(camera_id, ts_ms))
        self.last_seq[camera_id] = seq
        self.ended.discard(camera_id)
        self.seq = seq
        self._frames_since_tick += 1
        for rule in self.rules:  # a camera_down taken over from a live camera: its frame says it is up, measured now
            warm = self.adopted.get(rule.id)
            if warm is not None and len(warm) <= 2 and rule.kind == "camera_down" and rule.camera == camera_id:
                del self.adopted[rule.id]
        closing, self.closing = self.closing, {}
        out = [self.resolved_message(k, entry, fired_ms, self.clock_ms, self._seq_of(entry), why)
               for k, (entry, fired_ms, why) in closing.items()]
        self.closed_ids |= {a.alert_id for a in out}
        self.changes += len(out)
        return out + (self.evaluate(seq) if self.rules else [])

    def on_end(self, camera_id: str, ts_ms: int) -> list[m.Alert]:
        """The camera's finite source ended: it is not down (an open ``camera_down`` alert resolves).

        A live camera's stream does not end (ingest sends no end marker for one): its marker is the embedded
        run stopping (:meth:`~storelens.stages.analytics.AnalyticsStage.end_streams`), which says nothing of
        the camera: a live camera that is down stays down (its alert is not resolved)."""
        if camera_id in self.live_cameras:
            return []
        self.ended.add(camera_id)
        self._advance(ts_ms)
        return (self.evaluate(self.seq) + self._not_read_again()) if self.rules else []

    def _not_read_again(self) -> list[m.Alert]:
        """The alerts taken over from files read again (:meth:`adopt` ``replay``) whose re-read ended (its camera's,
        ``store_occupancy``: every camera's) before the time that fired them: resolved, no frame will measure them
        (an embedded stop, :attr:`stopping`, leaves them to the next run)."""
        out = []
        for rule in [] if self.stopping else self.rules:
            warm = self.adopted.get(rule.id)
            if warm is None or len(warm) <= 2 or rule.id not in self.open:
                continue
            cams = [rule.camera] if rule.kind == "camera_down" else list(self.all_cameras)
            if not all(c in self.ended for c in cams):
                continue
            del self.adopted[rule.id]
            entry, hold = self.open.pop(rule.id), self.holds[rule.id]
            alert = self.resolved_message(rule.id, entry, hold.fired_ms, self.clock_ms, self._seq_of(entry),
                                          "not in the streams read again")
            hold.firing, hold.since_ms, hold.resolved_ms = False, None, alert.ts_ms
            out.append(alert)
        self.changes += len(out)
        return out

    def tick(self, now_ms: int) -> list[m.Alert]:
        """The runner's periodic tick at wall time ``now_ms``: advance the clock if no frame came since the
        last tick (live sites only) and evaluate the rules."""
        if not self.rules or not self.live:
            return []
        if self.clock_ms is None:  # nothing yet from any camera: live frames carry wall-clock times
            self._advance(now_ms)
        if self._frames_since_tick or self._anchor is None:
            self._anchor, self._frames_since_tick = (self.clock_ms, now_ms), 0
            return []
        clock0, wall0 = self._anchor
        self._advance(clock0 + max(0, now_ms - wall0))
        return self.evaluate(self.seq)

    def _value(self, rule) -> float:
        if rule.kind == "store_occupancy":
            return float(self.store_occupancy())
        cam = rule.camera  # camera_down
        if cam in self.ended or self.clock_ms is None:
            return 0.0
        return (self.clock_ms - self.last_ts.get(cam, self.started_ms or self.clock_ms)) / 1000

    def evaluate(self, seq: int) -> list[m.Alert]:
        """Every rule at the current clock; ``seq``: the frame that caused the evaluation."""
        out = []
        now = self.clock_ms if self.clock_ms is not None else 0
        for rule in self.rules:
            value = self._value(rule)
            hold = self.holds[rule.id]
            condition = _condition(rule, value)
            warm = self.adopted.get(rule.id)
            if warm is not None:  # taken over from an earlier process: not resolved before measured again
                warm[1] = now + warm[0] if warm[1] is None else warm[1]
                if (now >= warm[2] if len(warm) > 2 else now >= warm[1]) or rule.id not in self.open:
                    del self.adopted[rule.id]
                else:
                    condition = True
            change = hold.update(now, condition)
            if change is None:
                continue
            store = rule.kind == "store_occupancy"
            if change == "fire":
                if store:
                    last_fire = self.fired_at.get(rule.id)
                    n = last_fire[1] + 1 if last_fire is not None and last_fire[0] == now else 1
                    self.fired_at[rule.id] = [now, n]  # another incident at the same clock: another id
                    self.open[rule.id] = [f"{rule.id}:{self.store_id}:{now}" + (f"-{n}" if n > 1 else ""), seq,
                                          *self._what(rule)]
                else:
                    last = self.last_seq.get(rule.camera)
                    # never seen: the outage is known from the clock's first value (a process that keeps no state
                    # starts a new one: the id of an earlier outage, maybe resolved, is not taken again)
                    since = f"start-{self.started_ms if self.started_ms is not None else now}"
                    self.open[rule.id] = [f"{rule.id}:{rule.camera}:{since if last is None else last}", last or 0,
                                          *self._what(rule)]
            alert_id, fired_seq = (self.open.pop(rule.id) if change == "resolve" else self.open[rule.id])[:2]
            state = "firing" if change == "fire" else "resolved"
            out.append(m.Alert(alert_id=alert_id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                               camera_id="" if store else rule.camera, zone_id="", state=state, ts_ms=now,
                               seq=seq if store else self.last_seq.get(rule.camera, 0),
                               fired_ts_ms=now if hold.fired_ms is None else hold.fired_ms, fired_seq=fired_seq,
                               value=value, threshold=_threshold(rule),
                               message=alert_text(rule, value, state, self.store_id if store else None)))
        self.changes += len(out)
        return out

    def state(self) -> dict:
        if not self.rules:
            return {}
        return {"clock_ms": self.clock_ms, "started_ms": self.started_ms, "last_ts": dict(self.last_ts),
                "last_seq": dict(self.last_seq), "ended": sorted(self.ended), "seq": self.seq,
                "holds": {k: h.state() for k, h in self.holds.items()}, "open": dict(self.open),
                "adopted": {k: list(v) for k, v in self.adopted.items()}, "changes": self.changes,
                "fired_at": {k: list(v) for k, v in self.fired_at.items()}}

    def load_state(self, state: dict) -> None:
        """Take a snapshot unless this step already is further along (each camera's state carries one, and the
        analytics service's table the state a tick changed; after a restart the newest wins: the later clock, at the
        same clock the one with more transitions, :attr:`changes`). A snapshot without a clock (no frame yet) is
        taken only by a step without one either, and only when it holds open alerts: the alerts taken over
        (:meth:`adopt`) before the first frame go on across a site version (the step rebuilt), not dropped."""
        clock = state.get("clock_ms")
        if clock is None and (self.clock_ms is not None or not state.get("open")):
            return
        if clock is not None and self.clock_ms is not None and (clock, int(state.get("changes", 0))) < (
                self.clock_ms, self.changes):
            return  # older: an earlier clock, or the same with fewer transitions (a tick's saved state is newer)
        self.changes = max(self.changes, int(state.get("changes", 0)))
        self.clock_ms, self.started_ms = None if clock is None else int(clock), state.get("started_ms")
        self.last_ts = {k: int(v) for k, v in state.get("last_ts", {}).items()}
        self.last_seq = {k: int(v) for k, v in state.get("last_seq", {}).items()}
        self.ended = set(state.get("ended", []))
        self.seq = int(state.get("seq", 0))
        holds = state.get("holds", {})
        # an alert whose rule is gone (or is another kind or camera now) is resolved at the next frame, not dropped
        # in silence; its rule (same id, another kind or camera) starts afresh
        gone = {k: why for k, v in state.get("open", {}).items() if (why := self.orphan_reason(k, v))}
        self.holds = {r.id: HoldAlert(round(r.hold_s * 1000), round(r.cooldown_s * 1000)) for r in self.rules}
        for k, h in holds.items():
            if k in self.holds and k not in gone:
                cfg = self.holds[k]
                self.holds[k] = HoldAlert.from_state({**h, "hold_ms": cfg.hold_ms, "cooldown_ms": cfg.cooldown_ms})
        self.open = {k: [v[0], int(v[1]), *(v[2:] if len(v) > 2 else self._what(self.all_rules[k]))]
                     for k, v in state.get("open", {}).items() if k not in gone}
        self.adopted = {k: [int(v[0]), None if v[1] is None else int(v[1]), *(int(x) for x in v[2:3])]
                        for k, v in state.get("adopted", {}).items() if k in self.open}
        self.fired_at = {k: [int(v[0]), int(v[1])] for k, v in state.get("fired_at", {}).items() if k in self.holds}
        self.closing = {k: [v, (holds.get(k) or {}).get("fired_ms"), why]
                        for k, v in state.get("open", {}).items()
                        if (why := gone.get(k)) and v[0] not in self.closed_ids}
        self._anchor, self._frames_since_tick = None, 0

    # -- rules that go, alerts taken over --------------------------------------------------------------------

    @staticmethod
    def _what(rule) -> list:
        """The open entry's kind, camera ("": store-wide), severity and threshold."""
        return [rule.kind, rule.camera if rule.kind == "camera_down" else "", rule.severity, _threshold(rule)]

    def orphan_reason(self, rule_id: str, entry: list) -> str | None:
        """Why an open alert of rule ``rule_id`` (an :attr:`open` entry) no longer belongs to the rule of that id
        in force, or ``None`` when it does (an entry saved without its kind: when the rule is store-wide)."""
        rule = self.all_rules.get(rule_id)
        if rule is None:
            return "rule removed"
        if rule.kind not in STORE_KINDS or (len(entry) > 3 and list(entry[2:4]) != self._what(rule)[:2]):
            return "rule changed"
        return None

    def _seq_of(self, entry: list) -> int:
        """The ``seq`` of a resolution now (at least the firing's)."""
        cam = entry[3] if len(entry) > 3 else ""
        return max(self.last_seq.get(cam, 0) if cam else self.seq, int(entry[1]))

    def resolved_message(self, rule_id: str, entry: list, fired_ms: int | None, ts_ms: int | None, seq: int,
                  why: str) -> m.Alert:
        """The ``resolved`` message of an open entry whose rule went (``why``), at ``ts_ms`` (the store clock; never
        before the firing)."""
        kind, cam, severity, threshold = (entry[2], entry[3], entry[4], float(entry[5])) if len(entry) > 5 else \
            ("", "", "warning", 0.0)
        fired = int(fired_ms) if fired_ms is not None else None
        ts = max(x for x in (ts_ms, fired, 0) if x is not None)
        return m.Alert(alert_id=entry[0], rule_id=rule_id, kind=kind, severity=severity, camera_id=cam, zone_id="",
                       state="resolved", ts_ms=ts, seq=max(seq, int(entry[1])),
                       fired_ts_ms=ts if fired is None else fired, fired_seq=int(entry[1]), value=0.0,
                       threshold=threshold,
                       message=f"{cam or self.store_id}: alert of rule {rule_id} - resolved ({why})")

    def close(self, config: SiteConfig, ts_ms: int | None = None) -> list[m.Alert]:
        """A site version ``config`` comes: the ``resolved`` messages of the open alerts whose rule it removes, gives
        another kind or moves to another camera (and of a loaded snapshot's not resolved yet), at the store clock
        (``ts_ms`` when no frame came yet). They leave this step (its :meth:`state` goes on to the new config's)."""
        now = StoreAlerts(config, self.store_occupancy)
        clock = self.clock_ms if self.clock_ms is not None else ts_ms
        out = [self.resolved_message(k, entry, fired_ms, clock, self._seq_of(entry), why)
               for k, (entry, fired_ms, why) in self.closing.items()]
        self.closing = {}
        for k, entry in list(self.open.items()):
            why = now.orphan_reason(k, entry)
            if why is not None:
                hold = self.holds[k]
                out.append(self.resolved_message(k, entry, hold.fired_ms, clock, self._seq_of(entry), why))
                del self.open[k]  # resolved: the rule of that id (if any) starts afresh
                self.adopted.pop(k, None)
                self.holds[k] = HoldAlert(hold.hold_ms, hold.cooldown_ms)
        self.closed_ids |= {a.alert_id for a in out}
        self.changes += len(out)
        return out

    def adopt(self, alert: dict, replay: bool = False) -> bool:
        """Take over a store-wide alert an earlier process left open (a row of the ``alerts`` table, ``state``
        firing) when its rule is still in force with the same kind (and camera): it resolves under its id once the
        condition has been false for ``hold_s``, counted from when the value is measured again (``camera_down``:
        ``after_s`` of the clock after the first evaluation, or the camera's first frame if sooner), and no second
        alert of the rule fires meanwhile.
        ``False`` when not taken (the rule gone or changed, or another alert of the rule taken already).

        ``replay``: its measure is read again from files (``store_occupancy`` of a files-only site, a file camera's
        ``camera_down``): measured again once the clock reaches its firing time (the same files and rule: the same
        alert, same id; another threshold or hold: resolved when the re-read says so, at the end of the re-read if
        it never gets there: :meth:`on_end`)."""
        rule_id = alert["rule_id"]
        entry = [alert["alert_id"], int(alert["fired_seq"]), alert["kind"], alert["camera_id"] or ""]
        if self.orphan_reason(rule_id, entry) or rule_id in self.open:
            return False
        rule = self.all_rules[rule_id]
        self.open[rule_id] = [entry[0], entry[1], *self._what(rule)]
        hold = self.holds[rule_id]
        self.holds[rule_id] = HoldAlert(hold.hold_ms, hold.cooldown_ms, firing=True, fired_ms=int(alert["fired_ts_ms"]))
        self.adopted[rule_id] = [round(rule.after_s * 1000) if rule.kind == "camera_down" else 0, None]
        if replay:
            self.adopted[rule_id] = [0, None, int(alert["fired_ts_ms"])]
        return True
