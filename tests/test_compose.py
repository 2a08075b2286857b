"""Offline checks of deploy/compose: files parse, agree with each other, pass our validator."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from processor.config import (
    TOKEN_ENV_VAR,
    WEBHOOK_SECRET_ENV_VAR,
    load_config,
    parse_config,
    split_endpoint,
)

COMPOSE_DIR = Path(__file__).parent.parent / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
YAML_FILES = sorted([*COMPOSE_DIR.rglob("*.yaml"), *COMPOSE_DIR.rglob("*.yml")])

# Service names the stack is wired by (the names are part of the documented set-up).
OPEN_WEBUI = "open-webui"
GATEWAY = "agentgateway"
ENRICHER = "user-enricher"
JAEGER = "jaeger"
JAEGER_OTLP_GRPC_PORT = 4317

SECRETS_DIR = "/run/secrets/"  # where Compose mounts a service's secrets
ALL_INTERFACES = {"0.0.0.0", "::"}
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
HTTP_URL = re.compile(r"https?://[^\s'\"]+")


# --------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with the safe loader."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def mapping(value: Any) -> dict[str, Any]:
    """``value`` as a dict with string keys (None counts as empty); fails on anything else."""
    if value is None:
        return {}
    assert isinstance(value, Mapping), f"expected a mapping, got {value!r}"
    return {str(key): item for key, item in value.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yaml."""
    return mapping(load_yaml(COMPOSE_FILE))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each service's definition, by name."""
    return {name: mapping(spec) for name, spec in mapping(compose["services"]).items()}


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (list or mapping form) as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(host source, container target)`` of each bind mount (named volumes are skipped)."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, Mapping):
            if volume.get("type") == "bind":
                yield str(volume["source"]), str(volume["target"])
            continue
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/", "~")):
            yield source, rest.partition(":")[0]


def mounted_file(service: Mapping[str, Any], target: str) -> Path:
    """The host file (relative to the compose file) bind-mounted at ``target``."""
    for source, mount_target in bind_mounts(service):
        if mount_target == target:
            return COMPOSE_DIR / source
    raise AssertionError(f"nothing is mounted at {target}")


def argument_after(service: Mapping[str, Any], *flags: str) -> str:
    """The value following any of ``flags`` in the service's ``command`` list."""
    command = [str(part) for part in service.get("command") or []]
    for index, part in enumerate(command[:-1]):
        if part in flags:
            return command[index + 1]
    raise AssertionError(f"none of {flags} in command {command}")


def published_container_ports(service: Mapping[str, Any]) -> list[int]:
    """Container ports of a service's ``ports`` (short ``[ip:]host:container[/proto]`` or long)."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).partition("/")[0].rpartition(":")[2]))
    return ports


def service_secrets(service: Mapping[str, Any]) -> dict[str, str]:
    """The secrets a service uses: source name -> the path it is mounted at."""
    used = {}
    for entry in service.get("secrets") or []:
        if isinstance(entry, Mapping):
            source = str(entry["source"])
            target = str(entry.get("target", source))
        else:
            source = target = str(entry)
        used[source] = target if target.startswith("/") else SECRETS_DIR + target
    return used


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``None`` when it has none); a digest counts as a tag."""
    if "@" in image:
        return image.partition("@")[2]
    name = image.rpartition("/")[2]
    return name.partition(":")[2] or None


def strings(value: Any) -> Iterator[str]:
    """Every string inside a parsed YAML value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def replace_strings(value: Any, replacements: Mapping[str, str]) -> Any:
    """A copy of a parsed YAML value with the strings in ``replacements`` replaced."""
    if isinstance(value, str):
        return replacements.get(value, value)
    if isinstance(value, Mapping):
        return {key: replace_strings(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [replace_strings(item, replacements) for item in value]
    return value


@pytest.fixture(scope="module")
def enricher_config_path(services: dict[str, dict[str, Any]]) -> Path:
    """The enricher config file that Compose mounts where ``serve --config`` reads it."""
    enricher = services[ENRICHER]
    return mounted_file(enricher, argument_after(enricher, "--config"))


@pytest.fixture(scope="module")
def enricher_config(enricher_config_path: Path) -> dict[str, Any]:
    """The parsed enricher config."""
    return mapping(load_yaml(enricher_config_path))


@pytest.fixture(scope="module")
def gateway_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parsed AgentGateway config that Compose mounts where ``-f`` reads it."""
    gateway = services[GATEWAY]
    return mapping(load_yaml(mounted_file(gateway, argument_after(gateway, "-f", "--file"))))


@pytest.fixture(scope="module")
def gateway_tracing(gateway_config: dict[str, Any]) -> dict[str, Any]:
    """AgentGateway's ``frontendPolicies.tracing`` section."""
    return mapping(mapping(gateway_config["frontendPolicies"])["tracing"])


