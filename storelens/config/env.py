"""Environment expansion for site files: ``${NAME}`` and ``${NAME:-default}``.

The bottom of the config layer: imports nothing of StoreLens but errors and paths.
"""
from __future__ import annotations

import os
import re

from storelens.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, keep_unset: bool = False) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; unknown names are an error, or with ``keep_unset`` stay as
    written (a site loaded by a command that never opens its cameras, :func:`storelens.config.load_config`).

    Example:
        >>> expand_env("rtsp://u:${DOC_UNSET_PW}@h/", keep_unset=True)
        'rtsp://u:${DOC_UNSET_PW}@h/'
    """
    from storelens.paths import assets_dir

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "STORELENS_ASSETS":
            return str(assets_dir())
        if default is not None:
            return default
        if keep_unset:
            return m.group(0)
        raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")

    return _ENV.sub(sub, value)


def has_template(value: str) -> bool:
    """Whether ``value`` holds a ``${NAME}`` / ``${NAME:-default}`` template."""
    return _ENV.search(value) is not None


def template_names(value: str) -> list[str]:
    """The variable names of the ``${NAME}`` / ``${NAME:-default}`` templates in ``value``, in order.

    Example:
        >>> template_names("rtsp://${CAM_USER:-admin}:${CAM_PASSWORD}@h/")
        ['CAM_USER', 'CAM_PASSWORD']
    """
    return [m.group(1) for m in _ENV.finditer(value)]


def mask_templates(value: str) -> str:
    """``value`` with each template's default dropped (``${NAME:-default}`` -> ``${NAME}``): what an answer may show
    of a value written with templates, never what they expand to (nor a default that may be a secret).

    Example:
        >>> mask_templates("rtsp://u:${CAM_PW:-s3cret}@h/${CAM_PATH}")
        'rtsp://u:${CAM_PW}@h/${CAM_PATH}'
    """
    return _ENV.sub(lambda m: "${" + m.group(1) + "}", value)
