"""k8s/: every overlay (and the base) renders with the real kustomize, every document
validates against the Kubernetes schemas (offline, strict: unknown fields fail; the KEDA and
Prometheus Operator kinds against the minimal strict schemas in k8s/schemas/), every
Deployment keeps the hardening rules, the NetworkPolicies isolate each namespace (default
deny, only the api and the pipeline services' metrics port (Prometheus) reachable from outside,
egress only to DNS, Kafka, PostgreSQL, Redis and the cameras), the KEDA ScaledObjects follow the
store's site.yaml (consumer group, topic, ceiling), and the site.yaml in the ConfigMap is a valid
``storelens.config`` file once expanded with the env each Deployment defines.

kustomize comes from ``scripts/kustomize.sh``, which builds it from the Go module proxy
into ``.tools/bin`` the first time (under a minute with a warm Go cache).
"""
from __future__ import annotations

import copy
import functools
import json
import os
import pathlib
import re
import subprocess
from typing import Callable, Iterator

import pytest
import yaml

from storelens.config import SiteConfig, parse_config
from storelens.config.auth import AuthConfig
from storelens.contract import topics
from storelens.errors import ConfigError

kubernetes_validate = pytest.importorskip("kubernetes_validate")
import jsonschema  # noqa: E402  (a dependency of kubernetes-validate)
import referencing  # noqa: E402
from kubernetes_validate.utils import SchemaNotFoundError, schema_contents  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
KUSTOMIZE = REPO / "scripts" / "kustomize.sh"
K8S_DIR = REPO / "k8s"
BASE = K8S_DIR / "base"
OVERLAYS = sorted(p.parent for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))
TARGETS = [BASE, *OVERLAYS]
#: The chain level (not a store): the roll-up of every store's aggregates.
CHAIN = K8S_DIR / "overlays" / "chain"
#: Targets that run a store's services (the base, whole stores, and the halves of a split store).
STACKS = [t for t in TARGETS if t != CHAIN]
STORE_OVERLAYS = [t for t in OVERLAYS if t != CHAIN]
#: Cluster-wide objects applied once (the shared databases' NetworkPolicies).
CLUSTER = K8S_DIR / "cluster"
#: Minimal strict JSON schemas of the custom resources (KEDA, Prometheus Operator), by (apiVersion, kind).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
#: Oldest Kubernetes release the manifests must be valid for (schemas bundled by kubernetes-validate).
K8S_VERSION = "1.31.0"

UID = 10001
SERVICES = ("ingest", "detect-track", "attributes", "reid", "analytics", "api")
#: The services of each half of a store split between the store (edge) and the cloud.
EDGE_SERVICES = ("ingest", "detect-track")
CLOUD_SERVICES = ("attributes", "reid", "analytics", "api")
#: The services only the chain level runs; it also runs an api (the chain's: the roll-up's KPIs).
CHAIN_SERVICES = ("chain-rollup",)
CHAIN_STACK = (*CHAIN_SERVICES, "api")
#: Health/metrics port of each service: the api serves them on its HTTP port.
PORTS = {svc: ("http-metrics", 9100) for svc in SERVICES + CHAIN_SERVICES} | {"api": ("http", 8080)}
KAFKA = {("storelens-kafka", "username"), ("storelens-kafka", "password")}
DB = {("storelens-db", "username"), ("storelens-db", "password")}
CAMERAS = {("storelens-cameras", "username"), ("storelens-cameras", "password")}
#: The store's Redis ACL user (k8s/README.md, "Redis"): the live state and the api's sign-in limiter.
REDIS = {("storelens-redis", "username"), ("storelens-redis", "password")}
#: The api's sign-in secrets (Secret storelens-auth): key -> the env var AuthConfig reads it from.
AUTH_ENV = {"jwt-secret": AuthConfig().jwt_secret_env, "admin-username": AuthConfig().admin_username_env,
            "admin-password": AuthConfig().admin_password_env}
#: The metrics token has a Secret of its own (Prometheus reads it; it must not read storelens-auth).
METRICS_TOKEN = ("storelens-metrics", "token")
AUTH = {("storelens-auth", key) for key in AUTH_ENV} | {METRICS_TOKEN}
#: Least privilege: the exact Secret keys each service may read.
SECRETS = {
    "ingest": KAFKA | CAMERAS,
    "detect-track": KAFKA,
    "attributes": KAFKA,
    "reid": KAFKA | DB,  # the customer gallery lives in PostgreSQL
    "analytics": KAFKA | DB | REDIS,  # live state
    "api": DB | KAFKA | AUTH | REDIS,  # publishes customer-erasures; signs sessions, creates the first admin
    "chain-rollup": KAFKA | DB,
}
#: The chain's api reads the roll-up from its database: no Kafka (it publishes nothing), no Redis.
CHAIN_SECRETS = SECRETS | {"api": DB | AUTH}
#: Init containers read only what they need, whatever the service: `storelens db upgrade` / `db wait` the database.
INIT_SECRETS = {"db-upgrade": DB, "db-wait": DB}
#: Services that run models and therefore mount the weights volume.
MODEL_SERVICES = {"detect-track", "attributes", "reid"}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|DSN|API_?KEY", re.I)
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def _id(p: pathlib.Path) -> str:
    return str(p.relative_to(K8S_DIR))


def expected_services(target: pathlib.Path) -> tuple[str, ...]:
    """The Deployments (components) ``target`` runs."""
    if target == CHAIN:
        return CHAIN_STACK
    if target.name.endswith("-edge"):
        return EDGE_SERVICES
    if target.name.endswith("-cloud"):
        return CLOUD_SERVICES
    return SERVICES


def in_chain(obj: dict) -> bool:
    """``obj`` belongs to the chain level (the chain overlay labels everything ``storelens.io/store: chain``)."""
    return obj["metadata"].get("labels", {}).get("storelens.io/store") == "chain"


def store_of(overlay: pathlib.Path) -> str:
    """The store an overlay deploys: the halves of a split store (``-edge``, ``-cloud``) are one store."""
    return re.sub(r"-(edge|cloud)$", "", overlay.name)


# ---------------------------------------------------------------------------------------------
# Rendering and helpers
# ---------------------------------------------------------------------------------------------