def enricher_port(config: Mapping[str, Any], section: str, key: str) -> tuple[str, int]:
    """``(host, port)`` of one of the enricher's listen endpoints."""
    return split_endpoint(str(mapping(config.get(section))[key]))


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: path.name)
def test_yaml_file_parses(path: Path) -> None:
    """Every YAML file in deploy/compose parses with yaml.safe_load into a mapping."""
    assert isinstance(load_yaml(path), Mapping)


def test_compose_file_follows_the_compose_spec(compose: dict[str, Any]) -> None:
    """The compose file has services and no obsolete top-level ``version:`` key."""
    assert "version" not in compose
    assert {OPEN_WEBUI, GATEWAY, ENRICHER, JAEGER} <= set(compose["services"])


def test_bind_mount_sources_exist(services: dict[str, dict[str, Any]]) -> None:
    """Every bind-mounted host file exists relative to the compose file."""
    sources = [source for spec in services.values() for source, _ in bind_mounts(spec)]
    assert sources
    assert [source for source in sources if not (COMPOSE_DIR / source).exists()] == []


def test_secret_files_exist(compose: dict[str, Any]) -> None:
    """Every file-based secret exists relative to the compose file."""
    files = [str(mapping(spec)["file"]) for spec in mapping(compose.get("secrets")).values()]
    assert files
    assert [file for file in files if not (COMPOSE_DIR / file).is_file()] == []


def test_build_context_exists(services: dict[str, dict[str, Any]]) -> None:
    """The enricher's build context is a directory (the repository root)."""
    build = mapping(services[ENRICHER]["build"])
    assert (COMPOSE_DIR / str(build["context"])).resolve() == COMPOSE_DIR.parent.parent.resolve()


def test_dockerfile_exists(services: dict[str, dict[str, Any]]) -> None:
    """The Dockerfile the enricher is built from exists in its build context."""
    build = mapping(services[ENRICHER]["build"])
    dockerfile = COMPOSE_DIR / str(build["context"]) / str(build.get("dockerfile", "Dockerfile"))
    assert dockerfile.is_file()
    text = dockerfile.read_text()
    assert "USER 10001" in text  # never root
    assert all(":latest" not in line for line in text.splitlines() if line.startswith("FROM"))


# --------------------------------------------------------------------------- wiring


def test_gateway_traces_to_enricher_otlp_port(
    gateway_tracing: dict[str, Any], enricher_config: dict[str, Any]
) -> None:
    """AgentGateway exports its spans over gRPC to the enricher service's OTLP port."""
    tracing = gateway_tracing
    _, receiver_port = enricher_port(enricher_config, "receiver", "grpc_endpoint")
    assert tracing["host"] == f"{ENRICHER}:{receiver_port}"
    assert tracing.get("protocol", "grpc") == "grpc"
    assert tracing["randomSampling"] is True


def test_gateway_copies_forwarded_user_headers(gateway_tracing: dict[str, Any]) -> None:
    """AgentGateway copies each X-OpenWebUI-User-* header into the matching user.* attribute."""
    attributes = mapping(gateway_tracing["attributes"])
    for field in ("email", "id", "name"):
        assert f'request.headers["x-openwebui-user-{field}"]' in attributes[f"user.{field}"]


def test_enricher_exports_to_jaeger_otlp_grpc(
    services: dict[str, dict[str, Any]], enricher_config: dict[str, Any]
) -> None:
    """The enricher forwards to the jaeger service's OTLP/gRPC port in plaintext."""
    exporter = mapping(enricher_config["exporter"])
    assert split_endpoint(str(exporter["endpoint"])) == (JAEGER, JAEGER_OTLP_GRPC_PORT)
    assert exporter["insecure"] is True
    assert JAEGER in services


def test_enricher_listens_on_all_interfaces(enricher_config: dict[str, Any]) -> None:
    """Inside its container the enricher listens on all interfaces, not loopback."""
    assert enricher_port(enricher_config, "receiver", "grpc_endpoint")[0] in ALL_INTERFACES
    assert enricher_port(enricher_config, "api", "endpoint")[0] in ALL_INTERFACES


def test_open_webui_exports_its_traces_to_enricher(
    services: dict[str, dict[str, Any]], enricher_config: dict[str, Any]
) -> None:
    """Open WebUI's own OTel traces go to the enricher's OTLP port as service open-webui."""
    env = environment(services[OPEN_WEBUI])
    _, receiver_port = enricher_port(enricher_config, "receiver", "grpc_endpoint")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{ENRICHER}:{receiver_port}"
    assert env["ENABLE_OTEL"].lower() == env["ENABLE_OTEL_TRACES"].lower() == "true"
    assert env["OTEL_SERVICE_NAME"] == "open-webui"


def test_open_webui_may_call_private_webhook_urls(services: dict[str, dict[str, Any]]) -> None:
    """Open WebUI is allowed to send webhooks to the enricher's private address."""
    assert environment(services[OPEN_WEBUI])["ENABLE_LOCAL_WEB_FETCH"].lower() == "true"


