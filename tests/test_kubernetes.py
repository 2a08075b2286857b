"""Offline checks of deploy/kubernetes: manifests render, pass the schemas, and agree."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from processor.app.config import Config, load_config
from processor.config.scalars import split_endpoint
from processor.identity.config import REDIS_PASSWORD_ENV_VAR, REDIS_URL_ENV_VAR
from processor.identity.intake.config import TOKEN_ENV_VAR

ROOT = Path(__file__).parent.parent
DEPLOY_DIR = ROOT / "deploy"
K8S_DIR = DEPLOY_DIR / "kubernetes"
README = K8S_DIR / "README.md"
POLICY_FILE = K8S_DIR / "agentgateway-policy.yaml"
GATEWAY_STAND_IN = K8S_DIR / "sidecar" / "base" / "agentgateway-deployment.yaml"
SHAPES = ("sidecar", "standalone")  # the two ways the enricher runs
KUSTOMIZATIONS = (*SHAPES, "redis")
SCHEMA_VERSION = "1.30"  # the oldest Kubernetes minor the manifests must apply to

ENRICHER = "user-enricher"  # container, Deployment, Service and NetworkPolicy name
GATEWAY = "agentgateway"  # the stand-in AgentGateway Deployment and container
ENRICHER_DEPLOYMENT = {"sidecar": GATEWAY, "standalone": ENRICHER}
REDIS = "user-enricher-redis"
API_PORT = 8089
TELEMETRY_PORT = 9464
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
ENRICHER_UID = 10001  # the Dockerfile's USER
CONFIG_DIR = "/etc/user-enricher"
CONFIG_KEY = "config.yaml"  # the image's CMD reads CONFIG_DIR/CONFIG_KEY
SPOOL_DIR = "/var/lib/user-enricher/spool"
OPEN_WEBUI_PODS = {"app.kubernetes.io/name": "open-webui"}
GATEWAY_CLASS = "agentgateway"  # the GatewayClass AgentGateway's controller installs
CRD_API_GROUPS = ("agentgateway.dev/",)  # not in the Kubernetes schemas: checked by hand
FAKE_SECRET = "fake-secret-value-for-tests"  # stands in for every secretKeyRef (16+ chars)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
IN_CLUSTER_ADDRESS = re.compile(
    r"(?<![\w.-])(user-enricher[a-z0-9-]*)(?:\.[a-z0-9-]+\.svc\.cluster\.local)?:([0-9]+)(?![\w.])"
)

# A file name mentioned in deploy/'s docs and comments: an optional ./ or ../ start,
# directories, a name with one of these extensions. Not a URL, an absolute (container)
# path, a glob, or part of a longer word.
MENTIONED_FILE = re.compile(
    r"(?<![\w./:$@{}*-])((?:\.{1,2}/)*(?:[\w-][\w.-]*/)*[\w-][\w.-]*\.(?:ya?ml|json|py))(?![\w/-])"
)
COMMENT = re.compile(r"(?:^|\s)#(?P<text>.*)$", re.MULTILINE)
DOC_SUFFIXES = {".md"}  # read whole; in the others only comments are prose
COMMENTED_SUFFIXES = {".yaml", ".yml", ".py"}

Obj = dict[str, Any]


# --------------------------------------------------------------------------- loading


def load_docs(path: Path) -> list[Obj]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def kustomization(name: str) -> Obj:
    """The parsed kustomization.yaml of one directory under deploy/kubernetes."""
    docs = load_docs(K8S_DIR / name / "kustomization.yaml")
    assert len(docs) == 1
    return docs[0]


def kustomize_inputs() -> set[Path]:
    """Files the kustomizations use as patches or generator sources (not whole objects)."""
    inputs: set[Path] = set()
    for name in KUSTOMIZATIONS:
        spec = kustomization(name)
        inputs.update(K8S_DIR / name / patch["path"] for patch in spec.get("patches", []))
        for generator in spec.get("configMapGenerator", []):
            inputs.update(K8S_DIR / name / file for file in generator.get("files", []))
    return inputs


def manifest_files() -> list[Path]:
    """YAML files under deploy/kubernetes that hold whole Kubernetes objects."""
    skip = kustomize_inputs()
    return [
        path
        for path in sorted(K8S_DIR.rglob("*.yaml"))
        if path.name != "kustomization.yaml" and path not in skip
    ]


@cache
def _kustomize(kubectl: str, name: str) -> tuple[Obj, ...]:
    """Objects rendered by ``kubectl kustomize`` (once per directory)."""
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {name} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def render(name: str) -> tuple[Obj, ...]:
    """The rendered objects of a kustomization; skips the test without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    return _kustomize(kubectl, name)


