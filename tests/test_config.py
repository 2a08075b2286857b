"""Tests for processor.config: YAML loading, validation, error reporting and token handling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from processor.app.config import Config, load_config, parse_config
from processor.config.scalars import parse_duration, parse_size, split_endpoint
from processor.correlate.address import DEFAULT_ADDRESS_KEYS as DEFAULT_ADDRESS_ATTRIBUTES
from processor.errors import ConfigError
from processor.identity.intake.config import TOKEN_ENV_VAR

DATA = Path(__file__).parent / "testdata" / "config"
EXAMPLE = Path(__file__).parent.parent / "deploy" / "examples" / "config.yaml"
ENV_TOKEN = "env-token-0123456789"
ENV = {TOKEN_ENV_VAR: ENV_TOKEN}
NO_ENV: dict[str, str] = {}


def problems_loading(path: Path, env: Mapping[str, str] = NO_ENV) -> list[str]:
    """Load ``path`` expecting a ConfigError and return its problems as strings."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    return [str(problem) for problem in caught.value.problems]


def assert_reported(problems: list[str], expected: str) -> None:
    """Fail unless some problem starts with ``expected`` (``path: message`` prefix)."""
    assert any(problem.startswith(expected) for problem in problems), (expected, problems)


def write_config(directory: Path, text: str) -> Path:
    """Write a config file into ``directory`` and return its path."""
    path = directory / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL_WITH_API = 'exporter:\n  endpoint: "jaeger:4317"\napi:\n'


# --------------------------------------------------------------------------- valid configs


def test_example_config_loads() -> None:
    """The documented example in deploy/examples is a valid config."""
    config = load_config(EXAMPLE, env=NO_ENV)
    assert config.exporter.endpoint == "jaeger:4317"
    assert config.exporter.insecure is True
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == "example-token-for-localhost-only"


def test_example_config_documents_the_defaults() -> None:
    """Apart from the exporter and token, the example spells out exactly the defaults."""
    example = load_config(EXAMPLE, env=NO_ENV)
    minimal = load_config(DATA / "minimal.yaml", env=ENV)
    assert example.model_dump(exclude={"exporter", "api"}) == minimal.model_dump(
        exclude={"exporter", "api"}
    )
    assert example.api.model_dump(exclude={"token"}) == minimal.api.model_dump(exclude={"token"})
    assert example.exporter.model_dump(exclude={"endpoint", "insecure"}) == (
        minimal.exporter.model_dump(exclude={"endpoint", "insecure"})
    )


def test_minimal_config_gets_defaults() -> None:
    """A config naming only the exporter endpoint gets every documented default."""
    config = load_config(DATA / "minimal.yaml", env=ENV)
    assert config.receiver.grpc_endpoint == "127.0.0.1:4317"
    assert config.receiver.max_message_bytes == 64 * 1024 * 1024
    assert config.exporter.endpoint == "jaeger:4317"
    assert config.exporter.insecure is False
    assert config.exporter.ca_file is None
    assert config.exporter.headers == {}
    assert config.exporter.compression == "gzip"
    assert config.exporter.timeout == 5.0
    retry = config.exporter.retry
    assert (retry.enabled, retry.initial_interval, retry.max_interval) == (True, 5.0, 30.0)
    assert (retry.max_elapsed, retry.multiplier, retry.jitter) == (300.0, 1.5, 0.5)
    queue = config.exporter.queue
    assert (queue.size, queue.consumers, queue.directory) == (1000, 10, None)
    assert config.api.enabled is True
    assert config.api.endpoint == "127.0.0.1:8089"
    assert config.api.token_file is None
    assert config.api.max_body_bytes == 1024 * 1024
    assert config.sessions.ttl == 1800.0
    assert config.sessions.max_sessions == 1_000_000
    assert config.sessions.sweep_interval == 30.0
    assert config.correlation.address_attributes == DEFAULT_ADDRESS_ATTRIBUTES
    assert config.logging.level == "info"
    assert config.logging.format == "auto"


