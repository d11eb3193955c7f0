"""KEDA ceilings: no ScaledObject may hold replicas its input cannot feed.

A topic keyed by camera id (``TopicSpec.keyed_by_camera``: frames, person-crops) gets messages on at
most one partition per camera, so at most min(partitions, cameras) consumers of a group get any work;
more replicas idle and hold their cores. Every rendered ScaledObject on such a topic (found by the
topic its trigger reads, whatever Deployment it scales) has a ceiling (``maxReplicaCount``) of at
most that, and none exists where that is 1. The components' own ceiling (the placeholder an overlay
replaces) is 1, the most any store can use. Renders with the helpers of ``test_k8s``.
"""
from __future__ import annotations

import copy
import pathlib
from typing import Iterator

import pytest
import yaml

from storelens.contract import topics
from test_k8s import (
    K8S_DIR, STACKS, STORE_OVERLAYS, _id, _load_site, container_env, deployments, of_kind, pod_spec, render,
    site_yaml, useful_replicas,
)

SPECS = {t.name: t for t in topics.TOPICS}
COMPONENT_SCALED_OBJECTS = sorted(p for p in (K8S_DIR / "components").glob("*/*.yaml")
                                  if yaml.safe_load(p.read_text()).get("kind") == "ScaledObject")


def check_ceilings(docs: list[dict], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A problem per ScaledObject of ``docs`` whose ceiling is above the replicas its camera-keyed topic can feed."""
    deps = {d["metadata"]["name"]: d for d in deployments(docs)}
    for so in of_kind(docs, "ScaledObject"):
        name = so["metadata"]["name"]
        (c,) = pod_spec(deps[so["spec"]["scaleTargetRef"]["name"]])["containers"]
        with monkeypatch.context() as mp:
            cfg = _load_site(mp, docs, site_yaml(docs), container_env(docs, c))
        for trigger in so["spec"]["triggers"]:
            base = topics.base_name(trigger["metadata"]["topic"], cfg.kafka.topic_prefix)
            if base not in SPECS:
                yield f"{name}: {trigger['metadata']['topic']} is no topic of this store"
            elif SPECS[base].keyed_by_camera:
                useful = useful_replicas(base, cfg)
                if useful <= 1:
                    yield f"{name}: {base} is keyed by camera and the store has {len(cfg.cameras)} camera(s): " \
                          "one replica gets every message, drop the ScaledObject"
                elif so["spec"]["maxReplicaCount"] > useful:
                    yield f"{name}: maxReplicaCount {so['spec']['maxReplicaCount']} > min(partitions, cameras) " \
                          f"= {useful} ({base} is keyed by camera)"


@pytest.mark.parametrize("target", STACKS, ids=_id)
def test_scaled_object_ceilings_are_at_most_min_partitions_cameras(target, monkeypatch):
    assert not (problems := list(check_ceilings(render(target), monkeypatch))), "\n".join(problems)


@pytest.mark.parametrize("path", COMPONENT_SCALED_OBJECTS, ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_the_components_ceiling_fits_any_store(path: pathlib.Path):
    """Until an overlay patches it, a component's ceiling is 1: a store has at least one camera."""
    so = yaml.safe_load(path.read_text())
    placeholder = so["spec"]["triggers"][0]["metadata"]["topic"]
    assert SPECS[placeholder.removeprefix("REPLACE-topic_prefix-")].keyed_by_camera, placeholder
    assert so["spec"]["maxReplicaCount"] == 1


def _store(name: str) -> pathlib.Path:
    return next(t for t in STORE_OVERLAYS if t.name == name)


def _berlin_detect_track(docs: list[dict]) -> dict:
    (so,) = of_kind(docs, "ScaledObject")
    return so


def _attributes_in_the_one_camera_cloud(docs: list[dict]) -> None:
    """The cloud half of hamburg-02 (one camera) as it was: attributes scaled by KEDA up to 4 replicas."""
    so = copy.deepcopy(_berlin_detect_track(render(_store("store-berlin-01"))))
    so["metadata"]["name"] = so["spec"]["scaleTargetRef"]["name"] = "storelens-attributes"
    so["spec"]["maxReplicaCount"] = 4
    so["spec"]["triggers"][0]["metadata"]["topic"] = "store-hamburg-02.person-crops"
    docs.append(so)


@pytest.mark.parametrize(("store", "mutate", "expect"), [
    pytest.param("store-berlin-01", lambda d: _berlin_detect_track(d)["spec"].update(maxReplicaCount=3),
                 "maxReplicaCount 3 > min(partitions, cameras) = 2", id="frames-above-cameras"),
    pytest.param("store-berlin-01", lambda d: _berlin_detect_track(d)["spec"]["triggers"][0]["metadata"].update(
        topic="store-berlin-01.person-crops"), None, id="person-crops-at-cameras"),
    pytest.param("store-berlin-01", lambda d: _berlin_detect_track(d)["spec"]["triggers"][0]["metadata"].update(
        topic="store-berlin-01.nope"), "is no topic", id="unknown-topic"),
    pytest.param("store-hamburg-02-cloud", _attributes_in_the_one_camera_cloud, "drop the ScaledObject",
                 id="person-crops-one-camera"),
])
def test_the_ceiling_check_catches_violations(store, mutate, expect, monkeypatch):
    docs = render(_store(store))
    assert not list(check_ceilings(docs, monkeypatch))
    mutate(docs)
    problems = list(check_ceilings(docs, monkeypatch))
    if expect is None:
        assert not problems
    else:
        assert any(expect in p for p in problems), problems