# --------------------------------------------------------------------------- object helpers


def is_crd_object(obj: Mapping[str, Any]) -> bool:
    """Whether an object belongs to a CRD the bundled schemas do not know."""
    return str(obj["apiVersion"]).startswith(CRD_API_GROUPS)


def one(objs: Sequence[Obj], kind: str, name: str) -> Obj:
    """The single object of ``kind`` named ``name`` (generated names may add a hash)."""
    found = [
        obj
        for obj in objs
        if obj["kind"] == kind
        and re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", obj["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(deployment: Mapping[str, Any]) -> Obj:
    """The pod spec of a Deployment's template."""
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a Deployment's pods."""
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def container(deployment: Mapping[str, Any], name: str) -> Obj:
    """One container of a Deployment, by name."""
    matches: list[Obj] = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name}"
    return matches[0]


def all_containers(objs: Sequence[Obj]) -> Iterator[Obj]:
    """Every container and init container of every Deployment."""
    for obj in objs:
        if obj["kind"] == "Deployment":
            spec = pod_spec(obj)
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a ``matchLabels``-only label selector matches ``labels``."""
    assert "matchExpressions" not in selector, "checks here understand matchLabels only"
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(key) == value for key, value in match.items())


def container_port(box: Mapping[str, Any], port: int | str) -> int:
    """Resolve a port number or a container port name to a number."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in box.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {box['name']} has no port named {port!r}"
    return int(numbers[0])


def effective_security(deployment: Mapping[str, Any], name: str) -> Obj:
    """A container's security settings, pod-level values filled in where it sets none."""
    pod = pod_spec(deployment).get("securityContext", {})
    inherited = ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")
    merged = {key: pod[key] for key in inherited if key in pod}
    merged.update(container(deployment, name).get("securityContext", {}))
    return merged


