"""The cameras a stage accepts, kept current by the site versions on ``site-config`` (no restart).

detect-track and the faces stages hold a :class:`SiteCameras`: :meth:`SiteCameras.apply` takes a
``SiteUpdate`` (the whole cameras list of a version saved through ``/v1/site``) and returns what
changed (:func:`storelens.config.cameras.diff_cameras`), so the stage drops the per-camera state of
removed cameras. Messages of a camera removed by a site version that were still in flight are
dropped quietly by the stages (:meth:`SiteCameras.gone`), not dead-lettered as unknown cameras.

Example:
    >>> from storelens.config import parse_config
    >>> cams = SiteCameras(parse_config({"store": {"id": "s"}, "cameras": [{"id": "a", "source": "a.mp4"}]}))
    >>> up = m.SiteUpdate(version=1, store_id="s", cameras_json='[{"id": "b", "source": "b.mp4"}]')
    >>> d = cams.apply(up)
    >>> [c.id for c in d.added], d.removed, sorted(cams.ids), cams.gone("a"), cams.apply(up)
    (['b'], ('a',), ['b'], True, None)
"""
from __future__ import annotations

import logging
from typing import Any

from storelens.config import SiteConfig, with_site_update
from storelens.config.cameras import CameraDiff, diff_cameras
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError, DecodeError
from storelens.stages.base import UnknownCamera, decode_input

log = logging.getLogger(__name__)


class InvalidSiteVersion(DecodeError):
    """A ``SiteUpdate`` whose cameras list does not validate: a dead letter (never a stop, whatever the
    stage's ``on_error``: redelivering it would fail again)."""


class SiteCameras:
    """The site config in force for a stage (``config``, camera ``ids``, ``version``: 0 is the site file's)."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.ids = {c.id for c in config.cameras}
        self.version = 0
        #: Cameras removed by a site version (and not added back): their late messages are dropped.
        self.removed: set[str] = set()

    def apply(self, update: m.SiteUpdate) -> CameraDiff | None:
        """Put ``update``'s cameras in force; ``None`` when it is not newer or of another store.

        Raises :class:`InvalidSiteVersion` for an invalid cameras list (dead-lettered).
        """
        if update.version <= self.version or (update.store_id and update.store_id != self.config.store.id):
            return None
        try:
            new = with_site_update(self.config, update)
        except (ConfigError, ValueError) as exc:
            raise InvalidSiteVersion(f"site version {update.version} not applied: {exc}") from None
        diff = diff_cameras(self.config.cameras, new.cameras)
        self.config, self.version = new, update.version
        self.ids.clear()  # in place: a stage may share the set (FacesStage.cameras)
        self.ids.update(c.id for c in new.cameras)
        self.removed = (self.removed | set(diff.removed)) - self.ids
        if not diff.empty:
            log.info("site version applied", extra={"version": update.version,
                                                    "added": ",".join(c.id for c in diff.added),
                                                    "removed": ",".join(diff.removed),
                                                    "restarted": ",".join(c.id for c in diff.restarted)})
        return diff

    def gone(self, camera_id: str) -> bool:
        """Whether ``camera_id`` was removed by a site version (its late messages are dropped)."""
        return camera_id in self.removed


def decode_site_input(stage: Any, topic: str, value: bytes, cameras: SiteCameras) -> Any:
    """:func:`~storelens.stages.base.decode_input` that also takes ``site-config`` and lets through the
    messages of a camera a site version removed (the stage drops them: ``cameras.gone``)."""
    if topic == topics.SITE_CONFIG:
        return m.decode(stage.inputs[topic], value)
    try:
        return decode_input(stage, topic, value)
    except UnknownCamera:
        msg = m.decode(stage.inputs[topic], value)
        if cameras.gone(getattr(msg, "camera_id", "")):
            return msg
        raise
