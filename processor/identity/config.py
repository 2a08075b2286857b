"""Config of the identity stores: the session table (memory or Redis) and the directory."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from processor.config.base import Frozen, field_problems, load_context
from processor.config.scalars import (
    AttributeName,
    ConfigPath,
    ExistingFile,
    PositiveDuration,
    PositiveInt,
    no_duplicates,
)
from processor.config.secrets import SecretProblem, SecretRule, resolve_secret

REDIS_URL_ENV_VAR = "USER_ENRICHER_REDIS_URL"
"""Environment variable that overrides ``sessions.store``."""
REDIS_PASSWORD_ENV_VAR = "USER_ENRICHER_REDIS_PASSWORD"
"""Environment variable that overrides ``sessions.redis_password`` and its file."""

_REDIS_PASSWORD = SecretRule(
    "redis_password", "redis_password_file", REDIS_PASSWORD_ENV_VAR, 1, "required"
)


def _store_url(value: str) -> str:
    """``memory`` or a redis://, rediss:// or unix:// URL."""
    if value == "memory" or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise ValueError("expected memory, or a redis://, rediss:// or unix:// URL")


class SessionsConfig(Frozen):
    """The session table: in memory, or shared by every replica through Redis.

    With Redis, each replica keeps the whole table in memory (lookups never leave
    the process) and Redis carries changes between replicas (pub/sub) and the
    current state to replicas that start or reconnect (keys that expire by
    themselves).
    """

    ttl: PositiveDuration = 1800.0
    max_sessions: PositiveInt = 1_000_000
    sweep_interval: PositiveDuration = 30.0
    store: Annotated[str, Field(strict=True), AfterValidator(_store_url)] = "memory"
    redis_password: SecretStr | None = None
    redis_password_file: ConfigPath | None = None
    # CA bundle to verify a rediss:// server (system roots when unset).
    redis_ca_file: ExistingFile | None = None
    # Prefix of every key and channel, so several deployments can share a Redis.
    redis_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")] = (
        "user-enricher:"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_redis(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the environment overrides for the store URL and the password."""
        sessions = handler(data)
        context = load_context(info)
        if context is None:
            return sessions
        update: dict[str, Any] = {}
        url = context.env.get(REDIS_URL_ENV_VAR, "").strip()
        if url:
            try:
                update["store"] = _store_url(url)
            except ValueError as exc:
                raise field_problems(
                    cls.__name__, [("store", f"{REDIS_URL_ENV_VAR}: {exc}")]
                ) from None
        try:
            update["redis_password"] = resolve_secret(
                _REDIS_PASSWORD,
                sessions.redis_password,
                sessions.redis_password_file,
                False,
                context.env,
            )
        except SecretProblem as problem:
            raise field_problems(cls.__name__, [(problem.field, problem.message)]) from None
        return sessions.model_copy(update=update)


class DirectoryConfig(Frozen):
    """Static file mapping addresses/CIDRs and principals (jwt.sub, API keys) to users."""

    file: ExistingFile | None = None
    reload_interval: PositiveDuration = 10.0
    # Span attributes whose values are looked up as principals in the directory.
    principal_attributes: Annotated[tuple[AttributeName, ...], AfterValidator(no_duplicates)] = (
        "jwt.sub",
    )