def volume_for(deployment: Mapping[str, Any], box: Mapping[str, Any], path: str) -> Obj:
    """The pod volume mounted at ``path`` in a container."""
    names = [m["name"] for m in box.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(names) == 1, f"expected one mount at {path} in {box['name']}"
    volumes: list[Obj] = [
        v for v in pod_spec(deployment).get("volumes", []) if v["name"] == names[0]
    ]
    assert len(volumes) == 1, f"expected one volume {names[0]}"
    return volumes[0]


def container_env(box: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment: literal values, and FAKE_SECRET for each Secret reference."""
    env: dict[str, str] = {}
    for item in box.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = FAKE_SECRET
    return env


def secret_ref(box: Mapping[str, Any], variable: str) -> tuple[str, str]:
    """``(Secret name, key)`` an environment variable of a container comes from."""
    for item in box.get("env", []):
        if item["name"] == variable:
            ref = item["valueFrom"]["secretKeyRef"]
            return str(ref["name"]), str(ref["key"])
    raise AssertionError(f"{box['name']} has no {variable}")


def secret_refs(objs: Sequence[Obj]) -> set[tuple[str, str]]:
    """Every ``(Secret name, key)`` the containers read."""
    refs = set()
    for box in all_containers(objs):
        for item in box.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                refs.add((str(ref["name"]), str(ref["key"])))
        for source in box.get("envFrom", []):
            assert "secretRef" not in source, "name each Secret key (envFrom hides them)"
    return refs


def enricher_config(objs: Sequence[Obj], shape: str, tmp_path: Path) -> Config:
    """The config the enricher of ``shape`` starts with: its ConfigMap, with its environment."""
    deployment = one(objs, "Deployment", ENRICHER_DEPLOYMENT[shape])
    box = container(deployment, ENRICHER)
    volume = volume_for(deployment, box, CONFIG_DIR)
    config_map = one(objs, "ConfigMap", volume["configMap"]["name"])
    path = tmp_path / CONFIG_KEY
    path.write_text(config_map["data"][CONFIG_KEY], encoding="utf-8")
    return load_config(path, env=container_env(box))


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``None`` when it has none); a digest counts as a tag."""
    if "@" in image:
        return image.partition("@")[2]
    return image.rpartition("/")[2].partition(":")[2] or None


def policy() -> Obj:
    """The AgentgatewayPolicy of agentgateway-policy.yaml."""
    docs = load_docs(POLICY_FILE)
    assert len(docs) == 1
    return docs[0]


def controller_gateway_pod_labels(gateway: str) -> dict[str, str]:
    """The labels AgentGateway's controller gives the proxy pods it deploys for a Gateway.

    From its proxy chart (agentgateway/agentgateway, controller/pkg/helm/agentgateway/
    templates/_helpers.tpl: the selector labels plus the GatewayClass label): the
    Gateway's name, not "agentgateway", is also app.kubernetes.io/name.
    """
    return {
        "app.kubernetes.io/name": gateway,
        "app.kubernetes.io/instance": gateway,
        "gateway.networking.k8s.io/gateway-name": gateway,
        "gateway.networking.k8s.io/gateway-class-name": GATEWAY_CLASS,
    }


def policy_gateway() -> str:
    """The name of the Gateway that the AgentgatewayPolicy targets."""
    [target] = policy()["spec"]["targetRefs"]
    return str(target["name"])


def ingress_peers(netpol: Mapping[str, Any], box: Mapping[str, Any], port: int) -> list[Obj]:
    """The pod selectors of every ingress rule of a NetworkPolicy that admits ``port``."""
    return [
        peer["podSelector"]
        for rule in netpol["spec"]["ingress"]
        if port in {container_port(box, p["port"]) for p in rule["ports"]}
        for peer in rule["from"]
    ]


def mentioned_files(path: Path) -> set[str]:
    """The file names a README (whole text) or a YAML/Python file (its comments) mentions."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in COMMENTED_SUFFIXES:
        text = "\n".join(match.group("text") for match in COMMENT.finditer(text))
    return set(MENTIONED_FILE.findall(text))


def mention_exists(path: Path, name: str, deploy_files: Sequence[Path]) -> bool:
    """Whether a mentioned file exists: a ./ or ../ name relative to the mentioning file;
    any other relative to it, to the repository root, or as the tail of a path in deploy/
    (prose says `config.yaml` or `base/agentgateway-deployment.yaml` for short)."""
    if name.startswith(("./", "../")):
        return (path.parent / name).is_file()
    if (path.parent / name).is_file() or (ROOT / name).is_file():
        return True
    return any(file.as_posix().endswith("/" + name) for file in deploy_files)


def deploy_texts() -> list[Path]:
    """The READMEs, YAML and Python files under deploy/."""
    suffixes = DOC_SUFFIXES | COMMENTED_SUFFIXES
    return [path for path in sorted(DEPLOY_DIR.rglob("*")) if path.suffix in suffixes]


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders_schema_valid_objects(name: str) -> None:
    """Each kustomization renders offline, and every object passes the strict 1.30 schema."""
    objs = render(name)
    assert objs
    for obj in objs:
        if not is_crd_object(obj):
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: str(path.relative_to(K8S_DIR)))
def test_plain_manifest_is_schema_valid(path: Path) -> None:
    """Every committed manifest passes the strict 1.30 schema (CRD objects are checked below)."""
    docs = load_docs(path)
    assert docs
    for obj in docs:
        if not is_crd_object(obj):
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


def test_agentgateway_policy_has_the_tracing_shape() -> None:
    """The AgentgatewayPolicy targets a Gateway and sends every request's span over gRPC."""
    obj = policy()
    assert obj["apiVersion"] == "agentgateway.dev/v1alpha1"
    assert obj["kind"] == "AgentgatewayPolicy"
    assert set(obj["spec"]) == {"targetRefs", "frontend"}
    [target] = obj["spec"]["targetRefs"]
    assert target["group"] == "gateway.networking.k8s.io"
    assert target["kind"] == "Gateway"
    assert target["name"]
    tracing = obj["spec"]["frontend"]["tracing"]
    assert set(tracing) == {"backendRef", "protocol", "randomSampling"}
    assert tracing["protocol"] == "GRPC"
    # A CEL expression, so a string; a YAML boolean would be rejected by the CRD.
    assert tracing["randomSampling"] == "true"


def test_agentgateway_policy_warns_before_forgeable_attributes() -> None:
    """The header-copying attributes stay commented out, next to the forgery warning."""
    text = POLICY_FILE.read_text(encoding="utf-8")
    assert "attributes" not in policy()["spec"]["frontend"]["tracing"]
    assert "# attributes:" in text
    assert "x-openwebui-user-email" in text
    assert "WARNING" in text
    assert "name any user" in text


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize("path", deploy_texts(), ids=lambda path: str(path.relative_to(ROOT)))
def test_files_named_in_deploy_docs_and_comments_exist(path: Path) -> None:
    """Every .yaml/.yml/.json/.py file a README or comment under deploy/ names exists."""
    deploy_files = [file for file in DEPLOY_DIR.rglob("*") if file.is_file()]
    missing = sorted(
        name for name in mentioned_files(path) if not mention_exists(path, name, deploy_files)
    )
    assert missing == []


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("# from the environment (user-enricher-patch.yaml):", {"user-enricher-patch.yaml"}),
        (
            "see [`x`](../openwebui/user_enricher_filter.py).",
            {"../openwebui/user_enricher_filter.py"},
        ),
        (
            "kubectl apply -f deploy/kubernetes/agentgateway-policy.yaml",
            {"deploy/kubernetes/agentgateway-policy.yaml"},
        ),
        ("--config.file=/etc/prometheus/prometheus.yml", set()),
        ("$schema=https://example.com/schema/config.json", set()),
        ("`*/config.yaml` and alerts.yml.", {"alerts.yml"}),
    ],
)
def test_mentioned_file_pattern(text: str, names: set[str], tmp_path: Path) -> None:
    """The file-name scan finds relative names and skips URLs, absolute paths and globs."""
    path = tmp_path / "notes.md"
    path.write_text(text, encoding="utf-8")
    assert mentioned_files(path) == names