@functools.cache
def _build(target: pathlib.Path) -> str:
    proc = subprocess.run(["bash", str(KUSTOMIZE), "build", str(target)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode == 127:
        pytest.skip(f"kustomize unavailable: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"kustomize build {_id(target)} failed:\n{proc.stderr}"
    return proc.stdout


def render(target: pathlib.Path) -> list[dict]:
    """The documents of ``kustomize build target`` (a fresh copy each call)."""
    return [d for d in yaml.safe_load_all(_build(target)) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def deployments(docs: list[dict]) -> list[dict]:
    return of_kind(docs, "Deployment")


def pod_spec(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


def containers(dep: dict) -> list[dict]:
    spec = pod_spec(dep)
    return spec.get("initContainers", []) + spec["containers"]


def configmap(docs: list[dict], name: str) -> dict:
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == name]
    return cm


def configmap_with_prefix(docs: list[dict], prefix: str) -> dict:
    """The generated ConfigMap ``prefix-<hash>``."""
    found = [d for d in of_kind(docs, "ConfigMap") if re.fullmatch(re.escape(prefix) + r"(-[a-z0-9]{10})?",
                                                                    d["metadata"]["name"])]
    assert len(found) == 1, f"expected one ConfigMap {prefix}(-hash), found {[d['metadata']['name'] for d in found]}"
    return found[0]


def site_yaml(docs: list[dict]) -> str:
    return configmap_with_prefix(docs, "storelens-site")["data"]["site.yaml"]


def secret_refs(container: dict) -> set[tuple[str, str]]:
    return {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def dummy_secret(name: str, key: str) -> str:
    return f"dummy-{name}-{key}"  # URL-safe, so it can stand inside rtsp:// and postgresql:// URLs


def container_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: ConfigMap values from the rendered
    ConfigMaps, Secrets as :func:`dummy_secret` values; ``env`` overrides ``envFrom``."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        assert "secretRef" not in src, "Secrets are read key by key (secretKeyRef), never with envFrom"
        env.update({src.get("prefix", "") + k: v for k, v in configmap(docs, src["configMapRef"]["name"])["data"].items()})
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = configmap(docs, ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = dummy_secret(ref["name"], ref["key"])
        else:
            raise AssertionError(f"unexpected env source for {e['name']}: {e}")
    return env


@functools.cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A validator of k8s/schemas/<file> whose ``$ref``s to Kubernetes types (ObjectMeta, HPA
    behaviour, label selectors) resolve to kubernetes-validate's strict definitions."""
    schema = json.loads((K8S_DIR / "schemas" / CRD_SCHEMAS[(api_version, kind)]).read_text())
    defs = schema_contents(f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION)
    registry = referencing.Registry().with_resources([
        (schema["$id"], referencing.Resource.from_contents(schema)),
        ("https://kubernetes.io/api/_definitions.json", referencing.Resource.from_contents(defs)),
    ])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(doc: dict) -> None:
    """Validate ``doc`` strictly: Kubernetes kinds with kubernetes-validate, the custom
    resources with k8s/schemas/; raises ``jsonschema.ValidationError`` (or SchemaNotFoundError)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        _crd_validator(*key).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEM_UNIT = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def cpu_cores(q: object) -> float:
    m = _CPU.match(str(q))
    assert m, f"bad cpu quantity {q!r}"
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def mem_bytes(q: object) -> float:
    m = _MEM.match(str(q))
    assert m, f"bad memory quantity {q!r}"
    return float(m.group(1)) * _MEM_UNIT[m.group(2)]


# ---------------------------------------------------------------------------------------------
# Rendering, schemas
# ---------------------------------------------------------------------------------------------


def test_there_is_at_least_one_overlay():
    assert OVERLAYS, "k8s/overlays/ has no overlay (a folder with kustomization.yaml)"


@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_renders_the_expected_objects(target):
    docs = render(target)
    kinds = sorted(d["kind"] for d in docs)
    assert sorted(component(d) for d in deployments(docs)) == sorted(expected_services(target))
    required = ["ConfigMap", "ServiceAccount", "NetworkPolicy", "Service"]
    if target != CHAIN:
        required += ["PersistentVolumeClaim"]
    if "api" in expected_services(target):
        required += ["PodDisruptionBudget", "Ingress"]
    for kind in required:
        assert kind in kinds, f"{_id(target)} renders no {kind}"
    assert "Secret" not in kinds, "Secrets are created per store with kubectl, never rendered from the repo"


@pytest.mark.parametrize("target", [*TARGETS, CLUSTER], ids=_id)
def test_every_document_validates_against_the_kubernetes_schemas(target):
    problems = []
    for doc in render(target):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validate(doc)
        except jsonschema.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    assert not problems, "\n".join(problems)


def _typo_field(d: dict) -> None:
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"


def _string_replicas(d: dict) -> None:
    d["spec"]["replicas"] = "1"


def _bad_probe(d: dict) -> None:
    d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"


@pytest.mark.parametrize("mutate", [_typo_field, _string_replicas, _bad_probe], ids=lambda f: f.__name__[1:])
def test_the_schema_check_is_strict(mutate):
    """The validation above is worth something: unknown fields and wrong types fail."""
    dep = copy.deepcopy(deployments(render(BASE))[0])
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    mutate(dep)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------
# Hardening of every Deployment (one table row per rule)
# ---------------------------------------------------------------------------------------------


def check_pod(dep: dict) -> Iterator[str]:
    spec = pod_spec(dep)
    sc = spec.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        yield "pod securityContext.runAsNonRoot is not true"
    if sc.get("runAsUser") != UID or sc.get("runAsGroup") != UID:
        yield f"pod does not run as uid/gid {UID}"
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        yield "pod seccompProfile is not RuntimeDefault"
    if spec.get("automountServiceAccountToken") is not False:
        yield "pod mounts a service account token"
    if spec.get("serviceAccountName") != "storelens":
        yield "pod does not use the storelens ServiceAccount"
    if spec.get("enableServiceLinks") is not False:
        yield "service links are on (they inject STORELENS_API_PORT=tcp://...)"
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            yield f"pod sets {flag}"


def check_container_security(dep: dict) -> Iterator[str]:
    pod_sc = pod_spec(dep).get("securityContext", {})
    for c in containers(dep):
        sc = c.get("securityContext", {})
        eff = {**pod_sc, **sc}  # container settings override the pod's
        if eff.get("runAsNonRoot") is not True or eff.get("runAsUser") != UID:
            yield f"{c['name']}: not running as non-root uid {UID}"
        if sc.get("readOnlyRootFilesystem") is not True:
            yield f"{c['name']}: root filesystem is writable"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{c['name']}: allowPrivilegeEscalation is not false"
        if sc.get("privileged"):
            yield f"{c['name']}: privileged"
        caps = sc.get("capabilities", {})
        if caps.get("drop") != ["ALL"] or caps.get("add"):
            yield f"{c['name']}: capabilities are not exactly drop [ALL]"
        if eff.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            yield f"{c['name']}: seccompProfile is not RuntimeDefault"


def check_probes(dep: dict) -> Iterator[str]:
    port_name, port = PORTS[component(dep)]
    for c in dep["spec"]["template"]["spec"]["containers"]:
        declared = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if declared.get(port_name) != port:
            yield f"{c['name']}: no containerPort {port} named {port_name!r}"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet")
            if not get:
                yield f"{c['name']}: no HTTP {probe}"
            elif get.get("path") != path or get.get("port") not in (port_name, port):
                yield f"{c['name']}: {probe} is {get.get('path')} on {get.get('port')}, expected {path} on {port_name}"


def check_resources(dep: dict) -> Iterator[str]:
    for c in containers(dep):
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    yield f"{c['name']}: no {kind}.{r}"
        req, lim = res.get("requests", {}), res.get("limits", {})
        if {"cpu", "memory"} <= req.keys() & lim.keys():
            if cpu_cores(req["cpu"]) > cpu_cores(lim["cpu"]) or mem_bytes(req["memory"]) > mem_bytes(lim["memory"]):
                yield f"{c['name']}: requests exceed limits"
            if component(dep) == "detect-track":
                # 2-core CPU inference, Guaranteed QoS.
                if not (cpu_cores(req["cpu"]) == cpu_cores(lim["cpu"]) == 2 and req["memory"] == lim["memory"]):
                    yield f"{c['name']}: not sized for 2-core inference with requests == limits"
            elif component(dep) in {"attributes", "reid"}:
                # one-core face models (+ the FAISS index for reid)
                if cpu_cores(lim["cpu"]) > 1 or mem_bytes(lim["memory"]) > 2 * 2**30:
                    yield f"{c['name']}: a faces service should fit 1 core and 2Gi"
            elif cpu_cores(lim["cpu"]) > 1 or mem_bytes(lim["memory"]) > 2**30:
                yield f"{c['name']}: a non-inference service should be small (<= 1 core, <= 1Gi)"


def check_image(dep: dict) -> Iterator[str]:
    for c in containers(dep):
        image = c["image"]
        name, _, digest = image.partition("@")
        # A tag is a ":" in the last path segment (a registry host may carry a port).
        repo, tag = name.rsplit(":", 1) if ":" in name.rsplit("/", 1)[-1] else (name, "")
        if not digest and (not tag or tag == "latest"):
            yield f"{c['name']}: image {image} is not pinned (no tag or 'latest')"
        if repo != f"ghcr.io/storelens/{component(dep)}":
            yield f"{c['name']}: image {image} is not ghcr.io/storelens/{component(dep)}"
        if c.get("imagePullPolicy") == "Always":
            yield f"{c['name']}: imagePullPolicy Always (pinned images need not be pulled every start)"


def check_volumes(dep: dict) -> Iterator[str]:
    spec = pod_spec(dep)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        tmp = mounts.get("/tmp")
        if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
            yield f"{c['name']}: /tmp is not an emptyDir"
        cfg = mounts.get("/etc/storelens")
        if not cfg or not cfg.get("readOnly") or not volumes.get(cfg["name"], {}).get("configMap", {}).get(
                "name", "").startswith("storelens-site"):
            yield f"{c['name']}: the storelens-site ConfigMap is not mounted read-only at /etc/storelens"
        if env.get("STORELENS_CONFIG") != "/etc/storelens/site.yaml":
            yield f"{c['name']}: STORELENS_CONFIG is not /etc/storelens/site.yaml"
        # chain-rollup loads no model (k8s/overlays/chain): no STORELENS_ASSETS, and no /models (below).
        if component(dep) not in CHAIN_SERVICES and env.get("STORELENS_ASSETS") != "/models":
            yield f"{c['name']}: STORELENS_ASSETS is not /models"
        models = mounts.get("/models")
        if component(dep) in MODEL_SERVICES:
            pvc = volumes.get(models["name"], {}).get("persistentVolumeClaim", {}) if models else {}
            if not models or not models.get("readOnly") or pvc.get("claimName") != "storelens-models" \
                    or not pvc.get("readOnly"):
                yield f"{c['name']}: PVC storelens-models is not mounted read-only at /models"
        elif models:
            yield f"{c['name']}: mounts /models without running models"
        for m in c.get("volumeMounts", []):
            if m["mountPath"] not in ("/tmp",) and not m.get("readOnly"):
                yield f"{c['name']}: {m['mountPath']} is mounted writable"


def check_secrets(dep: dict) -> Iterator[str]:
    for c in containers(dep):
        for e in c.get("env", []):
            if "value" in e and SECRET_NAME.search(e["name"]):
                yield f"{c['name']}: {e['name']} has a literal value; credentials come from Secrets"
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref.get("optional"):
                yield f"{c['name']}: {e['name']} is optional; a missing Secret must stop the pod"
        if any("secretRef" in s for s in c.get("envFrom", [])):
            yield f"{c['name']}: envFrom secretRef (read Secrets key by key)"
        want = INIT_SECRETS.get(c["name"]) if c in pod_spec(dep).get("initContainers", []) \
            else (CHAIN_SECRETS if in_chain(dep) else SECRETS).get(component(dep))
        if want is not None and secret_refs(c) != want:
            yield f"{c['name']}: reads Secrets {sorted(secret_refs(c))}, expected exactly {sorted(want)}"


def check_labels(dep: dict) -> Iterator[str]:
    comp = component(dep)
    tmpl = dep["spec"]["template"]["metadata"]["labels"]
    for where, labels in (("metadata", dep["metadata"]["labels"]), ("pod template", tmpl)):
        for key, want in (("app.kubernetes.io/name", "storelens"), ("app.kubernetes.io/part-of", "storelens"),
                          ("app.kubernetes.io/component", comp)):
            if labels.get(key) != want:
                yield f"{where} label {key} is {labels.get(key)!r}, expected {want!r}"
    sel = dep["spec"]["selector"]["matchLabels"]
    if any(tmpl.get(k) != v for k, v in sel.items()) or sel.get("app.kubernetes.io/component") != comp:
        yield f"selector {sel} does not pick this component's pods"
    if [c["name"] for c in pod_spec(dep)["containers"]] != [comp]:
        yield "the container is not named after the component"


def check_replicas(dep: dict) -> Iterator[str]:
    comp, spec = component(dep), dep["spec"]
    # No `replicas` = 1 (Kubernetes' default); left out where KEDA owns the count (components/autoscale-*).
    if comp in ("ingest", "detect-track", "analytics") and spec.get("replicas", 1) != 1:
        yield f"{comp} should run 1 replica by default, has {spec.get('replicas')}"
    if comp == "ingest" and spec.get("strategy", {}).get("type") != "Recreate":
        yield "ingest must use the Recreate strategy (two readers would publish every frame twice)"


CHECKS: list[tuple[str, Callable[[dict], Iterator[str]]]] = [
    ("pod-security", check_pod),
    ("container-security", check_container_security),
    ("probes", check_probes),
    ("resources", check_resources),
    ("image-pinned", check_image),
    ("volumes", check_volumes),
    ("secrets-referenced-only", check_secrets),
    ("labels", check_labels),
    ("replicas", check_replicas),
]


@pytest.mark.parametrize("check", [c for _, c in CHECKS], ids=[n for n, _ in CHECKS])
@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_deployment_hardening(target, check):
    problems = [f"{dep['metadata']['name']}: {p}" for dep in deployments(render(target)) for p in check(dep)]
    assert not problems, "\n".join(problems)


def _pop(path: str) -> Callable[[dict], None]:
    def f(dep: dict) -> None:
        *parents, last = path.split(".")
        node = dep
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node.pop(last)
    return f


def _set(path: str, value: object) -> Callable[[dict], None]:
    def f(dep: dict) -> None:
        *parents, last = path.split(".")
        node = dep
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[last] = value
    return f


C0 = "spec.template.spec.containers.0"


@pytest.mark.parametrize(("check", "mutate", "expect"), [
    pytest.param(check_container_security, _pop(f"{C0}.securityContext.readOnlyRootFilesystem"),
                 "root filesystem is writable", id="writable-root"),
    pytest.param(check_container_security, _set(f"{C0}.securityContext.capabilities",
                                                {"drop": ["ALL"], "add": ["NET_RAW"]}), "drop [ALL]", id="cap-add"),
    pytest.param(check_container_security, _set(f"{C0}.securityContext.runAsUser", 0), "non-root", id="root"),
    pytest.param(check_pod, _set("spec.template.spec.automountServiceAccountToken", True), "token", id="sa-token"),
    pytest.param(check_probes, _pop(f"{C0}.readinessProbe"), "no HTTP readinessProbe", id="no-readiness"),
    pytest.param(check_resources, _pop(f"{C0}.resources.limits"), "no limits.cpu", id="no-limits"),
    pytest.param(check_image, _set(f"{C0}.image", "ghcr.io/storelens/ingest:latest"), "not pinned", id="latest"),
    pytest.param(check_image, _set(f"{C0}.image", "ghcr.io/storelens/ingest"), "not pinned", id="untagged"),
    pytest.param(check_secrets, _set(f"{C0}.env", [{"name": "STORELENS_DB_PASSWORD", "value": "hunter2"}]),
                 "literal value", id="literal-secret"),
    pytest.param(check_secrets, _set(f"{C0}.env", []), "expected exactly", id="missing-secret"),
    pytest.param(check_volumes, _set("spec.template.spec.volumes", []), "/tmp is not an emptyDir", id="no-tmp"),
])
def test_the_hardening_checks_catch_violations(check, mutate, expect):
    (dep,) = [copy.deepcopy(d) for d in deployments(render(BASE)) if component(d) == "ingest"]
    assert not list(check(dep))
    mutate(dep)
    assert any(expect in p for p in check(dep)), list(check(dep))


TOOLS = sorted((K8S_DIR / "tools").glob("*.yaml"))


@pytest.mark.parametrize("path", TOOLS, ids=_id)
def test_tool_manifests_validate_and_are_hardened(path):
    """Helpers applied by hand (k8s/tools/) meet the same schema and pod rules as the services."""
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] == "Pod":
            as_deployment = {"spec": {"template": {"spec": doc["spec"]}}}
            problems = [*check_pod(as_deployment), *check_container_security(as_deployment)]
            assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Services, PodDisruptionBudgets, ConfigMaps
# ---------------------------------------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_services_and_pdbs_select_real_pods_and_ports(target):
    docs = render(target)
    deps = deployments(docs)
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for svc in services.values():
        picked = [d for d in deps if _selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert picked, f"Service {svc['metadata']['name']} selects no pods"
        for port in svc["spec"]["ports"]:
            for d in picked:
                names = {p["name"] for c in pod_spec(d)["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"{d['metadata']['name']} has no port {port['targetPort']}"
    if "api" in expected_services(target):
        api = services["storelens-api"]
        assert [(p["name"], p["port"]) for p in api["spec"]["ports"]] == [("http", 8080)]
    if target != CHAIN:
        metrics = services["storelens-metrics"]
        picked = {component(d) for d in deps
                  if _selects(metrics["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])}
        assert picked == set(expected_services(target)) - {"api"}, "the metrics Service must cover every pipeline service"
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        assert any(_selects(pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
                   for d in deps), f"PDB {pdb['metadata']['name']} selects no pods"


@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_objects_are_labelled_and_secrets_never_written_in_configmaps(target):
    docs = render(target)
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "storelens", \
                f"{d['kind']}/{d['metadata']['name']} lacks app.kubernetes.io/part-of: storelens"
    for sa in of_kind(docs, "ServiceAccount"):
        assert sa.get("automountServiceAccountToken") is False
    for cm in of_kind(docs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            assert not SECRET_NAME.search(key), f"ConfigMap {cm['metadata']['name']} holds {key}"
            # Any user:password@ in a URL must be ${ENV} references, never literal credentials.
            for userinfo in re.findall(r"://([^/@\s]*)@", value):
                assert ENV_REF.sub("", userinfo) in ("", ":"), \
                    f"ConfigMap {cm['metadata']['name']}/{key}: literal credentials in a URL ({userinfo})"


# ---------------------------------------------------------------------------------------------
# The embedded site configuration, as each service will load it
# ---------------------------------------------------------------------------------------------


def _load_site(monkeypatch: pytest.MonkeyPatch, docs: list[dict], text: str, env: dict[str, str]) -> SiteConfig:
    """Parse ``text`` as a service would, with exactly ``env`` (no variable leaks in from the
    test process, e.g. the STORELENS_ASSETS the Makefile exports)."""
    for name in set(ENV_REF.findall(text)) | {k for k in os.environ if k.startswith("STORELENS_")}:
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return parse_config(yaml.safe_load(text), origin="site.yaml (ConfigMap storelens-site)")


@pytest.mark.parametrize("target", STACKS, ids=_id)
def test_site_config_validates_with_each_deployments_env(target, monkeypatch):
    docs = render(target)
    text = site_yaml(docs)
    for dep in deployments(docs):
        comp = component(dep)
        (c,) = pod_spec(dep)["containers"]
        env = container_env(docs, c)
        with monkeypatch.context() as mp:
            cfg = _load_site(mp, docs, text, env)
        has = secret_refs(c)
        # Shared wiring: the endpoints of the storelens-env ConfigMap, the mounted weights.
        assert cfg.storage.backend == "postgres"
        assert cfg.storage.dsn.startswith("postgresql://")
        assert f"@{env['STORELENS_DB_HOST']}:{env['STORELENS_DB_PORT']}/{env['STORELENS_DB_NAME']}" in cfg.storage.dsn
        assert cfg.kafka.bootstrap_servers == env["STORELENS_KAFKA_BOOTSTRAP"]
        assert cfg.kafka.security_protocol == env["STORELENS_KAFKA_SECURITY_PROTOCOL"]
        redis_at = f"@{env['STORELENS_REDIS_HOST']}:{env['STORELENS_REDIS_PORT']}/{env['STORELENS_REDIS_DB']}"
        assert cfg.live.redis_url.startswith("redis://") and cfg.live.redis_url.endswith(redis_at)
        assert cfg.detector.weights.startswith("/models/")
        assert cfg.api.host == "0.0.0.0" and cfg.api.port == PORTS["api"][1]
        assert cfg.kafka.group_prefix == f"storelens-{cfg.store.id}", "consumer groups must be per store"
        # Each credential reaches the services that hold its Secret (the "" defaults only
        # cover the services that are not given it).
        if DB <= has:
            assert f"{dummy_secret('storelens-db', 'username')}:{dummy_secret('storelens-db', 'password')}@" \
                   in cfg.storage.dsn, f"{comp}: the database credentials do not reach storage.dsn"
        if KAFKA <= has:
            assert cfg.kafka.sasl_username == dummy_secret("storelens-kafka", "username"), comp
            assert cfg.kafka.sasl_password == dummy_secret("storelens-kafka", "password"), comp
        if REDIS <= has:
            assert cfg.live.redis_url == f"redis://{dummy_secret('storelens-redis', 'username')}:" \
                   f"{dummy_secret('storelens-redis', 'password')}{redis_at}", f"{comp}: no Redis credentials"
        if CAMERAS <= has:
            creds = f"{dummy_secret('storelens-cameras', 'username')}:{dummy_secret('storelens-cameras', 'password')}@"
            for cam in cfg.cameras:
                if cam.source.startswith("rtsp://"):
                    assert cam.source.startswith(f"rtsp://{creds}"), f"{comp}: camera {cam.id} gets no credentials"
        if comp == "api":
            assert env["STORELENS_API_HOST"] == "0.0.0.0" and int(env["STORELENS_API_PORT"]) == cfg.api.port


@pytest.mark.parametrize("target", STACKS, ids=_id)
def test_site_config_fails_without_the_endpoints(target, monkeypatch):
    """The endpoints have no defaults: a pod without the storelens-env ConfigMap fails at start."""
    docs = render(target)
    first = deployments(docs)[0]
    env = container_env(docs, pod_spec(first)["containers"][0])
    env.pop("STORELENS_KAFKA_BOOTSTRAP")
    with pytest.raises(ConfigError, match="STORELENS_KAFKA_BOOTSTRAP"):
        _load_site(monkeypatch, docs, site_yaml(docs), env)


# ---------------------------------------------------------------------------------------------
# Per-store overlays
# ---------------------------------------------------------------------------------------------


def _store(docs: list[dict], monkeypatch: pytest.MonkeyPatch) -> tuple[dict, SiteConfig, dict[str, str]]:
    """The namespace, the site configuration and the env of the first Deployment (ingest in a whole store)."""
    (ns,) = of_kind(docs, "Namespace")
    first = deployments(docs)[0]
    env = container_env(docs, pod_spec(first)["containers"][0])
    with monkeypatch.context() as mp:
        cfg = _load_site(mp, docs, site_yaml(docs), env)
    return ns, cfg, env


def kustomizations(overlay: pathlib.Path) -> Iterator[dict]:
    """The overlay's kustomization.yaml and those of the components it includes."""
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    yield kust
    for comp in kust.get("components", []):
        yield yaml.safe_load((overlay / comp / "kustomization.yaml").read_text())


@pytest.mark.parametrize("overlay", STORE_OVERLAYS, ids=_id)
def test_overlay_sets_namespace_store_and_images(overlay, monkeypatch):
    docs = render(overlay)
    ns, cfg, _ = _store(docs, monkeypatch)
    namespace = ns["metadata"]["name"]
    assert ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == namespace, f"{d['kind']}/{d['metadata']['name']} not in {namespace}"
        labels = d["metadata"].get("labels", {})
        assert labels.get("storelens.io/store") == cfg.store.id, \
            f"{d['kind']}/{d['metadata']['name']}: store label {labels.get('storelens.io/store')!r} != store.id {cfg.store.id!r}"
    for dep in deployments(docs):
        assert dep["spec"]["template"]["metadata"]["labels"].get("storelens.io/store") == cfg.store.id
    assert cfg.store.id != "example-store", "the overlay must replace the base's template site.yaml"
    assert cfg.cameras and all(cam.lines or cam.zones for cam in cfg.cameras)
    # The store pins every image in its kustomization or a component of its own (images: transformer).
    pinned = {i["name"]: i for kust in kustomizations(overlay) for i in kust.get("images", [])}
    for dep in deployments(docs):
        image = pod_spec(dep)["containers"][0]["image"]
        entry = pinned.get(f"ghcr.io/storelens/{component(dep)}")
        assert entry, f"{overlay.name} does not pin the image of {component(dep)}"
        want = f"@{entry['digest']}" if "digest" in entry else f":{entry['newTag']}"
        assert image.endswith(want), f"{image} does not carry the overlay's {want}"


def test_stores_do_not_share_state(monkeypatch):
    """Copying an overlay and forgetting to change something must not mix two stores' data."""
    seen: dict[str, dict[str, str]] = {k: {} for k in ("namespace", "store id", "database", "redis", "topic prefix",
                                                       "group prefix")}
    for overlay in STORE_OVERLAYS:
        ns, cfg, env = _store(render(overlay), monkeypatch)
        for key, value in (("namespace", ns["metadata"]["name"]), ("store id", cfg.store.id),
                           ("database", f"{env['STORELENS_DB_HOST']}/{env['STORELENS_DB_NAME']}"),
                           ("redis", f"{env['STORELENS_REDIS_HOST']}:{env['STORELENS_REDIS_PORT']}/"
                                     f"{env['STORELENS_REDIS_DB']}"), ("topic prefix", cfg.kafka.topic_prefix),
                           ("group prefix", cfg.kafka.group_prefix)):
            other = seen[key].get(value)
            assert other in (None, store_of(overlay)), f"{overlay.name} and {other} share the {key} {value}"
            seen[key][value] = store_of(overlay)


# ---------------------------------------------------------------------------------------------
# NetworkPolicies: default deny, only the api reachable from outside, egress only to backends
# ---------------------------------------------------------------------------------------------

#: Where pods may send traffic, and which components may: (namespace, pod labels, ports) -> components.
EGRESS_PEERS: dict[tuple[str, tuple[tuple[str, str], ...], frozenset], set[str]] = {
    ("kube-system", (("k8s-app", "kube-dns"),), frozenset({("UDP", 53), ("TCP", 53)})): set(SERVICES + CHAIN_SERVICES),
    ("kafka", (("strimzi.io/cluster", "storelens-kafka"), ("strimzi.io/kind", "Kafka")), frozenset({("TCP", 9092)})):
        set(SERVICES + CHAIN_SERVICES),
    ("storelens-db", (("app.kubernetes.io/name", "postgres"),), frozenset({("TCP", 5432)})):
        {"reid", "analytics", "api", "chain-rollup"},
    ("storelens-db", (("app.kubernetes.io/name", "redis"),), frozenset({("TCP", 6379)})): {"analytics", "api"},
}
#: Prometheus (namespace ``monitoring``), the only scraper from outside a store's namespace.
PROMETHEUS = ("monitoring", (("app.kubernetes.io/name", "prometheus"),))
#: Who may reach the api from outside its namespace: the ingress controller and Prometheus.
API_CLIENTS = {("ingress-nginx", (("app.kubernetes.io/name", "ingress-nginx"),)), PROMETHEUS}
#: The pipeline services, whose metrics port (``http-metrics``, 9100) Prometheus may scrape from outside.
METRICS_SERVICES = {svc for svc in SERVICES if svc != "api"}
METRICS_PORT = frozenset({("TCP", "http-metrics")})


def _selector_matches(sel: dict, labels: dict) -> bool:
    """``labels`` satisfy a Kubernetes LabelSelector (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
        return False
    for e in sel.get("matchExpressions", []):
        has, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": has and value in e.get("values", []), "NotIn": not has or value not in e.get("values", []),
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def policy_pods(policy: dict, deps: list[dict]) -> list[str]:
    """Components whose pods ``policy`` selects (same namespace)."""
    return [component(d) for d in deps if d["metadata"].get("namespace") == policy["metadata"].get("namespace")
            and _selector_matches(policy["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])]


def _peer(peer: dict) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
    return ns, tuple(sorted(peer.get("podSelector", {}).get("matchLabels", {}).items()))


def _ports(rule: dict) -> frozenset:
    return frozenset((p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", []))


def check_default_deny(docs: list[dict]) -> Iterator[str]:
    deps = deployments(docs)
    deny = [p for p in of_kind(docs, "NetworkPolicy") if p["spec"]["podSelector"] == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        yield "no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)"
    for d in deps:
        if not any(component(d) in policy_pods(p, deps) for p in deny):
            yield f"{d['metadata']['name']}: its pods are not selected by a default-deny policy"


def check_ingress_from_outside(docs: list[dict]) -> Iterator[str]:
    """From outside the namespace only the api is reachable (from API_CLIENTS, on its http port), and the
    pipeline services' metrics port (from Prometheus only)."""
    deps = deployments(docs)
    for pol in of_kind(docs, "NetworkPolicy"):
        name = pol["metadata"]["name"]
        for rule in pol["spec"].get("ingress", []):
            peers = rule.get("from", [])
            outside = not peers or any("namespaceSelector" in p or "ipBlock" in p for p in peers)
            if not outside:
                continue
            pods = set(policy_pods(pol, deps))
            scrape = bool(peers) and all(_peer(p) == PROMETHEUS and "ipBlock" not in p for p in peers) \
                and _ports(rule) == METRICS_PORT
            if pods - {"api"} and not (scrape and pods <= METRICS_SERVICES):
                yield f"{name}: {sorted(pods - {'api'})} accept traffic from outside the namespace" \
                      f" ({peers or 'everywhere'} on {sorted(_ports(rule))}; only Prometheus on http-metrics)"
            if "api" not in pods:
                continue
            if not peers or any(_peer(p) not in API_CLIENTS or "ipBlock" in p for p in peers):
                yield f"{name}: the api accepts traffic from {peers or 'everywhere'}"
            if _ports(rule) != {("TCP", "http")}:
                yield f"{name}: opens {sorted(_ports(rule))}, not only the api's http port"


def check_egress(docs: list[dict]) -> Iterator[str]:
    """Egress only to DNS, Kafka, PostgreSQL and Redis (each for the services that use it) and the cameras (ingest)."""
    deps = deployments(docs)
    for pol in of_kind(docs, "NetworkPolicy"):
        name = pol["metadata"]["name"]
        pods = set(policy_pods(pol, deps)) if pol["spec"]["podSelector"] else set(SERVICES + CHAIN_SERVICES)
        for rule in pol["spec"].get("egress", []):
            peers = rule.get("to", [])
            if not peers:
                yield f"{name}: egress to everywhere"
            for peer in peers:
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    if pods - {"ingest"} or _ports(rule) != {("TCP", 554)} or block["cidr"].endswith("/0"):
                        yield f"{name}: {sorted(pods)} may reach {block['cidr']} on {sorted(_ports(rule))}" \
                              " (only ingest, to the cameras' subnet on RTSP 554)"
                    continue
                key = (*_peer(peer), _ports(rule))
                if key not in EGRESS_PEERS:
                    yield f"{name}: egress to {key} is not DNS, Kafka, PostgreSQL or Redis"
                elif pods - EGRESS_PEERS[key]:
                    yield f"{name}: {sorted(pods - EGRESS_PEERS[key])} may reach {key[0]}/{dict(key[1])}, which they do not use"


POLICY_CHECKS = [("default-deny", check_default_deny), ("ingress-from-outside", check_ingress_from_outside),
                 ("egress", check_egress)]


@pytest.mark.parametrize("check", [c for _, c in POLICY_CHECKS], ids=[n for n, _ in POLICY_CHECKS])
@pytest.mark.parametrize("target", TARGETS, ids=_id)
def test_network_policies(target, check):
    problems = list(check(render(target)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", [t for t in TARGETS if "api" in expected_services(t)], ids=_id)
def test_the_ingress_controller_reaches_the_api(target):
    docs = render(target)
    deps = deployments(docs)
    rules = [(pol, rule) for pol in of_kind(docs, "NetworkPolicy") if "api" in policy_pods(pol, deps)
             for rule in pol["spec"].get("ingress", [])]
    assert any(("ingress-nginx", (("app.kubernetes.io/name", "ingress-nginx"),)) in {_peer(p) for p in r.get("from", [])}
               and ("TCP", "http") in _ports(r) for _, r in rules), "no ingress rule from the ingress controller to the api"


@pytest.mark.parametrize("target", STACKS, ids=_id)
def test_prometheus_reaches_the_pipeline_metrics(target):
    """Every pipeline service of the target accepts Prometheus on its metrics port (the default deny
    would otherwise keep a Prometheus outside the namespace from scraping it)."""
    docs = render(target)
    for comp in METRICS_SERVICES & set(expected_services(target)):
        assert (*PROMETHEUS, METRICS_PORT) in _reach(docs, comp, "ingress"), f"Prometheus cannot scrape {comp}"


def _add_rule(kind: str, rule: dict, selector: dict | None = None) -> Callable[[list[dict]], None]:
    def f(docs: list[dict]) -> None:
        docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"name": "added", "namespace": deployments(docs)[0]["metadata"].get("namespace")},
                     "spec": {"podSelector": selector or {}, "policyTypes": [kind.capitalize()], kind: [rule]}})
    return f


def _drop_deny(docs: list[dict]) -> None:
    docs[:] = [d for d in docs if d["metadata"]["name"] != "default-deny"]


DETECT = {"matchLabels": {"app.kubernetes.io/component": "detect-track"}}
API = {"matchLabels": {"app.kubernetes.io/component": "api"}}


@pytest.mark.parametrize(("check", "mutate", "expect"), [
    pytest.param(check_default_deny, _drop_deny, "no default-deny", id="no-default-deny"),
    pytest.param(check_ingress_from_outside, _add_rule("ingress", {"from": [{"namespaceSelector": {}}]}, DETECT),
                 "['detect-track'] accept traffic from outside", id="detect-track-from-outside"),
    pytest.param(check_ingress_from_outside, _add_rule("ingress", {"from": [{"namespaceSelector": {}}], "ports": [
        {"protocol": "TCP", "port": "http-metrics"}]}, DETECT),
                 "['detect-track'] accept traffic from outside", id="metrics-from-any-namespace"),
    pytest.param(check_ingress_from_outside, _add_rule("ingress", {"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}, "podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "prometheus"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}, DETECT),
                 "['detect-track'] accept traffic from outside", id="prometheus-to-another-port"),
    pytest.param(check_ingress_from_outside, _add_rule("ingress", {}, API), "accepts traffic from everywhere",
                 id="api-from-everywhere"),
    pytest.param(check_ingress_from_outside, _add_rule("ingress", {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
                 "accept traffic from outside", id="all-from-internet"),
    pytest.param(check_egress, _add_rule("egress", {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
                 "may reach 0.0.0.0/0", id="egress-internet"),
    pytest.param(check_egress, _add_rule("egress", {}), "egress to everywhere", id="egress-everywhere"),
    pytest.param(check_egress, _add_rule("egress", {"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "storelens-db"}}, "podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "postgres"}}}], "ports": [{"protocol": "TCP", "port": 5432}]}, DETECT),
                 "['detect-track'] may reach storelens-db", id="detect-track-to-postgres"),
])
def test_the_policy_checks_catch_violations(check, mutate, expect):
    docs = copy.deepcopy(render(STORE_OVERLAYS[0]))
    assert not list(check(docs))
    mutate(docs)
    assert any(expect in p for p in check(docs)), list(check(docs))


def test_the_shared_databases_accept_only_storelens_pods():
    """k8s/cluster: PostgreSQL and Redis deny by default and admit only StoreLens pods of StoreLens
    namespaces (which every overlay's Namespace is labelled as), each only from the services that use it."""
    docs = render(CLUSTER)
    pols = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert all(p["metadata"]["namespace"] == "storelens-db" for p in pols.values())
    assert pols["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    for name, (db, port) in {"postgres-from-storelens": ("postgres", 5432), "redis-from-storelens": ("redis", 6379)}.items():
        spec = pols[name]["spec"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": db}}
        (rule,) = spec["ingress"]
        assert _ports(rule) == {("TCP", port)}
        (peer,) = rule["from"]
        assert peer["namespaceSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "storelens"}}
        key = next(k for k in EGRESS_PEERS if k[0] == "storelens-db" and dict(k[1])["app.kubernetes.io/name"] == db)
        users = {c for c in SERVICES + CHAIN_SERVICES
                 if _selector_matches(peer["podSelector"], {"app.kubernetes.io/part-of": "storelens",
                                                            "app.kubernetes.io/component": c})}
        assert users == EGRESS_PEERS[key], f"{name} admits {sorted(users)}"
    for overlay in OVERLAYS:
        (ns,) = of_kind(render(overlay), "Namespace")
        assert ns["metadata"]["labels"].get("app.kubernetes.io/part-of") == "storelens", \
            f"{overlay.name}: its namespace would not be admitted to the databases"


# ---------------------------------------------------------------------------------------------
# Ingress (TLS) and the api's secrets
# ---------------------------------------------------------------------------------------------

BASE_HOST = "storelens.example.invalid"


@pytest.mark.parametrize("target", [t for t in TARGETS if "api" in expected_services(t)], ids=_id)
def test_the_api_is_exposed_over_tls_only(target):
    docs = render(target)
    (ing,) = of_kind(docs, "Ingress")
    spec = ing["spec"]
    hosts = [r["host"] for r in spec["rules"]]
    assert [h for t in spec["tls"] for h in t["hosts"]] == hosts, "every host is served with the TLS certificate"
    assert [t["secretName"] for t in spec["tls"]] == ["storelens-api-tls"]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    (path,) = spec["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "storelens-api", "port": {"name": "http"}}
    if target != BASE:
        assert hosts != [BASE_HOST], f"{_id(target)} keeps the base's placeholder host"
        assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", h) for h in hosts), hosts


@pytest.mark.parametrize("target", [t for t in STACKS if "api" in expected_services(t)], ids=_id)
def test_the_api_reads_its_sign_in_secrets_under_the_names_the_code_reads(target, monkeypatch):
    docs = render(target)
    (api,) = [d for d in deployments(docs) if component(d) == "api"]
    (c,) = pod_spec(api)["containers"]
    got = {e["valueFrom"]["secretKeyRef"]["key"]: e["name"] for e in c["env"]
           if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "storelens-auth"}
    with monkeypatch.context() as mp:
        cfg = _load_site(mp, docs, site_yaml(docs), container_env(docs, c))
    assert got == {"jwt-secret": cfg.auth.jwt_secret_env, "admin-username": cfg.auth.admin_username_env,
                   "admin-password": cfg.auth.admin_password_env}
    assert {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"]) for e in c["env"]
            if e["name"] == cfg.auth.metrics_token_env} == {METRICS_TOKEN}
    if target != BASE:
        assert cfg.auth.cookie_secure, "behind the TLS Ingress the session cookie must be Secure"
    for sm in of_kind(docs, "ServiceMonitor"):  # Prometheus sends the token the api compares with
        (ep,) = sm["spec"]["endpoints"]
        assert ep["authorization"] == {"type": "Bearer", "credentials": dict(zip(("name", "key"), METRICS_TOKEN))}
        assert ep["path"] == "/metrics" and ep["port"] == "http"


PLACEHOLDER = re.compile(r"^(REPLACE[-_A-Za-z]*|CHANGE[-_A-Za-z]*|<[^>]*>|)$")


def test_no_secret_value_is_committed():
    """No Secret in k8s/ carries a value other than a placeholder (Secrets are created per store with kubectl)."""
    found = []
    for path in K8S_DIR.rglob("*.y*ml"):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)):
            if doc.get("kind") != "Secret":
                continue
            found.append(path)
            assert not doc.get("data"), f"{path}: base64 data in a committed Secret"
            for key, value in doc.get("stringData", {}).items():
                assert PLACEHOLDER.match(str(value)), f"{path}: {key} holds a value, not a placeholder"
    assert all("example" in p.name for p in found), found


# ---------------------------------------------------------------------------------------------
# KEDA: autoscaling on consumer lag, as the services really consume
# ---------------------------------------------------------------------------------------------


#: kafka.sasl_mechanism -> the KEDA Kafka scaler's ``sasl`` value.
KEDA_SASL = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}


def _stage_inputs() -> dict[str, str]:
    """component -> the topic its consumer group reads (from the stage classes the services run)."""
    from storelens.stages.core import DetectTrackStage
    from storelens.stages.faces import AttributesStage

    return {s.name: next(iter(s.inputs)) for s in (DetectTrackStage, AttributesStage)}


def useful_replicas(base_topic: str, cfg: SiteConfig) -> int:
    """The consumers of one group on ``base_topic`` that can get messages: its partitions, and for a topic keyed
    by camera id (``TopicSpec.keyed_by_camera``: frames, person-crops) at most one partition per camera."""
    spec = next(t for t in topics.TOPICS if t.name == base_topic)
    partitions = spec.partitions if spec.partitions_fixed else cfg.kafka.partitions
    return min(partitions, len(cfg.cameras)) if spec.keyed_by_camera else partitions


@pytest.mark.parametrize("target", STACKS, ids=_id)
def test_scaled_objects_follow_the_site_config(target, monkeypatch):
    """Each ScaledObject scales a Deployment of the target on the lag of the consumer group and
    topic the service really uses (``<group_prefix>-<stage>`` on ``<topic_prefix><input>``), with
    the useful replicas as the ceiling (:func:`useful_replicas`: min(partitions, cameras) for an input
    keyed by camera id, frames and person-crops), and signs in to Kafka like the services do."""
    docs = render(target)
    deps = {d["metadata"]["name"]: d for d in deployments(docs)}
    auths = {a["metadata"]["name"]: a for a in of_kind(docs, "TriggerAuthentication")}
    inputs = _stage_inputs()
    scaled = of_kind(docs, "ScaledObject")
    if target.name == "store-berlin-01":
        assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {"storelens-detect-track"}
    if target.name.endswith("-edge"):
        # Its store has one camera: one replica gets every frame, so KEDA would have nothing to scale.
        (c,) = pod_spec(deps["storelens-detect-track"])["containers"]
        with monkeypatch.context() as mp:
            assert len(_load_site(mp, docs, site_yaml(docs), container_env(docs, c)).cameras) == 1
        assert not scaled, "one camera: a detect-track ScaledObject would have a ceiling of 1"
        assert deps["storelens-detect-track"]["spec"]["replicas"] == 1
    if target.name.endswith("-cloud"):
        # The same store: one camera, so one attributes replica gets every crop (person-crops is keyed by camera).
        assert not scaled, "one camera: an attributes ScaledObject would have a ceiling of 1"
        assert deps["storelens-attributes"]["spec"]["replicas"] == 1
    for so in scaled:
        ref = so["spec"]["scaleTargetRef"]
        dep = deps[ref["name"]]
        comp = component(dep)
        assert ref.get("kind", "Deployment") == "Deployment" and ref["envSourceContainerName"] == comp
        assert "replicas" not in dep["spec"], f"{ref['name']}: KEDA owns the replicas; a fixed count fights it"
        (c,) = pod_spec(dep)["containers"]
        env = container_env(docs, c)
        with monkeypatch.context() as mp:
            cfg = _load_site(mp, docs, site_yaml(docs), env)
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        if target != BASE:
            assert meta["consumerGroup"] == f"{cfg.kafka.group_prefix}-{comp}", so["metadata"]["name"]
            assert meta["topic"] == topics.topic_name(inputs[comp], cfg.kafka.topic_prefix)
            # frames and person-crops are keyed by camera id: at most one partition per camera ever gets data,
            # and every replica beyond that holds idle cores and pauses the others at each step.
            ceiling = useful_replicas(inputs[comp], cfg)
            assert ceiling > 1, "a ceiling of 1 scales nothing: drop the ScaledObject"
            assert so["spec"]["maxReplicaCount"] == ceiling, "the ceiling is the replicas that can get input"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        assert env[meta["bootstrapServersFromEnv"]] == cfg.kafka.bootstrap_servers
        assert meta["sasl"] == KEDA_SASL[cfg.kafka.sasl_mechanism]
        assert meta["tls"] == ("enable" if "SSL" in cfg.kafka.security_protocol else "disable")
        auth = auths[trigger["authenticationRef"]["name"]]
        assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == \
            {("username", "storelens-kafka", "username"), ("password", "storelens-kafka", "password")}
        assert KAFKA <= secret_refs(c), "KEDA reads the lag with the same Kafka user as the service"


def _custom(kind: str) -> dict:
    """The ``kind`` object of the first store overlay that renders one."""
    (doc,) = next(found for t in STORE_OVERLAYS
                  if (found := [copy.deepcopy(d) for d in render(t) if d["kind"] == kind]))
    return doc


@pytest.mark.parametrize(("kind", "mutate"), [
    pytest.param("TriggerAuthentication", lambda d: d["spec"]["secretTargetRef"][0].pop("key"), id="auth-no-key"),
    pytest.param("TriggerAuthentication", lambda d: d["spec"].update(secretTargetRefs=[]), id="auth-typo"),
    pytest.param("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(bearerToken="x"), id="monitor-typo"),
    pytest.param("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="30 s"), id="monitor-duration"),
])
def test_the_other_crd_schemas_are_strict(kind, mutate):
    doc = _custom(kind)
    validate(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def _scaled_object() -> dict:
    (so,) = [copy.deepcopy(d) for d in render(STORE_OVERLAYS[0]) if d["kind"] == "ScaledObject"]
    return so


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda so: so["spec"].update(maxReplicas=3), id="unknown-spec-field"),
    pytest.param(lambda so: so["spec"]["triggers"][0]["metadata"].update(lagThreshold=150), id="number-not-string"),
    pytest.param(lambda so: so["spec"]["triggers"][0]["metadata"].update(consumergroup="x"), id="kafka-metadata-typo"),
    pytest.param(lambda so: so["spec"]["triggers"][0]["metadata"].pop("consumerGroup"), id="no-consumer-group"),
    pytest.param(lambda so: so["spec"]["triggers"][0]["metadata"].update(sasl="scram-sha-512"), id="bad-sasl"),
    pytest.param(lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(
        stabilizationWindow=60), id="hpa-behaviour-typo"),
    pytest.param(lambda so: so["metadata"].update(lables={}), id="metadata-typo"),
])
def test_the_crd_schemas_are_strict(mutate):
    so = _scaled_object()
    validate(so)
    mutate(so)
    with pytest.raises(jsonschema.ValidationError):
        validate(so)


# ---------------------------------------------------------------------------------------------
# Edge/cloud split and the chain level
# ---------------------------------------------------------------------------------------------


def test_a_split_store_runs_each_service_once_on_one_site_config():
    """The edge and cloud halves of a store together run every service exactly once, with the same
    namespace, store and site.yaml; the edge serves nothing and reaches no database."""
    halves = {}
    for overlay in STORE_OVERLAYS:
        if overlay.name.endswith(("-edge", "-cloud")):
            halves.setdefault(store_of(overlay), {})[overlay.name.rsplit("-", 1)[1]] = render(overlay)
    assert halves, "no split store example (overlays/<store>-edge and <store>-cloud)"
    for store, parts in halves.items():
        assert set(parts) == {"edge", "cloud"}, f"{store} has only {set(parts)}"
        edge, cloud = parts["edge"], parts["cloud"]
        assert sorted(component(d) for d in deployments(edge) + deployments(cloud)) == sorted(SERVICES)
        assert site_yaml(edge) == site_yaml(cloud)
        assert of_kind(edge, "Namespace") == of_kind(cloud, "Namespace")
        assert not of_kind(edge, "Ingress") and not [s for s in of_kind(edge, "Service") if s["spec"].get("clusterIP") != "None"]
        env = {side: configmap_with_prefix(docs, "storelens-env")["data"] for side, docs in parts.items()}
        assert env["edge"]["STORELENS_KAFKA_REPLICATION_FACTOR"] == "1", "the store's own broker is a single node"
        assert int(env["cloud"]["STORELENS_KAFKA_REPLICATION_FACTOR"]) >= 3


def _chain(monkeypatch: pytest.MonkeyPatch, comp: str) -> tuple[list[dict], dict, SiteConfig, dict[str, str]]:
    """The chain overlay's documents, its Deployment ``comp``, the chain's site configuration as that
    container loads it, and the container's env (Secrets as :func:`dummy_secret` values)."""
    docs = render(CHAIN)
    (dep,) = [d for d in deployments(docs) if component(d) == comp]
    (c,) = pod_spec(dep)["containers"]
    env = container_env(docs, c)
    with monkeypatch.context() as mp:
        cfg = _load_site(mp, docs, site_yaml(docs), env)
    return docs, dep, cfg, env


#: What the chain rolls up (each store's KPI hours) and what must never leave a store for it (frames, people).
ROLLED_UP = (topics.STORE_KPIS,)
NEVER = (topics.FRAMES, topics.TRACKS, topics.PERSON_CROPS, topics.FACE_OBSERVATIONS, topics.TRACK_ATTRIBUTES,
         topics.CUSTOMER_MATCHES, topics.TRACK_SUMMARIES, topics.CAMERA_SNAPSHOTS, topics.DETECT_TRACK_STATE,
         topics.STAFF_TRACKS)


def test_the_chain_reads_every_stores_kpi_hours_and_nothing_personal(monkeypatch):
    """chain-rollup subscribes (``chain.topic_pattern`` of the chain's site.yaml, as the service expands
    it) to every store overlay's ``<topic_prefix>store-kpis`` and to nothing else of a store, nor to the
    chain's own topics; every store publishes its hours (``rollup.enabled``) with a region."""
    docs, rollup, cfg, env = _chain(monkeypatch, "chain-rollup")
    assert cfg.chain is not None and cfg.cameras == [], "the chain's site.yaml is a roll-up (`chain:`, no cameras)"
    assert cfg.chain.topic_pattern == env["STORELENS_CHAIN_TOPIC_PATTERN"], "the pattern is expanded from the env"
    pattern = re.compile(cfg.chain.topic_pattern)  # aiokafka matches subscribe(pattern=...) with re.match
    for overlay in STORE_OVERLAYS:
        _, store, _ = _store(render(overlay), monkeypatch)
        assert store.rollup.enabled, f"{overlay.name}: rollup.enabled is off, the chain gets none of its hours"
        assert store.store.region, f"{overlay.name}: no store.region (GET /v1/chain/kpis?group_by=region)"
        prefix = store.kafka.topic_prefix
        for base in ROLLED_UP:
            assert pattern.match(topics.topic_name(base, prefix)), f"{overlay.name}: {base} not rolled up"
        for base in NEVER:
            assert not pattern.match(topics.topic_name(base, prefix)), f"{overlay.name}: {base} would be"
        others = [t.name for t in topics.TOPICS if t.name not in ROLLED_UP
                  and pattern.match(topics.topic_name(t.name, prefix))]
        assert not others, f"{overlay.name}: the chain would also read {others}"
    own = [t.name for t in topics.TOPICS if pattern.match(topics.topic_name(t.name, cfg.kafka.topic_prefix))]
    assert not own, f"the chain would read its own topics {own} (kafka.topic_prefix {cfg.kafka.topic_prefix!r})"
    (ns,) = of_kind(docs, "Namespace")
    assert ns["metadata"]["name"] == "storelens-chain"
    assert rollup["spec"].get("replicas", 1) >= 1, "chain-rollup is not running"


def test_the_chain_site_config_loads_for_each_chain_deployment(monkeypatch):
    """The chain's site.yaml loads as each chain Deployment starts it: chain-rollup with the chain's own
    consumer group (the one its KafkaUser ACL in k8s/README.md names) and both credentials; the api with
    the database and its sign-in secrets only (no Kafka, no Redis); the pattern has no default."""
    from storelens.stages.rollup import ChainRollupStage

    _, _, cfg, env = _chain(monkeypatch, "chain-rollup")
    assert cfg.store.id == "chain" and cfg.chain is not None
    assert cfg.storage.backend == "postgres"
    assert cfg.storage.dsn.startswith(f"postgresql://{dummy_secret('storelens-db', 'username')}:"
                                      f"{dummy_secret('storelens-db', 'password')}@{env['STORELENS_DB_HOST']}:"
                                      f"{env['STORELENS_DB_PORT']}/{env['STORELENS_DB_NAME']}?")
    store_dbs = {_store(render(o), monkeypatch)[2]["STORELENS_DB_NAME"] for o in STORE_OVERLAYS}
    assert env["STORELENS_DB_NAME"] not in store_dbs, "the chain has its own database"
    assert cfg.kafka.bootstrap_servers == env["STORELENS_KAFKA_BOOTSTRAP"]
    assert cfg.kafka.sasl_username == dummy_secret("storelens-kafka", "username")
    assert cfg.kafka.sasl_password == dummy_secret("storelens-kafka", "password")
    group = f"{cfg.kafka.group_prefix}-{ChainRollupStage.name}"  # KafkaConsumer: f"{group_prefix}-{group}"
    assert group == "storelens-chain-chain-rollup"
    assert f"`{group}`" in (K8S_DIR / "README.md").read_text(), "k8s/README.md's KafkaUser ACL names another group"
    assert not cfg.kafka.topic_prefix.startswith("store-"), "the chain's own topics must not look like a store's"

    docs, api, cfg, env = _chain(monkeypatch, "api")
    (c,) = pod_spec(api)["containers"]
    assert api["spec"].get("replicas", 1) >= 1
    assert secret_refs(c) == DB | AUTH, "the chain's api reads the database and its sign-in secrets, nothing else"
    got = {e["valueFrom"]["secretKeyRef"]["key"]: e["name"] for e in c["env"]
           if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "storelens-auth"}
    assert got == {"jwt-secret": cfg.auth.jwt_secret_env, "admin-username": cfg.auth.admin_username_env,
                   "admin-password": cfg.auth.admin_password_env}
    assert {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"]) for e in c["env"]
            if e["name"] == cfg.auth.metrics_token_env} == {METRICS_TOKEN}
    assert cfg.auth.cookie_secure, "behind the TLS Ingress the session cookie must be Secure"
    assert dummy_secret("storelens-db", "password") in cfg.storage.dsn
    assert not cfg.kafka.sasl_username and cfg.live.redis_url is None, "the chain's api needs no Kafka and no Redis"
    assert env["STORELENS_API_HOST"] == "0.0.0.0" and int(env["STORELENS_API_PORT"]) == cfg.api.port

    env.pop("STORELENS_CHAIN_TOPIC_PATTERN")
    with pytest.raises(ConfigError, match="STORELENS_CHAIN_TOPIC_PATTERN"):
        _load_site(monkeypatch, docs, site_yaml(docs), env)


def _reach(docs: list[dict], comp: str, direction: str) -> set[tuple]:
    """(namespace, pod labels, ports) of every peer the policies let ``comp``'s pods reach (egress) or
    be reached from (ingress)."""
    deps = deployments(docs)
    key = "to" if direction == "egress" else "from"
    return {(*_peer(peer), _ports(rule)) for pol in of_kind(docs, "NetworkPolicy") if comp in policy_pods(pol, deps)
            for rule in pol["spec"].get(direction, []) for peer in rule.get(key, [])}


def test_the_chain_network_policies():
    """The chain's api is reached from the ingress controller only and reaches DNS and PostgreSQL only;
    chain-rollup is reached by nothing and reaches DNS, Kafka and PostgreSQL."""
    docs = render(CHAIN)
    dns, kafka, postgres = (next(k for k in EGRESS_PEERS if k[0] == ns and name in dict(k[1]).values())
                            for ns, name in (("kube-system", "kube-dns"), ("kafka", "Kafka"),
                                             ("storelens-db", "postgres")))
    assert _reach(docs, "api", "ingress") == {("ingress-nginx", (("app.kubernetes.io/name", "ingress-nginx"),),
                                               frozenset({("TCP", "http")}))}
    assert _reach(docs, "api", "egress") == {dns, postgres}
    assert _reach(docs, "chain-rollup", "ingress") == set()
    assert _reach(docs, "chain-rollup", "egress") == {dns, kafka, postgres}
