"""The chain roll-up's settings: a store's side (``rollup:``) and the chain's (``chain:``)."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from storelens.config.base import Strict


class RollupConfig(Strict):
    """``rollup:`` a store publishes its KPI hours to its ``store-kpis`` topic for the chain.

    The analytics service does it every ``every_s`` seconds (the hours of the last ``lookback_h``
    hours that changed since it last published: late sales and staff recognised later are
    picked up); an embedded store does it with ``storelens kpis publish`` (e.g. from cron).
    """

    #: Publish from the analytics service (distributed mode).
    enabled: bool = False
    every_s: Annotated[float, Field(gt=0)] = 300.0
    lookback_h: Annotated[float, Field(gt=0, le=24 * 31)] = 48.0


class ChainConfig(Strict):
    """``chain:`` this deployment is a chain's roll-up: its ``chain-rollup`` service reads every store's
    ``store-kpis`` topic (a regex subscription on the shared Kafka) into this deployment's database, and its
    API answers ``GET /v1/stores`` and the KPIs of every store, region and the chain."""

    #: Topics to read: every store's ``<kafka.topic_prefix>store-kpis``; the default matches any prefix
    #: ``kafka.topic_prefix`` allows (``[A-Za-z0-9._-]*``: none, ``store-berlin-01.``, ``berlin_``).
    topic_pattern: str = r"^[A-Za-z0-9._-]*store-kpis$"
    #: Seconds between the checks for new matching topics (a new store is read within this).
    metadata_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @field_validator("topic_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if not v.startswith("^"):
            raise ValueError("must start with ^ (a regex subscription)")
        return v
