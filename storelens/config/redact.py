"""Credentials out of what is shown: a camera source (:func:`redact_source`) or a webhook URL (:func:`redact_url`) fit
for messages, logs and API answers. Imports nothing of the site's configuration, which uses it
(:func:`storelens.config.site.restore_masked`); :mod:`storelens.config.cameras` re-exports both.
"""
from __future__ import annotations

import hashlib
import re
import urllib.parse

#: Names of ``key=value`` pairs whose values are credentials (``?user=admin&password=...``,
#: ``?loginuse=admin&loginpas=``, ``?usr=admin&pwd=``, ``/user=admin&password=...&channel=1``, ``;password=``),
#: matched anywhere in the name.
_SECRET_PARAM = re.compile(r"pas|pw|secret|token|key|auth|sig|cred|user|usr|login|account|session", re.IGNORECASE)
#: A ``key=value`` pair in a URL's path (``/``, ``;``, ``&`` or ``_`` before it, as NVRs write
#: ``/user=admin_password=x_channel=1``): the value ends at the next separator or ``_name=``.
_PATH_PAIR = re.compile(r"(^|[/;&_])([^/;&=]+)=((?:(?!_[A-Za-z][A-Za-z0-9]*=)[^/;&])*)")
#: The same in the query and the fragment, where a value may hold ``/``.
_QUERY_PAIR = re.compile(r"(^|[;&_])([^;&=]+)=((?:(?!_[A-Za-z][A-Za-z0-9]*=)[^;&])*)")
#: What a credential's value shows as.
MASK = "***"


def _masked_pairs(text: str, pair: re.Pattern) -> str:
    return pair.sub(lambda mo: f"{mo[1]}{mo[2]}={MASK}" if _SECRET_PARAM.search(urllib.parse.unquote_plus(mo[2]))
                    else mo[0], text)


def redact_source(source: str) -> str:
    """A camera source fit for messages, logs and API answers: a URL's user name and password removed, and the
    values of the ``key=value`` pairs that name a credential (:data:`_SECRET_PARAM`) replaced by ``***``, in the
    query, the fragment and the path (some cameras take them there: ``/user=admin&password=x&channel=1.sdp``,
    ``/live;password=x``); a file path as it is.

    Example:
        >>> redact_source("rtsp://admin:S3cret@10.0.0.5:554/live?channel=1&password=x")
        'rtsp://10.0.0.5:554/live?channel=1&password=***'
        >>> redact_source("rtsp://10.0.0.5:554/user=admin&password=x&channel=1&stream=0.sdp")
        'rtsp://10.0.0.5:554/user=***&password=***&channel=1&stream=0.sdp'
        >>> redact_source("rtsp://u:p@[fe80::1]:554/x;password=y"), redact_source("/videos/door.mp4")
        ('rtsp://[fe80::1]:554/x;password=***', '/videos/door.mp4')
    """
    if "://" not in source:
        return source
    try:
        parts = urllib.parse.urlsplit(source)
    except ValueError:  # a host Python does not parse (``[fe80::1/x``, ``[cam]``): split by hand, as FFmpeg does
        return _redact_unparsed(source)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(
        netloc=netloc, path=_masked_pairs(parts.path, _PATH_PAIR), query=_masked_pairs(parts.query, _QUERY_PAIR),
        fragment=_masked_pairs(parts.fragment, _QUERY_PAIR)))


def _redact_unparsed(source: str) -> str:
    """:func:`redact_source` of a URL that :func:`urllib.parse.urlsplit` refuses (an unclosed ``[`` or a bracketed
    host that is no IP address): the authority ends at the first ``/``, ``?`` or ``#``; the user name and password
    before its last ``@`` are removed and the credential pairs after it masked (before, the error was raised to the
    caller: the ingest service stopped every camera, at every start, for one mistyped source).

    >>> _redact_unparsed("rtsp://admin:S3cret@[fe80::1/live?password=x")
    'rtsp://[fe80::1/live?password=***'
    """
    scheme, _, rest = source.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    path, query = (rest[end:].split("?", 1) + [None])[:2]
    out = f"{scheme}://{rest[:end].rsplit('@', 1)[-1]}{_masked_pairs(path, _PATH_PAIR)}"
    return out if query is None else f"{out}?{_masked_pairs(query, _QUERY_PAIR)}"


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