def test_valid_config_values_are_parsed() -> None:
    """Every key of valid.yaml is converted to its typed, normalised value."""
    config = load_config(DATA / "valid.yaml", env=NO_ENV)
    assert config.receiver.grpc_endpoint == "[::]:14317"
    assert config.receiver.max_message_bytes == 4_000_000
    assert config.exporter.headers == {
        "x-tenant-id": "team-a",
        "authorization": "Bearer collector-secret",
    }
    assert config.exporter.compression == "none"
    assert config.exporter.timeout == 2.5
    retry = config.exporter.retry
    assert (retry.enabled, retry.initial_interval, retry.max_interval) == (False, 0.5, 60.0)
    assert (retry.max_elapsed, retry.multiplier, retry.jitter) == (5400.0, 2.0, 0.0)
    assert config.api.endpoint == "0.0.0.0:0"
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == "inline-token-123"
    assert config.api.max_body_bytes == 512 * 1024
    assert (config.sessions.ttl, config.sessions.max_sessions) == (7200.0, 5000)
    assert config.sessions.sweep_interval == 45.0
    assert config.correlation.address_attributes == ("client.address", "src.addr")
    assert (config.logging.level, config.logging.format) == ("debug", "json")


def test_config_is_frozen() -> None:
    """Validated config objects cannot be modified."""
    config = load_config(DATA / "minimal.yaml", env=ENV)
    with pytest.raises(ValidationError):
        config.exporter.timeout = 1.0


def test_api_disabled_needs_no_token() -> None:
    """With api.enabled false, a config without any token is accepted."""
    config = load_config(DATA / "api_disabled.yaml", env=NO_ENV)
    assert config.api.enabled is False
    assert config.api.token is None


def test_parse_config_accepts_parsed_yaml() -> None:
    """parse_config validates an in-memory mapping just like load_config does a file."""
    data: dict[str, Any] = {"exporter": {"endpoint": "tempo:4317"}, "api": {"enabled": False}}
    config = parse_config(data, base_dir=Path("/nonexistent"), env=NO_ENV)
    assert isinstance(config, Config)
    assert config.exporter.endpoint == "tempo:4317"


# --------------------------------------------------------------------------- invalid configs

INVALID_FILES = [
    pytest.param(
        "unknown_key.yaml", ["api.bogus: unknown key", "sesions: unknown key"], id="unknown"
    ),
    pytest.param(
        "bad_duration.yaml",
        [
            "exporter.timeout: expected a duration like 500ms, 10s, 30m",
            "sessions.ttl: expected a duration like 500ms, 10s, 30m",
            "sessions.sweep_interval: must be greater than 0",
        ],
        id="duration",
    ),
    pytest.param(
        "bad_size.yaml",
        [
            "receiver.max_message_bytes: expected a size like 512KiB, 64MiB or 4MB",
            "api.max_body_bytes: must be between 1KiB and 64MiB",
        ],
        id="size",
    ),
    pytest.param(
        "retry_intervals.yaml",
        ["exporter.retry.max_interval: must be >= initial_interval"],
        id="retry-intervals",
    ),
    pytest.param(
        "token_conflict.yaml",
        ["api.token_file: cannot be combined with token"],
        id="token-and-token-file",
    ),
    pytest.param(
        "bad_endpoints.yaml",
        [
            "receiver.grpc_endpoint: IPv6 addresses must be in brackets",
            "exporter.endpoint: expected host:port without a URL scheme",
            "api.endpoint: port must be a number from 0 to 65535",
        ],
        id="endpoints",
    ),
    pytest.param(
        "bad_exporter.yaml",
        [
            "exporter.endpoint: port must be from 1 to 65535",
            "exporter.insecure: expected true or false",
            "exporter.headers.Bad Header: invalid header name",
            "exporter.headers.x-ok: expected a string",
            "exporter.retry.multiplier: must be at least 1",
            "exporter.retry.jitter: must be at most 1",
        ],
        id="exporter",
    ),
    pytest.param(
        "bad_correlation.yaml",
        ["correlation.address_attributes: duplicate entries: client.address"],
        id="duplicate-attribute",
    ),
    pytest.param(
        "blank_attribute.yaml",
        ["correlation.address_attributes.1: must not be empty"],
        id="blank-attribute",
    ),
    pytest.param(
        "empty_correlation.yaml",
        ["correlation.address_attributes: must not be empty"],
        id="no-attributes",
    ),
    pytest.param("no_exporter.yaml", ["exporter.endpoint: required"], id="no-exporter"),
    pytest.param("short_token.yaml", ["api.token: must be at least 8 characters"], id="short"),
    pytest.param(
        "minimal.yaml",
        ["api.token: required when the session API is enabled"],
        id="missing-token",
    ),
]


