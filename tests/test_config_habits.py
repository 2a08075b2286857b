"""Collector habits in the config: ``${env:...}``, URL endpoints, placeholder secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processor.app.config import Config, load_config, parse_config
from processor.errors import ConfigError

TOKEN = "a-real-token-0123456789"


def parse(data: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    """Validate ``data`` (API off unless given) against ``env``."""
    data.setdefault("api", {"enabled": False})
    return parse_config(data, base_dir=Path.cwd(), env=env or {})


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """The ``path: message`` lines ``data`` is refused with (fails if it is accepted)."""
    with pytest.raises(ConfigError) as caught:
        parse(data, env)
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


# --------------------------------------------------------------------------- ${env:...}


def test_env_references_fill_values_of_every_type() -> None:
    """Strings, booleans, integers, durations and sizes all accept a whole-value reference."""
    env = {"EP": "jaeger:4317", "PLAIN": "true", "USERS": "4096", "HOLD": "2s", "MB": "8MiB"}
    config = parse(
        {
            "exporter": {
                "endpoint": "${env:EP}",
                "insecure": "${env:PLAIN}",
                "queue": {"max_bytes": "${env:MB}"},
            },
            "usage": {"max_users": "${env:USERS}"},
            "correlation": {"hold": "${env:HOLD}"},
        },
        env,
    )
    assert config.exporter.endpoint == "jaeger:4317"
    assert config.exporter.insecure is True
    assert config.exporter.queue.max_bytes == 8 * 1024 * 1024
    assert config.usage.max_users == 4096
    assert config.correlation.hold == 2.0


def test_a_reference_inside_text_and_the_dollar_escape() -> None:
    """``${env:..}`` may sit inside a longer string; ``$$`` is a literal dollar."""
    config = parse(
        {
            "exporter": {
                "endpoint": "${env:HOST}:4317",
                "insecure": True,
                "headers": {"x-tenant": "team-${env:TEAM}", "x-price": "$$5"},
            }
        },
        {"HOST": "jaeger", "TEAM": "42"},
    )
    assert config.exporter.endpoint == "jaeger:4317"
    assert config.exporter.headers == {"x-tenant": "team-42", "x-price": "$5"}


def test_a_string_key_keeps_the_exact_text_of_a_numeric_value() -> None:
    """A token or header of digits stays text, leading zeros and all."""
    config = parse(
        {
            "exporter": {
                "endpoint": "jaeger:4317",
                "insecure": True,
                "headers": {"x-tenant": "${env:TENANT}"},
            },
            "api": {"token": "${env:TOKEN}"},
        },
        {"TENANT": "007", "TOKEN": "0012345678"},
    )
    assert config.exporter.headers == {"x-tenant": "007"}
    assert config.api.token is not None
    assert config.api.token.get_secret_value() == "0012345678"


def test_defaults_apply_when_the_variable_is_unset_or_empty() -> None:
    """``:-default`` covers unset and empty; a set-but-empty variable without one is empty."""
    data = {
        "exporter": {"endpoint": "${env:EP:-jaeger:4317}", "insecure": True},
        "receiver": {"http_endpoint": "${env:HTTP}"},
    }
    unset = parse(data, {"HTTP": ""})
    empty = parse(data, {"EP": "", "HTTP": ""})
    assert unset.exporter.endpoint == empty.exporter.endpoint == "jaeger:4317"
    assert unset.receiver.http_endpoint == ""


def test_an_unset_variable_names_the_key_and_the_variable_but_no_value() -> None:
    """Every unset reference is reported at its dotted path; values of others never appear."""
    found = problems(
        {
            "exporter": {"endpoint": "${env:DOWNSTREAM}", "headers": {"authorization": "${env:A}"}},
            "api": {"token": "${env:SECRET_TOKEN}"},
        },
        {"SECRET_TOKEN": "hunter2-hunter2-hunter2"},
    )
    assert [line.split(":")[0] for line in found] == [
        "exporter.endpoint",
        "exporter.headers.authorization",
    ]
    assert "DOWNSTREAM is not set" in found[0]
    assert not any("hunter2" in line for line in found)


@pytest.mark.parametrize(
    "value", ["${DOWNSTREAM}", "${file:/etc/passwd}", "${env:}", "${env:1BAD}"]
)
def test_unsupported_references_are_errors(value: str) -> None:
    """Only ``env`` is a provider, and a name must be a variable name."""
    (line,) = problems({"exporter": {"endpoint": value}}, {"DOWNSTREAM": "jaeger:4317"})
    assert line.startswith("exporter.endpoint: ")


def test_a_value_from_the_environment_is_validated_like_one_in_the_file() -> None:
    """An expanded value gets the key's own error, not a pass."""
    (line,) = problems(
        {"exporter": {"endpoint": "jaeger:4317", "insecure": "${env:B}"}}, {"B": "yes"}
    )
    assert line.startswith("exporter.insecure: ")