# --------------------------------------------------------------------------- sidecar


def test_sidecar_appends_one_container_and_keeps_the_gateway() -> None:
    """The patch adds exactly one container, user-enricher, after AgentGateway's unchanged one."""
    base = one(load_docs(GATEWAY_STAND_IN), "Deployment", GATEWAY)
    rendered = one(render("sidecar"), "Deployment", GATEWAY)
    base_names = [c["name"] for c in pod_spec(base)["containers"]]
    assert [c["name"] for c in pod_spec(rendered)["containers"]] == [*base_names, ENRICHER]
    assert container(rendered, GATEWAY) == container(base, GATEWAY)
    for volume in pod_spec(base)["volumes"]:
        assert volume in pod_spec(rendered)["volumes"]
    assert pod_spec(rendered).get("securityContext") == pod_spec(base).get("securityContext")
    assert pod_labels(rendered) == pod_labels(base)


def test_sidecar_gateway_traces_to_the_enricher_on_localhost(tmp_path: Path) -> None:
    """AgentGateway exports to localhost:4317, where the sidecar's OTLP listens on loopback only."""
    objs = render("sidecar")
    gateway_config = yaml.safe_load(
        one(objs, "ConfigMap", "agentgateway-config")["data"][CONFIG_KEY]
    )
    tracing = gateway_config["frontendPolicies"]["tracing"]
    assert tracing["host"] == f"localhost:{OTLP_GRPC_PORT}"
    assert tracing["randomSampling"] is True
    receiver = enricher_config(objs, "sidecar", tmp_path).receiver
    host, port = split_endpoint(receiver.grpc_endpoint)
    assert host in LOOPBACK
    assert port == OTLP_GRPC_PORT
    if receiver.http_endpoint:
        assert split_endpoint(receiver.http_endpoint)[0] in LOOPBACK


def test_sidecar_service_exposes_only_the_api() -> None:
    """The sidecar's Service reaches the AgentGateway pods' enricher API, and not OTLP."""
    objs = render("sidecar")
    service = one(objs, "Service", ENRICHER)
    deployment = one(objs, "Deployment", GATEWAY)
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    [port] = service["spec"]["ports"]
    assert port["port"] == API_PORT
    assert container_port(container(deployment, ENRICHER), port["targetPort"]) == API_PORT


