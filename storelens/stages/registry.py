"""The stages of StoreLens, registered by name: adding a stage is one module plus one line here.

Each entry names a factory ``"module:callable"`` (imported only when the stage is
built, so listing stages loads no model), the modes it runs in (``embedded``: a
thread of :class:`~storelens.runtime.embedded.EmbeddedPipeline`; ``service``: its own
process on Kafka, ``storelens.runtime.workers.run_stage_service``) and whether a
site config enables it. The factory is called as ``factory(config, **deps)``;
``deps`` are objects only the caller can make (a detector shared with a benchmark,
the face gallery opened by the storage layer).

Example:
    >>> [e.name for e in stages_for("embedded")]
    ['detect-track', 'faces', 'analytics']
    >>> [e.name for e in stages_for("service")]
    ['detect-track', 'attributes', 'reid', 'analytics', 'chain-rollup']
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from storelens.config import SiteConfig
from storelens.errors import ConfigError
from storelens.stages.base import Stage

MODES = ("embedded", "service")


@dataclass(frozen=True)
class StageEntry:
    name: str
    factory: str
    modes: tuple[str, ...] = MODES
    enabled: Callable[[SiteConfig], bool] = lambda config: True

    def build(self, config: SiteConfig, **deps: Any) -> Stage:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)(config, **deps)


#: name -> entry, in pipeline order.
STAGES: dict[str, StageEntry] = {}


def register_stage(name: str, factory: str, modes: tuple[str, ...] = MODES,
                   enabled: Callable[[SiteConfig], bool] = lambda config: True) -> StageEntry:
    """Register (or replace) a stage; returns its entry."""
    bad = set(modes) - set(MODES)
    if bad:
        raise ValueError(f"stage {name!r}: unknown mode(s) {sorted(bad)}; known: {list(MODES)}")
    entry = StageEntry(name, factory, tuple(modes), enabled)
    STAGES[name] = entry
    return entry


def unregister_stage(name: str) -> None:
    STAGES.pop(name, None)


def stages_for(mode: str, config: SiteConfig | None = None) -> list[StageEntry]:
    """The stages that run in ``mode`` (and, given a config, are enabled by it), in pipeline order."""
    return [e for e in STAGES.values() if mode in e.modes and (config is None or e.enabled(config))]


def build_stage(name: str, config: SiteConfig, **deps: Any) -> Stage:
    entry = STAGES.get(name)
    if entry is None:
        raise ConfigError(f"unknown stage {name!r}; known: {sorted(STAGES)}")
    return entry.build(config, **deps)


# -- the stages of StoreLens -----------------------------------------------------------------
register_stage("detect-track", "storelens.stages.core:build_detect_track")
register_stage("faces", "storelens.stages.faces:build_faces", modes=("embedded",),
               enabled=lambda config: config.faces.enabled)
register_stage("attributes", "storelens.stages.faces:AttributesStage", modes=("service",))
register_stage("reid", "storelens.stages.faces:ReidStage", modes=("service",))
register_stage("analytics", "storelens.stages.analytics:AnalyticsStage")
register_stage("chain-rollup", "storelens.stages.rollup:ChainRollupStage", modes=("service",),
               enabled=lambda config: config.chain is not None)
