"""Tests for processor.receive.auth and its config: TLS/mTLS on both servers, tokens, limits."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from processor.app.config import Config, parse_config
from processor.config.tls import TlsConfig
from processor.errors import ConfigError
from processor.identity.intake.config import TOKEN_ENV_VAR
from processor.identity.intake.http import HttpApi
from processor.identity.intake.push import SessionIntake
from processor.identity.intake.webhooks import OpenWebUIWebhook
from processor.identity.sessions.memory import MemorySessionStore
from processor.metrics import Metrics
from processor.receive.auth import (
    BearerToken,
    Metadata,
    RateLimiter,
    grpc_server_credentials,
    http_ssl_context,
    rate_limiter,
    receiver_auth,
)
from processor.receive.config import RECEIVER_TOKEN_ENV_VAR, RateLimitConfig, ReceiverAuthConfig
from processor.status import retry_after

RECEIVER_TOKEN = "receiver-token-0123456789"
API_TOKEN = "api-token-0123456789"
WEBHOOK_SECRET = "webhook-secret-0123456789"
BASE_ENV = {TOKEN_ENV_VAR: API_TOKEN}
PROBE = "/test.Probe/Call"
TIMEOUT_S = 10.0  # only bounds a hung call; the tests never wait on it when they pass


class SecondsClock:
    """An injectable monotonic clock (seconds) the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- test PKI


@dataclass(frozen=True)
class Pki:
    """A throw-away CA with a server certificate (127.0.0.1, localhost) and a client one."""

    directory: Path

    def path(self, name: str) -> str:
        """The absolute path of one generated file (``ca.pem``, ``server.key``, ...)."""
        return str(self.directory / name)

    def tls(self, *, mtls: bool) -> TlsConfig:
        """The server's TLS section, requiring client certificates when ``mtls``."""
        return TlsConfig(
            cert_file=self.path("server.pem"),
            key_file=self.path("server.key"),
            client_ca_file=self.path("ca.pem") if mtls else None,
        )


_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(directory: Path, *args: str) -> None:
    """Run one openssl command in ``directory``, failing the test with its stderr."""
    done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _issue(directory: Path, name: str, usage: str, serial: int) -> None:
    """Create ``name.key`` and ``name.pem`` signed by the CA, for ``usage`` (serverAuth...)."""
    _openssl(
        directory, "req", *_EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={name}",
    )  # fmt: skip
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", str(serial), "-days", "2", "-out", f"{name}.pem",
        "-extfile", extensions.name,
    )  # fmt: skip


