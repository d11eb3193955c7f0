"""The store-level alert step of the analytics stage: rules that need every camera.

* ``store_occupancy``: the store's occupancy (ins minus outs over ``store.entrance_lines`` when
  set, else the sum of the cameras' occupancy, as ``/v1/occupancy``) above ``max``;
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
when detection is slow). A camera whose finite source ended is not down.

``alert_id``: ``store_occupancy``: ``{rule}:{store id}:{clock at the firing}``; ``camera_down``:
``{rule}:{camera}:{seq of its last frame}`` (``start`` before any frame): a restart that fires it
again gives the same id.

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
        self.store_occupancy = store_occupancy
        self.holds = {r.id: HoldAlert(round(r.hold_s * 1000), round(r.cooldown_s * 1000)) for r in self.rules}
        #: Ticks advance the clock only for sites with a live source.
        self.live = any(is_live(c.source) for c in config.cameras)
        self.clock_ms: int | None = None
        self.started_ms: int | None = None
        self.last_ts: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.ended: set[str] = set()
        #: rule id -> [alert id, fired seq] of its open alert.
        self.open: dict[str, list] = {}
        #: Seq of the last frame seen (any camera): the ``seq`` of store-wide alerts made by a tick.
        self.seq = 0
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
        return self.evaluate(seq) if self.rules else []

    def on_end(self, camera_id: str, ts_ms: int) -> list[m.Alert]:
        """The camera's finite source ended: it is not down (an open ``camera_down`` alert resolves)."""
        self.ended.add(camera_id)
        self._advance(ts_ms)
        return self.evaluate(self.seq) if self.rules else []

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
            change = hold.update(now, _condition(rule, value))
            if change is None:
                continue
            store = rule.kind == "store_occupancy"
            if change == "fire":
                if store:
                    self.open[rule.id] = [f"{rule.id}:{self.store_id}:{now}", seq]
                else:
                    last = self.last_seq.get(rule.camera)
                    self.open[rule.id] = [f"{rule.id}:{rule.camera}:{'start' if last is None else last}",
                                          last or 0]
            alert_id, fired_seq = self.open.pop(rule.id) if change == "resolve" else self.open[rule.id]
            state = "firing" if change == "fire" else "resolved"
            out.append(m.Alert(alert_id=alert_id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                               camera_id="" if store else rule.camera, zone_id="", state=state, ts_ms=now,
                               seq=seq if store else self.last_seq.get(rule.camera, 0),
                               fired_ts_ms=now if hold.fired_ms is None else hold.fired_ms, fired_seq=fired_seq,
                               value=value, threshold=_threshold(rule),
                               message=alert_text(rule, value, state, self.store_id if store else None)))
        return out

    def state(self) -> dict:
        if not self.rules:
            return {}
        return {"clock_ms": self.clock_ms, "started_ms": self.started_ms, "last_ts": dict(self.last_ts),
                "last_seq": dict(self.last_seq), "ended": sorted(self.ended), "seq": self.seq,
                "holds": {k: h.state() for k, h in self.holds.items()}, "open": dict(self.open)}

    def load_state(self, state: dict) -> None:
        """Take a snapshot unless this step already is further along (each camera's state carries one;
        after a restart the newest wins)."""
        clock = state.get("clock_ms")
        if clock is None or (self.clock_ms is not None and clock < self.clock_ms):
            return
        self.clock_ms, self.started_ms = int(clock), state.get("started_ms")
        self.last_ts = {k: int(v) for k, v in state.get("last_ts", {}).items()}
        self.last_seq = {k: int(v) for k, v in state.get("last_seq", {}).items()}
        self.ended = set(state.get("ended", []))
        self.seq = int(state.get("seq", 0))
        for k, h in state.get("holds", {}).items():
            if k in self.holds:
                cfg = self.holds[k]
                self.holds[k] = HoldAlert.from_state({**h, "hold_ms": cfg.hold_ms, "cooldown_ms": cfg.cooldown_ms})
        self.open = {k: [v[0], int(v[1])] for k, v in state.get("open", {}).items() if k in self.holds}
        self._anchor, self._frames_since_tick = None, 0
