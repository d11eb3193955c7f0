"""What changed between two camera lists (a site version edited through the API against the one in force).

Ingest and the stages share it: ingest starts the added cameras, stops the removed ones and
restarts those whose stream settings changed; the stages accept the added cameras' messages and
forget the removed ones.

Example:
    >>> a = CameraConfig(id="door", source="door.mp4")
    >>> d = diff_cameras([a], [a.model_copy(update={"target_fps": 5.0}), CameraConfig(id="till", source="rtsp://t")])
    >>> [c.id for c in d.added], d.removed, [c.id for c in d.restarted], [c.id for c in d.updated]
    (['till'], (), ['door'], [])
"""
from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from typing import Sequence

from storelens.config.site import CameraConfig

#: The camera settings ingest reads (source and sampling): changing one restarts the camera's stream.
STREAM_FIELDS = ("source", "target_fps", "resize_width", "jpeg_quality", "start_ts_ms")


#: Query parameter names whose values are credentials (``?user=admin&password=...`` of some cameras' URLs).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|sig|cred|user", re.IGNORECASE)


def redact_source(source: str) -> str:
    """A camera source fit for messages, logs and API answers: a URL's user name and password removed, and the
    values of query parameters that name a credential replaced by ``***`` (a file path as it is).

    Example:
        >>> redact_source("rtsp://admin:S3cret@10.0.0.5:554/live?channel=1&password=x")
        'rtsp://10.0.0.5:554/live?channel=1&password=***'
        >>> redact_source("rtsp://u:p@[fe80::1]:554/x"), redact_source("/videos/door.mp4")
        ('rtsp://[fe80::1]:554/x', '/videos/door.mp4')
    """
    if "://" not in source:
        return source
    parts = urllib.parse.urlsplit(source)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(f"{k}=***" if sep and _SECRET_PARAM.search(urllib.parse.unquote_plus(k)) else k + sep + v
                     for k, sep, v in (p.partition("=") for p in parts.query.split("&"))) if parts.query else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_url(url: str) -> str:
    """A URL whose path or query is a secret (a Slack, Teams or Discord incoming webhook:
    ``https://hooks.slack.com/services/T000/B000/<token>``) fit for logs, metrics, dead letters and API answers:
    ``scheme://host[:port]/...`` (user name and password removed, the path and query hidden) and ``#`` + the
    first 8 hex digits of the SHA-256 of the whole URL, so that two URLs of one host stay apart and a line can be
    matched to its configured URL (``hashlib.sha256(url.encode()).hexdigest()[:8]``).

    Example:
        >>> redact_url("https://hooks.slack.com/services/T000/B000/XXXXXXXX")
        'https://hooks.slack.com/...#25335732'
        >>> redact_url("http://user:pw@[fe80::1]:8080/hook?token=t")
        'http://[fe80::1]:8080/...#7881f45c'
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}/...#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def stream_settings(cam: CameraConfig) -> tuple:
    """The values of :data:`STREAM_FIELDS` of ``cam``."""
    return tuple(getattr(cam, f) for f in STREAM_FIELDS)


@dataclass(frozen=True)
class CameraDiff:
    """Cameras of the new list not in the old one (``added``), ids gone (``removed``), cameras whose
    :data:`STREAM_FIELDS` changed (``restarted``, new settings) and cameras where only other settings
    changed (``updated``: lines, zones, floor; no restart of the stream)."""

    added: tuple[CameraConfig, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[CameraConfig, ...] = ()
    updated: tuple[CameraConfig, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.restarted or self.updated)


def diff_cameras(old: Sequence[CameraConfig], new: Sequence[CameraConfig]) -> CameraDiff:
    """Compare two camera lists by camera id (order does not matter; ids are unique in a valid site).

    >>> a, b = CameraConfig(id="a", source="a.mp4"), CameraConfig(id="b", source="b.mp4")
    >>> diff_cameras([a, b], [b]).removed
    ('a',)
    >>> diff_cameras([a], [a]).empty
    True
    """
    before = {c.id: c for c in old}
    after_ids = {c.id for c in new}
    added, restarted, updated = [], [], []
    for cam in new:
        prev = before.get(cam.id)
        if prev is None:
            added.append(cam)
        elif stream_settings(prev) != stream_settings(cam):
            restarted.append(cam)
        elif prev != cam:
            updated.append(cam)
    removed = tuple(c.id for c in old if c.id not in after_ids)
    return CameraDiff(tuple(added), removed, tuple(restarted), tuple(updated))