def _make_pki(directory: Path) -> None:
    """Generate the CA, the server certificate and the client certificate."""
    _openssl(
        directory, "req", "-x509", *_EC_KEY, "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=user-enricher test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _issue(directory, "server", "serverAuth", 1)
    _issue(directory, "client", "clientAuth", 2)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A fresh test PKI made with the openssl CLI (tests using it skip without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not on PATH")
    directory = tmp_path_factory.mktemp("pki")
    _make_pki(directory)
    return Pki(directory)


# --------------------------------------------------------------------------- RateLimiter

# Each step: (seconds to advance the clock first, key, expected retry-after or None).
Step = tuple[float, str, float | None]


@pytest.mark.parametrize(
    ("rate", "burst", "steps"),
    [
        pytest.param(1.0, 3, [(0, "a", None)] * 3 + [(0, "a", 1.0)], id="burst-then-limited"),
        pytest.param(2.0, 1, [(0, "a", None), (0, "a", 0.5), (0.5, "a", None)], id="refill"),
        pytest.param(4.0, 1, [(0, "a", None), (0.125, "a", 0.125)], id="partial-refill-waits-less"),
        pytest.param(
            1.0,
            2,
            [(0, "a", None), (0, "a", None), (100, "a", None), (0, "a", None), (0, "a", 1.0)],
            id="refill-capped-at-burst",
        ),
        pytest.param(
            1.0, 1, [(0, "a", None), (0, "b", None), (0, "a", 1.0), (0, "b", 1.0)], id="per-key"
        ),
        pytest.param(
            1.0, 1, [(0, "a", None), (0, "a", 1.0), (0, "a", 1.0)], id="limited-calls-cost-nothing"
        ),
        pytest.param(1.0, 1, [(0, "a", None), (-5, "a", 1.0)], id="clock-going-back-adds-nothing"),
    ],
)
def test_rate_limiter_table(rate: float, burst: int, steps: list[Step]) -> None:
    """The token bucket allows a burst, refills at the rate and keeps keys apart."""
    clock = SecondsClock()
    limiter = RateLimiter(rate, burst, clock=clock)
    for advance, key, expected in steps:
        clock.now += advance
        result = limiter.allow(key)
        assert result == (None if expected is None else pytest.approx(expected)), (key, clock.now)


def test_rate_limiter_forgets_the_least_recently_seen_key_beyond_the_bound() -> None:
    """Past ``max_keys`` the least recently seen key is dropped; it returns with a full bucket."""
    limiter = RateLimiter(1.0, 1, clock=SecondsClock(), max_keys=2)
    assert limiter.allow("a") is None
    assert limiter.allow("b") is None
    assert limiter.allow("a") is not None  # limited, and now the most recent
    assert limiter.allow("c") is None  # evicts b, not a
    assert len(limiter) == 2
    assert limiter.allow("a") is not None
    assert limiter.allow("b") is None  # forgotten, so full again


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"), [(0.0, 1, 1), (-1.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)]
)
def test_rate_limiter_rejects_nonsense_settings(rate: float, burst: int, max_keys: int) -> None:
    """A limiter that could never let a request through cannot be built."""
    with pytest.raises(ValueError, match="rate must be"):
        RateLimiter(rate, burst, clock=SecondsClock(), max_keys=max_keys)


def test_rate_limit_of_zero_builds_no_limiter() -> None:
    """``requests_per_second: 0`` disables limiting; otherwise the configured bucket is built."""
    assert rate_limiter(RateLimitConfig(requests_per_second=0)) is None
    limiter = rate_limiter(RateLimitConfig(requests_per_second=1, burst=2), clock=SecondsClock())
    assert limiter is not None
    assert [limiter.allow("a"), limiter.allow("a")] == [None, None]
    assert limiter.allow("a") == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("delay", "header"), [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.01, "2"), (30.0, "30")]
)
def test_retry_after_is_whole_seconds_rounded_up(delay: float, header: str) -> None:
    """Retry-After is whole seconds, never 0, and never earlier than the bucket refills."""
    assert retry_after(delay) == header


# --------------------------------------------------------------------------- BearerToken


@pytest.mark.parametrize(
    ("metadata", "allowed"),
    [
        pytest.param(None, False, id="no-metadata"),
        pytest.param((), False, id="empty"),
        pytest.param((("x-other", f"Bearer {RECEIVER_TOKEN}"),), False, id="other-key"),
        pytest.param((("authorization", f"Bearer {RECEIVER_TOKEN}"),), True, id="right"),
        pytest.param((("authorization", "Bearer wrong-token-0123456789"),), False, id="wrong"),
        pytest.param((("authorization", f"Bearer {RECEIVER_TOKEN[:-1]}"),), False, id="prefix"),
        pytest.param((("authorization", f"Bearer {RECEIVER_TOKEN}x"),), False, id="longer"),
        pytest.param((("authorization", f"Basic {RECEIVER_TOKEN}"),), False, id="basic"),
        pytest.param((("authorization", RECEIVER_TOKEN),), False, id="no-scheme"),
        pytest.param((("authorization", "Bearer"),), False, id="no-token"),
        pytest.param((("authorization", f"bearer {RECEIVER_TOKEN}"),), True, id="lower-scheme"),
        pytest.param((("authorization", f"BEARER {RECEIVER_TOKEN}"),), True, id="upper-scheme"),
        pytest.param((("Authorization", f"Bearer {RECEIVER_TOKEN}"),), True, id="key-case"),
        pytest.param(
            (("authorization", f"Bearer {RECEIVER_TOKEN}".encode()),), True, id="bytes-value"
        ),
        pytest.param((("authorization", b"Bearer \xff\xfe"),), False, id="undecodable-bytes"),
        pytest.param(
            (("user-agent", "otel"), ("authorization", f"Bearer {RECEIVER_TOKEN}")),
            True,
            id="among-others",
        ),
        pytest.param(
            (("authorization", f"Bearer {RECEIVER_TOKEN}"), ("authorization", "Bearer x")),
            False,
            id="two-entries",
        ),
    ],
)
def test_receiver_auth_table(metadata: Metadata | None, allowed: bool) -> None:
    """Only a single ``authorization: Bearer <token>`` entry with the exact token is allowed."""
    assert BearerToken(RECEIVER_TOKEN).allows_metadata(metadata) is allowed


