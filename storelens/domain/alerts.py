"""Alert rules as pure state machines: hold time, resolution, cooldown.

A :class:`HoldAlert` watches one boolean condition over time (e.g. "more than 5 people in
view") fed frame by frame with :meth:`HoldAlert.update`:

* **fire**: the condition has been true continuously for ``hold_ms`` (from the first frame
  it was true to the current frame) -> one ``fire`` transition, once: while it stays true
  nothing more happens;
* **resolve**: once fired, the condition has been false continuously for ``hold_ms`` -> one
  ``resolve`` transition (``hold_ms`` 0: at the first frame it is false);
* **cooldown**: after a resolve no new alert fires before ``cooldown_ms`` has passed since the
  resolve (a condition still true then fires at that frame, if it has held ``hold_ms``).

The state is JSON-serialisable (:meth:`state` / :meth:`load_state`).

Example (hold 1 s, frames every 0.5 s):
    >>> a = HoldAlert(hold_ms=1000, cooldown_ms=0)
    >>> [a.update(t, c) for t, c in [(0, True), (500, True), (1000, True), (1500, True), (2000, False),
    ...                              (2500, False), (3000, False)]]
    [None, None, 'fire', None, None, None, 'resolve']
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Transition = Literal["fire", "resolve"]


@dataclass
class HoldAlert:
    hold_ms: int
    cooldown_ms: int
    #: Whether an alert is open (fired, not yet resolved).
    firing: bool = False
    #: Start of the current run of frames whose condition differs from ``firing`` (``None``: no run).
    since_ms: int | None = None
    #: When the open alert fired (``None``: none open).
    fired_ms: int | None = None
    #: When the last alert resolved (``None``: never).
    resolved_ms: int | None = None

    def update(self, ts_ms: int, condition: bool) -> Transition | None:
        """The condition at ``ts_ms`` (frames in time order); the transition it causes, if any."""
        if condition == self.firing:
            self.since_ms = None
            return None
        if self.since_ms is None:
            self.since_ms = ts_ms
        if ts_ms - self.since_ms < self.hold_ms:
            return None
        if not self.firing:
            if self.resolved_ms is not None and ts_ms - self.resolved_ms < self.cooldown_ms:
                return None
            self.firing, self.since_ms, self.fired_ms = True, None, ts_ms
            return "fire"
        self.firing, self.since_ms, self.resolved_ms = False, None, ts_ms
        return "resolve"

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> HoldAlert:
        return cls(**state)


def first_fire(times_ms: list[int], conditions: list[bool], hold_ms: int) -> int | None:
    """Index of the first frame at which a condition has held ``hold_ms`` (the reference the tests
    compare with: written independently of :class:`HoldAlert`).

    Example:
        >>> first_fire([0, 40, 80, 120, 160], [False, True, True, True, True], 80)
        3
    """
    start = None
    for i, (t, c) in enumerate(zip(times_ms, conditions)):
        if not c:
            start = None
            continue
        if start is None:
            start = t
        if t - start >= hold_ms:
            return i
    return None
