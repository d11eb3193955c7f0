"""Shared pytest fixtures (keep this file small; put helpers in the test modules)."""
from __future__ import annotations

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> pathlib.Path:
    """The checkout's root folder (holds ``storelens/``, ``proto/``, ``scripts/``)."""
    return REPO_ROOT