def test_sidecar_networkpolicy_selects_the_gateway_pods() -> None:
    """The sidecar's NetworkPolicy selects the pods of the patched AgentGateway Deployment
    (the pods its Service reaches), for ingress only."""
    objs = render("sidecar")
    deployment = one(objs, "Deployment", GATEWAY)
    netpol = one(objs, "NetworkPolicy", ENRICHER)["spec"]
    assert selects(netpol["podSelector"], pod_labels(deployment))
    assert (
        netpol["podSelector"]["matchLabels"] == one(objs, "Service", ENRICHER)["spec"]["selector"]
    )
    assert netpol["policyTypes"] == ["Ingress"]


def test_sidecar_networkpolicy_admits_only_open_webui_to_the_api() -> None:
    """Port 8089 is reachable from Open WebUI's pods only, in exactly one rule."""
    objs = render("sidecar")
    box = container(one(objs, "Deployment", GATEWAY), ENRICHER)
    rules = one(objs, "NetworkPolicy", ENRICHER)["spec"]["ingress"]
    api_rules = [
        rule
        for rule in rules
        if API_PORT in {container_port(box, p["port"]) for p in rule["ports"]}
    ]
    assert [rule["from"] for rule in api_rules] == [
        [{"podSelector": {"matchLabels": OPEN_WEBUI_PODS}}]
    ]


def test_sidecar_networkpolicy_keeps_the_gateway_ports_open() -> None:
    """Every port the AgentGateway container declares stays reachable from anywhere: the
    policy selects the whole pod, so a port it left out would stop answering."""
    objs = render("sidecar")
    deployment = one(objs, "Deployment", GATEWAY)
    gateway = container(deployment, GATEWAY)
    enricher_ports = {int(p["containerPort"]) for p in container(deployment, ENRICHER)["ports"]}
    open_to_all: set[int] = set()
    for rule in one(objs, "NetworkPolicy", ENRICHER)["spec"]["ingress"]:
        assert rule.get("ports"), "a rule without `ports` opens every port"
        if not rule.get("from"):
            open_to_all.update(container_port(gateway, p["port"]) for p in rule["ports"])
    declared = {int(p["containerPort"]) for p in gateway["ports"]}
    assert declared
    assert declared <= open_to_all, f"{declared - open_to_all} would be cut off"
    assert not open_to_all & enricher_ports, "an enricher port is open to every source"
    gateway_config = yaml.safe_load(
        one(objs, "ConfigMap", "agentgateway-config")["data"][CONFIG_KEY]
    )
    assert {int(bind["port"]) for bind in gateway_config["binds"]} <= open_to_all


# --------------------------------------------------------------------------- both shapes


@pytest.mark.parametrize("shape", SHAPES)
def test_enricher_runs_locked_down(shape: str) -> None:
    """The enricher runs as uid 10001, non-root, read-only, without privileges or capabilities."""
    deployment = one(render(shape), "Deployment", ENRICHER_DEPLOYMENT[shape])
    security = effective_security(deployment, ENRICHER)
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == ENRICHER_UID
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security


@pytest.mark.parametrize("shape", SHAPES)
def test_probes_use_the_telemetry_port(shape: str, tmp_path: Path) -> None:
    """Startup and liveness probe /healthz, readiness /readyz, on the telemetry listener."""
    objs = render(shape)
    box = container(one(objs, "Deployment", ENRICHER_DEPLOYMENT[shape]), ENRICHER)
    _, api_port = split_endpoint(enricher_config(objs, shape, tmp_path).telemetry.endpoint)
    assert api_port == TELEMETRY_PORT
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        http_get = box[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert container_port(box, http_get["port"]) == api_port, probe
        assert http_get.get("scheme", "HTTP") == "HTTP", probe


@pytest.mark.parametrize("shape", SHAPES)
def test_telemetry_is_open_to_the_monitoring_namespace_only(shape: str) -> None:
    """The NetworkPolicy admits the telemetry port from the monitoring namespace, and
    no rule that admits Open WebUI or anyone else reaches it."""
    policy = one(render(shape), "NetworkPolicy", "user-enricher")
    reaching = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(p.get("port") == TELEMETRY_PORT for p in rule.get("ports", []))
    ]
    assert len(reaching) == 1
    (source,) = reaching[0]["from"]
    assert source == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }


@pytest.mark.parametrize("shape", SHAPES)
def test_mounted_config_passes_the_validator(shape: str, tmp_path: Path) -> None:
    """The generated ConfigMap sits where the image's CMD reads it and passes load_config."""
    objs = render(shape)
    deployment = one(objs, "Deployment", ENRICHER_DEPLOYMENT[shape])
    box = container(deployment, ENRICHER)
    # No command/args: the image's `serve --config /etc/user-enricher/config.yaml` applies.
    assert "command" not in box
    assert "args" not in box
    volume = volume_for(deployment, box, CONFIG_DIR)
    assert "items" not in volume["configMap"]
    config_map = one(objs, "ConfigMap", "user-enricher-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert set(config_map["data"]) == {CONFIG_KEY}
    config = enricher_config(objs, shape, tmp_path)
    assert config.api.enabled
    assert config.api.token is not None
    assert TOKEN_ENV_VAR in container_env(box)


@pytest.mark.parametrize("shape", SHAPES)
def test_writable_paths_are_empty_dirs(shape: str, tmp_path: Path) -> None:
    """/tmp and the spool the config names are emptyDir volumes with a size limit."""
    objs = render(shape)
    deployment = one(objs, "Deployment", ENRICHER_DEPLOYMENT[shape])
    box = container(deployment, ENRICHER)
    assert enricher_config(objs, shape, tmp_path).exporter.queue.directory == SPOOL_DIR
    for path in ("/tmp", SPOOL_DIR):
        volume = volume_for(deployment, box, path)
        assert volume["emptyDir"]["sizeLimit"], path
    config_mount = [m for m in box["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
    assert config_mount[0]["readOnly"] is True


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_containers_have_requests_and_limits(name: str) -> None:
    """Every container requests CPU and memory and has a memory limit."""
    for box in all_containers(render(name)):
        if box["name"] == GATEWAY:
            continue  # the user's own AgentGateway (a stand-in here)
        resources = box["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), box["name"]
        assert "memory" in resources["limits"], box["name"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_secrets_are_referenced_and_documented_not_committed(name: str) -> None:
    """No Secret is committed, and each Secret key a container reads is created in the README."""
    objs = render(name)
    assert not [obj for obj in objs if obj["kind"] == "Secret"]
    readme = README.read_text(encoding="utf-8")
    for secret, key in secret_refs(objs):
        assert f"create secret generic {secret}" in readme, secret
        assert f"--from-literal={key}=" in readme, (secret, key)


def test_no_secret_in_plain_manifests() -> None:
    """No committed manifest holds a Secret object."""
    for path in manifest_files():
        assert not [obj for obj in load_docs(path) if obj["kind"] == "Secret"], path


def test_images_are_pinned() -> None:
    """Every image, rendered or committed, names a tag or digest other than latest."""
    boxes = [box for name in KUSTOMIZATIONS for box in all_containers(render(name))]
    for path in manifest_files():
        boxes.extend(all_containers(load_docs(path)))
    assert boxes
    for box in boxes:
        tag = image_tag(box["image"])
        assert tag, f"{box['image']} has no tag"
        assert tag != "latest", box["image"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_services_select_pods_and_ports(name: str) -> None:
    """Each Service selects the pods of a Deployment in its render and targets declared ports."""
    objs = render(name)
    deployments = [obj for obj in objs if obj["kind"] == "Deployment"]
    for service in (obj for obj in objs if obj["kind"] == "Service"):
        targets = [d for d in deployments if selects(service["spec"]["selector"], pod_labels(d))]
        assert len(targets) == 1, service["metadata"]["name"]
        boxes = pod_spec(targets[0])["containers"]
        for port in service["spec"]["ports"]:
            declared = [
                p
                for box in boxes
                for p in box.get("ports", [])
                if port["targetPort"] in (p["containerPort"], p.get("name"))
            ]
            assert declared, (service["metadata"]["name"], port["name"])


# --------------------------------------------------------------------------- standalone


def test_standalone_runs_two_replicas_under_a_disruption_budget() -> None:
    """Two replicas, and a PodDisruptionBudget over the same pods keeps one serving."""
    objs = render("standalone")
    deployment = one(objs, "Deployment", ENRICHER)
    assert deployment["spec"]["replicas"] == 2
    budget = one(objs, "PodDisruptionBudget", ENRICHER)
    assert selects(budget["spec"]["selector"], pod_labels(deployment))
    assert budget["spec"]["minAvailable"] == 1
    assert pod_spec(deployment)["automountServiceAccountToken"] is False


def test_standalone_listens_where_the_service_sends(tmp_path: Path) -> None:
    """The Service's OTLP and API ports reach the ports the config listens on, on all addresses."""
    objs = render("standalone")
    box = container(one(objs, "Deployment", ENRICHER), ENRICHER)
    ports = {p["port"]: p for p in one(objs, "Service", ENRICHER)["spec"]["ports"]}
    assert set(ports) == {OTLP_GRPC_PORT, OTLP_HTTP_PORT, API_PORT}
    assert ports[OTLP_GRPC_PORT]["appProtocol"] == "grpc"
    config = enricher_config(objs, "standalone", tmp_path)
    endpoints = (config.receiver.grpc_endpoint, config.receiver.http_endpoint, config.api.endpoint)
    for endpoint in endpoints:
        host, port = split_endpoint(endpoint)
        assert host not in LOOPBACK, endpoint
        assert container_port(box, ports[port]["targetPort"]) == port


def test_policy_backend_is_the_standalone_service() -> None:
    """The AgentgatewayPolicy's backendRef names the standalone Service and its gRPC port."""
    backend = policy()["spec"]["frontend"]["tracing"]["backendRef"]
    assert backend.get("kind", "Service") == "Service"
    assert "namespace" not in backend  # same namespace as the Gateway (see the README)
    service = one(render("standalone"), "Service", backend["name"])
    [port] = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]]
    assert port["port"] == OTLP_GRPC_PORT
    assert port["appProtocol"] == "grpc"


def test_documented_addresses_name_standalone_services() -> None:
    """Every user-enricher* host:port in the docs and comments is a standalone Service port."""
    objs = render("standalone")
    services = {
        obj["metadata"]["name"]: {p["port"] for p in obj["spec"]["ports"]}
        for obj in objs
        if obj["kind"] == "Service"
    }
    files = [README, *sorted(K8S_DIR.rglob("*.yaml"))]
    addresses = {
        (path.name, name, int(port))
        for path in files
        for name, port in IN_CLUSTER_ADDRESS.findall(path.read_text(encoding="utf-8"))
    }
    assert len({name for _, name, _ in addresses}) >= 2  # the enricher and its Redis
    for file, name, port in addresses:
        assert port in services.get(name, set()), f"{file}: {name}:{port}"


def test_standalone_shares_sessions_through_redis(tmp_path: Path) -> None:
    """The enricher's store URL names the Redis Service, with the password Redis requires."""
    objs = render("standalone")
    box = container(one(objs, "Deployment", ENRICHER), ENRICHER)
    assert REDIS_URL_ENV_VAR in container_env(box)
    config = enricher_config(objs, "standalone", tmp_path)
    url = urlsplit(config.sessions.store)
    assert url.scheme == "redis"
    service = one(objs, "Service", str(url.hostname))
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert config.sessions.redis_password is not None
    redis_box = container(one(objs, "Deployment", REDIS), "redis")
    assert secret_ref(box, REDIS_PASSWORD_ENV_VAR) == secret_ref(redis_box, "REDIS_PASSWORD")


def test_networkpolicy_admits_only_open_webui_to_the_api() -> None:
    """The enricher's NetworkPolicy selects its pods, and only Open WebUI reaches port 8089."""
    objs = render("standalone")
    deployment = one(objs, "Deployment", ENRICHER)
    box = container(deployment, ENRICHER)
    netpol = one(objs, "NetworkPolicy", ENRICHER)["spec"]
    assert selects(netpol["podSelector"], pod_labels(deployment))
    assert netpol["policyTypes"] == ["Ingress"]
    api_rules = 0
    for rule in netpol["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every source"
        assert rule.get("ports"), "a rule without `ports` opens every port"
        if API_PORT in {container_port(box, p["port"]) for p in rule["ports"]}:
            api_rules += 1
            assert rule["from"] == [{"podSelector": {"matchLabels": OPEN_WEBUI_PODS}}]
    assert api_rules == 1


def test_networkpolicy_lets_gateway_and_open_webui_send_otlp() -> None:
    """The controller-managed AgentGateway pods and Open WebUI's may reach both OTLP ports."""
    objs = render("standalone")
    netpol = one(objs, "NetworkPolicy", ENRICHER)
    box = container(one(objs, "Deployment", ENRICHER), ENRICHER)
    gateway_pod = controller_gateway_pod_labels(policy_gateway())
    for port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT):
        peers = ingress_peers(netpol, box, port)
        assert any(selects(peer, gateway_pod) for peer in peers), port
        assert any(selects(peer, OPEN_WEBUI_PODS) for peer in peers), port


def test_networkpolicy_selects_controller_gateway_pods_by_gateway_name() -> None:
    """The default gateway selector matches the proxy pods of the policy's Gateway only.

    Standalone is the shape for controller-managed gateways (Gateway API), whose pods are
    labelled by Gateway name: a pod of another Gateway, or of another GatewayClass's
    Gateway with the same app name, is not admitted.
    """
    objs = render("standalone")
    netpol = one(objs, "NetworkPolicy", ENRICHER)
    box = container(one(objs, "Deployment", ENRICHER), ENRICHER)
    gateway = policy_gateway()
    [gateway_peer] = [
        peer
        for peer in ingress_peers(netpol, box, OTLP_GRPC_PORT)
        if not selects(peer, OPEN_WEBUI_PODS)
    ]
    assert selects(gateway_peer, controller_gateway_pod_labels(gateway))
    assert not selects(gateway_peer, controller_gateway_pod_labels(f"{gateway}-other"))
    assert "gateway.networking.k8s.io/gateway-name" in gateway_peer["matchLabels"]


def test_networkpolicy_selects_the_enricher_pods_on_their_ports() -> None:
    """The policy selects the enricher Deployment's pods, and every port it opens is one of
    the container's declared ports; the OTLP and API ports are all admitted."""
    objs = render("standalone")
    deployment = one(objs, "Deployment", ENRICHER)
    box = container(deployment, ENRICHER)
    netpol = one(objs, "NetworkPolicy", ENRICHER)["spec"]
    assert selects(netpol["podSelector"], pod_labels(deployment))
    declared = {int(p["containerPort"]) for p in box["ports"]}
    opened = set()
    for rule in netpol["ingress"]:
        for port in rule["ports"]:
            assert port.get("protocol", "TCP") == "TCP"
            opened.add(container_port(box, port["port"]))
    assert opened <= declared, f"{opened - declared} are not container ports"
    assert {OTLP_GRPC_PORT, OTLP_HTTP_PORT, API_PORT} <= opened


# --------------------------------------------------------------------------- redis


def test_redis_runs_locked_down_with_a_secret_password() -> None:
    """Redis runs non-root and read-only, and its password comes from a Secret, not its args."""
    deployment = one(render("redis"), "Deployment", REDIS)
    security = effective_security(deployment, "redis")
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    box = container(deployment, "redis")
    assert secret_ref(box, "REDIS_PASSWORD") == (REDIS, "password")
    assert "--requirepass" not in " ".join([*box.get("command", []), *box.get("args", [])])


def test_redis_networkpolicy_admits_only_the_enricher() -> None:
    """Only the standalone enricher's pods may reach Redis, on its port only."""
    objs = render("standalone")
    enricher = pod_labels(one(objs, "Deployment", ENRICHER))
    redis = one(objs, "Deployment", REDIS)
    netpol = one(objs, "NetworkPolicy", REDIS)["spec"]
    assert selects(netpol["podSelector"], pod_labels(redis))
    [rule] = netpol["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}
    assert selects(peer["podSelector"], enricher)
    assert [container_port(container(redis, "redis"), p["port"]) for p in rule["ports"]] == [6379]
