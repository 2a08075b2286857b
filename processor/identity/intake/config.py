"""Config of the identity intake: the session API and Open WebUI's webhooks."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    StrictBool,
)

from processor.config.base import Frozen
from processor.config.scalars import (
    ConfigPath,
    KiB,
    ListenEndpoint,
    MiB,
    optional_ip,
    size_between,
    to_size,
)
from processor.config.secrets import SecretRule, secret_resolver
from processor.config.tls import TlsConfig
from processor.receive.config import RateLimitConfig

TOKEN_ENV_VAR = "USER_ENRICHER_API_TOKEN"
"""Environment variable that overrides ``api.token`` and ``api.token_file``."""

MIN_TOKEN_LENGTH = 8


_TOKEN_REQUIRED = (
    "required when the session API is enabled (set api.token, api.token_file "
    f"or {TOKEN_ENV_VAR}, or api.enabled: false)"
)


_API_TOKEN = SecretRule("token", "token_file", TOKEN_ENV_VAR, MIN_TOKEN_LENGTH, _TOKEN_REQUIRED)


class ApiConfig(Frozen):
    """The session API that Open WebUI calls to register who is behind an address.

    When validated through :func:`parse_config`, ``token`` is the resolved token
    (``USER_ENRICHER_API_TOKEN``, else the contents of ``token_file``, else ``token``)
    and is required while the API is enabled. Constructed directly in code, the
    token is taken as given.
    """

    enabled: StrictBool = True
    endpoint: ListenEndpoint = "127.0.0.1:8089"
    token: SecretStr | None = None
    token_file: ConfigPath | None = None
    max_body_bytes: Annotated[int, BeforeValidator(to_size), size_between(KiB, 64 * MiB)] = MiB
    tls: TlsConfig = Field(default_factory=TlsConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    # From the environment variable, the file or the inline value, checked.
    _secret = secret_resolver(_API_TOKEN, lambda a: a.enabled)


WEBHOOK_SECRET_ENV_VAR = "USER_ENRICHER_WEBHOOK_SECRET"
"""Environment variable that overrides ``webhooks.openwebui.secret`` and ``secret_file``."""

_WEBHOOK_SECRET = SecretRule(
    "secret",
    "secret_file",
    WEBHOOK_SECRET_ENV_VAR,
    16,
    "required when the Open WebUI webhook is enabled (set secret, secret_file "
    f"or {WEBHOOK_SECRET_ENV_VAR})",
)


class OpenWebUIWebhookConfig(Frozen):
    """Open WebUI's event webhooks, received at POST /v1/webhooks/openwebui/<secret>.

    A webhook URL cannot carry an Authorization header, so the secret travels in
    the path; it must be at least 16 characters.
    """

    enabled: StrictBool = False
    secret: SecretStr | None = None
    secret_file: ConfigPath | None = None
    # The address AgentGateway sees for Open WebUI's requests. Empty: the
    # webhook's own peer address (right when both reach the service alike).
    source_ip: Annotated[str, AfterValidator(optional_ip)] = ""

    # From the environment variable, the file or the inline value, checked.
    _secret = secret_resolver(_WEBHOOK_SECRET, lambda h: h.enabled)


class WebhooksConfig(Frozen):
    """Identity sources that call us: Open WebUI's event webhooks."""

    openwebui: OpenWebUIWebhookConfig = Field(default_factory=OpenWebUIWebhookConfig)