@pytest.mark.parametrize(("name", "expected"), INVALID_FILES)
def test_invalid_file_reports_exactly_its_problems(name: str, expected: list[str]) -> None:
    """Each invalid fixture yields exactly the listed problems, located by dotted path."""
    problems = problems_loading(DATA / name)
    for wanted in expected:
        assert_reported(problems, wanted)
    assert len(problems) == len(expected), problems


def test_every_error_is_reported() -> None:
    """Independent mistakes across sections are all reported in one ConfigError."""
    problems = problems_loading(DATA / "many_errors.yaml")
    expected = [
        "receiver.grpc_endpoint: expected host:port",
        "exporter.compression: must be one of gzip, none",
        "exporter.retry.max_interval: must be >= initial_interval",
        "api.max_body_bytes: must be between 1KiB and 64MiB",
        "sessions.ttl: expected a duration like 500ms, 10s, 30m",
        "sessions.max_sessions: must be greater than 0",
        "logging.level: must be one of debug, info, warning, error",
    ]
    for wanted in expected:
        assert_reported(problems, wanted)


def test_missing_section_values_are_still_checked() -> None:
    """An empty ``api:`` section behaves like an absent one: defaults, token still required."""
    data: dict[str, Any] = {"exporter": {"endpoint": "jaeger:4317"}, "api": None}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=DATA, env=NO_ENV)
    assert [p.path for p in caught.value.problems] == ["api.token"]


# --------------------------------------------------------------------------- files and YAML


def test_yaml_syntax_error_names_the_line() -> None:
    """A YAML syntax error is one problem naming the file and the offending lines."""
    problems = problems_loading(DATA / "syntax_error.yaml")
    assert len(problems) == 1
    assert "syntax_error.yaml" in problems[0]
    assert "line 4" in problems[0]  # where the unterminated quoted string starts
    assert "line 6" in problems[0]  # where the parser gave up


def test_duplicate_yaml_key_is_an_error() -> None:
    """A repeated top-level key is reported instead of silently keeping the last one."""
    problems = problems_loading(DATA / "duplicate_key.yaml")
    assert len(problems) == 1
    assert "duplicate key 'exporter'" in problems[0]
    assert "line 5" in problems[0]


