"""Stages: input message(s) -> outputs, no I/O (the runner in :mod:`storelens.runtime` does the I/O).

The contract is in :mod:`storelens.stages.base`; the stages of a site are listed in
:mod:`storelens.stages.registry`.
"""
from storelens.stages.base import Outputs, Publish, Stage, UnknownCamera, decode_input
from storelens.stages.analytics import AnalyticsOutput, AnalyticsStage
from storelens.stages.core import TRACK_ID_SESSION_FACTOR, DetectTrackStage, track_id_base

__all__ = ["TRACK_ID_SESSION_FACTOR", "AnalyticsOutput", "AnalyticsStage", "DetectTrackStage", "Outputs",
           "Publish", "Stage", "UnknownCamera", "decode_input", "track_id_base"]
