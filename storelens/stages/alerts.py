"""Alerts of one camera inside the analytics stage: the site's ``alerts:`` rules, frame by frame.

Runs after the zone analyzer and reads what it returned for the frame (``FrameView.prior``):
zone occupancy from :class:`~storelens.contract.messages.ZoneOccupancy` (published only when it
changes, so the last one is kept), loiterers from ``loiter`` / ``exit``
:class:`~storelens.contract.messages.ZoneEvent` s; people in view from the frame itself
(stationary tracks excluded by the stage). Each rule's condition goes through a
:class:`~storelens.domain.alerts.HoldAlert` (hold time, resolve, cooldown); each transition is
an :class:`~storelens.contract.messages.Alert` (topic ``alerts``, table ``alerts``).

``alert_id`` is ``{rule_id}:{camera_id}:{seq of the frame that fired}``: the same frames give the
same ids live, in a replay and after a restart from a snapshot; the resolving message reuses it.
"""
from __future__ import annotations

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.alerts import HoldAlert
from storelens.stages.analyzers import CameraAnalyzer, FrameView


def _threshold(rule) -> float:
    if rule.kind in ("camera_occupancy", "zone_occupancy"):
        return float(rule.max)
    if rule.kind == "queue_length":
        return float(rule.min_length)
    return 0.0


def _condition(rule, value: float) -> bool:
    if rule.kind in ("camera_occupancy", "zone_occupancy"):
        return value > rule.max
    if rule.kind == "queue_length":
        return value >= rule.min_length
    return value > 0  # loitering, staff_only


_WHAT = {"camera_occupancy": "people in view", "zone_occupancy": "people in zone {zone}",
         "queue_length": "people queueing in {zone}", "loitering": "people loitering in {zone}",
         "staff_only": "people in staff-only zone {zone}"}


def alert_text(rule, value: float, state: str) -> str:
    what = _WHAT[rule.kind].format(zone=getattr(rule, "zone", None))
    limit = {"camera_occupancy": " (max {t:g})", "zone_occupancy": " (max {t:g})",
             "queue_length": " (alert at {t:g})"}.get(rule.kind, "").format(t=_threshold(rule))
    return f"{rule.camera}: {value:g} {what}{limit}" + (" - resolved" if state == "resolved" else "")


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

    def _value(self, rule, people: int) -> float:
        if rule.kind == "camera_occupancy":
            return float(people)
        if rule.kind == "loitering":
            return float(len(self.loiterers.get(rule.zone, ())))
        return float(self.zone_occupancy.get(rule.zone, 0))

    def update(self, view: FrameView) -> list:
        self._read_prior(view.prior)
        out = []
        for rule in self.rules:
            value = self._value(rule, len(view.track_ids))
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
                "loiterers": {k: list(v) for k, v in self.loiterers.items()}}

    def load_state(self, state: dict) -> None:
        for k, h in state.get("holds", {}).items():
            if k in self.holds:  # the rule's hold and cooldown are the config's, not the snapshot's
                cfg = self.holds[k]
                self.holds[k] = HoldAlert.from_state({**h, "hold_ms": cfg.hold_ms, "cooldown_ms": cfg.cooldown_ms})
        self.open = {k: [v[0], int(v[1])] for k, v in state.get("open", {}).items() if k in self.holds}
        self.zone_occupancy = {k: int(v) for k, v in state.get("zone_occupancy", {}).items()}
        self.loiterers = {k: [int(t) for t in v] for k, v in state.get("loiterers", {}).items()}


def alert_analyzer(config: SiteConfig, camera: CameraConfig) -> AlertAnalyzer | None:
    """The camera's alert analyzer, or ``None`` when no rule watches it."""
    if not config.alerts.for_camera(camera.id):
        return None
    return AlertAnalyzer(config, camera)