def test_receiver_auth_never_shows_the_token() -> None:
    """The token appears in neither repr nor str of the check."""
    auth = BearerToken(RECEIVER_TOKEN)
    assert RECEIVER_TOKEN not in repr(auth)
    assert RECEIVER_TOKEN not in str(auth)


def test_receiver_auth_is_built_only_with_a_token() -> None:
    """No token configured means no check; a token means a check for that token."""
    assert receiver_auth(ReceiverAuthConfig()) is None
    auth = receiver_auth(ReceiverAuthConfig(token=SecretStr(RECEIVER_TOKEN)))
    assert auth is not None
    assert auth.allows_metadata((("authorization", f"Bearer {RECEIVER_TOKEN}"),))


async def _probe(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """A test RPC answering whether the caller presented the receiver token."""
    return (
        b"yes"
        if BearerToken(RECEIVER_TOKEN).allows_metadata(context.invocation_metadata())
        else b"no"
    )


@asynccontextmanager
async def grpc_server(credentials: grpc.ServerCredentials | None) -> AsyncIterator[int]:
    """A real ``grpc.aio`` server on 127.0.0.1:0 serving the probe RPC; yields its port."""
    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(_probe)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Probe", {"Call": method})]
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def call_probe(channel: grpc.aio.Channel, metadata: Metadata = ()) -> bytes:
    """Call the probe RPC once and return its answer."""
    answer: bytes = await channel.unary_unary(PROBE)(b"", metadata=metadata, timeout=TIMEOUT_S)
    return answer


async def test_receiver_auth_reads_real_grpc_metadata() -> None:
    """The check works on the metadata a real ``grpc.aio`` server hands its handlers."""
    async with (
        grpc_server(None) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        assert await call_probe(channel, (("authorization", f"Bearer {RECEIVER_TOKEN}"),)) == b"yes"
        assert await call_probe(channel, (("authorization", "Bearer nope"),)) == b"no"
        assert await call_probe(channel) == b"no"


# --------------------------------------------------------------------------- config


def parse(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    """Validate ``data`` (plus an exporter) with paths relative to ``tmp_path``."""
    document = {"exporter": {"endpoint": "jaeger:4317", "insecure": True}, **data}
    return parse_config(document, base_dir=tmp_path, env={**BASE_ENV, **(env or {})})


def problems(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    """The problems reported for ``data``, each as ``path: message``."""
    with pytest.raises(ConfigError) as caught:
        parse(data, tmp_path, env)
    return [str(problem) for problem in caught.value.problems]


def test_security_sections_default_to_off(tmp_path: Path) -> None:
    """Without the new keys there is no TLS, no receiver token, and a 50/s burst-100 limit."""
    config = parse({}, tmp_path)
    assert not config.receiver.tls.enabled
    assert not config.api.tls.enabled
    assert not config.receiver.auth.enabled
    assert config.api.rate_limit == RateLimitConfig(requests_per_second=200, burst=400)
    assert config.api.rate_limit.enabled


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        pytest.param(
            {"receiver": {"tls": {"cert_file": "junk.pem"}}},
            {},
            "receiver.tls.key_file: required when cert_file is set",
            id="cert-without-key",
        ),
        pytest.param(
            {"api": {"tls": {"key_file": "junk.pem"}}},
            {},
            "api.tls.cert_file: required when key_file is set",
            id="key-without-cert",
        ),
        pytest.param(
            {"receiver": {"tls": {"client_ca_file": "junk.pem"}}},
            {},
            "receiver.tls.cert_file: required when client_ca_file is set",
            id="ca-without-tls",
        ),
        pytest.param(
            {"api": {"tls": {"cert_file": "missing.pem", "key_file": "junk.pem"}}},
            {},
            "api.tls.cert_file: file not found",
            id="missing-cert",
        ),
        pytest.param(
            {"receiver": {"tls": {"cert_file": "junk.pem", "key_file": "junk.pem"}}},
            {},
            "receiver.tls.cert_file: no PEM certificate in",
            id="not-pem",
        ),
        pytest.param(
            {"receiver": {"tls": {"ca_file": "junk.pem"}}},
            {},
            "receiver.tls.ca_file: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            {"receiver": {"auth": {"token": "short"}}},
            {},
            "receiver.auth.token: must be at least 16 characters",
            id="short-token",
        ),
        pytest.param(
            {},
            {RECEIVER_TOKEN_ENV_VAR: "short"},
            f"receiver.auth.token: {RECEIVER_TOKEN_ENV_VAR} must be at least 16 characters",
            id="short-env-token",
        ),
        pytest.param(
            {"receiver": {"auth": {"token_file": "short.txt"}}},
            {},
            "receiver.auth.token_file: the token in",
            id="short-file-token",
        ),
        pytest.param(
            {"receiver": {"auth": {"token": RECEIVER_TOKEN, "token_file": "junk.pem"}}},
            {},
            "receiver.auth.token_file: cannot be combined with token",
            id="token-and-file",
        ),
        pytest.param(
            {"receiver": {"auth": {"token_file": "missing"}}},
            {},
            "receiver.auth.token_file: file not found",
            id="missing-token-file",
        ),
        pytest.param(
            {"api": {"rate_limit": {"requests_per_second": -1}}},
            {},
            "api.rate_limit.requests_per_second: must be at least 0",
            id="negative-rate",
        ),
        pytest.param(
            {"api": {"rate_limit": {"requests_per_second": "fast"}}},
            {},
            "api.rate_limit.requests_per_second: expected a number",
            id="rate-not-a-number",
        ),
        pytest.param(
            {"api": {"rate_limit": {"burst": 0}}},
            {},
            "api.rate_limit.burst: must be greater than 0",
            id="zero-burst",
        ),
    ],
)
def test_security_config_problems(
    tmp_path: Path, data: dict[str, Any], env: dict[str, str], expected: str
) -> None:
    """Each invalid security setting is reported under its dotted path."""
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    (tmp_path / "short.txt").write_text("short\n")
    reported = problems(data, tmp_path, env)
    assert any(problem.startswith(expected) for problem in reported), reported


def test_receiver_token_from_env_file_or_value(tmp_path: Path) -> None:
    """The environment wins over the file, the file is read, and the env alone enables auth."""
    (tmp_path / "token").write_text(f"{RECEIVER_TOKEN}-file\n")
    env_token = f"{RECEIVER_TOKEN}-env"
    from_file = {"receiver": {"auth": {"token_file": "token"}}}
    cases = [
        ({"receiver": {"auth": {"token": RECEIVER_TOKEN}}}, {}, RECEIVER_TOKEN),
        (from_file, {}, f"{RECEIVER_TOKEN}-file"),
        (from_file, {RECEIVER_TOKEN_ENV_VAR: env_token}, env_token),
        ({}, {RECEIVER_TOKEN_ENV_VAR: env_token}, env_token),
    ]
    for data, env, expected in cases:
        token = parse(data, tmp_path, env).receiver.auth.token
        assert token is not None
        assert token.get_secret_value() == expected


def test_receiver_token_is_masked_in_the_config_repr(tmp_path: Path) -> None:
    """A resolved receiver token never shows in the config's repr."""
    config = parse({}, tmp_path, {RECEIVER_TOKEN_ENV_VAR: RECEIVER_TOKEN})
    assert RECEIVER_TOKEN not in repr(config)


def test_tls_config_accepts_a_real_pair_relative_to_the_config(tmp_path: Path, pki: Pki) -> None:
    """Valid PEM files load, relative paths resolve against the config directory."""
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(pki.path(name), tmp_path / name)
    tls = {"cert_file": "server.pem", "key_file": "server.key", "client_ca_file": "ca.pem"}
    config = parse({"receiver": {"tls": tls}, "api": {"tls": tls}}, tmp_path)
    assert config.receiver.tls.enabled
    assert config.api.tls.cert_file == str(tmp_path / "server.pem")
    assert config.api.tls.client_ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        pytest.param(
            {"cert_file": "server.pem", "key_file": "client.key"},
            r"receiver\.tls\.key_file: \S+client\.key does not match the certificate in cert_file",
            id="mismatched-key",
        ),
        pytest.param(
            {"cert_file": "server.pem", "key_file": "junk.pem"},
            r"receiver\.tls\.key_file: no PEM private key in \S+junk\.pem",
            id="key-not-pem",
        ),
        pytest.param(
            {"cert_file": "server.pem", "key_file": "encrypted.key"},
            r"receiver\.tls\.key_file: \S+encrypted\.key is encrypted",
            id="encrypted-key",
        ),
        pytest.param(
            {"cert_file": "server.pem", "key_file": "server.key", "client_ca_file": "junk.pem"},
            r"receiver\.tls\.client_ca_file: no PEM certificate in \S+junk\.pem",
            id="ca-not-pem",
        ),
    ],
)
def test_tls_config_rejects_unusable_pem_files(
    tmp_path: Path, pki: Pki, tls: dict[str, str], expected: str
) -> None:
    """PEM files that the servers could not use are config errors naming the key to fix."""
    for name in ("server.pem", "server.key", "client.key"):
        shutil.copy(pki.path(name), tmp_path / name)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    _openssl(
        tmp_path, "pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret",
        "-out", "encrypted.key",
    )  # fmt: skip
    reported = problems({"receiver": {"tls": tls}}, tmp_path)
    assert any(re.match(expected, problem) for problem in reported), reported


