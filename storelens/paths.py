"""Where the shared assets (model weights, sample videos, MOT sequences) live.

Assets are never copied into the repository. ``STORELENS_ASSETS`` points at
them; without it, ``../shared/assets`` beside the checkout (or beside the
current directory) is used, which is where CI and developers keep them.
"""
from __future__ import annotations

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parents[1]


def assets_dir() -> pathlib.Path:
    env = os.environ.get("STORELENS_ASSETS")
    if env:
        return pathlib.Path(env)
    for cand in (_REPO.parent / "shared" / "assets", pathlib.Path.cwd().parent / "shared" / "assets"):
        if cand.is_dir():
            return cand
    return _REPO.parent / "shared" / "assets"


def asset(*parts: str) -> pathlib.Path:
    return assets_dir().joinpath(*parts)