def test_open_webui_calls_gateway_routes(
    services: dict[str, dict[str, Any]], gateway_config: dict[str, Any]
) -> None:
    """Every OpenAI base URL of Open WebUI names a gateway port and one of its route prefixes."""
    env = environment(services[OPEN_WEBUI])
    urls = env.get("OPENAI_API_BASE_URLS") or env["OPENAI_API_BASE_URL"]
    binds = [mapping(bind) for bind in gateway_config["binds"]]
    routes = [
        mapping(route)
        for bind in binds
        for listener in bind["listeners"]
        for route in mapping(listener)["routes"]
    ]
    prefixes = [
        str(mapping(mapping(match)["path"])["pathPrefix"])
        for route in routes
        for match in route["matches"]
    ]
    for url in urls.split(";"):
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) in {(GATEWAY, bind["port"]) for bind in binds}
        assert any(parts.path.startswith(prefix) for prefix in prefixes), url


def test_enricher_api_port_matches_healthcheck_and_publish(
    services: dict[str, dict[str, Any]], enricher_config: dict[str, Any]
) -> None:
    """The healthcheck probes /healthz on the API port, and only enricher ports are published."""
    enricher = services[ENRICHER]
    _, api_port = enricher_port(enricher_config, "api", "endpoint")
    _, receiver_port = enricher_port(enricher_config, "receiver", "grpc_endpoint")
    probe = " ".join(str(part) for part in mapping(enricher["healthcheck"])["test"])
    urls = [urlsplit(url) for url in HTTP_URL.findall(probe)]
    assert [(url.port, url.path) for url in urls] == [(api_port, "/healthz")]
    assert set(published_container_ports(enricher)) <= {api_port, receiver_port}


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    """Every service named in a depends_on exists."""
    for name, spec in services.items():
        depends = spec.get("depends_on") or []
        assert set(depends) <= set(services), name


def test_used_secrets_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Every secret a service uses is declared at the top level."""
    declared = set(mapping(compose.get("secrets")))
    for name, spec in services.items():
        assert set(service_secrets(spec)) <= declared, name


def test_enricher_reads_secrets_where_compose_mounts_them(
    services: dict[str, dict[str, Any]], enricher_config: dict[str, Any]
) -> None:
    """Each secret path in the enricher config is a secret mounted into the enricher."""
    mounted = set(service_secrets(services[ENRICHER]).values())
    paths = {text for text in strings(enricher_config) if text.startswith(SECRETS_DIR)}
    assert mapping(enricher_config["api"])["token_file"] in paths
    assert "token" not in mapping(enricher_config["api"])  # never inline
    assert paths <= mounted


# --------------------------------------------------------------------------- the enricher config


def test_enricher_config_passes_the_validator(enricher_config_path: Path) -> None:
    """The enricher config loads; the secrets come from the environment, so no file is read."""
    env = {TOKEN_ENV_VAR: "x" * 16, WEBHOOK_SECRET_ENV_VAR: "y" * 16}
    config = load_config(enricher_config_path, env=env)
    assert config.api.enabled is True


def test_enricher_config_accepts_the_mounted_placeholder_secrets(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], enricher_config: dict[str, Any]
) -> None:
    """With the committed secret files at their mount paths, the config is valid without env."""
    files = {name: str(mapping(spec)["file"]) for name, spec in mapping(compose["secrets"]).items()}
    host_file = {
        target: str((COMPOSE_DIR / files[source]).resolve())
        for source, target in service_secrets(services[ENRICHER]).items()
    }
    data = replace_strings(enricher_config, host_file)
    config = parse_config(data, base_dir=COMPOSE_DIR, env={})
    assert config.api.token is not None


def test_webhook_secret_placeholder_is_url_safe(compose: dict[str, Any]) -> None:
    """The webhook secret can be pasted into a URL path as it is."""
    spec = mapping(mapping(compose["secrets"])["webhook-secret"])
    secret = (COMPOSE_DIR / str(spec["file"])).read_text(encoding="utf-8").rstrip()
    assert URL_SAFE.fullmatch(secret)


# --------------------------------------------------------------------------- images


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    """Every service names its image with an explicit tag or digest, never latest."""
    unpinned = [
        name
        for name, spec in services.items()
        if image_tag(str(spec.get("image", ""))) in {None, "latest"}
    ]
    assert unpinned == []


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("jaegertracing/jaeger:2.20.0", "2.20.0"),
        ("ghcr.io/agentgateway/agentgateway:v1.4.1", "v1.4.1"),
        ("localhost:5000/enricher", None),
        ("jaegertracing/jaeger", None),
        ("jaegertracing/jaeger@sha256:abc", "sha256:abc"),
    ],
)
def test_image_tag_parsing(image: str, tag: str | None) -> None:
    """image_tag tells a registry port from a tag and accepts digests."""
    assert image_tag(image) == tag
