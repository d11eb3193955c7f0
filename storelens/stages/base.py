"""The stage contract: decoded input message(s) in, outputs out, no I/O.

A stage is an object with

* ``name``: the service that runs it (``"detect-track"``, ``"analytics"``, ...), used in
  dead letters, metrics and consumer group ids;
* ``inputs``: the topics it consumes (base names from :mod:`storelens.contract.topics`),
  each with the protobuf class on that topic: the class ``decode`` parses, and the type the
  runner checks a message's ``message-type`` header against before decoding (another type is a
  dead letter, :meth:`~storelens.runtime.runner.RunnerCore.check_type`);
* ``on_error``: what an unexpected exception inside :meth:`handle` means
  (``"dead_letter"``: this message is bad, go on; ``"stop"``: the stage is broken,
  stop the process and let the message be redelivered after the restart);
* ``decode(topic, value)``: bytes -> message (default :func:`decode_input`:
  protobuf decode plus the camera check), raising :class:`~storelens.errors.DecodeError`
  for anything malformed;
* ``handle(topic, message) -> Outputs``;
* ``outputs``: the topics it publishes (the embedded mode ends them when the stage ends);
* optionally ``handle_batch(topic, messages) -> list[Outputs]``: several messages of one topic,
  each of a different camera, in one call (one detector call for the frames of several cameras).
  It means exactly what calling ``handle`` on each in turn means: one ``Outputs`` per message, in
  the same order. Anything that makes a message a dead letter (:class:`~storelens.errors.DecodeError`,
  :class:`UnknownCamera`) must be raised before the stage changes any state: the runner then falls
  back to ``handle`` message by message (a stage with ``on_error="dead_letter"`` must leave its state
  unchanged whenever ``handle_batch`` raises). The runner passes batches only where it was told to
  (``Runner(..., batch_max=N)``: the embedded mode's ``pipeline.batch_cameras``; the Kafka services
  take one message at a time).

The runner (:mod:`storelens.runtime.runner`) does everything else, the same way in
the embedded mode and on Kafka: decode -> handle -> sinks (``Outputs.records``) ->
publish (``Outputs.publish``) -> acknowledge.

Example: a stage that republishes the timestamp of every frame (see tests/test_runner.py)::

    class FrameClock:
        name = "frame-clock"
        inputs = {topics.FRAMES: m.Frame}
        outputs = ("clock",)
        on_error = "dead_letter"

        def __init__(self, config):
            self.cameras = {c.id for c in config.cameras}

        def decode(self, topic, value):
            return decode_input(self, topic, value)

        def handle(self, topic, frame):
            return Outputs(publish=[Publish("clock", frame.camera_id, m.OccupancyUpdate(...))])

        def handle_batch(self, topic, frames):  # optional: frames of different cameras at once
            return [self.handle(topic, f) for f in frames]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

from storelens.contract import messages as m
from storelens.errors import DecodeError

OnError = Literal["dead_letter", "stop"]


class UnknownCamera(DecodeError):
    """A message names a camera that the site configuration does not have."""


@dataclass(frozen=True)
class Publish:
    """One message to publish on ``topic`` (a base name), keyed by ``camera_id``."""

    topic: str
    camera_id: str
    message: Any


@dataclass
class Outputs:
    """What one input message produced.

    ``records`` are persisted by the runner's sinks (history, live state) before
    anything is published; ``publish`` goes to topics afterwards; ``duplicate``
    marks a redelivery that changed nothing (counted, acknowledged).
    """

    publish: list[Publish] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    duplicate: bool = False
    #: Facts for observers (metrics, results), e.g. ``{"erased": True}``; never published.
    info: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: str
    inputs: dict[str, type]
    outputs: tuple[str, ...]
    on_error: OnError
    cameras: set[str]

    def decode(self, topic: str, value: bytes) -> Any: ...

    def handle(self, topic: str, message: Any) -> Outputs: ...


class BatchStage(Stage, Protocol):
    """A :class:`Stage` that also handles several messages of one topic, each of another camera, at once."""

    def handle_batch(self, topic: str, messages: Sequence[Any]) -> list[Outputs]: ...


def decode_input(stage: Stage, topic: str, value: bytes) -> Any:
    """``value`` as the stage's message class for ``topic``; :class:`UnknownCamera` for a camera not in the site."""
    cls = stage.inputs.get(topic)
    if cls is None:
        raise DecodeError(f"stage {stage.name!r} does not consume topic {topic!r}")
    msg = m.decode(cls, value)
    camera_id = getattr(msg, "camera_id", None)
    if camera_id is not None and camera_id not in stage.cameras:
        raise UnknownCamera(f"unknown camera {camera_id!r}")
    return msg