def test_load_config_expands_from_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_config`` without ``env`` reads ``os.environ``."""
    monkeypatch.setenv("ENRICHER_TEST_DOWNSTREAM", "collector:4317")
    file = tmp_path / "c.yaml"
    file.write_text(
        "exporter:\n  endpoint: ${env:ENRICHER_TEST_DOWNSTREAM}\napi:\n  enabled: false\n"
    )
    assert load_config(file).exporter.endpoint == "collector:4317"


# --------------------------------------------------------------------------- URL endpoints


@pytest.mark.parametrize(
    ("exporter", "endpoint", "insecure", "http_path"),
    [
        ({"endpoint": "http://jaeger:4318", "protocol": "http"}, "jaeger:4318", True, "/v1/traces"),
        ({"endpoint": "http://jaeger:4317"}, "jaeger:4317", True, "/v1/traces"),
        ({"endpoint": "https://collector:4317"}, "collector:4317", False, "/v1/traces"),
        (
            {"endpoint": "https://otel.example.com/otlp/", "protocol": "http"},
            "otel.example.com:443",
            False,
            "/otlp/v1/traces",
        ),
        ({"endpoint": "HTTP://[::1]:4317"}, "[::1]:4317", True, "/v1/traces"),
        ({"endpoint": "http://jaeger:4317", "insecure": True}, "jaeger:4317", True, "/v1/traces"),
    ],
)
def test_url_endpoints_set_address_tls_and_path(
    exporter: dict[str, Any], endpoint: str, insecure: bool, http_path: str
) -> None:
    """The scheme decides TLS, the port defaults by scheme, a path prefixes http_path."""
    config = parse({"exporter": exporter})
    assert config.exporter.endpoint == endpoint
    assert config.exporter.insecure is insecure
    assert config.exporter.http_path == http_path


@pytest.mark.parametrize(
    ("exporter", "expected"),
    [
        (
            {"endpoint": "http://jaeger:4317", "insecure": False},
            "exporter.insecure: insecure: false",
        ),
        (
            {"endpoint": "https://jaeger:4317", "insecure": True},
            "exporter.insecure: insecure: true",
        ),
        ({"endpoint": "https://collector/otlp"}, "exporter.endpoint: a gRPC endpoint has no path"),
        ({"endpoint": "http://jaeger:4318"}, "exporter.endpoint: port 4318 is OTLP/HTTP"),
        ({"endpoint": "jaeger:4318"}, "exporter.endpoint: port 4318 is OTLP/HTTP"),
        ({"endpoint": "https://u:pw@collector:4317"}, "exporter.endpoint: credentials do not"),
        ({"endpoint": "https://collector:4317?x=1"}, "exporter.endpoint: a URL endpoint takes no"),
        ({"endpoint": "http://:4317"}, "exporter.endpoint: the URL has no host"),
        ({"endpoint": "http://jaeger:70000"}, "exporter.endpoint: not a valid URL"),
    ],
)
def test_url_endpoint_mistakes_are_named(exporter: dict[str, Any], expected: str) -> None:
    """Contradictions and likely mistakes are refused with the fix in the message."""
    (line,) = problems({"exporter": exporter})
    assert line.startswith(expected), line


def test_grpc_on_4318_is_allowed_when_asked_for() -> None:
    """An explicit ``protocol: grpc`` on 4318 is the user's choice."""
    config = parse({"exporter": {"endpoint": "jaeger:4318", "protocol": "grpc", "insecure": True}})
    assert config.exporter.endpoint == "jaeger:4318"


def test_url_and_insecure_from_the_environment_agree() -> None:
    """``insecure: ${env:X}`` is typed before it is compared with the scheme."""
    config = parse(
        {"exporter": {"endpoint": "${env:EP}", "insecure": "${env:PLAIN}"}},
        {"EP": "http://jaeger:4317", "PLAIN": "true"},
    )
    assert config.exporter.insecure is True


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "token",
    ["REPLACE-ME-with-a-long-random-token", "please-change-me-now", "x" * 12 + "ChangeMe"],
)
def test_placeholder_secrets_are_refused(token: str) -> None:
    """A token still carrying an example's placeholder fails ``check-config``."""
    (line,) = problems({"exporter": {"endpoint": "j:4317"}, "api": {"token": token}})
    assert line.startswith("api.token: is still a placeholder"), line
    assert token not in line


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (" " * 12, "must not be blank"),
        ("\t" * 20, "must not be blank"),
        (" " + TOKEN, "must not start or end with whitespace"),
    ],
)
def test_blank_or_padded_tokens_are_refused(token: str, message: str) -> None:
    """Whitespace-only or padded tokens would lock every client out; refuse them."""
    (line,) = problems({"exporter": {"endpoint": "j:4317"}, "api": {"token": token}})
    assert message in line, line


def test_placeholders_are_refused_from_every_source(tmp_path: Path) -> None:
    """The same rule holds for a token file, the environment, and other secrets."""
    file = tmp_path / "token"
    file.write_text("REPLACE-ME-token-from-file\n")
    from_file = problems({"exporter": {"endpoint": "j:4317"}, "api": {"token_file": str(file)}})
    assert from_file[0].startswith("api.token_file: the token in")
    from_env = problems(
        {"exporter": {"endpoint": "j:4317"}, "api": {}},
        {"USER_ENRICHER_API_TOKEN": "CHANGE-ME-CHANGE-ME"},
    )
    assert "USER_ENRICHER_API_TOKEN is still a placeholder" in from_env[0]
    hook = problems(
        {
            "exporter": {"endpoint": "j:4317"},
            "webhooks": {"openwebui": {"enabled": True, "secret": "replace-me-webhook-secret"}},
        }
    )
    assert "is still a placeholder" in hook[0]


def test_a_metrics_token_is_read_like_the_others(tmp_path: Path) -> None:
    """``telemetry.token`` comes from its env variable, a file or the value, with the same rules."""
    file = tmp_path / "metrics-token"
    file.write_text("scrape-token-0123456789\n")
    config = parse(
        {
            "exporter": {"endpoint": "j:4317"},
            "telemetry": {"endpoint": "127.0.0.1:0", "token_file": str(file)},
        }
    )
    assert config.telemetry.token is not None
    assert config.telemetry.token.get_secret_value() == "scrape-token-0123456789"
    short = problems({"exporter": {"endpoint": "j:4317"}, "telemetry": {"token": "short"}})
    assert short == ["telemetry.token: must be at least 16 characters"]
