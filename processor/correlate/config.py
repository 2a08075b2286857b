"""Config of the span path: how spans are tied to users, what identity is written, usage."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StrictBool,
)

from processor.config.base import Frozen
from processor.config.scalars import (
    AttributeName,
    ConfigPath,
    Duration,
    FiniteFloat,
    NonNegativeDuration,
    PositiveDuration,
    PositiveInt,
    no_duplicates,
)
from processor.config.secrets import SecretRule, secret_resolver
from processor.correlate.address import DEFAULT_ADDRESS_KEYS


class CorrelationConfig(Frozen):
    """How a span is tied to a user: address keys, timing windows, holding, ambiguity."""

    address_attributes: Annotated[
        tuple[AttributeName, ...], Field(min_length=1), AfterValidator(no_duplicates)
    ] = DEFAULT_ADDRESS_KEYS
    # Extra span/resource attribute keys that name the user, mapped to the user field
    # they carry (besides the built-in user.*, enduser.id, client.user.* and
    # http.request.header.x-openwebui-user-* keys).
    identity_attributes: dict[AttributeName, Literal["id", "email", "name", "role"]] = Field(
        default_factory=dict
    )
    # Attributes holding the model a span asked for, in order of preference.
    model_attributes: Annotated[tuple[AttributeName, ...], AfterValidator(no_duplicates)] = (
        "gen_ai.request.model",
        "gen_ai.response.model",
    )
    # A span whose start lies in [event - clock_skew, event + request_window]
    # matches a request event.
    request_window: PositiveDuration = 5.0
    clock_skew: NonNegativeDuration = 0.5
    # Learn each address's real event -> span lag from the traffic and match by
    # it (always inside the window above) once this many spans show it; false:
    # the configured window always decides.
    learn_lag: StrictBool = True
    lag_min_samples: Annotated[int, Field(strict=True, ge=10, le=100_000)] = 30
    # An address with no new evidence for this long of span time falls back to
    # the configured window.
    lag_stale_after: Annotated[Duration, Field(ge=60, le=86_400)] = 900.0
    # With a learned lag, several candidates are weighed by how likely each one's
    # lag is: the best user is named only when this many times likelier than the
    # next user and than "the span's own event was lost" (a ratio, no unit).
    likelihood_margin: Annotated[FiniteFloat, Field(ge=1.0, le=1_000_000.0)] = 10.0
    # How long a span without exact identity waits for its trace's identity or a
    # matching event; 0 disables holding.
    hold: NonNegativeDuration = 6.0
    max_held_spans: PositiveInt = 100_000
    ambiguous: Literal["skip", "nearest", "candidates"] = "skip"
    # How long a trace's identity is remembered, and how many traces at most.
    trace_ttl: PositiveDuration = 600.0
    max_traces: PositiveInt = 100_000


HASH_KEY_ENV_VAR = "USER_ENRICHER_HASH_KEY"
"""Environment variable that overrides ``identity.hash_key`` and ``hash_key_file``."""

_HASH_KEY = SecretRule(
    "hash_key",
    "hash_key_file",
    HASH_KEY_ENV_VAR,
    16,
    f"required when hash_emails is on (set hash_key, hash_key_file or {HASH_KEY_ENV_VAR})",
)


class IdentityConfig(Frozen):
    """What identity the service writes onto spans."""

    # Write user.hash (a keyed hash of the email) instead of user.email and
    # user.name, for teams that must keep personal data out of Jaeger.
    hash_emails: StrictBool = False
    hash_key: SecretStr | None = None
    hash_key_file: ConfigPath | None = None

    # From the environment variable, the file or the inline value, checked.
    _secret = secret_resolver(_HASH_KEY, lambda i: i.hash_emails)


class PriceConfig(Frozen):
    """USD per million tokens of one model."""

    input_per_million: Annotated[FiniteFloat, Field(ge=0)]
    output_per_million: Annotated[FiniteFloat, Field(ge=0)]


class UsageConfig(Frozen):
    """Per-user LLM usage metrics (requests, tokens, cost, errors) on /metrics."""

    enabled: StrictBool = True
    # Distinct users with their own label; later ones are counted as "other".
    max_users: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 1000
    # Model (as the gateway names it, case-insensitive) -> price, used when the
    # gateway did not price a call (no agw.ai.usage.cost.total).
    prices: dict[AttributeName, PriceConfig] = Field(default_factory=dict)
    # What the per-user metrics are labelled by (what /metrics tells its readers):
    # email (readable; the id when a user has no email), id (Open WebUI's user id,
    # never an email) or hash (keyed hash of the email; needs identity.hash_key).
    # Independent of what is written on spans; identity.hash_emails makes email
    # behave as hash.
    user_label: Literal["email", "id", "hash"] = "email"
