"""Environment expansion for site files: ``${NAME}`` and ``${NAME:-default}``.

The bottom of the config layer: imports nothing of StoreLens but errors and paths.
"""
from __future__ import annotations

import os
import re

from storelens.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; unknown names are an error."""
    from storelens.paths import assets_dir

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "STORELENS_ASSETS":
            return str(assets_dir())
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")

    return _ENV.sub(sub, value)


def has_template(value: str) -> bool:
    """Whether ``value`` holds a ``${NAME}`` / ``${NAME:-default}`` template."""
    return _ENV.search(value) is not None