def test_builders_refuse_a_tls_section_without_files() -> None:
    """Asking for TLS material with TLS off is a programming error, not a silent plaintext."""
    with pytest.raises(ValueError, match="TLS is not configured"):
        grpc_server_credentials(TlsConfig())
    with pytest.raises(ValueError, match="TLS is not configured"):
        http_ssl_context(TlsConfig())


# --------------------------------------------------------------------------- gRPC TLS


def client_credentials(pki: Pki, *, with_cert: bool) -> grpc.ChannelCredentials:
    """Channel credentials trusting the test CA, optionally presenting the client cert."""
    ca = Path(pki.path("ca.pem")).read_bytes()
    if not with_cert:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=Path(pki.path("client.key")).read_bytes(),
        certificate_chain=Path(pki.path("client.pem")).read_bytes(),
    )


@pytest.mark.parametrize(("mtls", "with_cert"), [(False, False), (False, True), (True, True)])
async def test_grpc_tls_serves_a_client_trusting_the_ca(
    pki: Pki, mtls: bool, with_cert: bool
) -> None:
    """A secure channel trusting the CA gets through (with a client cert when mTLS)."""
    credentials = client_credentials(pki, with_cert=with_cert)
    async with (
        grpc_server(grpc_server_credentials(pki.tls(mtls=mtls))) as port,
        grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel,
    ):
        metadata = (("authorization", f"Bearer {RECEIVER_TOKEN}"),)
        assert await call_probe(channel, metadata) == b"yes"