def test_missing_file() -> None:
    """A config path that does not exist is a single, clear problem."""
    with pytest.raises(ConfigError) as caught:
        load_config(DATA / "does-not-exist.yaml", env=NO_ENV)
    (problem,) = caught.value.problems
    assert problem.path == ""
    assert problem.message.startswith("config file not found:")
    assert "does-not-exist.yaml" in problem.message


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    """Pointing at a directory is reported as unreadable, not as a crash."""
    problems = problems_loading(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(f"cannot read {tmp_path}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("# only a comment\n", "is empty", id="comment-only"),
        pytest.param("- exporter\n- api\n", "is a list, not a mapping", id="list"),
        pytest.param("just a string\n", "is a str, not a mapping", id="scalar"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    """Empty files and non-mapping documents are rejected with path ``""``."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=ENV)
    (problem,) = caught.value.problems
    assert problem.path == ""
    assert expected in problem.message


def test_ca_file_is_resolved_relative_to_the_config(tmp_path: Path) -> None:
    """A relative ca_file is looked up next to the config file and stored as a full path."""
    (tmp_path / "ca.pem").write_text("not really a certificate\n", encoding="utf-8")
    path = write_config(tmp_path, 'exporter:\n  endpoint: "jaeger:4317"\n  ca_file: ca.pem\n')
    config = load_config(path, env=ENV)
    assert config.exporter.ca_file == str(tmp_path / "ca.pem")


def test_missing_ca_file_is_an_error(tmp_path: Path) -> None:
    """A ca_file that does not exist is reported at exporter.ca_file."""
    path = write_config(tmp_path, 'exporter:\n  endpoint: "jaeger:4317"\n  ca_file: nope.pem\n')
    problems = problems_loading(path, env=ENV)
    assert problems == [f"exporter.ca_file: file not found: {tmp_path / 'nope.pem'}"]


def test_ca_file_with_insecure_is_an_error(tmp_path: Path) -> None:
    """A CA file on a plaintext (insecure) connection is a contradiction."""
    (tmp_path / "ca.pem").write_text("pem\n", encoding="utf-8")
    text = 'exporter:\n  endpoint: "jaeger:4317"\n  insecure: true\n  ca_file: ca.pem\n'
    problems = problems_loading(write_config(tmp_path, text), env=ENV)
    assert problems == ["exporter.ca_file: cannot be used with insecure: true"]


# --------------------------------------------------------------------------- the API token


def test_token_file_is_read(tmp_path: Path) -> None:
    """token_file is read at load time, relative to the config, trailing newline stripped."""
    (tmp_path / "token").write_text("file-token-abcdef\n", encoding="utf-8")
    path = write_config(tmp_path, MINIMAL_WITH_API + "  token_file: token\n")
    config = load_config(path, env=NO_ENV)
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == "file-token-abcdef"
    assert config.api.token_file == str(tmp_path / "token")


def test_unreadable_token_file_is_an_error(tmp_path: Path) -> None:
    """A missing token_file is one problem at api.token_file (no extra 'required' noise)."""
    path = write_config(tmp_path, MINIMAL_WITH_API + "  token_file: missing-token\n")
    problems = problems_loading(path)
    assert problems == [f"api.token_file: file not found: {tmp_path / 'missing-token'}"]


def test_short_token_in_file_is_an_error(tmp_path: Path) -> None:
    """A too-short token read from token_file is blamed on api.token_file."""
    (tmp_path / "token").write_text("abc\n", encoding="utf-8")
    path = write_config(tmp_path, MINIMAL_WITH_API + "  token_file: token\n")
    (problem,) = problems_loading(path)
    assert problem.startswith("api.token_file: the token in ")
    assert problem.endswith("must be at least 8 characters")


@pytest.mark.parametrize(
    "api_section",
    [
        pytest.param("", id="no-token"),
        pytest.param('  token: "inline-token-123"\n', id="over-token"),
        pytest.param("  token_file: absent-file\n", id="over-token-file"),
    ],
)
def test_env_token_overrides_config(tmp_path: Path, api_section: str) -> None:
    """USER_ENRICHER_API_TOKEN wins over token and token_file (the file is not even read)."""
    path = write_config(tmp_path, MINIMAL_WITH_API + api_section)
    config = load_config(path, env=ENV)
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == ENV_TOKEN


def test_empty_env_token_is_ignored() -> None:
    """An empty USER_ENRICHER_API_TOKEN counts as unset."""
    config = load_config(DATA / "valid.yaml", env={TOKEN_ENV_VAR: ""})
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == "inline-token-123"


def test_short_env_token_is_an_error() -> None:
    """A too-short token from the environment names the variable, not the value."""
    problems = problems_loading(DATA / "minimal.yaml", env={TOKEN_ENV_VAR: "tiny42"})
    assert problems == [f"api.token: {TOKEN_ENV_VAR} must be at least 8 characters"]


def test_token_never_leaks_into_errors_or_repr() -> None:
    """The token appears in neither ConfigError text nor the config's repr/str."""
    with pytest.raises(ConfigError) as caught:
        load_config(DATA / "short_token.yaml", env=NO_ENV)
    assert "tiny42" not in str(caught.value)
    assert "tiny42" not in repr(caught.value.problems)

    secret = "very-secret-token-value"
    data: dict[str, Any] = {"exporter": {"endpoint": "jaeger:4317", "compression": "zstd"}}
    data["api"] = {"token": secret, "endpoint": "nowhere"}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=DATA, env=NO_ENV)
    assert secret not in str(caught.value)

    config = load_config(DATA / "minimal.yaml", env={TOKEN_ENV_VAR: secret})
    assert secret not in repr(config)
    assert secret not in str(config)
    assert secret not in repr(config.api)


def test_exporter_header_values_are_masked_in_repr() -> None:
    """Exporter header values (often credentials) are not shown in repr."""
    config = load_config(DATA / "valid.yaml", env=NO_ENV)
    assert "collector-secret" not in repr(config)
    assert "authorization" in repr(config.exporter)


# --------------------------------------------------------------------------- scalar parsers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2m30.5s", 150.5),
        ("1.5s", 1.5),
        (" 10s ", 10.0),
        ("0s", 0.0),
        ("45", 45.0),
        ("2.5", 2.5),
        (10, 10.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    """Duration strings and plain numbers become float seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "soon", "10 s", "10sec", "1d", "-5s", "s", "1h-30m", "10S", "1e3s", "nan"],
)
def test_parse_duration_rejects_garbage_strings(text: str) -> None:
    """Malformed duration strings raise ValueError with the expected shape in the message."""
    with pytest.raises(ValueError, match="expected a duration like 500ms, 10s, 30m"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), True, None, [1]])
def test_parse_duration_rejects_bad_numbers(value: Any) -> None:
    """Negative, non-finite and non-numeric values are not durations."""
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("100B", 100),
        ("512KiB", 512 * 1024),
        ("1MiB", 1024 * 1024),
        ("64MiB", 64 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("4MB", 4_000_000),
        ("10KB", 10_000),
        ("2GB", 2_000_000_000),
        ("64 MiB", 64 * 1024 * 1024),
        ("64mib", 64 * 1024 * 1024),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    """Byte counts and unit strings become int bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "value", ["", "lots", "1.5MiB", "MiB", "-1KiB", "10 K", "10XB", "1e6", -1, 1.5, True, None]
)
def test_parse_size_rejects_garbage(value: Any) -> None:
    """Anything that is not a whole number of bytes (with a known unit) raises ValueError."""
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:4317", ("127.0.0.1", 4317)),
        ("localhost:0", ("localhost", 0)),
        ("jaeger:4317", ("jaeger", 4317)),
        (
            "collector.observability.svc.cluster.local:65535",
            ("collector.observability.svc.cluster.local", 65535),
        ),
        ("0.0.0.0:8089", ("0.0.0.0", 8089)),
        ("[::1]:4317", ("::1", 4317)),
        ("[::]:0", ("::", 0)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_split_endpoint(endpoint: str, expected: tuple[str, int]) -> None:
    """host:port and bracketed IPv6 endpoints split into host and int port."""
    assert split_endpoint(endpoint) == expected


@pytest.mark.parametrize(
    "endpoint",
    [
        "",
        "localhost",
        ":4317",
        "localhost:",
        "localhost:port",
        "localhost:65536",
        "localhost:-1",
        "localhost:+80",
        "::1:4317",
        "::1",
        "[::1]",
        "[::1]:",
        "[not-ipv6]:4317",
        "[127.0.0.1]:4317",
        "http://jaeger:4317",
        "jaeger:4317/v1",
        "my host:4317",
        "-bad:4317",
    ],
)
def test_split_endpoint_rejects_garbage(endpoint: str) -> None:
    """Anything but host:port / [ipv6]:port raises ValueError."""
    with pytest.raises(ValueError):
        split_endpoint(endpoint)


@pytest.mark.parametrize(
    ("webhook", "env", "expected"),
    [
        ({"enabled": True}, {}, "webhooks.openwebui.secret: required when the Open WebUI"),
        (
            {"enabled": True, "secret": "short"},
            {},
            "webhooks.openwebui.secret: must be at least 16",
        ),
        (
            {"enabled": True, "source_ip": "10.0.0.1:80"},
            {},
            "webhooks.openwebui.source_ip: expected",
        ),
        ({"enabled": True, "secret": "x" * 16, "secret_file": "s"}, {}, "secret_file: cannot be"),
    ],
)
def test_webhook_secret_rules(webhook: dict[str, Any], env: dict[str, str], expected: str) -> None:
    """The webhook secret is required when enabled, long enough, and never echoed."""
    data = {
        "exporter": {"endpoint": "jaeger:4317"},
        "api": {"enabled": False},
        "webhooks": {"openwebui": webhook},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=Path.cwd(), env=env)
    assert any(str(p).startswith(expected) or expected in str(p) for p in caught.value.problems)
    assert "short" not in str(caught.value)


def test_webhook_secret_from_env_and_file(tmp_path: Path) -> None:
    """The environment variable wins over the file; the file is read relative to the config."""
    (tmp_path / "secret").write_text("file-secret-0123456789\n")
    data = {
        "exporter": {"endpoint": "jaeger:4317"},
        "api": {"enabled": False},
        "webhooks": {"openwebui": {"enabled": True, "secret_file": "secret"}},
    }
    from_file = parse_config(data, base_dir=tmp_path, env={})
    secret = from_file.webhooks.openwebui.secret
    assert secret is not None and secret.get_secret_value() == "file-secret-0123456789"
    env = {"USER_ENRICHER_WEBHOOK_SECRET": "env-secret-0123456789"}
    from_env = parse_config(data, base_dir=tmp_path, env=env)
    secret = from_env.webhooks.openwebui.secret
    assert secret is not None and secret.get_secret_value() == "env-secret-0123456789"
