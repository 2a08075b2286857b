"""Offline checks of deploy/compose: files parse, agree with each other, pass our validator."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from processor.app.config import load_config, parse_config
from processor.config.scalars import split_endpoint
from processor.errors import ConfigError
from processor.identity.intake.config import TOKEN_ENV_VAR, WEBHOOK_SECRET_ENV_VAR

ROOT = Path(__file__).parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
ENV_FILE = COMPOSE_DIR / ".env"  # provider API keys, read by Compose for ${...}
TEMPLATE_SUFFIX = ".example"  # a secret file's committed template: <file>.example
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
# What a committed placeholder says (the service refuses secrets containing these).
PLACEHOLDER = re.compile(r"replace[-_ ]?me|change[-_ ]?me", re.IGNORECASE)
# Secret-looking text: provider key formats, and long random-looking words (upper and
# lower case and digits, or long hex), as `secrets.token_urlsafe` or `openssl rand` make.
SECRET_LIKE = re.compile(
    r"(?<![\w-])(?:sk-[A-Za-z0-9][\w-]{15,}"
    r"|(?=[\w-]*[a-z])(?=[\w-]*[A-Z])(?=[\w-]*[0-9])[\w-]{20,}"
    r"|[0-9a-fA-F]{32,})(?![\w-])"
)
# A value given to a key/token/secret/password name: `NAME=value` anywhere (shell,
# .env), or `name: value` as a YAML key at the start of a line (not prose "secret: ...").
_SECRET_NAME = r"[\w.-]*(?:key|token|secret|password)s?"
_VALUE = r"[\"']?(?P<value>[^\s\"',;#]+)"
SECRET_ASSIGNMENT = re.compile(
    rf"(?im)(?:\b{_SECRET_NAME}=|^[ \t#-]*{_SECRET_NAME}[\"']?[ \t]*:[ \t]+){_VALUE}"
)


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


def secret_files(compose: Mapping[str, Any]) -> dict[str, Path]:
    """Each file-based secret: name -> the host file (relative paths resolved)."""
    return {
        name: COMPOSE_DIR / str(mapping(spec)["file"])
        for name, spec in mapping(compose.get("secrets")).items()
    }


def template_of(path: Path) -> Path:
    """The committed template of a secret file."""
    return path.with_name(path.name + TEMPLATE_SUFFIX)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    """Run git in the repository; skips the test outside a git work tree (an sdist)."""
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH")
    inside = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.stdout.strip() != "true":
        pytest.skip("not a git work tree")
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False, timeout=30
    )


def is_git_ignored(path: Path) -> bool:
    """Whether git ignores ``path`` (a tracked file never counts as ignored)."""
    done = git("check-ignore", "--quiet", str(path.relative_to(ROOT)))
    assert done.returncode in {0, 1}, done.stderr
    return done.returncode == 0


def tracked_files(directory: Path) -> list[Path]:
    """The files git tracks under ``directory``."""
    done = git("ls-files", "-z", "--", str(directory.relative_to(ROOT)))
    assert done.returncode == 0, done.stderr
    return [ROOT / name for name in done.stdout.split("\0") if name]


def is_placeholder(value: str) -> bool:
    """Whether a secret-looking value is obviously not a real one."""
    return bool(
        PLACEHOLDER.search(value)
        or "..." in value  # sk-... in the README
        or value.startswith(("$", "/", "./", "<"))  # interpolation, a path, <your key>
        or value.startswith("set-by-")  # Open WebUI's dummy keys, AgentGateway sets them
    )


def secret_looking_values(text: str) -> list[str]:
    """Values in ``text`` that look like real secrets and are not placeholders."""
    found = [match.group(0) for match in SECRET_LIKE.finditer(text)]
    found += [match.group("value") for match in SECRET_ASSIGNMENT.finditer(text)]
    return [value for value in found if not is_placeholder(value)]


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


def test_secret_files_have_templates(compose: dict[str, Any]) -> None:
    """Every file-based secret has its committed ``.example`` template next to where it goes."""
    files = secret_files(compose)
    assert files
    assert [path for path in files.values() if not template_of(path).is_file()] == []


def test_secret_files_are_git_ignored(compose: dict[str, Any]) -> None:
    """The secret files Compose mounts are git-ignored (so never tracked), and not templates."""
    files = secret_files(compose)
    assert files
    for path in files.values():
        assert not path.name.endswith(TEMPLATE_SUFFIX), f"{path.name}: a tracked template"
        assert path.resolve().is_relative_to(COMPOSE_DIR.resolve()), path
        assert is_git_ignored(path), f"{path.relative_to(ROOT)} is not git-ignored"


def test_templates_are_tracked_and_hold_placeholders(compose: dict[str, Any]) -> None:
    """The templates are committed, not ignored, and say REPLACE-ME: never a real value."""
    tracked = set(tracked_files(COMPOSE_DIR))
    for path in secret_files(compose).values():
        template = template_of(path)
        assert template in tracked, f"{template.relative_to(ROOT)} is not tracked"
        assert not is_git_ignored(template)
        assert PLACEHOLDER.search(template.read_text(encoding="utf-8")), template.name


def test_env_file_is_git_ignored() -> None:
    """deploy/compose/.env, where the README puts the provider API keys, is git-ignored."""
    assert is_git_ignored(ENV_FILE)


def test_tracked_files_hold_no_real_secrets() -> None:
    """No tracked file under deploy/compose holds a secret-looking, non-placeholder value."""
    files = tracked_files(COMPOSE_DIR)
    assert COMPOSE_FILE in files
    leaks = {
        str(path.relative_to(COMPOSE_DIR)): values
        for path in files
        if (values := secret_looking_values(path.read_text(encoding="utf-8")))
    }
    assert leaks == {}


@pytest.mark.parametrize(
    ("text", "leaks"),
    [
        ("OPENAI_API_KEY=sk-proj-4fQ9xZ2LmN8pR1sT6vW3yB7c", True),
        ("api_token: 'hunter2hunter2'", True),
        ("password=Zx81SpectrumRocks", True),
        ("kDs8_J2pQx-Lm4Nv7RtW9yZb3Cf6Hg0", True),  # secrets.token_urlsafe(24)
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", True),
        ("REPLACE-ME-fake-api-token-not-a-secret", False),
        ("OPENAI_API_KEY=sk-...", False),
        ('key: "$OPENAI_API_KEY"', False),
        ("OPENAI_API_KEY: ${OPENAI_API_KEY:-}", False),
        ("token_file: /run/secrets/api-token", False),
        ('OPENAI_API_KEYS: "set-by-agentgateway;set-by-agentgateway"', False),
        ("ENABLE_FORWARD_USER_INFO_HEADERS user_enricher_spans_enriched_total", False),
    ],
)
def test_secret_detector(text: str, leaks: bool) -> None:
    """The leak check flags real-looking keys and lets the committed placeholders pass."""
    assert bool(secret_looking_values(text)) is leaks


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
    """The healthcheck probes /healthz on the telemetry port, and only the API is published."""
    enricher = services[ENRICHER]
    _, api_port = enricher_port(enricher_config, "api", "endpoint")
    _, telemetry_port = enricher_port(enricher_config, "telemetry", "endpoint")
    _, receiver_port = enricher_port(enricher_config, "receiver", "grpc_endpoint")
    probe = " ".join(str(part) for part in mapping(enricher["healthcheck"])["test"])
    urls = [urlsplit(url) for url in HTTP_URL.findall(probe)]
    assert [(url.port, url.path) for url in urls] == [(telemetry_port, "/healthz")]
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


def mounted_secret_files(
    compose: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]], host: dict[str, Path]
) -> dict[str, str]:
    """Each path the enricher reads a secret at -> the host file standing in for it."""
    names = service_secrets(services[ENRICHER])
    assert set(names) <= set(secret_files(compose))
    return {target: str(host[source]) for source, target in names.items()}


def test_enricher_config_accepts_real_mounted_secrets(
    compose: dict[str, Any],
    services: dict[str, dict[str, Any]],
    enricher_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    """With real values in the secret files at their mount paths, the config is valid."""
    host = {}
    for name in secret_files(compose):
        host[name] = tmp_path / name
        host[name].write_text("kDs8_J2pQx-Lm4Nv7RtW9yZb3Cf6Hg0" + name + "\n", encoding="utf-8")
    data = replace_strings(enricher_config, mounted_secret_files(compose, services, host))
    config = parse_config(data, base_dir=COMPOSE_DIR, env={})
    assert config.api.token is not None


def test_enricher_config_refuses_the_templates_unchanged(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], enricher_config: dict[str, Any]
) -> None:
    """A secret file copied from its template and left unchanged stops the enricher."""
    host = {name: template_of(path) for name, path in secret_files(compose).items()}
    data = replace_strings(enricher_config, mounted_secret_files(compose, services, host))
    with pytest.raises(ConfigError) as refused:
        parse_config(data, base_dir=COMPOSE_DIR, env={})
    text = str(refused.value)
    assert "api.token_file" in text
    assert all(path.read_text().strip() not in text for path in host.values())  # never quoted


def test_webhook_secret_template_is_url_safe(compose: dict[str, Any]) -> None:
    """The webhook secret's template (and so its shape) can be pasted into a URL path."""
    template = template_of(secret_files(compose)["webhook-secret"])
    assert URL_SAFE.fullmatch(template.read_text(encoding="utf-8").rstrip())


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