async def test_grpc_mtls_rejects_a_client_without_a_certificate(pki: Pki) -> None:
    """Under mTLS a client presenting no certificate never reaches the handler."""
    credentials = client_credentials(pki, with_cert=False)
    async with (
        grpc_server(grpc_server_credentials(pki.tls(mtls=True))) as port,
        grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_probe(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_grpc_tls_rejects_a_plaintext_client(pki: Pki) -> None:
    """A TLS receiver does not serve plaintext gRPC."""
    async with (
        grpc_server(grpc_server_credentials(pki.tls(mtls=False))) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_probe(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- HTTP TLS


def test_http_ssl_context_settings(pki: Pki) -> None:
    """The server context needs TLS 1.2+, and client certificates exactly under mTLS."""
    plain = http_ssl_context(pki.tls(mtls=False))
    mutual = http_ssl_context(pki.tls(mtls=True))
    assert plain.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    # Only the configured CA is trusted for client certificates, not the system store.
    assert len(mutual.get_ca_certs()) == 1


@asynccontextmanager
async def https_api(context: ssl.SSLContext) -> AsyncIterator[str]:
    """The real HTTP API app served over TLS on 127.0.0.1:0; yields its base URL."""
    api = HttpApi(
        intake=None, auth=None, metrics=Metrics(), max_body_bytes=4096, ready=lambda: True
    )
    runner = web.AppRunner(api.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def client_context(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    """A client context trusting the test CA, optionally presenting the client cert."""
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if with_cert:
        context.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))
    return context


async def get_status(url: str, context: ssl.SSLContext) -> int:
    """GET ``url`` over TLS with ``context`` and return the status."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.get(url, ssl=context) as response,
    ):
        await response.read()
        return response.status


@pytest.mark.parametrize(("mtls", "with_cert"), [(False, False), (False, True), (True, True)])
async def test_https_api_serves_a_client_trusting_the_ca(
    pki: Pki, mtls: bool, with_cert: bool
) -> None:
    """The API answers over HTTPS a client that trusts the CA (with a client cert when mTLS)."""
    async with https_api(http_ssl_context(pki.tls(mtls=mtls))) as base:
        assert await get_status(f"{base}/healthz", client_context(pki, with_cert=with_cert)) == 200


async def test_https_api_under_mtls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    """Under mTLS the API never answers a client presenting no certificate."""
    async with https_api(http_ssl_context(pki.tls(mtls=True))) as base:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            await get_status(f"{base}/healthz", client_context(pki, with_cert=False))


# --------------------------------------------------------------------------- HTTP rate limit


@dataclass
class LimitedApi:
    """An HttpApi client plus the limiter's clock and the routes reported as limited."""

    client: TestClient[web.Request, web.Application]
    clock: SecondsClock
    limited: list[str]

    async def post(self, path: str, body: bytes = b"{}", token: str = API_TOKEN) -> int:
        """POST ``body`` as JSON with a bearer token and return the status."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with self.client.post(path, data=body, headers=headers) as response:
            await response.read()
            return response.status


SESSION_BODY = json.dumps({"source_ip": "10.0.0.7", "user": {"id": "u-1"}}).encode()


def build_api(limited: list[str], limiter: RateLimiter | None) -> HttpApi:
    """The real HttpApi with an in-memory intake, the webhook, and ``limiter``."""
    metrics = Metrics()
    intake = SessionIntake(
        MemorySessionStore(100), metrics, default_ttl_s=60.0, clock_ns=lambda: 10**18
    )
    return HttpApi(
        intake=intake,
        auth=BearerToken(API_TOKEN),
        metrics=metrics,
        max_body_bytes=4096,
        ready=lambda: True,
        webhook=OpenWebUIWebhook(intake, WEBHOOK_SECRET, "", metrics),
        rate_limiter=limiter,
        on_limited=limited.append,
    )


@pytest.fixture
async def limited_api() -> AsyncIterator[LimitedApi]:
    """The API on a test server, limited to a burst of 2 then 1 request/s per client."""
    clock = SecondsClock()
    limited: list[str] = []
    api = build_api(limited, RateLimiter(1.0, 2, clock=clock))
    async with TestClient(TestServer(api.app)) as client:
        yield LimitedApi(client, clock, limited)


async def test_session_pushes_over_the_rate_get_429_with_retry_after(
    limited_api: LimitedApi,
) -> None:
    """The third push in a burst of two is refused with 429, Retry-After and a JSON error."""
    assert [await limited_api.post("/v1/sessions", SESSION_BODY) for _ in range(2)] == [200, 200]
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    async with limited_api.client.post("/v1/sessions", data=SESSION_BODY, headers=headers) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "1"
        assert isinstance((await r.json())["error"], str)
    assert limited_api.limited == ["sessions"]


async def test_limited_client_is_served_again_after_the_refill(limited_api: LimitedApi) -> None:
    """Once the bucket refills with the injected clock, the client gets through again."""
    statuses = [await limited_api.post("/v1/sessions", SESSION_BODY) for _ in range(3)]
    limited_api.clock.now += 1.0
    statuses.append(await limited_api.post("/v1/sessions", SESSION_BODY))
    assert statuses == [200, 200, 429, 200]


async def test_limit_applies_before_auth_and_body(limited_api: LimitedApi) -> None:
    """A limited client is refused before its token is checked or its (oversized) body read."""
    assert await limited_api.post("/v1/sessions", token="wrong-token-0123456789") == 401
    assert await limited_api.post("/v1/sessions", token="wrong-token-0123456789") == 401
    assert await limited_api.post("/v1/sessions", b"x" * 10_000) == 429  # not 413
    assert limited_api.limited == ["sessions"]


async def test_webhook_route_is_limited_even_with_a_wrong_secret(limited_api: LimitedApi) -> None:
    """Guessing webhook secrets is throttled like any webhook call, and reported as such."""
    path = "/v1/webhooks/openwebui/not-the-secret-at-all"
    assert [await limited_api.post(path) for _ in range(3)] == [404, 404, 429]
    assert limited_api.limited == ["webhook"]


async def test_webhook_and_sessions_share_the_client_bucket(limited_api: LimitedApi) -> None:
    """The bucket is per client, not per route."""
    assert await limited_api.post(f"/v1/webhooks/openwebui/{WEBHOOK_SECRET}") == 200
    assert await limited_api.post("/v1/sessions", SESSION_BODY) == 200
    assert await limited_api.post("/v1/sessions", SESSION_BODY) == 429


async def test_probes_and_metrics_are_never_limited(limited_api: LimitedApi) -> None:
    """GET routes stay reachable for a client whose POST budget is spent."""
    statuses = [await limited_api.post("/v1/sessions", SESSION_BODY) for _ in range(3)]
    assert statuses[-1] == 429
    for path in ("/healthz", "/readyz", "/metrics"):
        async with limited_api.client.get(path) as response:
            assert response.status == 200, path


async def test_without_a_limiter_nothing_is_limited() -> None:
    """``rate_limiter=None`` (the default) keeps the API unlimited."""
    limited: list[str] = []
    api = build_api(limited, None)
    async with TestClient(TestServer(api.app)) as client:
        client_api = LimitedApi(client, SecondsClock(), limited)
        statuses = {await client_api.post("/v1/sessions", SESSION_BODY) for _ in range(5)}
    assert statuses == {200}
    assert limited == []
